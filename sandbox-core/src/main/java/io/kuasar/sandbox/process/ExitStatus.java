package io.kuasar.sandbox.process;

import java.time.Instant;

/**
 * How a process ended. {@code code} follows the shell convention: a process killed by a signal has 128 + signal
 * (SIGKILL is 137). {@code known} is false when the process was not our child (for example after a daemon restart)
 * and the kernel could not tell us its status.
 */
public record ExitStatus(int code, Instant exitedAt, boolean known) {
    public static final int UNKNOWN_CODE = 255;

    public static ExitStatus of(int code) {
        return new ExitStatus(code, Instant.now(), true);
    }

    public static ExitStatus unknown() {
        return new ExitStatus(UNKNOWN_CODE, Instant.now(), false);
    }
}
