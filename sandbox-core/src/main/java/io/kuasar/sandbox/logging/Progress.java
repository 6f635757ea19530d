package io.kuasar.sandbox.logging;

import org.slf4j.Logger;

import java.time.Duration;

/**
 * Progress of a long operation in the daemon's log (a VM template, a large module's first compile): a line when it
 * starts, one every {@link #EVERY} while it runs, and one with its duration when it ends. With a {@code quiet}
 * period, nothing is logged unless the operation outlasts it (most compiles take milliseconds).
 * <p>
 * {@code try (Progress p = Progress.start(LOG, "making the VM template", Duration.ZERO)) { ... }}
 */
public final class Progress implements AutoCloseable {
    static final Duration EVERY = Duration.ofSeconds(10);

    private final Logger log;
    private final String what;
    private final long startNanos = System.nanoTime();
    private final Thread ticker;
    private volatile boolean told;
    private boolean failed;

    private Progress(Logger log, String what, Duration quiet) {
        this.log = log;
        this.what = what;
        if (quiet.isZero()) {
            log.info("{} ...", what);
            told = true;
        }
        this.ticker = Thread.ofVirtual().name("progress").start(() -> tick(quiet));
    }

    public static Progress start(Logger log, String what, Duration quiet) {
        return new Progress(log, what, quiet);
    }

    private void tick(Duration quiet) {
        try {
            Thread.sleep(quiet.isZero() ? EVERY : quiet);
            while (true) {
                told = true;
                log.info("{}: still running after {} s", what, (System.nanoTime() - startNanos) / 1_000_000_000L);
                Thread.sleep(EVERY);
            }
        } catch (InterruptedException done) {
            // close()
        }
    }

    /** Marks the operation failed: the last line says so (the caller logs why). */
    public void failed() {
        failed = true;
    }

    @Override
    public void close() {
        ticker.interrupt();
        if (told) {
            log.info("{}: {} after {} ms", what, failed ? "failed" : "done", (System.nanoTime() - startNanos) / 1_000_000);
        }
    }
}
