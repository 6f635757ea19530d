package io.kuasar.sandbox.cli;

import io.kuasar.sandbox.sys.UnixSockets;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/** The datagram systemd would receive, read by a Python receiver (the JDK has no AF_UNIX datagram sockets). */
class SystemdNotifyTest {
    @TempDir
    Path dir;

    @Test
    void sendsTheStateAsOneDatagram() throws Exception {
        Path sock = dir.resolve("notify.sock");
        Process receiver = new ProcessBuilder("python3", "-c", """
                import socket, sys
                s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                s.bind(sys.argv[1]); print("bound", flush=True)
                s.settimeout(10); print(s.recv(4096).decode(), flush=True)
                """, sock.toString()).redirectErrorStream(true).start();
        BufferedReader out = new BufferedReader(new InputStreamReader(receiver.getInputStream(), StandardCharsets.UTF_8));
        assertThat(out.readLine()).isEqualTo("bound");
        UnixSockets.sendDatagram(sock.toString(), "READY=1\nMAINPID=42".getBytes(StandardCharsets.UTF_8));
        assertThat(out.readLine()).isEqualTo("READY=1");
        assertThat(out.readLine()).isEqualTo("MAINPID=42");
        assertThat(receiver.waitFor(10, TimeUnit.SECONDS)).isTrue();
        assertThat(Files.exists(sock)).isTrue();
    }

    @Test
    void withoutNotifySocketItIsANoOp() {
        if (System.getenv("NOTIFY_SOCKET") == null) {
            assertThat(SystemdNotify.notify("READY=1")).isFalse();
        }
    }
}
