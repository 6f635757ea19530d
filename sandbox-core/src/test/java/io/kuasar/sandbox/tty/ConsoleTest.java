package io.kuasar.sandbox.tty;

import io.kuasar.sandbox.sys.Linux;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

/**
 * A terminal as runc sets it up (a real pty whose master comes through the console socket), and the moment its
 * last process exits: the master's fd number is free at once and the next open file of the daemon (here another
 * container's terminal) gets it. Nothing of the closed terminal may reach that file.
 */
class ConsoleTest {
    @TempDir
    Path dir;

    private final List<Integer> fds = new ArrayList<>();
    private Console console;
    private int masterNumber;

    @AfterEach
    void close() {
        if (console != null) {
            console.close();
        }
        fds.forEach(Linux::close);
    }

    /** Listens, sends a new pty's master as runc does, attaches; returns the pty (the test keeps only the slave). */
    private Pty attached(Path stdin) throws IOException {
        console = Console.listen(dir.resolve("c.sock"));
        Pty pty = Pty.open();
        fds.add(pty.slave);
        masterNumber = Pty.number(pty.master);
        Pty.sendFd(console.socketPath().toString(), pty.master);
        Linux.close(pty.master); // runc keeps no copy
        console.attach(stdin == null ? null : stdin.toFile(), dir.resolve("out").toFile(), Duration.ofSeconds(10));
        return pty;
    }

    /** The fd of this process that holds the master of pty number {@code n}. */
    private static int fdOfMaster(int n) throws IOException {
        try (var entries = Files.list(Path.of("/proc/self/fd"))) {
            for (Path p : entries.toList()) {
                try {
                    if (Files.readSymbolicLink(p).toString().contains("ptmx")) {
                        int fd = Integer.parseInt(p.getFileName().toString());
                        if (Pty.number(fd) == n) {
                            return fd;
                        }
                    }
                } catch (IOException gone) {
                    // the listing's own fd, or one closed meanwhile
                }
            }
        }
        throw new AssertionError("no fd holds the master of pty " + n);
    }

    /**
     * Closes the terminal's only slave (its last process exits), waits until the master's fd number is free, and
     * opens another pty whose master gets that number.
     */
    private Pty hangUpAndReuse(Pty pty) throws IOException {
        int held = fdOfMaster(masterNumber);
        Linux.close(pty.slave);
        fds.remove((Integer) pty.slave);
        await().atMost(Duration.ofSeconds(10)).until(() -> !Files.exists(Path.of("/proc/self/fd/" + held)));
        // The kernel hands out the lowest free number: fill the holes below it, then the next pty gets it.
        List<Integer> fillers = new ArrayList<>();
        try {
            int fd;
            while ((fd = Linux.open("/dev/null", Linux.O_RDONLY | Linux.O_CLOEXEC)) < held) {
                fillers.add(fd);
            }
            Linux.close(fd);
            assertThat(fd).as("fd %d is free", held).isEqualTo(held);
            Pty other = Pty.open();
            fds.add(other.master);
            fds.add(other.slave);
            assertThat(other.master).isEqualTo(held);
            return other;
        } finally {
            fillers.forEach(Linux::close);
        }
    }

    @Test
    void resizeAfterTheTerminalClosedNeverTouchesTheFdsNextOwner() throws Exception {
        Pty pty = attached(null);
        console.resize(80, 24);
        assertThat(Pty.windowSize(pty.slave)).containsExactly(24, 80);

        Pty other = hangUpAndReuse(pty);
        assertThatThrownBy(() -> console.resize(132, 50)).hasMessageContaining("terminal")
                .hasMessageContaining("has closed");
        assertThat(Pty.windowSize(other.slave)).as("the other terminal's size").containsExactly(0, 0);
    }

    @Test
    void stdinAfterTheTerminalClosedNeverLandsInTheFdsNextOwner() throws Exception {
        Path stdin = dir.resolve("stdin");
        assertThat(new ProcessBuilder("mkfifo", stdin.toString()).start().waitFor()).isZero();
        Pty pty = attached(stdin);
        try (OutputStream in = new FileOutputStream(stdin.toFile())) {
            in.write("hello\n".getBytes(StandardCharsets.UTF_8));
            in.flush();
            assertThat(readLine(pty.slave)).isEqualTo("hello\n");

            Pty other = hangUpAndReuse(pty);
            in.write("leak\n".getBytes(StandardCharsets.UTF_8));
            in.flush();
            // The stdin copy has taken the line and is done with it once its thread has ended.
            await().atMost(Duration.ofSeconds(10)).until(() -> Thread.getAllStackTraces().keySet().stream()
                    .noneMatch(t -> t.getName().equals("console-in")));
            // A line of our own behind anything the closed terminal's stdin put there: the queue is ordered.
            write(other.master, "mine\n");
            assertThat(readLine(other.slave)).as("the other terminal's first input line").isEqualTo("mine\n");
        }
    }

    private static String readLine(int fd) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment buf = arena.allocate(256);
            long n = Linux.read(fd, buf, 256);
            return new String(buf.asSlice(0, n).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE), StandardCharsets.UTF_8);
        }
    }

    private static void write(int fd, String s) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment buf = arena.allocateFrom(s, StandardCharsets.UTF_8);
            Linux.write(fd, buf, s.getBytes(StandardCharsets.UTF_8).length);
        }
    }
}
