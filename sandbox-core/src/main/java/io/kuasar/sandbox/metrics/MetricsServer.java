package io.kuasar.sandbox.metrics;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;

/**
 * Serves {@code GET /metrics} (Prometheus text format) on a Unix socket ({@code unix:/path}) or a loopback TCP
 * address ({@code 127.0.0.1:9090}). Anything but loopback is refused: the endpoint has no authentication.
 * A minimal HTTP/1.1 responder, one virtual thread per request, each connection closed after its answer.
 */
public final class MetricsServer implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(MetricsServer.class);
    private static final int MAX_REQUEST = 8192;

    private final MetricsRegistry registry;
    private final ServerSocketChannel listener;
    private final Path unixPath;

    private MetricsServer(MetricsRegistry registry, ServerSocketChannel listener, Path unixPath) {
        this.registry = registry;
        this.listener = listener;
        this.unixPath = unixPath;
        Thread.ofVirtual().name("metrics-accept").start(this::acceptLoop);
    }

    /** {@code address}: {@code unix:/path/to.sock} or {@code HOST:PORT} with a loopback host. */
    public static MetricsServer start(String address, MetricsRegistry registry) throws IOException {
        if (address.startsWith("unix:")) {
            Path p = Path.of(address.substring("unix:".length()));
            Files.deleteIfExists(p);
            ServerSocketChannel ch = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
            ch.bind(UnixDomainSocketAddress.of(p));
            LOG.info("metrics on unix:{}", p);
            return new MetricsServer(registry, ch, p);
        }
        int colon = address.lastIndexOf(':');
        if (colon < 0) {
            throw new IllegalArgumentException("--metrics-listen " + address
                    + ": use unix:/path or a loopback HOST:PORT such as 127.0.0.1:9090");
        }
        InetAddress host = InetAddress.getByName(address.substring(0, colon).replace("[", "").replace("]", ""));
        if (!host.isLoopbackAddress()) {
            throw new IllegalArgumentException("--metrics-listen " + address
                    + ": only loopback addresses are allowed (the endpoint has no authentication)");
        }
        ServerSocketChannel ch = ServerSocketChannel.open();
        ch.bind(new InetSocketAddress(host, Integer.parseInt(address.substring(colon + 1))));
        LOG.info("metrics on http://{}/metrics", ch.getLocalAddress());
        return new MetricsServer(registry, ch, null);
    }

    public java.net.SocketAddress localAddress() throws IOException {
        return listener.getLocalAddress();
    }

    private void acceptLoop() {
        while (listener.isOpen()) {
            try {
                SocketChannel c = listener.accept();
                Thread.ofVirtual().name("metrics-request").start(() -> serve(c));
            } catch (IOException e) {
                if (listener.isOpen()) {
                    LOG.debug("metrics accept failed: {}", e.getMessage());
                }
            }
        }
    }

    private void serve(SocketChannel c) {
        try (c) {
            ByteBuffer in = ByteBuffer.allocate(MAX_REQUEST);
            long deadline = System.nanoTime() + Duration.ofSeconds(5).toNanos();
            String head = "";
            while (!head.contains("\r\n\r\n") && in.hasRemaining() && System.nanoTime() < deadline) {
                if (c.read(in) < 0) {
                    break;
                }
                head = new String(in.array(), 0, in.position(), StandardCharsets.ISO_8859_1);
            }
            String line = head.lines().findFirst().orElse("");
            String status;
            String body;
            if (line.startsWith("GET /metrics ") || line.equals("GET /metrics")) {
                status = "200 OK";
                body = registry.scrape();
            } else {
                status = "404 Not Found";
                body = "only GET /metrics is served\n";
            }
            byte[] b = body.getBytes(StandardCharsets.UTF_8);
            String resp = "HTTP/1.1 " + status + "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                    + "Content-Length: " + b.length + "\r\nConnection: close\r\n\r\n";
            ByteBuffer out = ByteBuffer.allocate(resp.length() + b.length);
            out.put(resp.getBytes(StandardCharsets.ISO_8859_1)).put(b).flip();
            while (out.hasRemaining()) {
                c.write(out);
            }
        } catch (IOException e) {
            LOG.debug("metrics request failed: {}", e.getMessage());
        }
    }

    @Override
    public void close() throws IOException {
        listener.close();
        if (unixPath != null) {
            Files.deleteIfExists(unixPath);
        }
    }
}
