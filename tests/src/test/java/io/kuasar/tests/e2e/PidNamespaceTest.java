package io.kuasar.tests.e2e;

import io.kuasar.api.cri.v1.NamespaceMode;
import io.kuasar.tests.cri.CriClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import static org.assertj.core.api.Assertions.assertThat;

/** namespace_options.pid: POD shares one PID namespace (held by the pod's holder), CONTAINER does not. */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class PidNamespaceTest {

    @Test
    void podPidModeSharesOneNamespace(CriClient cri) {
        CriClient.Pod pod = cri.runPod("sharedpid", true, NamespaceMode.POD);
        String a = cri.runContainer(pod, "a", "sleep", "1001");
        String b = cri.runContainer(pod, "b", "sleep", "1002");

        String ps = cri.execSync(b, "ps", "-o", "pid,args").stdout();
        assertThat(ps).contains("sleep 1001").contains("sleep 1002");
        // PID 1 of the pod is the namespace holder, not a container.
        assertThat(cri.execSync(a, "cat", "/proc/1/comm").stdout().trim()).isEqualTo(Host.holderComm(pod.id()));

        long holder = Cri.podPid(cri, pod.id());
        String ns = Host.namespace(holder, "pid");
        assertThat(ns).isNotEqualTo(Host.namespace(ProcessHandle.current().pid(), "pid"));
        assertThat(Host.namespace(Cri.containerPid(cri, a), "pid")).isEqualTo(ns);
        assertThat(Host.namespace(Cri.containerPid(cri, b), "pid")).isEqualTo(ns);
    }

    @Test
    void containerPidModeKeepsThemApart(CriClient cri) {
        CriClient.Pod pod = cri.runPod("ownpid", true, NamespaceMode.CONTAINER);
        String a = cri.runContainer(pod, "a", "sleep", "1001");
        String b = cri.runContainer(pod, "b", "sleep", "1002");

        String ps = cri.execSync(b, "ps", "-o", "pid,args").stdout();
        assertThat(ps).contains("sleep 1002").doesNotContain("sleep 1001");
        assertThat(cri.execSync(b, "cat", "/proc/1/cmdline").stdout()).isEqualTo("sleep\u00001002\u0000");
        assertThat(cri.execSync(a, "cat", "/proc/1/cmdline").stdout()).isEqualTo("sleep\u00001001\u0000");

        String nsA = Host.namespace(Cri.containerPid(cri, a), "pid");
        String nsB = Host.namespace(Cri.containerPid(cri, b), "pid");
        assertThat(nsA).isNotEqualTo(nsB).isNotEqualTo(Host.namespace(ProcessHandle.current().pid(), "pid"));
        // IPC and UTS are still the pod's.
        assertThat(Host.namespace(Cri.containerPid(cri, a), "ipc"))
                .isEqualTo(Host.namespace(Cri.containerPid(cri, b), "ipc"));
    }
}
