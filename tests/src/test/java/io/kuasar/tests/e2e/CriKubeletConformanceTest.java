package io.kuasar.tests.e2e;

import io.kuasar.api.cri.v1.Capability;
import io.kuasar.api.cri.v1.ContainerConfig;
import io.kuasar.api.cri.v1.ContainerState;
import io.kuasar.api.cri.v1.ContainerStatus;
import io.kuasar.api.cri.v1.DNSConfig;
import io.kuasar.api.cri.v1.Int64Value;
import io.kuasar.api.cri.v1.LinuxContainerSecurityContext;
import io.kuasar.api.cri.v1.MountPropagation;
import io.kuasar.api.cri.v1.NamespaceMode;
import io.kuasar.api.cri.v1.PodSandboxConfig;
import io.kuasar.api.cri.v1.ReopenContainerLogRequest;
import io.kuasar.tests.cri.CriClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.function.UnaryOperator;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * What kubelet relies on, on containerd's stock {@code runc} handler and on {@code kuasar-runc} in the same run (see
 * {@link CriConformanceTest}): OOM reason, log reopening, security context, read-only rootfs, volumes with mount
 * propagation, DNS config, exec exit codes, streaming exec and attach, port-forward, container stats, seccomp.
 */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class CriKubeletConformanceTest {
    private static final long MI = 1L << 20;

    /** Creates and starts a container whose config {@code edit} adjusts. */
    private static String run(CriClient cri, CriClient.Pod pod, String name, CriClient.ContainerOptions o,
                              UnaryOperator<ContainerConfig.Builder> edit, String... cmd) {
        return cri.runContainer(pod, edit.apply(cri.containerConfig(pod, name, o, cmd).toBuilder()).build());
    }

    private static LinuxContainerSecurityContext.Builder security(ContainerConfig.Builder b) {
        return b.getLinuxBuilder().getSecurityContextBuilder();
    }

    @ParameterizedTest
    @ValueSource(strings = {"runc", "kuasar-runc"})
    void anOomKilledContainerReportsOOMKilled(String handler, CriClient cri) {
        CriClient.Pod pod = cri.runPod(cri.podConfig("oom", true, NamespaceMode.CONTAINER), handler);
        String c = cri.runContainer(pod, "hog", CriClient.ContainerOptions.defaults().memoryLimit(32 * MI),
                "sh", "-c", "sleep 1; x=$(head -c 200m /dev/zero | tr '\\0' a); echo ${#x}");
        ContainerStatus s = Cri.awaitState(cri, c, ContainerState.CONTAINER_EXITED, Duration.ofSeconds(60));
        assertThat(s.getExitCode()).isEqualTo(137);
        assertThat(s.getReason()).isEqualTo("OOMKilled");
    }

    @ParameterizedTest
    @ValueSource(strings = {"runc", "kuasar-runc"})
    void logsGoToTheLogFileAndAreReopenedOnRequest(String handler, CriClient cri) throws Exception {
        CriClient.Pod pod = cri.runPod(cri.podConfig("logs", true, NamespaceMode.CONTAINER), handler);
        String c = cri.runContainer(pod, "ticker", "sh", "-c",
                "echo first; while true; do echo tick; sleep 0.2; done");
        Path log = Cri.logFile(pod, "ticker");
        Cri.awaitLog(pod, "ticker", l -> l.contains(" stdout F first") && l.contains("tick"), Duration.ofSeconds(30));
        Path rotated = log.resolveSibling("ticker.log.1");
        Files.move(log, rotated); // what kubelet's log rotation does, then it asks for a reopen
        cri.runtime().reopenContainerLog(ReopenContainerLogRequest.newBuilder().setContainerId(c).build());
        Cri.awaitLog(pod, "ticker", l -> l.contains("tick"), Duration.ofSeconds(30));
        assertThat(Host.read(rotated)).contains("first");
        assertThat(Host.read(log)).doesNotContain("first");
    }

    @ParameterizedTest
    @ValueSource(strings = {"runc", "kuasar-runc"})
    void runAsUserAndCapabilitiesAreApplied(String handler, CriClient cri) {
        CriClient.Pod pod = cri.runPod(cri.podConfig("secctx", true, NamespaceMode.CONTAINER), handler);
        String user = run(cri, pod, "user", CriClient.ContainerOptions.defaults(), b -> {
            security(b).setRunAsUser(Int64Value.newBuilder().setValue(1234));
            return b;
        }, "sleep", "1000");
        assertThat(cri.execSync(user, "id", "-u").stdout().trim()).isEqualTo("1234");
        String caps = run(cri, pod, "caps", CriClient.ContainerOptions.defaults(), b -> {
            security(b).setCapabilities(Capability.newBuilder().addDropCapabilities("ALL")
                    .addAddCapabilities("NET_BIND_SERVICE"));
            return b;
        }, "sleep", "1000");
        assertThat(cri.execSync(caps, "grep", "CapEff", "/proc/self/status").stdout())
                .contains("0000000000000400"); // CAP_NET_BIND_SERVICE (10) only
    }

    @ParameterizedTest
    @ValueSource(strings = {"runc", "kuasar-runc"})
    void privilegedContainersHaveEveryCapability(String handler, CriClient cri) {
        PodSandboxConfig base = cri.podConfig("priv", true, NamespaceMode.CONTAINER);
        PodSandboxConfig cfg = base.toBuilder().setLinux(base.getLinux().toBuilder().setSecurityContext(
                base.getLinux().getSecurityContext().toBuilder().setPrivileged(true))).build();
        CriClient.Pod pod = cri.runPod(cfg, handler);
        String c = run(cri, pod, "priv", CriClient.ContainerOptions.defaults(), b -> {
            security(b).setPrivileged(true);
            return b;
        }, "sleep", "1000");
        String capEff = cri.execSync(c, "grep", "CapEff", "/proc/self/status").stdout().trim();
        String unprivileged = Host.check(Duration.ofSeconds(5), Map.of(), null, "grep", "CapEff",
                "/proc/self/status").trim();
        assertThat(capEff).isEqualTo(unprivileged); // the host's full set (root here)
    }

    @ParameterizedTest
    @ValueSource(strings = {"runc", "kuasar-runc"})
    void aReadOnlyRootfsCannotBeWritten(String handler, CriClient cri) {
        CriClient.Pod pod = cri.runPod(cri.podConfig("rorootfs", true, NamespaceMode.CONTAINER), handler);
        String c = run(cri, pod, "ro", CriClient.ContainerOptions.defaults(), b -> {
            security(b).setReadonlyRootfs(true);
            return b;
        }, "sleep", "1000");
        CriClient.ExecResult w = cri.execSync(c, "touch", "/written");
        assertThat(w.exitCode()).isNotZero();
        assertThat(w.stderr()).contains("Read-only file system");
    }

    /** A hostPath volume with HostToContainer propagation sees what the host mounts below it later. */
    @ParameterizedTest
    @ValueSource(strings = {"runc", "kuasar-runc"})
    void hostToContainerPropagationShowsLaterHostMounts(String handler, CriClient cri, E2eEnvironment env)
            throws Exception {
        Path src = Files.createTempDirectory(env.workdir(), "prop-");
        Path later = Files.createDirectories(src.resolve("later"));
        // rslave needs a shared (or slave) source mount: make the directory a shared mount of its own.
        Host.check(Duration.ofSeconds(5), Map.of(), null, "mount", "--bind", src.toString(), src.toString());
        Host.check(Duration.ofSeconds(5), Map.of(), null, "mount", "--make-rshared", src.toString());
        try {
            CriClient.Pod pod = cri.runPod(cri.podConfig("prop", true, NamespaceMode.CONTAINER), handler);
            String c = run(cri, pod, "vol", CriClient.ContainerOptions.defaults(), b -> b.addMounts(
                    io.kuasar.api.cri.v1.Mount.newBuilder().setHostPath(src.toString()).setContainerPath("/vol")
                            .setPropagation(MountPropagation.PROPAGATION_HOST_TO_CONTAINER)), "sleep", "1000");
            Host.check(Duration.ofSeconds(5), Map.of(), null, "mount", "-t", "tmpfs", "later", later.toString());
            Files.writeString(later.resolve("hello"), "from the host\n");
            assertThat(cri.execSync(c, "cat", "/vol/later/hello").stdout()).isEqualTo("from the host\n");
            // and the volume itself is writable, back to the host
            assertThat(cri.execSync(c, "sh", "-c", "echo back > /vol/back").exitCode()).isZero();
            assertThat(Files.readString(src.resolve("back"))).isEqualTo("back\n");
        } finally {
            Host.run(Duration.ofSeconds(5), Map.of(), null, "umount", "-l", later.toString());
            Host.run(Duration.ofSeconds(5), Map.of(), null, "umount", "-l", src.toString());
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"runc", "kuasar-runc"})
    void thePodsDnsConfigIsItsResolvConf(String handler, CriClient cri) {
        PodSandboxConfig cfg = cri.podConfig("dns", false, NamespaceMode.CONTAINER).toBuilder()
                .setDnsConfig(DNSConfig.newBuilder().addServers("10.96.0.10").addSearches("default.svc.cluster.local")
                        .addSearches("svc.cluster.local").addOptions("ndots:5")).build();
        CriClient.Pod pod = cri.runPod(cfg, handler);
        String c = cri.runContainer(pod, "c", "sleep", "1000");
        String resolv = cri.execSync(c, "cat", "/etc/resolv.conf").stdout();
        assertThat(resolv).contains("nameserver 10.96.0.10")
                .contains("search default.svc.cluster.local svc.cluster.local").contains("options ndots:5");
    }

    @ParameterizedTest
    @ValueSource(strings = {"runc", "kuasar-runc"})
    void execReportsExitCodesAndOutput(String handler, CriClient cri) {
        CriClient.Pod pod = cri.runPod(cri.podConfig("exec", true, NamespaceMode.CONTAINER), handler);
        String c = cri.runContainer(pod, "c", "sleep", "1000");
        CriClient.ExecResult r = cri.execSync(c, "sh", "-c", "echo out; echo err >&2; exit 3");
        assertThat(r.exitCode()).isEqualTo(3);
        assertThat(r.stdout()).isEqualTo("out\n");
        assertThat(r.stderr()).isEqualTo("err\n");
    }

    @ParameterizedTest
    @ValueSource(strings = {"runc", "kuasar-runc"})
    void streamingExecAndAttachReachTheProcesses(String handler, CriClient cri) {
        Duration t = Duration.ofSeconds(20);
        CriClient.Pod pod = cri.runPod(cri.podConfig("stream", true, NamespaceMode.CONTAINER), handler);
        String c = cri.runContainer(pod, "echoer", CriClient.ContainerOptions.defaults().stdin(true), "sh", "-c",
                "echo attach-ready; while read l; do echo \"echo:$l\"; done");
        Cri.awaitLog(pod, "echoer", l -> l.contains("attach-ready"), t);
        try (io.kuasar.tests.cri.StreamClient.Session s = io.kuasar.tests.cri.StreamClient.open(
                cri.execUrl(c, false, true, "sh", "-c", "read x; echo \"got:$x\"; exit 5"), t)) {
            s.sendStdin("hello\n");
            io.kuasar.tests.cri.StreamClient.Result r = s.await(t);
            assertThat(r.stdout()).isEqualTo("got:hello\n");
            assertThat(r.exitCode()).as(r.status()).isEqualTo(5);
        }
        try (io.kuasar.tests.cri.StreamClient.Session s = io.kuasar.tests.cri.StreamClient.open(
                cri.attachUrl(c, false, true), t)) {
            s.sendStdin("ping\n");
            assertThat(s.awaitStdout(out -> out.contains("echo:ping"), t)).as("stdout: %s", s.stdout()).isTrue();
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"runc", "kuasar-runc"})
    void containerStatsReportCpuAndMemory(String handler, CriClient cri) {
        CriClient.Pod pod = cri.runPod(cri.podConfig("stats", true, NamespaceMode.CONTAINER), handler);
        String c = cri.runContainer(pod, "busy", "sh", "-c",
                "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; echo warmed; exec sleep 1000");
        Cri.awaitLog(pod, "busy", l -> l.contains("warmed"), Duration.ofSeconds(30));
        io.kuasar.api.cri.v1.ContainerStats st = cri.containerStats(c);
        assertThat(st.getCpu().getUsageCoreNanoSeconds().getValue()).isGreaterThan(1_000_000L);
        assertThat(st.getMemory().getWorkingSetBytes().getValue()).isPositive();
    }

    /** RuntimeDefault puts the container under containerd's default seccomp filter; Unconfined does not. */
    @ParameterizedTest
    @ValueSource(strings = {"runc", "kuasar-runc"})
    void seccompRuntimeDefaultFiltersAndUnconfinedDoesNot(String handler, CriClient cri) {
        CriClient.Pod pod = cri.runPod(cri.podConfig("seccomp", true, NamespaceMode.CONTAINER), handler);
        String filtered = run(cri, pod, "filtered", CriClient.ContainerOptions.defaults(), b -> {
            security(b).setSeccomp(io.kuasar.api.cri.v1.SecurityProfile.newBuilder()
                    .setProfileType(io.kuasar.api.cri.v1.SecurityProfile.ProfileType.RuntimeDefault));
            return b;
        }, "sleep", "1000");
        String unconfined = run(cri, pod, "unconfined", CriClient.ContainerOptions.defaults(), b -> {
            security(b).setSeccomp(io.kuasar.api.cri.v1.SecurityProfile.newBuilder()
                    .setProfileType(io.kuasar.api.cri.v1.SecurityProfile.ProfileType.Unconfined));
            return b;
        }, "sleep", "1000");
        assertThat(cri.execSync(filtered, "grep", "^Seccomp:", "/proc/1/status").stdout().trim())
                .matches("Seccomp:\\s+2"); // SECCOMP_MODE_FILTER
        assertThat(cri.execSync(unconfined, "grep", "^Seccomp:", "/proc/1/status").stdout().trim())
                .matches("Seccomp:\\s+0");
    }

    /** PortForward reaches a server listening in the pod's network namespace (a CNI pod). */
    @ParameterizedTest
    @ValueSource(strings = {"runc", "kuasar-runc"})
    void portForwardReachesAServerInThePod(String handler, CriClient cri) {
        Duration t = Duration.ofSeconds(20);
        CriClient.Pod pod = cri.runPod(cri.podConfig("portfwd", false, NamespaceMode.CONTAINER), handler);
        String c = cri.runContainer(pod, "echo", "sh", "-c", "echo listening; exec nc -ll -p 8080 -e cat");
        Cri.awaitLog(pod, "echo", l -> l.contains("listening"), t);
        CriClient.ExecResult listening = cri.execSync(c, "sh", "-c",
                "for i in $(seq 100); do netstat -ltn | grep -q ':8080 ' && exit 0; sleep 0.1; done; exit 1");
        assertThat(listening.exitCode()).as("nc listens on 8080: %s", listening).isZero();
        try (io.kuasar.tests.cri.StreamClient.Session s = io.kuasar.tests.cri.StreamClient.open(
                cri.portForwardUrl(pod.id(), 8080), t, java.util.List.of(io.kuasar.tests.cri.StreamClient.V4))) {
            s.sendStdin("hello through the pod\n"); // channel 0: the port's data
            assertThat(s.awaitPortData(d -> d.contains("hello through the pod"), t))
                    .as("port data: %s, error channel: %s", new String(s.portData()), s.stdout()).isTrue();
        }
    }
}
