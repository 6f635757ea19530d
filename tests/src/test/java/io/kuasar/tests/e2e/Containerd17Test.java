package io.kuasar.tests.e2e;

import io.kuasar.api.cri.v1.ContainerState;
import io.kuasar.api.cri.v1.PodSandboxState;
import io.kuasar.tests.cri.CriClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.stream.Stream;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * Stock containerd 1.7.24 (Debian trixie's) driving each sandboxer through CRI with {@code sandbox_mode = "shim"}:
 * containerd runs {@code containerd-shim-kuasar-<kind>-v2 start}, a launcher that answers with the daemon's shim
 * endpoint, and drives the pod through the shim Sandbox API and its containers through the Task API, both served by
 * the one daemon. Pod, container, exec, logs, a kill -9 of the daemon (runc, microVM), a restart of containerd, stop,
 * remove, and nothing left.
 */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class Containerd17Test {
    private static final String BUSYBOX = "docker.io/library/busybox:kuasar-e2e";
    private static final String WASM = "docker.io/library/wasm-e2e:kuasar-e2e";

    @ParameterizedTest(name = "kuasar-{0}")
    @ValueSource(strings = {"runc", "wasm", "quark", "vmm"})
    void podLifecycleThroughTheShimLauncher(String kind, E2eEnvironment env) throws Exception {
        CriClient cri = env.ctrd17Cri(kind);
        CriClient.Pod pod = cri.runPod("c17-" + kind, false);
        Path bundle = env.ctrd17Dir().resolve("state/io.containerd.runtime.v2.task/k8s.io").resolve(pod.id());
        Path criFiles = env.ctrd17Dir().resolve("root/io.containerd.grpc.v1.cri/sandboxes").resolve(pod.id());
        Path daemonState = env.ctrd17StateDir(kind).resolve("sandboxes").resolve(pod.id());
        try {
            assertThat(cri.podStatus(pod.id(), false).getStatus().getState()).isEqualTo(PodSandboxState.SANDBOX_READY);
            // The launcher pointed containerd at the daemon's task socket and is gone: no process per pod.
            String address = Files.readString(bundle.resolve("address"));
            assertThat(address).startsWith("unix://").doesNotEndWith("\n");
            assertThat(Path.of(address.substring("unix://".length())))
                    .isEqualTo(env.ctrd17Socket(kind).resolveSibling(env.ctrd17Socket(kind).getFileName() + ".ttrpc")
                            .toRealPath());
            assertThat(Host.pidsWithCmdline("containerd-shim-kuasar-" + kind + "-v2")).isEmpty();
            assertThat(daemonState).isDirectory();
            // The pod files containerd 1.7's CRI mounts but leaves to the shim.
            assertThat(criFiles.resolve("hosts")).isRegularFile();
            assertThat(criFiles.resolve("resolv.conf")).isRegularFile();
            assertThat(Files.readString(criFiles.resolve("hostname"))).isEqualTo("c17-" + kind + "\n");

            boolean wasm = kind.equals("wasm");
            String name = "ticker";
            String id = wasm
                    ? cri.runContainer(pod, name, CriClient.ContainerOptions.defaults().image(WASM), "/spin.wasm")
                    : cri.runContainer(pod, name, CriClient.ContainerOptions.defaults().image(BUSYBOX), "sh", "-c",
                    "echo started; cat /etc/hostname; i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done");
            Cri.awaitState(cri, id, ContainerState.CONTAINER_RUNNING, Duration.ofSeconds(60));
            Path log = Cri.logFile(pod, name);
            if (wasm) {
                String hello = cri.runContainer(pod, "hello", CriClient.ContainerOptions.defaults().image(WASM),
                        "/hello-c.wasm", "x");
                assertThat(Cri.awaitState(cri, hello, ContainerState.CONTAINER_EXITED, Duration.ofSeconds(60))
                        .getExitCode()).isZero();
                assertThat(Files.readString(Cri.logFile(pod, "hello"))).contains("hello from C: argc=2 [x]");
            } else {
                await().atMost(Duration.ofSeconds(30)).until(() -> Files.exists(log)
                        && Files.readString(log).contains("tick 1"));
                assertThat(Files.readString(log)).contains("stdout F started").contains("stdout F c17-" + kind);
                CriClient.ExecResult r = cri.execSync(id, 60, "sh", "-c", "echo exec-out; echo exec-err >&2; exit 3");
                assertThat(r.exitCode()).isEqualTo(3);
                assertThat(r.stdout()).isEqualTo("exec-out\n");
                assertThat(r.stderr()).isEqualTo("exec-err\n");
            }

            if (kind.equals("runc") || kind.equals("vmm")) {
                // The daemon is killed and comes back: containerd's connections wait in the task proxy, the pod's
                // WaitSandbox is replayed to the new daemon (had it failed, CRI would list the pod NOTREADY).
                env.killAndRestartCtrd17Sandboxer(kind);
                CriClient.ExecResult r = cri.execSync(id, 60, "sh", "-c", "echo after-restart");
                assertThat(r.exitCode()).isZero();
                assertThat(r.stdout()).isEqualTo("after-restart\n");
                int ticks = ticks(log);
                await().atMost(Duration.ofSeconds(30)).until(() -> ticks(log) > ticks + 2);
                assertThat(cri.listPods()).filteredOn(p -> p.getId().equals(pod.id())).singleElement()
                        .satisfies(p -> assertThat(p.getState()).isEqualTo(PodSandboxState.SANDBOX_READY));
            }

            // containerd restarts: it reloads the pod from the address file and finds everything as it was
            env.restartCtrd17();
            assertThat(cri.podStatus(pod.id(), false).getStatus().getState()).isEqualTo(PodSandboxState.SANDBOX_READY);
            assertThat(cri.containerStatus(id).getState()).isEqualTo(ContainerState.CONTAINER_RUNNING);
            if (!wasm) {
                int ticks = ticks(log);
                await().atMost(Duration.ofSeconds(30)).until(() -> ticks(log) > ticks + 2);
                CriClient.ExecResult r = cri.execSync(id, 60, "cat", "/etc/hostname");
                assertThat(r.exitCode()).isZero();
                assertThat(r.stdout()).isEqualTo("c17-" + kind + "\n");
                // a container made after the restart (CRI removed the pod files then) still gets them
                String late = cri.runContainer(pod, "late", CriClient.ContainerOptions.defaults().image(BUSYBOX),
                        "sh", "-c", "cat /etc/hosts /etc/hostname; exit 6");
                assertThat(Cri.awaitState(cri, late, ContainerState.CONTAINER_EXITED, Duration.ofSeconds(60))
                        .getExitCode()).isEqualTo(6);
                assertThat(Files.readString(Cri.logFile(pod, "late"))).contains("localhost")
                        .contains("stdout F c17-" + kind);
            }

            cri.stopContainer(id, 2);
            assertThat(cri.containerStatus(id).getState()).isEqualTo(ContainerState.CONTAINER_EXITED);
            cri.removeContainer(id);
            cri.stopPod(pod.id());
            await().atMost(Duration.ofSeconds(30)).until(() -> cri.podStatus(pod.id(), false).getStatus().getState()
                    == PodSandboxState.SANDBOX_NOTREADY);
            cri.removePod(pod.id());

            // nothing left: the daemon's sandbox, containerd's bundle, CRI's pod files and shm, mounts, processes
            assertThat(daemonState).doesNotExist();
            assertThat(bundle).doesNotExist();
            assertThat(criFiles).doesNotExist();
            assertThat(env.ctrd17Dir().resolve("state/io.containerd.grpc.v1.cri/sandboxes").resolve(pod.id()))
                    .doesNotExist();
            assertThat(Host.mountsMentioning(pod.id())).isEmpty();
            assertThat(Host.pidsWithCmdline(pod.id())).isEmpty();
            assertThat(cri.listPods()).noneMatch(p -> p.getId().equals(pod.id()));
        } finally {
            if (cri.listPods().stream().anyMatch(p -> p.getId().equals(pod.id()))) {
                cri.stopAndRemovePod(pod.id());
            }
        }
    }

    private static int ticks(Path log) throws java.io.IOException {
        try (Stream<String> lines = Files.lines(log)) {
            return (int) lines.filter(l -> l.contains(" tick ")).count();
        }
    }
}
