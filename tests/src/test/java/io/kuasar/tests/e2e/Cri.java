package io.kuasar.tests.e2e;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.kuasar.api.cri.v1.ContainerState;
import io.kuasar.api.cri.v1.ContainerStatus;
import io.kuasar.tests.cri.CriClient;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.function.Predicate;

/** Waiting on CRI state and reading what CRI writes, shared by the e2e tests. */
final class Cri {
    private static final ObjectMapper JSON = new ObjectMapper();

    private Cri() {
    }

    /** Polls ContainerStatus until {@code state}; fails with the last status seen. */
    static ContainerStatus awaitState(CriClient cri, String id, ContainerState state, Duration timeout) {
        long end = System.nanoTime() + timeout.toNanos();
        ContainerStatus s = cri.containerStatus(id);
        while (s.getState() != state) {
            if (System.nanoTime() > end) {
                throw new AssertionError("container " + id + " not " + state + " within " + timeout + "; last status:\n"
                        + s);
            }
            sleep(50);
            s = cri.containerStatus(id);
        }
        return s;
    }

    /** The CRI log file of a container (its log_path below the pod's log_directory). */
    static Path logFile(CriClient.Pod pod, String containerName) {
        return pod.logDirectory().resolve(containerName + ".log");
    }

    /** Polls a container's CRI log until {@code condition} holds; returns the log. */
    static String awaitLog(CriClient.Pod pod, String containerName, Predicate<String> condition, Duration timeout) {
        Path file = logFile(pod, containerName);
        long end = System.nanoTime() + timeout.toNanos();
        String log = Host.read(file);
        while (!condition.test(log)) {
            if (System.nanoTime() > end) {
                throw new AssertionError("log " + file + " did not reach the expected content within " + timeout
                        + "; it holds:\n" + log);
            }
            sleep(50);
            log = Host.read(file);
        }
        return log;
    }

    /** The JSON containerd puts into the verbose status's {@code info} entry. */
    static JsonNode info(java.util.Map<String, String> infoMap) {
        String s = infoMap.get("info");
        if (s == null) {
            throw new AssertionError("verbose status has no 'info': " + infoMap.keySet());
        }
        try {
            return JSON.readTree(s);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Host pid of a container's init process (ContainerStatus verbose). */
    static long containerPid(CriClient cri, String id) {
        long pid = info(cri.containerInfo(id)).path("pid").asLong();
        if (pid <= 0) {
            throw new AssertionError("no pid in the verbose status of container " + id);
        }
        return pid;
    }

    /**
     * Host pid of a pod's namespace holder. For an external sandboxer, containerd's verbose PodSandboxStatus
     * passes the sandboxer's own Controller.Status info map through: runc-sandboxer reports {@code holderPid},
     * {@code netns}, {@code stateDir}, {@code phase}.
     */
    static long podPid(CriClient cri, String podId) {
        String pid = podInfo(cri, podId).get("holderPid");
        if (pid == null || Long.parseLong(pid) <= 0) {
            throw new AssertionError("no holderPid in the verbose status of pod " + podId);
        }
        return Long.parseLong(pid);
    }

    static java.util.Map<String, String> podInfo(CriClient cri, String podId) {
        return cri.podStatus(podId, true).getInfoMap();
    }

    static boolean exists(Path p) {
        return Files.exists(p, java.nio.file.LinkOption.NOFOLLOW_LINKS);
    }

    static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        }
    }

    /**
     * Waits until containerd reaches a restarted sandboxer again: its gRPC connection to the old daemon backs off
     * for a while (UNAVAILABLE meanwhile).
     */
    static void awaitControllerReachable(CriClient cri, String podId) {
        long end = System.nanoTime() + Duration.ofSeconds(15).toNanos();
        while (true) {
            try {
                cri.podStatus(podId, false);
                return;
            } catch (io.grpc.StatusRuntimeException e) {
                if (e.getStatus().getCode() != io.grpc.Status.Code.UNAVAILABLE || System.nanoTime() > end) {
                    throw e;
                }
                sleep(200);
            }
        }
    }

    /** Polls a file until it contains {@code text}. */
    static void awaitFileContains(Path file, String text, Duration max) throws Exception {
        long end = System.nanoTime() + max.toNanos();
        while (true) {
            String content = Files.exists(file) ? Files.readString(file) : "";
            if (content.contains(text)) {
                return;
            }
            org.assertj.core.api.Assertions.assertThat(System.nanoTime()).as(file + " should contain '" + text + "', has: " + content).isLessThan(end);
            Thread.sleep(200);
        }
    }

    /** GET of a URL, retried until it answers or {@code max} passed (a pod's server may still be starting). */
    static String httpGet(String url, Duration max) throws Exception {
        java.net.http.HttpClient http = java.net.http.HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
        long end = System.nanoTime() + max.toNanos();
        while (true) {
            try {
                java.net.http.HttpResponse<String> resp = http.send(java.net.http.HttpRequest.newBuilder(java.net.URI.create(url))
                        .timeout(Duration.ofSeconds(5)).build(), java.net.http.HttpResponse.BodyHandlers.ofString());
                return resp.body();
            } catch (java.io.IOException e) {
                if (System.nanoTime() > end) {
                    throw e;
                }
                Thread.sleep(500);
            }
        }
    }
}
