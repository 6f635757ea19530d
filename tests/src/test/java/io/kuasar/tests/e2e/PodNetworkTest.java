package io.kuasar.tests.e2e;

import io.kuasar.api.cri.v1.NamespaceMode;
import io.kuasar.api.cri.v1.PodSandboxState;
import io.kuasar.api.cri.v1.PodSandboxStatus;
import io.kuasar.tests.cri.CriClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;

/** Pods on the host network and on a CNI network: what CRI reports matches what the containers see. */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class PodNetworkTest {

    @Test
    void hostNetworkPodSharesTheHostNetworkNamespace(CriClient cri) {
        CriClient.Pod pod = cri.runPod("hostnet", true);
        PodSandboxStatus st = cri.podStatus(pod.id(), false).getStatus();
        assertThat(st.getState()).isEqualTo(PodSandboxState.SANDBOX_READY);
        assertThat(st.getRuntimeHandler()).isEqualTo(E2eEnvironment.HANDLER);
        assertThat(st.getLinux().getNamespaces().getOptions().getNetwork()).isEqualTo(NamespaceMode.NODE);

        String c = cri.runContainer(pod, "c1", "sleep", "1000");
        String hostNet = Host.namespace(ProcessHandle.current().pid(), "net");
        assertThat(hostNet).startsWith("net:[");
        CriClient.ExecResult r = cri.execSync(c, "readlink", "/proc/self/ns/net");
        assertThat(r.exitCode()).isZero();
        assertThat(r.stdout().trim()).isEqualTo(hostNet);
        // The holder is in the host network and UTS namespaces as well (as containerd's pause container would be),
        // but has its own IPC namespace.
        long self = ProcessHandle.current().pid();
        long holder = Cri.podPid(cri, pod.id());
        long ctr = Cri.containerPid(cri, c);
        assertThat(Host.comm(holder)).isEqualTo(Host.holderComm(pod.id()));
        assertThat(Host.namespace(holder, "net")).isEqualTo(hostNet);
        assertThat(Host.namespace(holder, "ipc")).isNotEqualTo(Host.namespace(self, "ipc"));
        assertThat(Host.namespace(ctr, "ipc")).isEqualTo(Host.namespace(holder, "ipc"));
        assertThat(Host.namespace(ctr, "uts")).isEqualTo(Host.namespace(self, "uts"));
        assertThat(cri.execSync(c, "hostname").stdout().trim()).isEqualTo(Host.read(Path.of("/proc/sys/kernel/hostname")).trim());
    }

    @Test
    void cniPodGetsAnAddressThatItsContainersSee(E2eEnvironment env, CriClient cri) {
        CriClient.Pod pod = cri.runPod("cninet", false);
        PodSandboxStatus st = cri.podStatus(pod.id(), false).getStatus();
        assertThat(st.getState()).isEqualTo(PodSandboxState.SANDBOX_READY);
        String ip = st.getNetwork().getIp();
        String net = env.subnet().substring(0, env.subnet().lastIndexOf('.') + 1); // "10.88.78."
        assertThat(ip).startsWith(net);

        String c = cri.runContainer(pod, "c1", "sleep", "1000");
        CriClient.ExecResult addr = cri.execSync(c, "ip", "-4", "-o", "addr", "show", "dev", "eth0");
        assertThat(addr.exitCode()).as(addr.stderr()).isZero();
        assertThat(addr.stdout()).contains("inet " + ip + "/24");

        // The pod's own network namespace: not the host's, the same for the holder and the container.
        String ctrNet = cri.execSync(c, "readlink", "/proc/self/ns/net").stdout().trim();
        long holder = Cri.podPid(cri, pod.id());
        assertThat(ctrNet).isEqualTo(Host.namespace(holder, "net"))
                .isNotEqualTo(Host.namespace(ProcessHandle.current().pid(), "net"));

        // And it is wired to the bridge: the gateway answers.
        CriClient.ExecResult ping = cri.execSync(c, 15, "ping", "-c", "1", "-W", "5", net + "1");
        assertThat(ping.exitCode()).as(ping.stdout() + ping.stderr()).isZero();
        assertThat(ping.stdout()).contains("1 packets received");
    }

    /** A pod with its own network gets its own UTS namespace named after the pod, like a pause container. */
    @Test
    void podHostnameIsThePods(CriClient cri) {
        CriClient.Pod pod = cri.runPod("named", false);
        String c = cri.runContainer(pod, "c1", "sleep", "1000");
        assertThat(cri.execSync(c, "hostname").stdout().trim()).isEqualTo("named");
        assertThat(cri.execSync(c, "sh", "-c", "echo $HOSTNAME").stdout().trim()).isEqualTo("named");
        assertThat(Host.namespace(Cri.containerPid(cri, c), "uts"))
                .isEqualTo(Host.namespace(Cri.podPid(cri, pod.id()), "uts"))
                .isNotEqualTo(Host.namespace(ProcessHandle.current().pid(), "uts"));
    }

    /**
     * What kubelet users expect, and what containerd's own {@code runc} handler (podsandbox) gives on this machine
     * (verified): the pod's {@code /etc/hostname} and {@code /etc/resolv.conf} from its DNS config.
     */
    @Test
    void etcHostnameAndResolvConfAreThePods(CriClient cri) {
        CriClient.Pod pod = cri.runPod(cri.podConfig("named", false, NamespaceMode.CONTAINER).toBuilder()
                .setDnsConfig(io.kuasar.api.cri.v1.DNSConfig.newBuilder().addServers("10.88.78.53")
                        .addSearches("e2e.svc.cluster.local").addOptions("ndots:5"))
                .build());
        String c = cri.runContainer(pod, "c1", "sleep", "1000");
        assertThat(cri.execSync(c, "cat", "/etc/hostname").stdout().trim()).isEqualTo("named");
        assertThat(cri.execSync(c, "cat", "/etc/resolv.conf").stdout())
                .contains("nameserver 10.88.78.53").contains("search e2e.svc.cluster.local").contains("ndots:5");
    }
}
