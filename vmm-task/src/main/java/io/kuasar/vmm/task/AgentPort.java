package io.kuasar.vmm.task;

import io.kuasar.sandbox.ttrpc.TtrpcServer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.channels.ByteChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.stream.Stream;

/**
 * The guest end of the host↔guest channel: a virtio-serial port, found by the name the sandboxer gave it. The host
 * side is one Unix socket connection (QEMU's chardev), so the port carries one ttrpc connection at a time, with
 * every call multiplexed on it. While no host client is connected, reads return end-of-file at once: the agent then
 * waits a little and opens the port again, and a new host connection starts a new ttrpc connection.
 */
final class AgentPort {
    private static final Logger LOG = LoggerFactory.getLogger(AgentPort.class);
    private static final Path PORTS = Path.of("/sys/class/virtio-ports");
    private static final Duration IDLE_POLL = Duration.ofMillis(20);

    private AgentPort() {
    }

    /** The device of the named port, e.g. /dev/vport0p1 for "agent.channel.0"; waits up to {@code timeout}. */
    static Path find(String name, Duration timeout) throws IOException, InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (true) {
            if (Files.isDirectory(PORTS)) {
                try (Stream<Path> ports = Files.list(PORTS)) {
                    for (Path p : ports.toList()) {
                        Path nameFile = p.resolve("name");
                        if (Files.exists(nameFile) && Files.readString(nameFile).trim().equals(name)) {
                            return Path.of("/dev").resolve(p.getFileName());
                        }
                    }
                }
            }
            if (System.nanoTime() > deadline) {
                throw new IOException("no virtio-serial port named " + name + " under " + PORTS
                        + " (is virtio_console loaded and the port configured on the VM?)");
            }
            Thread.sleep(10);
        }
    }

    /** Serves the port until the JVM ends. */
    static void serveForever(TtrpcServer server, Path device) throws InterruptedException {
        LOG.info("serving ttrpc on {}", device);
        while (true) {
            long started = System.nanoTime();
            try (PortChannel ch = new PortChannel(new RandomAccessFile(device.toFile(), "rw"))) {
                server.serve(ch);
            } catch (IOException | RuntimeException e) {
                LOG.warn("agent port {}: {}", device, e.getMessage());
            }
            // An immediate end of file means no host is connected: don't spin.
            if (System.nanoTime() - started < IDLE_POLL.toNanos()) {
                Thread.sleep(IDLE_POLL.toMillis());
            }
        }
    }

    /**
     * The port as a byte channel. Not a FileChannel: its reads and writes share one position lock, so a read
     * blocked waiting for the host would hold every response back. A virtio port can be opened only once, so
     * reads and writes go through one descriptor, concurrently.
     */
    static final class PortChannel implements ByteChannel {
        private final RandomAccessFile file;
        private volatile boolean open = true;

        PortChannel(RandomAccessFile file) {
            this.file = file;
        }

        @Override
        public int read(ByteBuffer dst) throws IOException {
            byte[] b = new byte[Math.min(dst.remaining(), 64 * 1024)];
            int n = file.read(b);
            if (n > 0) {
                dst.put(b, 0, n);
            }
            return n;
        }

        @Override
        public int write(ByteBuffer src) throws IOException {
            int n = src.remaining();
            byte[] b = new byte[n];
            src.get(b);
            file.write(b);
            return n;
        }

        @Override
        public boolean isOpen() {
            return open;
        }

        @Override
        public void close() throws IOException {
            open = false;
            file.close();
        }
    }
}
