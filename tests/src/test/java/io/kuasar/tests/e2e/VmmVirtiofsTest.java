package io.kuasar.tests.e2e;

import io.kuasar.tests.cri.CriClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * microVM pods whose shared directory reaches the guest through virtiofs (share_fs = "VirtioFS") and whose agent
 * channel is Kuasar's vsock port 1024 (use_vsock = true): a second vmm-sandboxer, handler
 * {@code kuasar-vmm-virtiofs}, one virtiofsd per VM (trixie's, run through its own loader) and one vhost-device-vsock
 * per VM (sid's: this machine kind has no vhost-vsock), reached through hybrid vsock.
 */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class VmmVirtiofsTest {

    @Test
    void aPodsContainersRunFromVirtiofsAndNothingIsLeftAfterRemoval(E2eEnvironment env) throws Exception {
        CriClient cri = env.vmmVirtiofsCri();
        CriClient.Pod pod = cri.runPod("vmfs", false);
        String c = cri.runContainer(pod, "c", CriClient.ContainerOptions.defaults().logPath("c.log"), "sh", "-c",
                "echo hello-over-virtiofs; exec sleep 1000");

        // The container's root is its rootfs in the shared directory, which the guest mounted with virtiofs.
        CriClient.ExecResult root = cri.execSync(c, "sh", "-c", "grep ' / ' /proc/self/mounts");
        assertThat(root.exitCode()).isZero();
        assertThat(root.stdout()).contains("virtiofs");
        CriClient.ExecResult rw = cri.execSync(c, "sh", "-c", "echo data > /tmp/f && cat /tmp/f && uname -r");
        assertThat(rw.exitCode()).isZero();
        assertThat(rw.stdout()).startsWith("data\n");
        assertThat(rw.stdout().lines().toList().get(1))
                .isNotEqualTo(Files.readString(Path.of("/proc/sys/kernel/osrelease")).trim());
        Path log = pod.logDirectory().resolve("c.log");
        for (int i = 0; i < 100 && !(Files.exists(log) && Files.readString(log).contains("hello-over-virtiofs")); i++) {
            Thread.sleep(200);
        }
        assertThat(log).content().contains("hello-over-virtiofs");

        // The VM's virtiofsd (a launcher and its sandboxed worker), in the pod's cgroup with QEMU.
        Path sandboxDir = env.vmmVirtiofsStateDir().resolve("sandboxes").resolve(pod.id());
        List<Long> qemu = Host.pidsWithCmdline(sandboxDir + "/qmp.sock");
        assertThat(qemu).hasSize(1);
        List<Long> virtiofsd = Host.pidsWithCmdline("--socket-path=" + sandboxDir + "/virtiofs.sock");
        assertThat(virtiofsd).as("virtiofsd of the pod").isNotEmpty().doesNotContainAnyElementsOf(qemu);
        for (long p : virtiofsd) {
            assertThat(Host.read(Path.of("/proc/" + p + "/cgroup"))).contains("/kuasar-vmm/" + pod.id() + "\n");
        }
        // The agent answered over vsock: no virtio-serial chardev, a vhost-device-vsock in the pod's cgroup.
        assertThat(sandboxDir.resolve("agent.sock")).doesNotExist();
        List<Long> vsock = Host.pidsWithCmdline("--uds-path " + sandboxDir + "/vsock.uds");
        assertThat(vsock).as("vhost-device-vsock of the pod").hasSize(1);
        assertThat(Host.read(Path.of("/proc/" + vsock.getFirst() + "/cgroup"))).contains("/kuasar-vmm/" + pod.id()
                + "\n");

        cri.stopAndRemovePod(pod.id());
        assertThat(Host.pidsWithCmdline(sandboxDir.toString())).as("QEMU, virtiofsd and vhost-device-vsock of the pod")
                .isEmpty();
        assertThat(Host.mountsMentioning(sandboxDir.toString())).isEmpty();
        assertThat(sandboxDir).doesNotExist();
        assertThat(Path.of("/sys/fs/cgroup/memory/kuasar-vmm", pod.id())).doesNotExist();
        assertThat(env.vmmVirtiofsSandboxerAlive()).isTrue();
    }
}
