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
     * Serves every connection accepted on a listening vsock socket, each on a thread of its own, until the JVM ends:
     * the host reconnects after a restart of its sandboxer, and may hold more than one connection.
     */
    static void serveVsock(TtrpcServer server, int listening, int port) throws InterruptedException {
        LOG.info("serving ttrpc on vsock port {}", port);
        while (true) {
            int fd;
            try {
                fd = io.kuasar.sandbox.sys.Linux.accept(listening);
            } catch (RuntimeException e) {
                LOG.warn("vsock port {}: accept: {}", port, e.getMessage());
                Thread.sleep(IDLE_POLL.toMillis());
                continue;
            }
            Thread.ofPlatform().name("vsock-conn-" + fd).daemon().start(() -> {
                try (FdChannel ch = new FdChannel(fd)) {
                    server.serve(ch); // returns when the host closes the connection
                } catch (RuntimeException e) {
                    LOG.warn("vsock port {}: {}", port, e.getMessage());
                }
            });
        }
    }

    /**
     * A connected socket's descriptor as a byte channel (the JDK cannot wrap an AF_VSOCK socket): reads and writes
     * run concurrently, each with a native buffer of its own.
     */
    static final class FdChannel implements ByteChannel {
        private final int fd;
        // freed by the GC: a read may still be blocked in the kernel on `in` when the channel is closed
        private final java.lang.foreign.MemorySegment in = java.lang.foreign.Arena.ofAuto().allocate(64 * 1024);
        private final java.lang.foreign.MemorySegment out = java.lang.foreign.Arena.ofAuto().allocate(64 * 1024);
        private volatile boolean open = true;

        FdChannel(int fd) {
            this.fd = fd;
        }

        @Override
        public int read(ByteBuffer dst) throws IOException {
            long n;
            try {
                n = io.kuasar.sandbox.sys.Linux.read(fd, in, Math.min(dst.remaining(), in.byteSize()));
            } catch (RuntimeException e) {
                throw new IOException("vsock read: " + e.getMessage(), e);
            }
            if (n == 0) {
                return -1;
            }
            dst.put(in.asSlice(0, n).asByteBuffer());
            return (int) n;
        }

        @Override
        public synchronized int write(ByteBuffer src) throws IOException {
            int total = src.remaining();
            while (src.hasRemaining()) {
                int n = (int) Math.min(src.remaining(), out.byteSize());
                ByteBuffer chunk = src.slice(src.position(), n);
                out.asByteBuffer().put(chunk);
                long written;
                try {
                    written = io.kuasar.sandbox.sys.Linux.write(fd, out, n);
                } catch (RuntimeException e) {
                    throw new IOException("vsock write: " + e.getMessage(), e);
                }
                src.position(src.position() + (int) written);
            }
            return total;
        }

        @Override
        public boolean isOpen() {
            return open;
        }

        @Override
        public void close() {
            if (open) {
                open = false;
                io.kuasar.sandbox.sys.Linux.close(fd);
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
