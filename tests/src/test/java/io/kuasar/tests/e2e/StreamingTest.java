package io.kuasar.tests.e2e;

import io.kuasar.api.cri.v1.ContainerState;
import io.kuasar.tests.cri.CriClient;
import io.kuasar.tests.cri.StreamClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.net.URI;
import java.time.Duration;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Exec and Attach through containerd's streaming server over WebSocket. containerd 2.1.9's server (kubelet's
 * pkg/cri/streaming) accepts {@code v4.channel.k8s.io} (and the older channel protocols) but not
 * {@code v5.channel.k8s.io}, so stdin can only be ended by closing the whole stream.
 */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class StreamingTest {
    private static final Duration T = Duration.ofSeconds(20);

    @Test
    void execStreamsStdinStdoutStderrAndTheExitCode(CriClient cri) {
        CriClient.Pod pod = cri.runPod("exec", true);
        String c = cri.runContainer(pod, "c1", "sleep", "1000");

        URI url = cri.execUrl(c, false, true, "sh", "-c", "read x; echo \"got:$x\"; echo err >&2; exit 5");
        assertThat(url.getScheme()).isEqualTo("http");
        assertThat(url.getPath()).startsWith("/exec/");
        try (StreamClient.Session s = StreamClient.open(url, T)) {
            assertThat(s.protocol()).isIn(StreamClient.PROTOCOLS);
            s.sendStdin("hello\n");
            StreamClient.Result r = s.await(T);
            assertThat(r.stdout()).isEqualTo("got:hello\n");
            assertThat(r.stderr()).isEqualTo("err\n");
            assertThat(r.exitCode()).as(r.status()).isEqualTo(5);
        }

        try (StreamClient.Session s = StreamClient.open(cri.execUrl(c, false, false, "echo", "fine"), T)) {
            StreamClient.Result r = s.await(T);
            assertThat(r.stdout()).isEqualTo("fine\n");
            assertThat(r.exitCode()).as(r.status()).isZero();
            assertThat(r.status()).contains("\"Success\"");
        }
    }

    @Test
    void execWithATerminal(CriClient cri) {
        CriClient.Pod pod = cri.runPod("exectty", true);
        String c = cri.runContainer(pod, "c1", "sleep", "1000");

        try (StreamClient.Session s = StreamClient.open(cri.execUrl(c, true, true, "sh"), T)) {
            s.resize(100, 30);
            s.sendStdin("tty; stty size; exit 4\n");
            StreamClient.Result r = s.await(T);
            assertThat(r.stdout()).contains("/dev/pts/").contains("30 100");
            assertThat(r.stderr()).isEmpty(); // a terminal merges stderr into stdout
            assertThat(r.exitCode()).as(r.status()).isEqualTo(4);
        }
    }

    @Test
    void attachReachesTheContainersOwnStdio(CriClient cri) {
        CriClient.Pod pod = cri.runPod("attach", true);
        CriClient.ContainerOptions o = CriClient.ContainerOptions.defaults().stdin(true);
        String c = cri.runContainer(pod, "echoer", o, "sh", "-c",
                "echo attach-ready; while read l; do echo \"echo:$l\"; done; echo stdin-closed");
        Cri.awaitLog(pod, "echoer", l -> l.contains("attach-ready"), T);

        URI url = cri.attachUrl(c, false, true);
        assertThat(url.getPath()).startsWith("/attach/");
        try (StreamClient.Session s = StreamClient.open(url, T)) {
            s.sendStdin("ping\n");
            assertThat(s.awaitStdout(out -> out.contains("echo:ping"), T)).as("stdout: %s", s.stdout()).isTrue();
            s.sendStdin("pong\n");
            assertThat(s.awaitStdout(out -> out.contains("echo:pong"), T)).as("stdout: %s", s.stdout()).isTrue();
        }
        // Output also goes to the CRI log, and without stdin_once the container outlives the attach.
        Cri.awaitLog(pod, "echoer", l -> l.contains("stdout F echo:pong"), T);
        Cri.sleep(300);
        assertThat(cri.containerStatus(c).getState()).isEqualTo(ContainerState.CONTAINER_RUNNING);
    }

    @Test
    void attachWithStdinOnceClosesStdinWhenTheAttachEnds(CriClient cri) {
        CriClient.Pod pod = cri.runPod("attachonce", true);
        CriClient.ContainerOptions o = CriClient.ContainerOptions.defaults().stdin(true).stdinOnce(true);
        String c = cri.runContainer(pod, "once", o, "sh", "-c",
                "echo attach-ready; while read l; do echo \"echo:$l\"; done; echo stdin-closed; exit 0");
        Cri.awaitLog(pod, "once", l -> l.contains("attach-ready"), T);

        try (StreamClient.Session s = StreamClient.open(cri.attachUrl(c, false, true), T)) {
            s.sendStdin("one\n");
            assertThat(s.awaitStdout(out -> out.contains("echo:one"), T)).as("stdout: %s", s.stdout()).isTrue();
        }
        // Closing the attach closes the container's stdin (CloseIO): read sees EOF and the shell exits 0.
        assertThat(Cri.awaitState(cri, c, ContainerState.CONTAINER_EXITED, T).getExitCode()).isZero();
        assertThat(Cri.awaitLog(pod, "once", l -> l.contains("stdin-closed"), T)).contains("stdout F stdin-closed");
    }
}
