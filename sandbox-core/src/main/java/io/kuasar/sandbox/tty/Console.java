package io.kuasar.sandbox.tty;

import io.grpc.Status;
import io.kuasar.sandbox.sys.ErrnoException;
import io.kuasar.sandbox.sys.Linux;
import io.kuasar.sandbox.sys.UnixSockets;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.File;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

/**
 * A container's terminal: a console socket for runc's {@code --console-socket}, the pty master runc sends through
 * it, and two copy threads between the master and containerd's stdin/stdout FIFOs. Platform threads, because the
 * copies block in native reads.
 * <p>
 * The master is shared by the output copy, the input copy and ResizePty, and closed when the terminal's last
 * process exits. Its fd number is reused at once by the next file the daemon opens (often another container's),
 * so every use goes through {@link Master}, which closes the fd only once no one is using it and refuses all use
 * after that.
 */
public final class Console implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(Console.class);
    private static final int BUF = 32 * 1024;

    private final Path socketPath;
    private final int listenFd;
    private final CompletableFuture<Master> master = new CompletableFuture<>();
    private volatile InputStream stdinStream;
    private volatile boolean closed;
    private volatile boolean attached;

    private Console(Path socketPath, int listenFd) {
        this.socketPath = socketPath;
        this.listenFd = listenFd;
        Thread.ofPlatform().daemon().name("console-accept").start(this::acceptMaster);
    }

    /** Listens on {@code socketPath} for runc to send the pty master. */
    /**
     * Listens on a new socket with a short random name in {@code dir} (made if missing): a bundle's path would not fit
     * the 108 bytes of a socket path.
     */
    public static Console listenIn(Path dir) throws IOException {
        Files.createDirectories(dir);
        return listen(dir.resolve(java.util.UUID.randomUUID().toString().substring(0, 13) + ".sock"));
    }

    public static Console listen(Path socketPath) throws IOException {
        Files.deleteIfExists(socketPath);
        return new Console(socketPath, UnixSockets.listen(socketPath.toString()));
    }

    public Path socketPath() {
        return socketPath;
    }

    private void acceptMaster() {
        try {
            int conn = UnixSockets.accept(listenFd);
            try {
                master.complete(new Master(UnixSockets.receiveFd(conn)));
            } finally {
                Linux.close(conn);
            }
        } catch (RuntimeException e) {
            master.completeExceptionally(e);
        } finally {
            Linux.close(listenFd);
            try {
                Files.deleteIfExists(socketPath);
            } catch (IOException ignored) {
                // the directory is removed with the bundle
            }
        }
    }

    /** Starts copying once runc has sent the master; {@code stdin} may be null. */
    public void attach(File stdin, File stdout, Duration timeout) throws IOException {
        Master m;
        try {
            m = master.get(timeout.toMillis(), TimeUnit.MILLISECONDS);
        } catch (Exception e) {
            throw new IOException("runc did not send the terminal within " + timeout.toSeconds() + "s", e);
        }
        attached = true;
        Thread.ofPlatform().daemon().name("console-out").start(() -> copyOut(m, stdout));
        if (stdin != null) {
            Thread.ofPlatform().daemon().name("console-in").start(() -> copyIn(stdin, m));
        }
    }

    private void copyOut(Master m, File stdout) {
        try (Arena arena = Arena.ofConfined(); OutputStream out = stdout == null ? OutputStream.nullOutputStream()
                : new FileOutputStream(stdout, true)) {
            MemorySegment buf = arena.allocate(BUF);
            byte[] bytes = new byte[BUF];
            while (!closed) {
                int fd = m.acquire();
                if (fd < 0) {
                    break;
                }
                long n;
                try {
                    n = Linux.read(fd, buf, BUF);
                } catch (ErrnoException e) {
                    break; // EIO: the terminal's last user has gone
                } finally {
                    m.release();
                }
                if (n <= 0) {
                    break;
                }
                MemorySegment.copy(buf, java.lang.foreign.ValueLayout.JAVA_BYTE, 0, bytes, 0, (int) n);
                out.write(bytes, 0, (int) n);
                out.flush();
            }
        } catch (IOException e) {
            LOG.debug("terminal output copy ended: {}", e.getMessage());
        } finally {
            closed = true;
            closeStdin();
            m.close(); // the stdin copy or a resize may still hold it: the fd closes when they let go
        }
    }

    private void copyIn(File stdin, Master m) {
        try (Arena arena = Arena.ofConfined(); InputStream in = new FileInputStream(stdin)) {
            stdinStream = in;
            MemorySegment buf = arena.allocate(BUF);
            byte[] bytes = new byte[BUF];
            int n;
            while (!closed && (n = in.read(bytes)) > 0) {
                MemorySegment.copy(bytes, 0, buf, java.lang.foreign.ValueLayout.JAVA_BYTE, 0, n);
                int fd = m.acquire();
                if (fd < 0) {
                    break; // the terminal has closed: its fd number may be another file's by now
                }
                try {
                    long off = 0;
                    while (off < n) {
                        off += Linux.write(fd, buf.asSlice(off), n - off);
                    }
                } finally {
                    m.release();
                }
            }
        } catch (IOException | ErrnoException e) {
            LOG.debug("terminal input copy ended: {}", e.getMessage());
        }
    }

    /**
     * Sets the terminal's window size.
     *
     * @throws io.grpc.StatusRuntimeException FAILED_PRECONDITION once the terminal has closed
     */
    public void resize(int width, int height) throws IOException {
        Master m = master.getNow(null);
        if (m == null) {
            throw new IOException("the terminal is not ready yet");
        }
        int fd = m.acquire();
        if (fd < 0) {
            throw Status.FAILED_PRECONDITION.withDescription("the terminal has closed: its last process has exited")
                    .asRuntimeException();
        }
        try {
            Linux.setWindowSize(fd, height, width);
        } finally {
            m.release();
        }
    }

    /** Stops forwarding stdin (CloseIO). */
    public void closeStdin() {
        InputStream in = stdinStream;
        if (in != null) {
            try {
                in.close();
            } catch (IOException ignored) {
                // already closed
            }
        }
    }

    /**
     * Stops forwarding. The master is closed by the output copy when the terminal's last user exits; if runc never
     * connected, a throwaway connection wakes the accepting thread so it can release the socket.
     */
    @Override
    public void close() {
        closed = true;
        closeStdin();
        if (!attached) {
            master.thenAccept(Master::close);
        }
        if (!master.isDone()) {
            try (var ch = java.nio.channels.SocketChannel.open(java.net.StandardProtocolFamily.UNIX)) {
                ch.connect(java.net.UnixDomainSocketAddress.of(socketPath));
            } catch (IOException ignored) {
                // the socket is already gone
            }
        }
    }

    /**
     * The pty master's fd with an explicit lifetime: each use is bracketed by {@link #acquire()} and
     * {@link #release()}; after {@link #close()} no new use starts, and the fd is closed when the last one ends.
     */
    private static final class Master {
        private final int fd;
        private int users;
        private boolean closing;

        Master(int fd) {
            this.fd = fd;
        }

        /** The fd for one use, or -1 once the terminal has closed. */
        synchronized int acquire() {
            if (closing) {
                return -1;
            }
            users++;
            return fd;
        }

        synchronized void release() {
            if (--users == 0 && closing) {
                Linux.close(fd);
            }
        }

        synchronized void close() {
            if (!closing) {
                closing = true;
                if (users == 0) {
                    Linux.close(fd);
                }
            }
        }
    }
}
