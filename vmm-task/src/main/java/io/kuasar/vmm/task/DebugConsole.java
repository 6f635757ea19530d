package io.kuasar.vmm.task;

import io.kuasar.sandbox.sys.ErrnoException;
import io.kuasar.sandbox.sys.Linux;
import io.kuasar.sandbox.sys.Pty;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Kuasar's debug console ({@code task.debug} on the kernel command line): each connection gets the shell
 * ({@code task.debug_shell}) on a fresh pty in a session of its own. If the first line, read within
 * {@value #FIRST_LINE_MILLIS} ms, is {@value #EXEC_MODE}, the terminal does not echo, does not turn "\n" into
 * "\r\n", and {@code PS1} is empty: what kuasar-ctl exec needs to read a command's output and its exit marker.
 * <p>
 * Where a connection comes from: vsock port {@value #VSOCK_PORT} (Kuasar's) when the agent is on vsock; otherwise a
 * second virtio-serial port, {@value #PORT_NAME}, whose host end is {@code debug.sock} in the sandbox directory. A
 * virtio-serial port is always "connected" from the guest's side, so there a session starts with the first bytes
 * the host sends and ends when the host goes (reads return end-of-file) or the shell's terminal closes; the next
 * bytes start a new one.
 */
final class DebugConsole {
    private static final Logger LOG = LoggerFactory.getLogger(DebugConsole.class);
    static final int VSOCK_PORT = 1025;
    static final String PORT_NAME = "debug.console.0";
    static final String EXEC_MODE = "KSR_MODE exec";
    static final int FIRST_LINE_MILLIS = 100;
    private static final int POLL_MILLIS = 200;
    private static final int BUF = 16 * 1024;
    private static final int O_RDWR = 2;

    private final String shell;

    DebugConsole(String shell) {
        this.shell = shell;
    }

    /** Serves the console in the background, on the channel the agent's own channel implies. */
    static void start(TaskConfig config) {
        DebugConsole console = new DebugConsole(config.debugShell());
        Thread.ofPlatform().daemon().name("debug-console").start(() -> {
            try {
                if (config.agentVsockPort() > 0) {
                    console.serveVsock(Linux.vsockListen(VSOCK_PORT));
                } else {
                    console.servePort(AgentPort.find(PORT_NAME, Duration.ofSeconds(10)));
                }
            } catch (IOException | RuntimeException e) {
                LOG.warn("debug console not served: {} (vmm-sandboxer adds the port with [hypervisor.task] debug = "
                        + "true)", e.getMessage());
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        });
    }

    private void serveVsock(int listening) {
        LOG.info("debug console on vsock port {} (shell {})", VSOCK_PORT, shell);
        while (true) {
            int fd;
            try {
                fd = Linux.accept(listening);
            } catch (RuntimeException e) {
                LOG.warn("debug console: accept: {}", e.getMessage());
                sleep(POLL_MILLIS);
                continue;
            }
            Thread.ofPlatform().daemon().name("debug-console-" + fd).start(() -> {
                try {
                    byte[] first = readSome(fd);
                    if (first != null) {
                        session(fd, first, false);
                    }
                } catch (RuntimeException e) {
                    LOG.warn("debug console session: {}", e.getMessage());
                } finally {
                    Linux.close(fd);
                }
            });
        }
    }

    private void servePort(Path device) {
        LOG.info("debug console on {} (shell {})", device, shell);
        int fd = Linux.open(device.toString(), O_RDWR | Linux.O_CLOEXEC);
        while (true) {
            try {
                byte[] first = readSome(fd);
                if (first == null) {
                    sleep(POLL_MILLIS); // no host connected: reads end at once
                    continue;
                }
                session(fd, first, true);
            } catch (RuntimeException e) {
                LOG.warn("debug console session: {}", e.getMessage());
                sleep(POLL_MILLIS);
            }
        }
    }

    /**
     * One session on {@code link} (a connection, or the port), which has sent {@code first}: the mode from the first
     * line, then the shell, with bytes copied both ways until the host goes or the terminal closes. Returns when
     * both copies have stopped; the pty is closed then (the shell's session gets SIGHUP).
     */
    void session(int link, byte[] first, boolean port) {
        ByteArrayOutputStream head = new ByteArrayOutputStream();
        head.writeBytes(first);
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(FIRST_LINE_MILLIS);
        while (indexOf(head.toByteArray(), (byte) '\n') < 0) {
            long left = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
            if (left <= 0) {
                break;
            }
            if (Linux.pollIn(new int[]{link}, (int) left)[0]) {
                byte[] more = readSome(link);
                if (more == null) {
                    return; // gone before the shell started
                }
                head.writeBytes(more);
            }
        }
        Mode mode = Mode.of(head.toByteArray());
        Pty pty = Pty.open();
        Process sh;
        try {
            if (mode.exec()) {
                pty.rawOutputWithoutEcho();
            }
            writeAll(pty.master(), mode.rest()); // held by the terminal until the shell reads it
            sh = spawn(pty.slave(), mode.exec());
        } catch (IOException | RuntimeException e) {
            Linux.close(pty.master());
            writeAll(link, ("debug console: cannot start " + shell + ": " + e.getMessage() + "\r\n")
                    .getBytes(StandardCharsets.UTF_8));
            return;
        }
        LOG.info("debug console: {} session, shell pid {}", mode.exec() ? "exec" : "interactive", sh.pid());
        java.util.concurrent.atomic.AtomicBoolean ended = new java.util.concurrent.atomic.AtomicBoolean();
        Thread out = Thread.ofPlatform().daemon().name("debug-console-out").start(() -> {
            copy(pty.master(), link, ended);
            ended.set(true);
        });
        copy(link, pty.master(), ended);
        ended.set(true);
        try {
            out.join();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        Linux.close(pty.master()); // no copy uses it any more: the session's terminal hangs up
        if (sh.isAlive()) {
            sh.destroy();
            sh.onExit().orTimeout(2, TimeUnit.SECONDS).exceptionally(x -> {
                sh.destroyForcibly();
                return null;
            });
        }
        if (port && !mode.exec()) {
            writeAll(link, "\r\n[debug console: the shell has ended; press Enter for a new one]\r\n"
                    .getBytes(StandardCharsets.UTF_8));
        }
    }

    /** The first line's verdict and what the shell is to read. */
    record Mode(boolean exec, byte[] rest) {
        static Mode of(byte[] head) {
            int nl = indexOf(head, (byte) '\n');
            if (nl >= 0 && new String(head, 0, nl, StandardCharsets.UTF_8).strip().equals(EXEC_MODE)) {
                return new Mode(true, Arrays.copyOfRange(head, nl + 1, head.length));
            }
            return new Mode(false, head);
        }
    }

    /**
     * The shell in a session of its own whose controlling terminal is the pty's slave: setsid, then a shell that
     * opens the slave as its stdio (the first terminal a session leader opens becomes its controlling one). In exec
     * mode the shell reads the one command line from the terminal and runs it as an interactive shell would, but is
     * not interactive itself: busybox's ash would print its banner first, which Kuasar's bash does not.
     */
    Process spawn(String slave, boolean exec) throws IOException {
        List<String> cmd = new ArrayList<>(List.of("setsid", "/bin/sh", "-c",
                "exec 0<>\"$1\" 1>&0 2>&0; " + (exec ? "exec \"$2\" -c 'IFS= read -r line && eval \"$line\"'"
                        : "exec \"$2\""), "sh", slave, shell));
        ProcessBuilder pb = new ProcessBuilder(cmd)
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                .redirectOutput(ProcessBuilder.Redirect.DISCARD)
                .redirectError(ProcessBuilder.Redirect.DISCARD);
        pb.environment().putIfAbsent("TERM", "linux");
        pb.environment().putIfAbsent("HOME", "/root");
        if (exec) {
            pb.environment().put("PS1", "");
            pb.environment().put("PS2", "");
        }
        pb.directory(new File("/"));
        return pb.start();
    }

    /** Copies until end-of-file or an error on either side, or until {@code ended}. */
    private static void copy(int from, int to, java.util.concurrent.atomic.AtomicBoolean ended) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment buf = arena.allocate(BUF);
            while (!ended.get()) {
                if (!Linux.pollIn(new int[]{from}, POLL_MILLIS)[0]) {
                    continue;
                }
                long n;
                try {
                    n = Linux.read(from, buf, BUF);
                } catch (ErrnoException e) {
                    return; // EIO: the terminal's last user has gone
                }
                if (n <= 0) {
                    return;
                }
                long off = 0;
                while (off < n) {
                    off += Linux.write(to, buf.asSlice(off), n - off);
                }
            }
        } catch (RuntimeException e) {
            LOG.debug("debug console copy ended: {}", e.getMessage());
        }
    }

    /** Some bytes, or null at end-of-file. */
    private static byte[] readSome(int fd) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment buf = arena.allocate(BUF);
            long n = Linux.read(fd, buf, BUF);
            return n <= 0 ? null : buf.asSlice(0, n).toArray(ValueLayout.JAVA_BYTE);
        }
    }

    private static void writeAll(int fd, byte[] bytes) {
        if (bytes.length == 0) {
            return;
        }
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment buf = arena.allocateFrom(ValueLayout.JAVA_BYTE, bytes);
            long off = 0;
            while (off < bytes.length) {
                off += Linux.write(fd, buf.asSlice(off), bytes.length - off);
            }
        } catch (RuntimeException e) {
            LOG.debug("debug console write: {}", e.getMessage());
        }
    }

    static int indexOf(byte[] b, byte v) {
        for (int i = 0; i < b.length; i++) {
            if (b[i] == v) {
                return i;
            }
        }
        return -1;
    }

    private static void sleep(int millis) {
        try {
            Thread.sleep(millis);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
