package io.kuasar.tests.e2e;

import io.grpc.StatusRuntimeException;
import io.kuasar.api.cri.v1.ContainerState;
import io.kuasar.api.cri.v1.ContainerStatus;
import io.kuasar.tests.cri.CriClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

/**
 * Wasm pods on the {@code kuasar-wasm} handler: WASI modules (from WAT and C, built into an OCI image by env.sh) run
 * inside wasm-sandboxer on Chicory, in its Wasmtime helper, or one WasmEdge process each, driven by containerd's CRI.
 */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class WasmPodTest {
    private static final String IMAGE = "docker.io/library/wasm-e2e:kuasar-e2e";
    private static final String ENGINE = "io.kuasar.wasm.engine";

    @Test
    void cModulesBehaveAlikeOnChicoryWasmtimeAndWasmEdge(E2eEnvironment env) throws Exception {
        CriClient cri = env.wasmCri();
        CriClient.Pod pod = cri.runPod("wasmengines", false);
        Path data = Files.createTempDirectory("kuasar-wasm-data");
        try {
            for (String engine : java.util.List.of("chicory", "wasmtime", "wasmedge")) {
                // arguments, environment, stdout and stderr
                String hello = cri.runContainer(pod, "hello-" + engine, opts("hello-" + engine + ".log")
                        .annotation(ENGINE, engine).env("GREETING", "hi"), "/hello-c.wasm", "a", "b c");
                assertThat(awaitExit(cri, hello).getExitCode()).as(engine).isZero();
                assertThat(Files.readString(pod.logDirectory().resolve("hello-" + engine + ".log"))).as(engine)
                        .contains("stdout F hello from C: argc=3 [a] [b c] GREETING=hi")
                        .contains("stderr F to-stderr");

                // file I/O on a bind mount, preopened at its destination; ".." does not leave it
                Path dir = Files.createDirectories(data.resolve(engine));
                Files.writeString(dir.resolve("in.txt"), "one\ntwo\n");
                String io = cri.runContainer(pod, "fileio-" + engine, opts("fileio-" + engine + ".log")
                        .annotation(ENGINE, engine).mount(dir.toString(), "/data", false), "/fileio.wasm");
                assertThat(awaitExit(cri, io).getExitCode()).as(engine + ": " + Files.readString(
                        pod.logDirectory().resolve("fileio-" + engine + ".log"))).isZero();
                assertThat(Files.readString(dir.resolve("out.txt"))).isEqualTo("ONE\nTWO\n");
                assertThat(Files.readString(pod.logDirectory().resolve("fileio-" + engine + ".log")))
                        .contains("fileio: 2 lines, 2 entries, escape blocked");

                // exit(7) from C
                String seven = cri.runContainer(pod, "exit7-" + engine, opts("exit7-" + engine + ".log")
                        .annotation(ENGINE, engine), "/exit7.wasm");
                assertThat(awaitExit(cri, seven).getExitCode()).as(engine).isEqualTo(7);

                // a trap, and a module that never ends, stopped by CRI
                String trap = cri.runContainer(pod, "trap-" + engine, opts("trap-" + engine + ".log")
                        .annotation(ENGINE, engine), "/trap.wasm");
                assertThat(awaitExit(cri, trap).getExitCode()).as(engine).isEqualTo(134);
                assertThat(Files.readString(pod.logDirectory().resolve("trap-" + engine + ".log"))).as(engine)
                        .contains("unreachable");
                String spin = cri.runContainer(pod, "spin-" + engine, opts("spin-" + engine + ".log")
                        .annotation(ENGINE, engine), "/spin.wasm");
                Thread.sleep(1000);
                assertThat(cri.containerStatus(spin).getState()).as(engine).isEqualTo(ContainerState.CONTAINER_RUNNING);
                cri.stopContainer(spin, 0);
                assertThat(cri.containerStatus(spin).getExitCode()).as(engine).isEqualTo(137);
            }
            StatusRuntimeException unknown = catchThrowableOfType(StatusRuntimeException.class,
                    () -> cri.runContainer(pod, "nope", opts("nope.log").annotation(ENGINE, "nope")));
            assertThat(unknown).isNotNull();
            assertThat(unknown.getMessage()).contains("unknown wasm engine 'nope'");
            cri.stopAndRemovePod(pod.id());
            assertThat(Host.pidsWithCmdline(env.wasmStateDir().resolve("cache").resolve("wasmedge").toString())).as("WasmEdge processes left")
                    .isEmpty();
        } finally {
            try (var files = Files.walk(data)) {
                files.sorted(java.util.Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
            }
        }
    }

    @Test
    void modulesRunWithTheirOutputExitCodesTrapsAndKillAndLeaveNoThreadBehind(E2eEnvironment env) throws Exception {
        CriClient cri = env.wasmCri();
        CriClient.Pod pod = cri.runPod("wasmpod", false);
        long pid = env.wasmSandboxerPid();
        int threadsBefore = threads(pid).size();
        int fdsBefore = Host.fdCount(pid);

        // hello: its stdout reaches CRI's log, and main's return is exit 0
        String hello = cri.runContainer(pod, "hello", opts("hello.log"));
        ContainerStatus st = awaitExit(cri, hello);
        assertThat(st.getExitCode()).isZero();
        assertThat(Files.readString(pod.logDirectory().resolve("hello.log"))).contains("hello from wasm");

        // arguments reach the module (it exits with argc - 1)
        String seven = cri.runContainer(pod, "seven", opts("seven.log"), "/hello.wasm", "a", "b", "c", "d", "e", "f",
                "g");
        assertThat(awaitExit(cri, seven).getExitCode()).isEqualTo(7);

        // a trap: non-zero, its message in the log
        String trap = cri.runContainer(pod, "trap", opts("trap.log"), "/trap.wasm");
        assertThat(awaitExit(cri, trap).getExitCode()).isEqualTo(134);
        assertThat(Files.readString(pod.logDirectory().resolve("trap.log"))).contains("wasm trap");

        // a module that never ends: it runs, Exec is refused, and StopContainer ends it at once
        String spin = cri.runContainer(pod, "spin", opts("spin.log"), "/spin.wasm");
        Thread.sleep(500);
        assertThat(cri.containerStatus(spin).getState()).isEqualTo(ContainerState.CONTAINER_RUNNING);
        StatusRuntimeException exec = catchThrowableOfType(StatusRuntimeException.class,
                () -> cri.execSync(spin, "/spin.wasm"));
        assertThat(exec).isNotNull();
        assertThat(exec.getMessage()).contains("not supported for wasm containers");
        long t0 = System.nanoTime();
        cri.stopContainer(spin, 0);
        E2eEnvironment.log("StopContainer of a spinning module took " + (System.nanoTime() - t0) / 1_000_000 + " ms");
        assertThat(cri.containerStatus(spin).getState()).isEqualTo(ContainerState.CONTAINER_EXITED);
        assertThat(cri.containerStatus(spin).getExitCode()).isEqualTo(137);

        // a missing module fails the container's start (CRI creates the task there) with a message naming it
        String nomodule = cri.createContainer(pod, "nomodule", opts("x.log"), "/nope.wasm");
        StatusRuntimeException missing = catchThrowableOfType(StatusRuntimeException.class,
                () -> cri.startContainer(nomodule));
        assertThat(missing).isNotNull();
        assertThat(missing.getMessage()).contains("no module at /nope.wasm");

        cri.stopAndRemovePod(pod.id());
        assertThat(env.wasmSandboxerAlive()).isTrue();
        assertThat(Host.mountsMentioning(pod.id())).isEmpty();
        assertNothingLeft(pid, threadsBefore, fdsBefore);
    }

    @Test
    void aRestartedDaemonReportsTheModulesThatRanInTheOldOneExitedAndLeavesNothingOfThem(E2eEnvironment env)
            throws Exception {
        CriClient cri = env.wasmCri();
        CriClient.Pod pod = cri.runPod("wasmrestart", false);
        java.util.Map<String, String> spinning = new java.util.LinkedHashMap<>();
        for (String engine : java.util.List.of("chicory", "wasmtime", "wasmedge")) {
            spinning.put(engine, cri.runContainer(pod, "spin-" + engine, opts("spin-" + engine + ".log")
                    .annotation(ENGINE, engine), "/spin.wasm"));
        }
        Thread.sleep(1000);
        for (String id : spinning.values()) {
            assertThat(cri.containerStatus(id).getState()).isEqualTo(ContainerState.CONTAINER_RUNNING);
        }
        assertThat(Host.pidsWithCmdline(env.wasmStateDir().resolve("cache").resolve("wasmedge").toString()))
                .as("the WasmEdge process").hasSize(1);

        env.killAndRestartWasmSandboxer();
        Cri.awaitControllerReachable(cri, pod.id());

        for (var e : spinning.entrySet()) {
            ContainerStatus st = awaitExit(cri, e.getValue());
            assertThat(st.getExitCode()).as(e.getKey()).isEqualTo(255);
        }
        assertThat(Host.pidsWithCmdline(env.wasmStateDir().resolve("cache").resolve("wasmedge").toString()))
                .as("the WasmEdge process of the old daemon").isEmpty();
        long end = System.nanoTime() + Duration.ofSeconds(10).toNanos();
        while (!Host.pidsWithCmdline("io.kuasar.wasm.wasmtime.WasmtimeHost").isEmpty() && System.nanoTime() < end) {
            Thread.sleep(100);
        }
        assertThat(Host.pidsWithCmdline("io.kuasar.wasm.wasmtime.WasmtimeHost")).as("the old Wasmtime helper")
                .isEmpty();
        // the pod is still ready and takes new containers
        assertThat(cri.podStatus(pod.id(), false).getStatus().getState())
                .isEqualTo(io.kuasar.api.cri.v1.PodSandboxState.SANDBOX_READY);
        String hello = cri.runContainer(pod, "hello-after", opts("hello-after.log"));
        assertThat(awaitExit(cri, hello).getExitCode()).isZero();
        cri.stopAndRemovePod(pod.id());
        assertThat(Host.mountsMentioning(pod.id())).isEmpty();
    }

    @Test
    void fiftyContainersInAPodAndModulesThatAbuseMemoryOrOutputLeaveTheDaemonWell(E2eEnvironment env)
            throws Exception {
        CriClient cri = env.wasmCri();
        CriClient.Pod pod = cri.runPod("wasmmany", false);
        long pid = env.wasmSandboxerPid();
        int threadsBefore = threads(pid).size();
        int fdsBefore = Host.fdCount(pid);

        long t0 = System.nanoTime();
        java.util.List<String> ids = new java.util.ArrayList<>();
        for (int i = 0; i < 50; i++) {
            ids.add(cri.runContainer(pod, "c" + i, opts("c" + i + ".log")));
        }
        for (String id : ids) {
            assertThat(awaitExit(cri, id).getExitCode()).isZero();
        }
        E2eEnvironment.log("50 wasm containers created, started and exited in "
                + (System.nanoTime() - t0) / 1_000_000 + " ms");

        // A memory bomb is OOM-killed at the container's limit (and at the daemon's default cap without one):
        // containerd got the OOM event, so CRI says OOMKilled, as for a runc container over its cgroup limit.
        String capped = cri.runContainer(pod, "bomb", opts("bomb.log").memoryLimit(8L << 20), "/bomb.wasm");
        ContainerStatus bomb = awaitExit(cri, capped);
        assertThat(bomb.getExitCode()).isEqualTo(137);
        assertThat(bomb.getReason()).isEqualTo("OOMKilled");
        assertThat(Files.readString(pod.logDirectory().resolve("bomb.log")))
                .contains("exceeds the container's memory limit of 8388608 bytes");
        String uncapped = cri.runContainer(pod, "bomb2", opts("bomb2.log"), "/bomb.wasm");
        assertThat(awaitExit(cri, uncapped).getExitCode()).isEqualTo(137);
        // a module whose own maximum is below the limit sees memory.grow fail, as WebAssembly defines
        String own = cri.runContainer(pod, "bomb3", opts("bomb3.log").memoryLimit(8L << 20), "/bomb-max.wasm");
        assertThat(awaitExit(cri, own).getExitCode()).isEqualTo(3);

        // 16 MiB of output goes through to the log without the daemon holding it.
        String flood = cri.runContainer(pod, "flood", opts("flood.log"), "/flood.wasm");
        assertThat(awaitExit(cri, flood).getExitCode()).isZero();
        assertThat(Files.size(pod.logDirectory().resolve("flood.log"))).isGreaterThan(16L << 20);

        cri.stopAndRemovePod(pod.id());
        assertThat(env.wasmSandboxerAlive()).isTrue();
        assertNothingLeft(pid, threadsBefore, fdsBefore);
    }

    /**
     * Each instance ran on a thread of its own ("wasm-<id>"): none may outlive its container. The JVM itself may have
     * started a worker or compiler thread meanwhile, hence the small allowance on the totals.
     */
    private static void assertNothingLeft(long pid, int threadsBefore, int fdsBefore) throws Exception {
        long end = System.nanoTime() + Duration.ofSeconds(10).toNanos();
        while (threads(pid).stream().anyMatch(t -> t.startsWith("wasm-")) && System.nanoTime() < end) {
            Thread.sleep(100);
        }
        assertThat(threads(pid)).as("instance threads left").noneMatch(t -> t.startsWith("wasm-"));
        assertThat(threads(pid).size()).as("the daemon's threads").isLessThanOrEqualTo(threadsBefore + 3);
        assertThat(Host.fdCount(pid)).as("the daemon's fds").isLessThanOrEqualTo(fdsBefore + 2);
    }

    private static CriClient.ContainerOptions opts(String log) {
        return CriClient.ContainerOptions.defaults().image(IMAGE).logPath(log);
    }

    /** The names of a process's threads. */
    private static java.util.List<String> threads(long pid) throws Exception {
        try (var s = Files.list(Path.of("/proc/" + pid + "/task"))) {
            return s.map(t -> Host.read(t.resolve("comm")).strip()).toList();
        }
    }

    private static ContainerStatus awaitExit(CriClient cri, String id) {
        return Cri.awaitState(cri, id, ContainerState.CONTAINER_EXITED, Duration.ofSeconds(30));
    }
}
