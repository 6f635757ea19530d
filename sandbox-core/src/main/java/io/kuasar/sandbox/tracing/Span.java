package io.kuasar.sandbox.tracing;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * One timed operation: an RPC this daemon serves (kind SERVER) or a slow step inside one (INTERNAL: a VM boot, a
 * runc call, a module compile). Every span is timed and its duration goes to the daemon's step metrics; only a
 * sampled span of a daemon with tracing on is recorded and exported over OTLP.
 * <p>
 * {@code try (Span s = Tracing.step("vm.boot")) { ... }}: the span is the thread's current one until closed, so the
 * steps inside it become its children.
 */
public final class Span implements AutoCloseable {
    public enum Kind { INTERNAL, SERVER }

    final String name;
    final Kind kind;
    final String traceId;
    final String spanId;
    final String parentSpanId;
    final boolean recording;
    final long startEpochNanos;
    private final long startNanos;
    private final boolean step;
    private Map<String, Object> attributes;
    private String error;
    private long endEpochNanos;
    private Span previous;
    private boolean current;
    private boolean ended;

    Span(String name, Kind kind, String traceId, String spanId, String parentSpanId, boolean recording, boolean step) {
        this.name = name;
        this.kind = kind;
        this.traceId = traceId;
        this.spanId = spanId;
        this.parentSpanId = parentSpanId;
        this.recording = recording;
        this.step = step;
        this.startEpochNanos = recording ? Tracing.epochNanos() : 0; // only an exported span needs wall time
        this.startNanos = System.nanoTime();
    }

    public String name() {
        return name;
    }

    /** Whether this span is exported (tracing on and the trace sampled). */
    public boolean recording() {
        return recording;
    }

    /** Its W3C context, for a call this span makes to another traced service. */
    public TraceParent context() {
        return new TraceParent(traceId, spanId, recording);
    }

    /** Adds an attribute (a String, long/int, double or boolean); ignored when the span is not recorded. */
    public synchronized Span attr(String key, Object value) {
        if (recording && value != null) {
            if (attributes == null) {
                attributes = new LinkedHashMap<>();
            }
            attributes.put(key, value);
        }
        return this;
    }

    /** Marks the span failed with {@code message} (its OTLP status is ERROR). */
    public synchronized Span error(String message) {
        error = message == null ? "" : message;
        return this;
    }

    public Span error(Throwable t) {
        return error(t.getMessage() != null ? t.getMessage() : t.getClass().getSimpleName());
    }

    /** Makes this the thread's current span until {@link #close()}: spans started meanwhile are its children. */
    public Span activate() {
        previous = Tracing.swapCurrent(this);
        current = true;
        return this;
    }

    /** A span made current for a while without ending it (a gRPC call's callbacks run on several threads). */
    public interface Scope extends AutoCloseable {
        @Override
        void close();
    }

    /** Makes this span current on this thread until the scope closes; does not end it. */
    public Scope enter() {
        Span before = Tracing.swapCurrent(this);
        return () -> Tracing.swapCurrent(before);
    }

    /** Ends the span (once) and, when it was made current, restores the thread's previous span. */
    @Override
    public void close() {
        synchronized (this) {
            if (ended) {
                return;
            }
            ended = true;
            endEpochNanos = startEpochNanos + (System.nanoTime() - startNanos);
        }
        if (current) {
            Tracing.swapCurrent(previous);
        }
        Tracing.ended(this, step, endEpochNanos - startEpochNanos, error != null);
    }

    synchronized Map<String, Object> attributes() {
        return attributes == null ? Map.of() : Map.copyOf(attributes);
    }

    synchronized String errorMessage() {
        return error;
    }

    synchronized long endEpochNanos() {
        return endEpochNanos;
    }

    @Override
    public String toString() {
        return name + "[" + traceId + "/" + spanId + "]";
    }
}
