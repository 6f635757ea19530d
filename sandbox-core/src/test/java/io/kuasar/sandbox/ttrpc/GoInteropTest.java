package io.kuasar.sandbox.ttrpc;

import com.google.protobuf.StringValue;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * Interoperability with containerd's own Go ttrpc (Debian's golang-github-containerd-ttrpc-dev): our client against
 * a Go server, and the Go client against our server. Needs Go and the package; build.sh installs them.
 */
@Tag("interop")
class GoInteropTest {
    static Path peer;

    @BeforeAll
    static void buildPeer() throws Exception {
        Path target = Path.of("target").toAbsolutePath();
        peer = target.resolve("ttrpcpeer/ttrpcpeer");
        if (!Files.isExecutable(peer)) {
            Process p = new ProcessBuilder("bash", "src/test/go/ttrpcpeer/build.sh", peer.toString(),
                    target.resolve("ttrpcpeer/work").toString()).inheritIO().start();
            assertThat(p.waitFor(600, TimeUnit.SECONDS)).isTrue();
            assertThat(p.exitValue()).as("building the Go ttrpc peer").isZero();
        }
    }

    @Test
    void javaClientAgainstGoServer(@TempDir Path dir) throws Exception {
        Path sock = dir.resolve("go.sock");
        Process server = new ProcessBuilder(peer.toString(), "server", sock.toString())
                .redirectError(ProcessBuilder.Redirect.INHERIT).start();
        try (BufferedReader out = new BufferedReader(new InputStreamReader(server.getInputStream()))) {
            assertThat(out.readLine()).isEqualTo("ready");
            try (TtrpcClient c = TtrpcClient.connect(sock)) {
                assertThat(c.call(EchoService.NAME, "Echo", StringValue.of("hello"), StringValue.parser(),
                        Duration.ofSeconds(5)).getValue()).isEqualTo("hello");
                assertThat(c.call(EchoService.NAME, "Metadata", StringValue.of(""), StringValue.parser(),
                        Duration.ofSeconds(5), Map.of("x-test", "abc")).getValue()).isEqualTo("abc");
                assertThat(c.call(EchoService.NAME, "Deadline", StringValue.of(""), StringValue.parser(),
                        Duration.ofSeconds(5)).getValue()).isEqualTo("set");
                assertThat(c.call(EchoService.NAME, "Echo", StringValue.of("x".repeat(1 << 20)),
                        StringValue.parser(), Duration.ofSeconds(10)).getValue()).hasSize(1 << 20);
                assertThatThrownBy(() -> c.call(EchoService.NAME, "Fail", StringValue.of("x"), StringValue.parser(),
                        Duration.ofSeconds(5))).isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                            assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.NOT_FOUND);
                            assertThat(e.getStatus().getDescription()).isEqualTo("no such thing: x");
                        });
                // the Go server enforces our timeout_nano
                assertThatThrownBy(() -> c.call(EchoService.NAME, "Sleep", StringValue.of("3000"),
                        StringValue.parser(), Duration.ofMillis(300))).isInstanceOfSatisfying(
                        StatusRuntimeException.class,
                        e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.DEADLINE_EXCEEDED));
            }
        } finally {
            server.destroy();
            server.waitFor(5, TimeUnit.SECONDS);
        }
    }

    @Test
    void goClientAgainstJavaServer(@TempDir Path dir) throws IOException, InterruptedException {
        try (TtrpcServer server = new TtrpcServer(dir.resolve("java.sock")).register(EchoService.build()).start()) {
            Process client = new ProcessBuilder(peer.toString(), "client", server.socketPath().toString())
                    .redirectErrorStream(true).start();
            String out = new String(client.getInputStream().readAllBytes());
            assertThat(client.waitFor(60, TimeUnit.SECONDS)).isTrue();
            assertThat(out).doesNotContain("FAIL").contains("ok echo", "ok fail", "ok metadata",
                    "ok sleep-server-deadline", "ok concurrent", "ok large");
            assertThat(client.exitValue()).as(out).isZero();
        }
    }
}
