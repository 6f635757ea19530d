package io.kuasar.tests.e2e;

import io.kuasar.tests.cri.CriClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import static org.assertj.core.api.Assertions.assertThat;

/** namespace_options.ipc = POD: the pod's containers share one IPC namespace and one /dev/shm. */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class PodIpcTest {

    @Test
    void containersShareTheHoldersIpcNamespace(CriClient cri) {
        CriClient.Pod pod = cri.runPod("ipc", false);
        String a = cri.runContainer(pod, "a", "sleep", "1001");
        String b = cri.runContainer(pod, "b", "sleep", "1002");
        String holderIpc = Host.namespace(Cri.podPid(cri, pod.id()), "ipc");
        assertThat(holderIpc).isNotEqualTo(Host.namespace(ProcessHandle.current().pid(), "ipc"));
        assertThat(Host.namespace(Cri.containerPid(cri, a), "ipc")).isEqualTo(holderIpc);
        assertThat(Host.namespace(Cri.containerPid(cri, b), "ipc")).isEqualTo(holderIpc);
    }

    /** Passes with containerd's own {@code runc} handler (podsandbox), which mounts one shm per pod. */
    @Test
    void containersShareDevShm(CriClient cri) {
        CriClient.Pod pod = cri.runPod("shm", false);
        String a = cri.runContainer(pod, "a", "sleep", "1001");
        String b = cri.runContainer(pod, "b", "sleep", "1002");
        assertThat(cri.execSync(a, "sh", "-c", "echo shared-by-a > /dev/shm/marker").exitCode()).isZero();
        CriClient.ExecResult r = cri.execSync(b, "cat", "/dev/shm/marker");
        assertThat(r.stdout()).as("POSIX shm of container a seen from b: %s", r).isEqualTo("shared-by-a\n");
    }
}
