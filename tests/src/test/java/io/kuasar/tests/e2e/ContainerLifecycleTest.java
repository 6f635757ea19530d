package io.kuasar.tests.e2e;

import io.kuasar.api.cri.v1.ContainerState;
import io.kuasar.api.cri.v1.ContainerStatus;
import io.kuasar.tests.cri.CriClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.time.Duration;
import java.util.regex.Pattern;

import static org.assertj.core.api.Assertions.assertThat;

/** Create, start, logs, real exit codes, and both ways StopContainer ends a container. */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class ContainerLifecycleTest {
    private static final Duration T = Duration.ofSeconds(20);

    @Test
    void runningThenExitedWithItsExitCodeAndLogs(CriClient cri) {
        CriClient.Pod pod = cri.runPod("lifecycle", true);
        String c = cri.createContainer(pod, "logger", "sh", "-c",
                "echo to-stdout; echo to-stderr >&2; while [ ! -e /tmp/go ]; do sleep 0.1; done; exit 7");
        assertThat(cri.containerStatus(c).getState()).isEqualTo(ContainerState.CONTAINER_CREATED);
        cri.startContainer(c);

        ContainerStatus running = Cri.awaitState(cri, c, ContainerState.CONTAINER_RUNNING, T);
        assertThat(running.getStartedAt()).isPositive();
        assertThat(running.getFinishedAt()).isZero();
        assertThat(running.getMetadata().getName()).isEqualTo("logger");

        // CRI log format: "<RFC3339Nano> <stream> <F|P> <line>", one file for both streams.
        String log = Cri.awaitLog(pod, "logger", l -> l.contains("to-stdout") && l.contains("to-stderr"), T);
        assertThat(log).containsPattern(Pattern.compile("(?m)^\\S+ stdout F to-stdout$"))
                .containsPattern(Pattern.compile("(?m)^\\S+ stderr F to-stderr$"));
        assertThat(cri.containerStatus(c).getState()).isEqualTo(ContainerState.CONTAINER_RUNNING);

        assertThat(cri.execSync(c, "touch", "/tmp/go").exitCode()).isZero();
        ContainerStatus exited = Cri.awaitState(cri, c, ContainerState.CONTAINER_EXITED, T);
        assertThat(exited.getExitCode()).isEqualTo(7);
        assertThat(exited.getReason()).isEqualTo("Error");
        assertThat(exited.getFinishedAt()).isGreaterThanOrEqualTo(exited.getStartedAt());
    }

    @Test
    void zeroExitCodeIsCompleted(CriClient cri) {
        CriClient.Pod pod = cri.runPod("completed", true);
        String c = cri.runContainer(pod, "once", "sh", "-c", "echo done");
        ContainerStatus exited = Cri.awaitState(cri, c, ContainerState.CONTAINER_EXITED, T);
        assertThat(exited.getExitCode()).isZero();
        assertThat(exited.getReason()).isEqualTo("Completed");
        assertThat(Cri.awaitLog(pod, "once", l -> l.contains("done"), T)).containsPattern("stdout F done");
    }

    @Test
    void stopWithZeroTimeoutKills(CriClient cri) {
        CriClient.Pod pod = cri.runPod("killed", true);
        String c = cri.runContainer(pod, "sleeper", "sleep", "1000");
        Cri.awaitState(cri, c, ContainerState.CONTAINER_RUNNING, T);
        long pid = Cri.containerPid(cri, c);
        assertThat(Host.alive(pid)).isTrue();

        cri.stopContainer(c, 0);
        ContainerStatus st = cri.containerStatus(c);
        assertThat(st.getState()).isEqualTo(ContainerState.CONTAINER_EXITED);
        assertThat(st.getExitCode()).isEqualTo(137);
        assertThat(Host.alive(pid)).isFalse();
    }

    @Test
    void gracefulStopLetsTheProcessExitZero(CriClient cri) {
        CriClient.Pod pod = cri.runPod("graceful", true);
        String c = cri.runContainer(pod, "trapper", "sh", "-c",
                "trap 'echo got-term; exit 0' TERM; echo ready; while true; do sleep 0.1; done");
        Cri.awaitLog(pod, "trapper", l -> l.contains("ready"), T);

        long t0 = System.nanoTime();
        cri.stopContainer(c, 30);
        long ms = (System.nanoTime() - t0) / 1_000_000;
        ContainerStatus st = cri.containerStatus(c);
        assertThat(st.getState()).isEqualTo(ContainerState.CONTAINER_EXITED);
        assertThat(st.getExitCode()).isZero();
        assertThat(ms).as("a SIGTERM exit, not the 30 s SIGKILL").isLessThan(10_000);
        assertThat(Cri.awaitLog(pod, "trapper", l -> l.contains("got-term"), T)).contains("stdout F got-term");
    }

    @Test
    void restartedContainerInTheSamePodGetsANewTask(CriClient cri) {
        CriClient.Pod pod = cri.runPod("recreate", true);
        String first = cri.runContainer(pod, "c", "sh", "-c", "exit 3");
        assertThat(Cri.awaitState(cri, first, ContainerState.CONTAINER_EXITED, T).getExitCode()).isEqualTo(3);
        cri.removeContainer(first);
        // kubelet's restart: same name, next attempt.
        String second = cri.runContainer(pod, "c", CriClient.ContainerOptions.defaults().logPath("c-1.log"),
                "sh", "-c", "exit 4");
        assertThat(second).isNotEqualTo(first);
        assertThat(Cri.awaitState(cri, second, ContainerState.CONTAINER_EXITED, T).getExitCode()).isEqualTo(4);
        assertThat(cri.listContainers(pod.id())).extracting(x -> x.getId()).containsExactly(second);
    }
}
