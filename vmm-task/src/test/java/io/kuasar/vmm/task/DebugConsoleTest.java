package io.kuasar.vmm.task;

import io.kuasar.sandbox.sys.Linux;
import io.kuasar.sandbox.sys.UnixSockets;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;

import static org.assertj.core.api.Assertions.assertThat;

/** The guest's debug console, run on the host: a session over a Unix socket with the host's /bin/sh. */
class DebugConsoleTest {
    @TempDir
    Path dir;

    @Test
    void firstLineDecidesTheMode() {
        DebugConsole.Mode exec = DebugConsole.Mode.of("KSR_MODE exec\necho hi\n".getBytes(StandardCharsets.UTF_8));
        assertThat(exec.exec()).isTrue();
        assertThat(new String(exec.rest(), StandardCharsets.UTF_8)).isEqualTo("echo hi\n");
        DebugConsole.Mode crlf = DebugConsole.Mode.of("KSR_MODE exec\r\n".getBytes(StandardCharsets.UTF_8));
        assertThat(crlf.exec()).isTrue();
        DebugConsole.Mode shell = DebugConsole.Mode.of("ls\n".getBytes(StandardCharsets.UTF_8));
        assertThat(shell.exec()).isFalse();
        assertThat(new String(shell.rest(), StandardCharsets.UTF_8)).isEqualTo("ls\n");
        assertThat(DebugConsole.Mode.of("KSR_MODE ex".getBytes(StandardCharsets.UTF_8)).exec()).isFalse();
    }

    @Test
    void execModeRunsTheCommandWithoutEchoAndEndsWhenItsTerminalCloses() throws Exception {
        String out = run("KSR_MODE exec\nexec sh -c '\"$@\"; rc=$?; printf \"%s:%s:%s\\n\" __KSR_EXIT__ tok \"$rc\"; "
                + "exit \"$rc\"' sh sh -c 'printf \"a\\nb\\n\"; tty >/dev/null && echo tty; exit 42'\n");
        // no echo of the command, no "\r\n", no prompt: exactly the command's output and the marker
        assertThat(out).isEqualTo("a\nb\ntty\n__KSR_EXIT__:tok:42\n");
    }

    @Test
    void execModePrintsNothingButTheCommandsOutputWithBusybox() throws Exception {
        org.junit.jupiter.api.Assumptions.assumeTrue(java.nio.file.Files.isExecutable(Path.of("/bin/busybox")));
        String out = run("KSR_MODE exec\nexec sh -c '\"$@\"; rc=$?; printf \"%s:%s:%s\\n\" __KSR_EXIT__ t \"$rc\"; "
                + "exit \"$rc\"' sh echo 'a  b'\n", "/bin/busybox-sh");
        assertThat(out).isEqualTo("a  b\n__KSR_EXIT__:t:0\n"); // no banner, no prompt
    }

    @Test
    void anyOtherFirstLineIsAnInteractiveShellThatEchoes() throws Exception {
        String out = run("echo one-$((40+2))\nexit 3\n");
        assertThat(out).contains("echo one-$((40+2))").contains("one-42\r\n");
    }

    /** Sends {@code input} as a host would, then reads until the session closes the connection. */
    private String run(String input) throws Exception {
        return run(input, "/bin/sh");
    }

    private String run(String input, String shell) throws Exception {
        if (shell.equals("/bin/busybox-sh")) {
            // busybox as the guest has it: a link named sh
            Path link = dir.resolve("sh");
            java.nio.file.Files.createSymbolicLink(link, Path.of("/bin/busybox"));
            shell = link.toString();
        }
        Path sock = dir.resolve("c.sock");
        int listening = UnixSockets.listen(sock.toString());
        try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            ch.connect(UnixDomainSocketAddress.of(sock));
            int fd = UnixSockets.accept(listening);
            ch.write(ByteBuffer.wrap(input.getBytes(StandardCharsets.UTF_8)));
            String sh = shell;
            CompletableFuture<Void> session = CompletableFuture.runAsync(() -> {
                try (var arena = java.lang.foreign.Arena.ofConfined()) {
                    var buf = arena.allocate(4096);
                    long n = Linux.read(fd, buf, 4096);
                    new DebugConsole(sh).session(fd, buf.asSlice(0, n).toArray(
                            java.lang.foreign.ValueLayout.JAVA_BYTE), false);
                } finally {
                    Linux.close(fd);
                }
            });
            ByteArrayOutputStream got = new ByteArrayOutputStream();
            ByteBuffer b = ByteBuffer.allocate(4096);
            long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
            while (System.nanoTime() < deadline && ch.read(b.clear()) > 0) {
                got.write(b.array(), 0, b.position());
            }
            session.get(); // the session returned once the shell's terminal closed
            return got.toString(StandardCharsets.UTF_8);
        } finally {
            Linux.close(listening);
        }
    }
}
