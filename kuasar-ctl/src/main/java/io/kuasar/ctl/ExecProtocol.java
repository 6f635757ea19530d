package io.kuasar.ctl;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.HexFormat;
import java.util.List;

/**
 * Kuasar's debug console exec protocol (its {@code tools/kuasar-ctl}): the first line {@value #EXEC_MODE} (the
 * guest's shell then neither echoes nor prompts), then one line that runs the command and prints
 * {@code __KSR_EXIT__:<token>:<rc>} after it; the token is random per run, so the command's own output cannot fake
 * the marker.
 */
final class ExecProtocol {
    static final String EXEC_MODE = "KSR_MODE exec";
    static final String MARKER = "__KSR_EXIT__";
    /** A terminal in canonical mode takes at most 4095 bytes and the newline in one line (Linux's N_TTY). */
    static final int MAX_LINE = 4095;

    private ExecProtocol() {
    }

    static String token() {
        byte[] b = new byte[8];
        new SecureRandom().nextBytes(b);
        return HexFormat.of().formatHex(b);
    }

    /** What kuasar-ctl sends: the mode line and the command line, each ending in a newline. */
    static byte[] request(String token, List<String> args) {
        if (args.isEmpty()) {
            throw new CtlException("no command to run: kuasar-ctl exec <sandbox> -- <command> [args...]");
        }
        StringBuilder line = new StringBuilder("exec sh -c '\"$@\"; rc=$?; printf \"%s:%s:%s\\n\" " + MARKER + " "
                + token + " \"$rc\"; exit \"$rc\"' sh");
        for (String a : args) {
            if (a.indexOf('\n') >= 0 || a.indexOf('\r') >= 0 || a.indexOf('\0') >= 0) {
                throw new CtlException("an argument holds a newline, carriage return or NUL: the console's terminal "
                        + "reads the command as one line");
            }
            line.append(' ').append(quote(a));
        }
        byte[] cmd = line.toString().getBytes(StandardCharsets.UTF_8);
        if (cmd.length > MAX_LINE) {
            throw new CtlException("the command is " + cmd.length + " bytes once quoted; the console's terminal takes "
                    + MAX_LINE + " in one line");
        }
        return (EXEC_MODE + "\n" + line + "\n").getBytes(StandardCharsets.UTF_8);
    }

    /** Single-quoted for sh: {@code it's} becomes {@code 'it'\''s'}. */
    static String quote(String s) {
        return "'" + s.replace("'", "'\\''") + "'";
    }

    /**
     * Passes the console's output through to {@code out}, up to the exit marker; holds back only bytes that may be
     * the start of the marker.
     */
    static final class Scanner {
        private final byte[] head;
        private final OutputStream out;
        private final ByteArrayOutputStream pending = new ByteArrayOutputStream();
        private int exitCode = -1;

        Scanner(String token, OutputStream out) {
            this.head = (MARKER + ":" + token + ":").getBytes(StandardCharsets.US_ASCII);
            this.out = out;
        }

        /** The guest's exit code once the marker has come, else -1. */
        int exitCode() {
            return exitCode;
        }

        /** Takes output; returns the exit code once the marker is complete, else -1. Nothing is taken after it. */
        int feed(byte[] b, int off, int len) throws IOException {
            if (exitCode >= 0) {
                return exitCode;
            }
            pending.write(b, off, len);
            byte[] buf = pending.toByteArray();
            int from = 0;
            while (true) {
                int at = find(buf, head, from);
                if (at < 0) {
                    // hold back the longest tail that could still become the marker's head
                    int keep = Math.min(partial(buf, head), buf.length - from);
                    out.write(buf, from, buf.length - keep - from);
                    out.flush();
                    keepPending(buf, buf.length - keep);
                    return -1;
                }
                int i = at + head.length;
                while (i < buf.length && Character.isDigit(buf[i]) && i - at - head.length < 3) {
                    i++;
                }
                int digits = i - at - head.length;
                int nl = i < buf.length && buf[i] == '\r' ? i + 1 : i;
                if (nl >= buf.length) {
                    out.write(buf, from, at - from); // the marker so far: wait for the rest
                    out.flush();
                    keepPending(buf, at);
                    return -1;
                }
                if (digits > 0 && buf[nl] == '\n') {
                    out.write(buf, from, at - from);
                    out.flush();
                    exitCode = Integer.parseInt(new String(buf, at + head.length, digits, StandardCharsets.US_ASCII));
                    pending.reset();
                    return exitCode;
                }
                // not a marker after all: pass it through and look further
                out.write(buf, from, at + 1 - from);
                from = at + 1;
            }
        }

        /** At end of stream without a marker: what was held back is output. */
        void finish() throws IOException {
            if (exitCode < 0) {
                pending.writeTo(out);
                pending.reset();
                out.flush();
            }
        }

        private void keepPending(byte[] buf, int from) {
            pending.reset();
            pending.write(buf, from, buf.length - from);
        }

        private static int find(byte[] buf, byte[] what, int from) {
            outer:
            for (int i = from; i <= buf.length - what.length; i++) {
                for (int j = 0; j < what.length; j++) {
                    if (buf[i + j] != what[j]) {
                        continue outer;
                    }
                }
                return i;
            }
            return -1;
        }

        /** The length of the longest tail of {@code buf} that is a proper prefix of {@code what}. */
        private static int partial(byte[] buf, byte[] what) {
            for (int n = Math.min(what.length - 1, buf.length); n > 0; n--) {
                boolean match = true;
                for (int j = 0; j < n && match; j++) {
                    match = buf[buf.length - n + j] == what[j];
                }
                if (match) {
                    return n;
                }
            }
            return 0;
        }
    }
}
