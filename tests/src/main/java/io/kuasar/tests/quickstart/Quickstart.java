package io.kuasar.tests.quickstart;

import io.kuasar.api.cri.v1.ContainerState;
import io.kuasar.api.cri.v1.ContainerStatus;
import io.kuasar.tests.cri.CriClient;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;

/**
 * The example's last step: through containerd's CRI, run one pod on a runtime handler ({@code kuasar-runc} unless
 * named) whose busybox container prints a greeting, show the greeting from the container log, and remove the pod.
 * Usage: {@code Quickstart <containerd.sock> <log-dir> [handler]}.
 */
public final class Quickstart {
    private Quickstart() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 2 && args.length != 3) {
            System.err.println("usage: Quickstart <containerd-socket> <log-dir> [runtime-handler]");
            System.exit(2);
        }
        String handler = args.length == 3 ? args[2] : "kuasar-runc";
        // A microVM pod boots a VM: seconds under TCG.
        try (CriClient cri = new CriClient(Path.of(args[0]), handler, Path.of(args[1]), Duration.ofSeconds(120))) {
            System.out.println("    containerd " + cri.version().getRuntimeVersion() + " (CRI "
                    + cri.version().getRuntimeApiVersion() + ")");
            CriClient.Pod pod = cri.runPod("hello", false);
            String ip = cri.podStatus(pod.id(), false).getStatus().getNetwork().getIp();
            System.out.println("    pod " + pod.id().substring(0, 12) + " is ready on " + handler + ", IP " + ip);
            // A Wasm pod's container is a WASI module (the image's entrypoint): the e2e image's hello.wasm.
            String c = handler.equals("kuasar-wasm")
                    ? cri.runContainer(pod, "greeter", CriClient.ContainerOptions.defaults()
                            .image("docker.io/library/wasm-e2e:kuasar-e2e"))
                    : cri.runContainer(pod, "greeter", "/bin/sh", "-c",
                    "echo \"Hello from a Kuasar pod! I am $(hostname), pid $$ in my own PID namespace, on kernel "
                            + "$(uname -r).\"");
            ContainerStatus st = waitForExit(cri, c);
            Path log = Path.of(st.getLogPath());
            System.out.println("    container " + c.substring(0, 12) + " exited with code " + st.getExitCode()
                    + "; its log says:");
            for (String line : Files.readAllLines(log)) {
                // CRI log lines: <time> <stream> <tag> <text>
                String[] parts = line.split(" ", 4);
                System.out.println("      | " + (parts.length == 4 ? parts[3] : line));
            }
            cri.removeContainer(c);
            cri.stopAndRemovePod(pod.id());
            System.out.println("    pod removed");
            if (st.getExitCode() != 0) {
                System.exit(1);
            }
        }
    }

    private static ContainerStatus waitForExit(CriClient cri, String id) throws InterruptedException {
        Instant until = Instant.now().plus(Duration.ofSeconds(60));
        while (Instant.now().isBefore(until)) {
            ContainerStatus st = cri.containerStatus(id);
            if (st.getState() == ContainerState.CONTAINER_EXITED) {
                return st;
            }
            Thread.sleep(100);
        }
        throw new IllegalStateException("container " + id + " did not exit within 60s");
    }
}
