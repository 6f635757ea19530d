package io.kuasar.vmm.hypervisor;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * The hybrid vsock handshake against a socket that behaves as Cloud Hypervisor's vsock Unix socket does: it reads
 * {@code CONNECT <port>\n} and answers {@code OK <host port>\n}, after which bytes flow to and from the guest port;
 * when nothing listens on the port it closes the connection.
 */
class HybridVsockTest {
    @TempDir
    Path dir;

    @Test
    void theHandshakeLeavesAByteStreamToTheGuestPort() throws Exception {
        Path sock = dir.resolve("task.vsock");
        try (ServerSocketChannel vmm = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            vmm.bind(UnixDomainSocketAddress.of(sock));
            Thread.ofVirtual().start(() -> {
                try (SocketChannel c = vmm.accept()) {
                    ByteBuffer b = ByteBuffer.allocate(64);
                    c.read(b);
                    String req = new String(b.array(), 0, b.position(), StandardCharsets.US_ASCII);
                    // the answer and the guest's first bytes arrive together: none of the latter may be lost
                    String answer = req.equals("CONNECT 1024\n") ? "OK 1073741824\nguest-bytes" : "bad request";
                    c.write(ByteBuffer.wrap(answer.getBytes(StandardCharsets.US_ASCII)));
                    b.clear();
                    c.read(b);
                    c.write(ByteBuffer.wrap(("echo:" + new String(b.array(), 0, b.position(),
                            StandardCharsets.US_ASCII)).getBytes(StandardCharsets.US_ASCII)));
                } catch (IOException ignored) {
                    // test over
                }
            });
            try (SocketChannel ch = HybridVsock.connect(sock, 1024)) {
                ByteBuffer first = ByteBuffer.allocate(11);
                while (first.hasRemaining()) {
                    ch.read(first);
                }
                assertThat(new String(first.array(), StandardCharsets.US_ASCII)).isEqualTo("guest-bytes");
                ch.write(ByteBuffer.wrap("ping".getBytes(StandardCharsets.US_ASCII)));
                ByteBuffer reply = ByteBuffer.allocate(9);
                while (reply.hasRemaining()) {
                    ch.read(reply);
                }
                assertThat(new String(reply.array(), StandardCharsets.US_ASCII)).isEqualTo("echo:ping");
            }
        }
    }

    @Test
    void aPortNobodyListensOnIsAClearError() throws Exception {
        Path sock = dir.resolve("task.vsock");
        try (ServerSocketChannel vmm = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            vmm.bind(UnixDomainSocketAddress.of(sock));
            Thread.ofVirtual().start(() -> {
                try (SocketChannel c = vmm.accept()) {
                    c.read(ByteBuffer.allocate(64)); // Cloud Hypervisor closes when the guest refuses
                } catch (IOException ignored) {
                    // test over
                }
            });
            assertThatThrownBy(() -> HybridVsock.connect(sock, 1024)).hasMessageContaining("CONNECT 1024")
                    .hasMessageContaining("(connection closed)").hasMessageContaining("vsock port 1024");
        }
        assertThatThrownBy(() -> HybridVsock.connect(dir.resolve("missing.vsock"), 1024))
                .isInstanceOf(IOException.class);
    }

    @Test
    void aConnectThatIsNeverAnsweredFailsWithinTheTimeoutSoTheCallerRetries() throws Exception {
        Path sock = dir.resolve("silent.vsock");
        try (ServerSocketChannel vmm = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            vmm.bind(UnixDomainSocketAddress.of(sock));
            // accepts, reads the CONNECT and says nothing, as vhost-device-vsock did for a guest still booting
            Thread.ofVirtual().start(() -> {
                try (SocketChannel c = vmm.accept()) {
                    c.read(ByteBuffer.allocate(64));
                    Thread.sleep(10_000);
                } catch (IOException | InterruptedException ignored) {
                    // test over
                }
            });
            long t0 = System.nanoTime();
            assertThatThrownBy(() -> HybridVsock.connect(sock, 1024, java.time.Duration.ofMillis(300)))
                    .isInstanceOf(IOException.class).hasMessageContaining("CONNECT 1024 unanswered after 300 ms");
            assertThat((System.nanoTime() - t0) / 1_000_000).isBetween(250L, 5_000L);
        }
    }
}
