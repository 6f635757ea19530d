package io.kuasar.tests.e2e;

import io.kuasar.api.cri.v1.ContainerState;
import io.kuasar.api.cri.v1.PodSandboxState;
import io.kuasar.tests.cri.CriClient;
import io.kuasar.tests.cri.StreamClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * App-kernel pods on the {@code kuasar-quark} handler with quark-sandboxer's gVisor backend: real runsc (trixie's,
 * systrap platform, gVisor's own network stack), one gVisor sandbox per pod, driven by containerd's CRI.
 */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class QuarkPodTest {
    private static final Duration STREAM = Duration.ofSeconds(30);

    @Test
    void aPodIsAGvisorSandboxWithExecLogsNetworkAndSharedNamespacesAndLeavesNothingBehind(E2eEnvironment env)
            throws Exception {
        CriClient cri = env.quarkCri();
        long t0 = System.nanoTime();
        CriClient.Pod pod = cri.runPod("gvpod", false);
        E2eEnvironment.log("kuasar-quark (gVisor) RunPodSandbox took " + (System.nanoTime() - t0) / 1_000_000 + " ms");
        String c1 = cri.runContainer(pod, "web", CriClient.ContainerOptions.defaults().logPath("web.log"), "sh", "-c",
                "dmesg | head -n 3; mkdir -p /www; echo hello-from-gvisor > /www/index.html; "
                        + "exec httpd -f -p 8080 -h /www");

        // The container runs on gVisor's kernel: its dmesg is the sentry's, in the container's log.
        Path log = pod.logDirectory().resolve("web.log");
        Cri.awaitFileContains(log, "Starting gVisor", Duration.ofSeconds(30));

        // Exec: both streams and the real exit code.
        CriClient.ExecResult r = cri.execSync(c1, "sh", "-c", "echo out; echo err >&2; exit 7");
        assertThat(r.exitCode()).isEqualTo(7);
        assertThat(r.stdout()).isEqualTo("out\n");
        assertThat(r.stderr()).isEqualTo("err\n");

        // Network: the pod IP answers from the host, served by the container through gVisor's network stack.
        String ip = cri.podStatus(pod.id(), false).getStatus().getNetwork().getIp();
        assertThat(ip).startsWith(env.subnet().substring(0, env.subnet().lastIndexOf('.')));
        assertThat(Cri.httpGet("http://" + ip + ":8080/", Duration.ofSeconds(30))).isEqualTo("hello-from-gvisor\n");

        // A second container joins the same sandbox: same IPC, UTS and network namespaces, the pod's hostname, and
        // the first one's server on 127.0.0.1.
        String c2 = cri.runContainer(pod, "side", "sleep", "1000");
        String ns1 = cri.execSync(c1, "sh", "-c", "readlink /proc/self/ns/ipc /proc/self/ns/uts /proc/self/ns/net; "
                + "hostname").stdout();
        String ns2 = cri.execSync(c2, "sh", "-c", "readlink /proc/self/ns/ipc /proc/self/ns/uts /proc/self/ns/net; "
                + "hostname").stdout();
        assertThat(ns2).isEqualTo(ns1).contains("gvpod");
        CriClient.ExecResult local = cri.execSync(c2, "wget", "-qO-", "http://127.0.0.1:8080/");
        assertThat(local.stdout()).isEqualTo("hello-from-gvisor\n");

        // Exec with a terminal, resized from the client. (gVisor's `tty` answers "not a tty" for its ptys, a quirk of
        // its ttyname: test -t asks the kernel instead.)
        try (StreamClient.Session s = StreamClient.open(cri.execUrl(c2, true, true, "sh"), STREAM)) {
            s.resize(100, 30);
            s.sendStdin("i=0; while [ \"$(stty size 2>&1)\" != '30 100' ] && [ $i -lt 100 ]; do i=$((i+1)); "
                    + "sleep 0.1; done; test -t 0 && echo on-a-terminal; stty size; exit 4\n");
            StreamClient.Result tty = s.await(STREAM);
            assertThat(tty.stdout()).contains("\non-a-terminal").contains("\n30 100");
            assertThat(tty.exitCode()).as(tty.status()).isEqualTo(4);
        }

        // Stats from gVisor's accounting; a container that exits reports its real code.
        var stats = cri.containerStats(c1);
        assertThat(stats.getMemory().getWorkingSetBytes().getValue()).isPositive();
        String quitter = cri.runContainer(pod, "quitter", "sh", "-c", "exit 3");
        assertThat(Cri.awaitState(cri, quitter, ContainerState.CONTAINER_EXITED, Duration.ofSeconds(30)).getExitCode()).isEqualTo(3);

        // Stop and remove: no runsc process, mount, cgroup or file of the pod is left.
        Path sandboxDir = env.quarkStateDir().resolve("sandboxes").resolve(pod.id());
        assertThat(Host.pidsWithCmdline(pod.id())).as("gVisor processes of the pod while it runs").isNotEmpty();
        cri.stopAndRemovePod(pod.id());
        assertThat(Host.pidsWithCmdline(pod.id())).as("gVisor processes of the pod").isEmpty();
        assertThat(Host.mountsMentioning(pod.id())).isEmpty();
        assertThat(sandboxDir).doesNotExist();
        try (var hierarchies = Files.list(Path.of("/sys/fs/cgroup"))) {
            assertThat(hierarchies.map(h -> h.resolve("kuasar-quark").resolve(pod.id())).filter(Files::exists)
                    .toList()).as("cgroups of the pod").isEmpty();
        }
        assertThat(env.quarkSandboxerAlive()).isTrue();
    }

    /** Pause and Resume are Task API calls CRI never makes: sent here as containerd's task client would. */
    @Test
    void aContainerIsPausedAndResumedThroughTheTaskApi(E2eEnvironment env) throws Exception {
        CriClient cri = env.quarkCri();
        CriClient.Pod pod = cri.runPod("gvpause", false);
        String c = cri.runContainer(pod, "ticker", CriClient.ContainerOptions.defaults().logPath("ticker.log"), "sh",
                "-c", "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.1; done");
        Path log = pod.logDirectory().resolve("ticker.log");
        Cri.awaitFileContains(log, "tick-3", Duration.ofSeconds(20));
        var loop = new io.netty.channel.MultiThreadIoEventLoopGroup(1, io.netty.channel.epoll.EpollIoHandler.newFactory());
        io.grpc.ManagedChannel ch = io.grpc.netty.NettyChannelBuilder.forAddress(new io.netty.channel.unix
                        .DomainSocketAddress(env.workdir().resolve("quark.sock").toString()))
                .channelType(io.netty.channel.epoll.EpollDomainSocketChannel.class).eventLoopGroup(loop)
                .usePlaintext().build();
        try (var task = io.kuasar.sandbox.ttrpc.TtrpcClient.connect(io.kuasar.api.sandbox.v1.ControllerGrpc
                .newBlockingStub(ch).withDeadlineAfter(30, java.util.concurrent.TimeUnit.SECONDS)
                .status(io.kuasar.api.sandbox.v1.ControllerStatusRequest.newBuilder().setSandboxId(pod.id()).build())
                .getAddress())) {
            Duration t = Duration.ofSeconds(30);
            task.call("containerd.task.v3.Task", "Pause", io.kuasar.api.task.v3.PauseRequest.newBuilder().setId(c)
                    .build(), com.google.protobuf.Empty.parser(), t);
            assertThat(runscState(env, c)).isEqualTo("paused");
            Thread.sleep(300); // nothing runs while paused: the log stops growing
            long paused = Files.size(log);
            Thread.sleep(1000);
            assertThat(Files.size(log)).as("log while paused").isEqualTo(paused);
            task.call("containerd.task.v3.Task", "Resume", io.kuasar.api.task.v3.ResumeRequest.newBuilder().setId(c)
                    .build(), com.google.protobuf.Empty.parser(), t);
            assertThat(runscState(env, c)).isEqualTo("running");
            long end = System.nanoTime() + Duration.ofSeconds(10).toNanos();
            while (Files.size(log) == paused && System.nanoTime() < end) {
                Thread.sleep(100);
            }
            assertThat(Files.size(log)).as("log after resume").isGreaterThan(paused);
        } finally {
            ch.shutdownNow();
            loop.shutdownGracefully(0, 1, java.util.concurrent.TimeUnit.SECONDS);
        }
        cri.stopAndRemovePod(pod.id());
    }

    /** Attach through containerd's streaming server: stdin and stdout are the FIFOs the sandbox holds. */
    @Test
    void attachReachesAGvisorContainersStdioAndStdinOnceEndsIt(E2eEnvironment env) throws Exception {
        CriClient cri = env.quarkCri();
        CriClient.Pod pod = cri.runPod("gvattach", false);
        String script = "echo attach-ready; while read l; do echo \"echo:$l\"; done; echo stdin-closed";
        String c = cri.runContainer(pod, "echoer", CriClient.ContainerOptions.defaults().stdin(true)
                .stdinOnce(true).logPath("echoer.log"), "sh", "-c", script);
        Cri.awaitFileContains(pod.logDirectory().resolve("echoer.log"), "attach-ready", Duration.ofSeconds(20));
        try (StreamClient.Session s = StreamClient.open(cri.attachUrl(c, false, true), STREAM)) {
            s.sendStdin("ping\n");
            assertThat(s.awaitStdout(out -> out.contains("echo:ping"), STREAM)).as("stdout: %s", s.stdout()).isTrue();
        }
        // stdin_once: the end of the attach closes the container's stdin; read sees EOF and the shell exits 0
        assertThat(Cri.awaitState(cri, c, ContainerState.CONTAINER_EXITED, STREAM).getExitCode()).isZero();
        Cri.awaitFileContains(pod.logDirectory().resolve("echoer.log"), "stdin-closed", Duration.ofSeconds(10));
        cri.stopAndRemovePod(pod.id());
    }

    private static String runscState(E2eEnvironment env, String id) throws Exception {
        String out = Host.check(Duration.ofSeconds(20), java.util.Map.of("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), null,
                "/var/lib/kuasar/runsc/runsc", "--root", env.quarkStateDir().resolve("runsc").toString(), "state", id);
        return new com.fasterxml.jackson.databind.ObjectMapper().readTree(out).path("status").asText();
    }

    @Test
    void anAppKernelKilledUnderARunningPodMakesItNotReadyAndItCanStillBeRemoved(E2eEnvironment env)
            throws Exception {
        CriClient cri = env.quarkCri();
        CriClient.Pod pod = cri.runPod("gvkill", false);
        String c = cri.runContainer(pod, "c", "sleep", "1000");
        List<Long> sentry = Host.pidsWithCmdline("runsc-sandbox").stream()
                .filter(p -> Host.read(Path.of("/proc/" + p + "/cmdline")).contains(pod.id())).toList();
        assertThat(sentry).hasSize(1);
        ProcessHandle.of(sentry.getFirst()).orElseThrow().destroyForcibly();

        long end = System.nanoTime() + Duration.ofSeconds(30).toNanos();
        while (cri.podStatus(pod.id(), false).getStatus().getState() != PodSandboxState.SANDBOX_NOTREADY
                || cri.containerStatus(c).getState() != ContainerState.CONTAINER_EXITED) {
            assertThat(System.nanoTime()).as("pod NOTREADY and container EXITED within 30 s").isLessThan(end);
            Thread.sleep(200);
        }
        assertThat(cri.containerStatus(c).getExitCode()).isEqualTo(137);
        cri.stopAndRemovePod(pod.id());
        assertThat(Host.pidsWithCmdline(pod.id())).as("gVisor processes of the pod").isEmpty();
        assertThat(Host.mountsMentioning(pod.id())).isEmpty();
        assertThat(env.quarkSandboxerAlive()).isTrue();
    }

    @Test
    void podsSurviveAKillOfTheDaemonAndAreManagedByTheNextOne(E2eEnvironment env) throws Exception {
        CriClient cri = env.quarkCri();
        CriClient.Pod pod = cri.runPod("gvrestart", false);
        String talker = cri.runContainer(pod, "talker", CriClient.ContainerOptions.defaults().logPath("talker.log"),
                "sh", "-c", "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.2; done");
        String quitter = cri.runContainer(pod, "quitter", "sh", "-c", "sleep 4; exit 5");
        Path log = pod.logDirectory().resolve("talker.log");
        Cri.awaitFileContains(log, "tick-3", Duration.ofSeconds(20));

        env.killAndRestartQuarkSandboxer();
        Cri.awaitControllerReachable(cri, pod.id());

        assertThat(cri.podStatus(pod.id(), false).getStatus().getState()).isEqualTo(PodSandboxState.SANDBOX_READY);
        assertThat(cri.containerStatus(talker).getState()).isEqualTo(ContainerState.CONTAINER_RUNNING);
        // its output kept flowing (the sandbox holds containerd's FIFOs), exec works, a real exit code arrives
        int ticks = (int) Files.readString(log).lines().filter(l -> l.contains("tick-")).count();
        Cri.awaitFileContains(log, "tick-" + (ticks + 5), Duration.ofSeconds(20));
        CriClient.ExecResult r = cri.execSync(talker, "sh", "-c", "echo after-restart; exit 3");
        assertThat(r.stdout()).isEqualTo("after-restart\n");
        assertThat(r.exitCode()).isEqualTo(3);
        assertThat(Cri.awaitState(cri, quitter, ContainerState.CONTAINER_EXITED, Duration.ofSeconds(30)).getExitCode()).isEqualTo(5);

        cri.stopAndRemovePod(pod.id());
        assertThat(Host.pidsWithCmdline(pod.id())).as("gVisor processes of the pod").isEmpty();
        assertThat(Host.mountsMentioning(pod.id())).isEmpty();
    }
}
