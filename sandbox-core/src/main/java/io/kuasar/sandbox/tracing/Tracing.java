package io.kuasar.sandbox.tracing;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.time.Instant;
import java.util.HexFormat;
import java.util.concurrent.ThreadLocalRandom;

/**
 * The daemon's tracer, one per process as OpenTelemetry's global one: server spans for every Sandbox API and Task
 * API call (continuing the W3C trace context the caller sent), and {@link #step} spans for the slow work inside them.
 * Off unless {@code [sandbox].enable_tracing} (Kuasar's key) turns it on; SIGUSR1 toggles it at run time. Steps are
 * timed whether or not tracing is on: their durations feed the daemon's {@code kuasar_step_duration_seconds}.
 */
public final class Tracing {
    private static final Logger LOG = LoggerFactory.getLogger(Tracing.class);
    private static final ThreadLocal<Span> CURRENT = new ThreadLocal<>();
    private static final HexFormat HEX = HexFormat.of();

    /** Receives the duration of every ended step, traced or not. */
    @FunctionalInterface
    public interface StepObserver {
        void step(String name, long nanos, boolean failed);
    }

    private static volatile boolean enabled;
    private static volatile TracingSettings settings;
    private static volatile OtlpExporter exporter;
    private static volatile StepObserver observer = (name, nanos, failed) -> { };

    private Tracing() {
    }

    /** Sets where spans go and whether tracing starts on; the exporter starts when tracing is first on. */
    public static synchronized void configure(TracingSettings s, boolean on) {
        settings = s;
        setEnabled(on && !s.sdkDisabled());
        if (s.sdkDisabled() && on) {
            LOG.info("tracing stays off: OTEL_SDK_DISABLED=true");
        }
    }

    public static void observeSteps(StepObserver o) {
        observer = o;
    }

    public static boolean enabled() {
        return enabled;
    }

    /** Turns tracing on or off; spans already ended are still exported. */
    public static synchronized void setEnabled(boolean on) {
        if (on && settings == null) {
            throw new IllegalStateException("tracing is not configured");
        }
        if (on && exporter == null) {
            exporter = new OtlpExporter(settings);
        }
        if (on != enabled) {
            LOG.info("tracing {}{}", on ? "on: spans go to " : "off", on ? settings.endpoint() + " ("
                    + settings.protocol() + ") as " + settings.serviceName() : "");
        }
        enabled = on;
    }

    /** SIGUSR1: flips tracing, as Kuasar's daemons do; returns the new state. */
    public static synchronized boolean toggle() {
        setEnabled(!enabled);
        return enabled;
    }

    /** The exporter, when tracing was ever on (its counters feed the daemon's metrics). */
    public static OtlpExporter exporter() {
        return exporter;
    }

    /** Sends what is queued and stops the exporter (at daemon exit). */
    public static synchronized void shutdown() {
        enabled = false;
        if (exporter != null) {
            exporter.close();
            exporter = null;
        }
    }

    /**
     * A span for one call this daemon serves, a child of the caller's {@code traceparent} when it sent a valid one.
     * Not made current: the caller activates it on the thread(s) that run the handler.
     */
    public static Span server(String rpcSystem, String service, String method, String traceparent) {
        if (!enabled) {
            return new Span(method, Span.Kind.SERVER, "", "", "", false, false); // never exported: no full name
        }
        TraceParent parent = TraceParent.parse(traceparent);
        Span span = start(service + "/" + method, Span.Kind.SERVER, parent, false);
        return span.attr("rpc.system", rpcSystem).attr("rpc.service", service).attr("rpc.method", method);
    }

    /**
     * A step inside the current call (or a new trace when there is none), current until closed:
     * {@code try (Span s = Tracing.step("vm.boot")) { ... }}. Names are dotted, lower case ({@code oci.create},
     * {@code vm.boot}, {@code wasm.compile}); each is also a {@code step} label of the daemon's metrics.
     */
    public static Span step(String name) {
        Span parent = CURRENT.get();
        Span span;
        if (!enabled) {
            span = new Span(name, Span.Kind.INTERNAL, "", "", "", false, true);
        } else if (parent != null && !parent.traceId.isEmpty()) {
            span = start(name, Span.Kind.INTERNAL, parent.context(), true);
        } else {
            span = start(name, Span.Kind.INTERNAL, null, true);
        }
        return span.activate();
    }

    /** The thread's current span, or null. */
    public static Span current() {
        return CURRENT.get();
    }

    private static Span start(String name, Span.Kind kind, TraceParent parent, boolean step) {
        TracingSettings s = settings;
        String traceId;
        boolean sampled;
        if (parent != null) {
            traceId = parent.traceId();
            sampled = s.sampler().parentBased() ? parent.sampled() : s.sampler().sampleRoot(traceId);
        } else {
            traceId = randomId(16);
            sampled = s.sampler().sampleRoot(traceId);
        }
        return new Span(name, kind, traceId, randomId(8), parent == null ? "" : parent.spanId(), sampled, step);
    }

    static Span swapCurrent(Span s) {
        Span previous = CURRENT.get();
        if (s == null) {
            CURRENT.remove();
        } else {
            CURRENT.set(s);
        }
        return previous;
    }

    static void ended(Span span, boolean step, long nanos, boolean failed) {
        if (step) {
            observer.step(span.name, nanos, failed);
        }
        OtlpExporter e = exporter;
        if (span.recording && e != null) {
            e.offer(span);
        }
    }

    static long epochNanos() {
        Instant now = Instant.now();
        return now.getEpochSecond() * 1_000_000_000L + now.getNano();
    }

    private static String randomId(int bytes) {
        byte[] b = new byte[bytes];
        do {
            ThreadLocalRandom.current().nextBytes(b);
        } while (allZero(b));
        return HEX.formatHex(b);
    }

    private static boolean allZero(byte[] b) {
        for (byte x : b) {
            if (x != 0) {
                return false;
            }
        }
        return true;
    }
}
