package io.kuasar.sandbox.metrics;

import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.LongAdder;
import java.util.function.LongSupplier;

/**
 * The daemon's metrics in the Prometheus text format. Every daemon exposes the same families ({@link #FAMILIES}),
 * each with its HELP and TYPE even before it has a sample, so one dashboard and one set of alerts fit all of them;
 * what differs is the label values (a {@code step} only the microVM daemon takes, a {@code cache} only Wasm has).
 * <p>
 * Deliberately small and without a client library: a handful of families, one map lookup and a few adds per event,
 * no classes loaded for features the daemon does not use (the daemons' memory is a feature, docs/benchmark.md).
 */
public final class MetricsRegistry {
    /** RPC latency buckets in seconds: sub-millisecond ttrpc calls up to multi-second runc operations. */
    private static final double[] RPC_BUCKETS = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
            2.5, 5, 10};
    /** Step buckets: a runc call (~20 ms) up to a microVM boot under TCG (~15 s) or a large module's compile. */
    private static final double[] STEP_BUCKETS = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20,
            30, 60, 120};

    private record Family(String name, String type, String help) {
    }

    /** The families every daemon serves, in the order they are written. */
    public static final List<String> FAMILIES;
    private static final Map<String, Family> CORE = new LinkedHashMap<>();

    static {
        core("kuasar_build_info", "gauge", "Always 1; the daemon and its version as labels.");
        core("kuasar_sandboxes", "gauge", "Sandboxes known to this daemon, by phase.");
        core("kuasar_containers", "gauge", "Containers served by this daemon's Task API.");
        core("kuasar_rpc_requests_total", "counter", "RPCs served, by API, method and status code.");
        core("kuasar_rpc_duration_seconds", "histogram", "RPC latency.");
        core("kuasar_step_duration_seconds", "histogram",
                "Duration of the slow steps inside RPCs (vm.boot, vm.agent, oci.create, wasm.compile, ...).");
        core("kuasar_step_failures_total", "counter", "Steps that failed, by step.");
        core("kuasar_cache_requests_total", "counter",
                "Cache lookups by cache and result (hit or miss), e.g. the Wasm engines' compiled modules.");
        core("kuasar_tracing_enabled", "gauge", "1 while OTLP tracing is on ([sandbox].enable_tracing, SIGUSR1).");
        core("kuasar_tracing_spans_total", "counter", "Spans by outcome: exported, dropped (queue full), failed.");
        core("kuasar_process_open_fds", "gauge", "Open file descriptors of the daemon.");
        core("kuasar_process_threads", "gauge", "Live JVM threads (platform and virtual carriers).");
        core("kuasar_process_heap_used_bytes", "gauge", "Java heap in use.");
        FAMILIES = List.copyOf(CORE.keySet());
    }

    private static void core(String name, String type, String help) {
        CORE.put(name, new Family(name, type, help));
    }

    private static final MetricsRegistry GLOBAL = new MetricsRegistry();

    /** The process's registry, as Prometheus' default one: for code deep inside a daemon (an engine's cache). */
    public static MetricsRegistry global() {
        return GLOBAL;
    }

    private final Map<String, Family> extra = new ConcurrentHashMap<>();
    private final Map<String, LongSupplier> gauges = new ConcurrentHashMap<>();
    private final Map<String, LongAdder> counters = new ConcurrentHashMap<>();
    private final Map<RpcKey, RpcStats> rpcs = new ConcurrentHashMap<>();
    private final Map<String, Histogram> steps = new ConcurrentHashMap<>();

    /** One RPC method; its labels are written at scrape time, not per call. */
    private record RpcKey(String api, String method) {
        String labels() {
            return "api=\"" + api + "\",method=\"" + method + "\"";
        }
    }

    private static final class RpcStats {
        final Histogram latency = new Histogram(RPC_BUCKETS);
        final Map<String, LongAdder> byCode = new ConcurrentHashMap<>();
    }

    private static final class Histogram {
        final double[] bounds;
        final LongAdder[] buckets;
        final LongAdder count = new LongAdder();
        final LongAdder sumNanos = new LongAdder();

        Histogram(double[] bounds) {
            this.bounds = bounds;
            this.buckets = new LongAdder[bounds.length];
            for (int i = 0; i < buckets.length; i++) {
                buckets[i] = new LongAdder();
            }
        }

        void observe(long nanos) {
            double seconds = nanos / 1e9;
            for (int i = 0; i < bounds.length; i++) {
                if (seconds <= bounds[i]) {
                    buckets[i].increment();
                    break;
                }
            }
            count.increment();
            sumNanos.add(nanos);
        }

        void render(StringBuilder b, String family, String labels) {
            long cumulative = 0;
            for (int i = 0; i < bounds.length; i++) {
                cumulative += buckets[i].sum();
                b.append(family).append("_bucket{").append(labels).append(",le=\"").append(bounds[i]).append("\"} ")
                        .append(cumulative).append('\n');
            }
            b.append(family).append("_bucket{").append(labels).append(",le=\"+Inf\"} ").append(count.sum()).append('\n');
            b.append(family).append("_sum{").append(labels).append("} ").append(sumNanos.sum() / 1e9).append('\n');
            b.append(family).append("_count{").append(labels).append("} ").append(count.sum()).append('\n');
        }
    }

    public MetricsRegistry() {
        gauge("kuasar_process_open_fds", "", MetricsRegistry::openFds);
        gauge("kuasar_process_threads", "", () -> ManagementFactory.getThreadMXBean().getThreadCount());
        gauge("kuasar_process_heap_used_bytes", "",
                () -> ManagementFactory.getMemoryMXBean().getHeapMemoryUsage().getUsed());
    }

    /**
     * Registers a gauge; {@code name} may carry labels, e.g. {@code kuasar_sandboxes{phase="running"}}. {@code help}
     * is used for a family that is not one of {@link #FAMILIES}.
     */
    public void gauge(String name, String help, LongSupplier value) {
        declare(baseName(name), "gauge", help);
        gauges.put(name, value);
    }

    /** The counter {@code name} (with its labels), made on first use; its family must be core or declared here. */
    public LongAdder counter(String name, String help) {
        declare(baseName(name), "counter", help);
        return counters.computeIfAbsent(name, n -> new LongAdder());
    }

    /** Counts one lookup of {@code cache} (e.g. "wasm.module"), a hit or a miss. */
    public void cacheLookup(String cache, boolean hit) {
        counters.computeIfAbsent("kuasar_cache_requests_total{cache=\"" + cache + "\",result=\""
                + (hit ? "hit" : "miss") + "\"}", n -> new LongAdder()).increment();
    }

    /** Records one RPC: {@code api} is "sandbox" or "task", {@code code} the gRPC status code name. */
    public void recordRpc(String api, String method, String code, long nanos) {
        RpcStats s = rpcs.computeIfAbsent(new RpcKey(api, method), k -> new RpcStats());
        s.latency.observe(nanos);
        s.byCode.computeIfAbsent(code, c -> new LongAdder()).increment();
    }

    /** Records one step (see {@code Tracing.step}): its duration and whether it failed. */
    public void recordStep(String step, long nanos, boolean failed) {
        steps.computeIfAbsent(step, k -> new Histogram(STEP_BUCKETS)).observe(nanos);
        if (failed) {
            counters.computeIfAbsent("kuasar_step_failures_total{step=\"" + step + "\"}", n -> new LongAdder())
                    .increment();
        }
    }

    private void declare(String family, String type, String help) {
        if (!CORE.containsKey(family)) {
            extra.putIfAbsent(family, new Family(family, type, help));
        }
    }

    /** The exposition text: every core family first, then any a daemon declared itself. */
    public String scrape() {
        StringBuilder b = new StringBuilder(8192);
        List<Family> all = new ArrayList<>(CORE.values());
        new TreeMap<>(extra).values().forEach(all::add);
        Map<String, List<String>> gaugeNames = byFamily(gauges.keySet());
        Map<String, List<String>> counterNames = byFamily(counters.keySet());
        for (Family f : all) {
            b.append("# HELP ").append(f.name()).append(' ').append(f.help()).append('\n');
            b.append("# TYPE ").append(f.name()).append(' ').append(f.type()).append('\n');
            for (String name : gaugeNames.getOrDefault(f.name(), List.of())) {
                LongSupplier v = gauges.get(name);
                b.append(name).append(' ').append(v.getAsLong()).append('\n');
            }
            for (String name : counterNames.getOrDefault(f.name(), List.of())) {
                b.append(name).append(' ').append(counters.get(name).sum()).append('\n');
            }
            switch (f.name()) {
                case "kuasar_rpc_requests_total" -> sortedRpcs().forEach((key, st) -> new TreeMap<>(st.byCode)
                        .forEach((code, n) -> b.append(f.name()).append('{').append(key.labels()).append(",code=\"")
                                .append(code).append("\"} ").append(n.sum()).append('\n')));
                case "kuasar_rpc_duration_seconds" ->
                        sortedRpcs().forEach((key, st) -> st.latency.render(b, f.name(), key.labels()));
                case "kuasar_step_duration_seconds" -> new TreeMap<>(steps)
                        .forEach((step, h) -> h.render(b, f.name(), "step=\"" + step + "\""));
                default -> {
                }
            }
        }
        return b.toString();
    }

    private Map<RpcKey, RpcStats> sortedRpcs() {
        Map<RpcKey, RpcStats> m = new TreeMap<>(java.util.Comparator.comparing(RpcKey::api)
                .thenComparing(RpcKey::method));
        m.putAll(rpcs);
        return m;
    }

    private static Map<String, List<String>> byFamily(Iterable<String> names) {
        Map<String, List<String>> m = new TreeMap<>();
        for (String n : names) {
            m.computeIfAbsent(baseName(n), k -> new ArrayList<>()).add(n);
        }
        m.values().forEach(l -> l.sort(null));
        return m;
    }

    private static String baseName(String name) {
        int i = name.indexOf('{');
        return i < 0 ? name : name.substring(0, i);
    }

    static long openFds() {
        try (var s = Files.list(Path.of("/proc/self/fd"))) {
            return s.count();
        } catch (Exception e) {
            return -1;
        }
    }
}
