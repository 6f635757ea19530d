package io.kuasar.tests.e2e;

import io.grpc.StatusRuntimeException;
import io.kuasar.api.cri.v1.ContainerConfig;
import io.kuasar.api.cri.v1.MountPropagation;
import io.kuasar.api.cri.v1.NamespaceMode;
import io.kuasar.api.cri.v1.PodSandboxConfig;
import io.kuasar.api.cri.v1.PodSandboxMetadata;
import io.kuasar.tests.cri.CriClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.stream.Stream;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * CRI behaviours kubelet relies on, run against containerd's stock {@code runc} handler (pause container +
 * containerd-shim-runc-v2) and {@code kuasar-runc} in the same run: each case must pass on both, so every difference
 * shows as a failure of the kuasar-runc case next to a passing stock case.
 */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class CriConformanceTest {

    /** Kubernetes pod names may be 253 characters; with no hostname the pod gets the node's, as containerd does. */
    @ParameterizedTest
    @ValueSource(strings = {"runc", "kuasar-runc"})
    void anEmptyHostnameAndALongPodNameGiveTheNodesHostname(String handler, CriClient cri) throws Exception {
        String longName = "p" + "x".repeat(240) + "-" + handler;
        PodSandboxConfig cfg = cri.podConfig("longname", false, NamespaceMode.CONTAINER).toBuilder()
                .setMetadata(PodSandboxMetadata.newBuilder().setName(longName).setUid(java.util.UUID.randomUUID()
                        .toString()).setNamespace("default"))
                .clearHostname().build();
        CriClient.Pod p = cri.runPod(cfg, handler);
        String c = cri.runContainer(p, "c", "sleep", "1000");
        String node = Files.readString(Path.of("/proc/sys/kernel/hostname")).trim();
        assertThat(cri.execSync(c, "hostname").stdout().trim()).isEqualTo(node);
    }

    /** Safe and namespaced unsafe sysctls of the pod are set in the namespaces its containers share. */
    @ParameterizedTest
    @ValueSource(strings = {"runc", "kuasar-runc"})
    void podSysctlsAreApplied(String handler, CriClient cri) {
        PodSandboxConfig base = cri.podConfig("sysctl", false, NamespaceMode.CONTAINER);
        PodSandboxConfig cfg = base.toBuilder().setLinux(base.getLinux().toBuilder()
                .putSysctls("kernel.shm_rmid_forced", "1").putSysctls("fs.mqueue.msg_max", "100")).build();
        CriClient.Pod p = cri.runPod(cfg, handler);
        String c = cri.runContainer(p, "c", "sleep", "1000");
        assertThat(cri.execSync(c, "cat", "/proc/sys/kernel/shm_rmid_forced").stdout().trim()).isEqualTo("1");
        assertThat(cri.execSync(c, "cat", "/proc/sys/fs/mqueue/msg_max").stdout().trim()).isEqualTo("100");
    }

    /** HostIpc: a SysV shared memory segment made on the host is visible in the container. */
    @ParameterizedTest
    @ValueSource(strings = {"runc", "kuasar-runc"})
    void hostIpcSharesTheHostsIpcNamespace(String handler, CriClient cri) {
        String made = Host.check(Duration.ofSeconds(10), java.util.Map.of(), null, "ipcmk", "-M", "4096");
        String shmid = made.replaceAll("(?s).*?(\\d+)\\s*$", "$1");
        try {
            PodSandboxConfig base = cri.podConfig("hostipc", false, NamespaceMode.CONTAINER);
            PodSandboxConfig cfg = base.toBuilder().setLinux(base.getLinux().toBuilder().setSecurityContext(
                    base.getLinux().getSecurityContext().toBuilder().setNamespaceOptions(
                            base.getLinux().getSecurityContext().getNamespaceOptions().toBuilder()
                                    .setIpc(NamespaceMode.NODE)))).build();
            CriClient.Pod p = cri.runPod(cfg, handler);
            String c = cri.runContainer(p, "c", "sleep", "1000");
            String seen = cri.execSync(c, "cat", "/proc/sysvipc/shm").stdout();
            assertThat(Stream.of(seen.split("\n")).skip(1).map(l -> l.trim().split("\\s+")[1]).toList())
                    .as("shm ids in the container: %s", seen).contains(shmid);
        } finally {
            Host.run(Duration.ofSeconds(10), java.util.Map.of(), null, "ipcrm", "-m", shmid);
        }
    }

    /** A recursive read-only mount makes the submounts of its source read-only too (runc's "rro"). */
    @ParameterizedTest
    @ValueSource(strings = {"runc", "kuasar-runc"})
    void recursiveReadOnlyMountsAreSupported(String handler, CriClient cri, E2eEnvironment env) throws Exception {
        Path src = Files.createTempDirectory(env.workdir(), "rro-");
        Path sub = Files.createDirectories(src.resolve("sub"));
        Host.check(Duration.ofSeconds(10), java.util.Map.of(), null, "mount", "-t", "tmpfs", "rro", sub.toString());
        try {
            CriClient.Pod p = cri.runPod(cri.podConfig("rro", false, NamespaceMode.CONTAINER), handler);
            ContainerConfig cfg = cri.containerConfig(p, "c", CriClient.ContainerOptions.defaults(), "sleep", "1000")
                    .toBuilder().addMounts(io.kuasar.api.cri.v1.Mount.newBuilder().setHostPath(src.toString())
                            .setContainerPath("/rro").setReadonly(true).setRecursiveReadOnly(true)
                            .setPropagation(MountPropagation.PROPAGATION_PRIVATE)).build();
            String c = cri.runContainer(p, cfg);
            CriClient.ExecResult top = cri.execSync(c, "touch", "/rro/x");
            CriClient.ExecResult below = cri.execSync(c, "touch", "/rro/sub/x");
            assertThat(top.exitCode()).as("write to the mount: %s", top).isNotZero();
            assertThat(below.exitCode()).as("write to a submount: %s", below).isNotZero();
            assertThat(below.stderr()).contains("Read-only file system");
        } finally {
            Host.run(Duration.ofSeconds(10), java.util.Map.of(), null, "umount", "-l", sub.toString());
        }
    }

    /**
     * A pod whose start fails (here: a sysctl the kernel refuses) fails RunPodSandbox on both handlers, and
     * kuasar-runc keeps nothing of it: containerd forgets such a pod and never asks for its removal.
     */
    @ParameterizedTest
    @ValueSource(strings = {"runc", "kuasar-runc"})
    void aPodWhoseStartFailsLeavesNothingBehind(String handler, CriClient cri, E2eEnvironment env) throws Exception {
        List<String> before = sandboxDirs(env);
        PodSandboxConfig base = cri.podConfig("badstart", false, NamespaceMode.CONTAINER);
        PodSandboxConfig cfg = base.toBuilder().setLinux(base.getLinux().toBuilder()
                .putSysctls("fs.mqueue.msg_max", "-5")).build();
        assertThatThrownBy(() -> cri.runPod(cfg, handler)).isInstanceOf(StatusRuntimeException.class);
        assertThat(sandboxDirs(env)).isEqualTo(before);
    }

    private static List<String> sandboxDirs(E2eEnvironment env) throws Exception {
        Path dir = env.stateDir().resolve("sandboxes");
        if (!Files.isDirectory(dir)) {
            return List.of();
        }
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }
}
