package io.kuasar.wasm.engine;

import io.kuasar.sandbox.process.ExitStatus;

import java.util.concurrent.CompletableFuture;

/** A running instance. */
public interface WasmProcess {
    /**
     * Completes when the instance ends: its WASI exit code ({@code proc_exit}, or 0 when {@code _start} returns),
     * 128 + the signal when it was killed, {@link #TRAP_CODE} when it trapped (the trap's message is on its stderr).
     */
    CompletableFuture<ExitStatus> exit();

    /** Stops the instance as a signal would (every signal ends it: a module has no handlers); false if it had ended. */
    boolean kill(int signal);

    /** Linear memory in use, in bytes (0 before the instance exists or after it ended). */
    long memoryBytes();

    /** CPU time the instance's thread has used, in nanoseconds. */
    long cpuNanos();

    /**
     * Runs {@code onOom} when the instance is ended for exceeding its container's memory limit (at once if it already
     * was); false if this engine cannot tell, and then no OOM event is published for it.
     */
    default boolean watchOom(Runnable onOom) {
        return false;
    }

    /** What a restarted daemon needs to find what this instance left running (see {@link WasmEngine#reclaim}). */
    default java.util.Map<String, String> facts() {
        return java.util.Map.of();
    }

    /** A trap is reported as an abort, as WasmEdge's CLI reports it (134 = 128 + SIGABRT). */
    int TRAP_CODE = 134;
}
