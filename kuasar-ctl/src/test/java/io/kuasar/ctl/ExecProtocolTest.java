package io.kuasar.ctl;

import org.junit.jupiter.api.Test;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class ExecProtocolTest {
    @Test
    void requestIsKuasarsModeLineThenOneQuotedCommandLine() {
        String r = new String(ExecProtocol.request("t0k", List.of("sh", "-c", "echo 'hi there'; exit 3")),
                StandardCharsets.UTF_8);
        assertThat(r).isEqualTo("KSR_MODE exec\nexec sh -c '\"$@\"; rc=$?; printf \"%s:%s:%s\\n\" __KSR_EXIT__ t0k "
                + "\"$rc\"; exit \"$rc\"' sh 'sh' '-c' 'echo '\\''hi there'\\''; exit 3'\n");
        assertThat(ExecProtocol.quote("a'b")).isEqualTo("'a'\\''b'");
        assertThat(ExecProtocol.token()).hasSize(16).isNotEqualTo(ExecProtocol.token());
    }

    @Test
    void requestRefusesWhatTheTerminalCannotCarry() {
        assertThatThrownBy(() -> ExecProtocol.request("t", List.of())).hasMessageContaining("no command");
        assertThatThrownBy(() -> ExecProtocol.request("t", List.of("echo", "a\nb"))).hasMessageContaining("newline");
        assertThatThrownBy(() -> ExecProtocol.request("t", List.of("x".repeat(5000)))).hasMessageContaining("4095");
    }

    @Test
    void scannerPassesOutputThroughAndStopsAtTheMarker() throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ExecProtocol.Scanner s = new ExecProtocol.Scanner("abc", out);
        assertThat(feed(s, "hello\n")).isEqualTo(-1);
        assertThat(out.toString()).isEqualTo("hello\n");
        assertThat(feed(s, "no newline__KSR_EX")).isEqualTo(-1);
        assertThat(out.toString()).isEqualTo("hello\nno newline"); // the possible marker is held back
        assertThat(feed(s, "IT__:abc:4")).isEqualTo(-1);
        assertThat(feed(s, "2")).isEqualTo(-1);
        assertThat(feed(s, "\nafter")).isEqualTo(42);
        assertThat(out.toString()).isEqualTo("hello\nno newline");
        assertThat(s.exitCode()).isEqualTo(42);
    }

    @Test
    void scannerIgnoresOtherTokensAndLookalikes() throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ExecProtocol.Scanner s = new ExecProtocol.Scanner("abc", out);
        assertThat(feed(s, "__KSR_EXIT__:xyz:1\n__KSR_EXIT__:abc:x\n__KSR_EXIT__:abc:0\r\n")).isEqualTo(0);
        assertThat(out.toString()).isEqualTo("__KSR_EXIT__:xyz:1\n__KSR_EXIT__:abc:x\n");
    }

    @Test
    void scannerHandsBackHeldBytesAtEndOfStream() throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ExecProtocol.Scanner s = new ExecProtocol.Scanner("abc", out);
        feed(s, "x__KSR");
        s.finish();
        assertThat(out.toString()).isEqualTo("x__KSR");
    }

    @Test
    void scannerTakesOneByteAtATime() throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ExecProtocol.Scanner s = new ExecProtocol.Scanner("abc", out);
        String all = "a_b__KSR_EXIT__:ab\n__KSR_EXIT__:abc:255\n";
        int rc = -1;
        for (char c : all.toCharArray()) {
            rc = feed(s, String.valueOf(c));
        }
        assertThat(rc).isEqualTo(255);
        assertThat(out.toString()).isEqualTo("a_b__KSR_EXIT__:ab\n");
    }

    private static int feed(ExecProtocol.Scanner s, String text) throws Exception {
        byte[] b = text.getBytes(StandardCharsets.UTF_8);
        return s.feed(b, 0, b.length);
    }
}
