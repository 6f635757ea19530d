package io.kuasar.sandbox.metrics;

import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.LongAdder;
import java.util.function.LongSupplier;

/**
 * The daemon's metrics in the Prometheus text format: gauges read on demand, RPC counters and latency histograms.
 * Deliberately tiny (no client library): a handful of series, recorded with one map lookup and two adds per RPC.
 */
public final class MetricsRegistry {
    /** Latency buckets in seconds: sub-millisecond ttrpc calls up to multi-second runc operations. */
    private static final double[] BUCKETS = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

    private final Map<String, LongSupplier> gauges = new ConcurrentHashMap<>();
    private final Map<String, String> gaugeHelp = new ConcurrentHashMap<>();
    private final Map<RpcKey, RpcStats> rpcs = new ConcurrentHashMap<>();

    private record RpcKey(String api, String method) {
    }

    private static final class RpcStats {
        final LongAdder[] buckets = new LongAdder[BUCKETS.length];
        final LongAdder count = new LongAdder();
        final LongAdder sumNanos = new LongAdder();
        final Map<String, LongAdder> byCode = new ConcurrentHashMap<>();

        RpcStats() {
            for (int i = 0; i < buckets.length; i++) {
                buckets[i] = new LongAdder();
            }
        }
    }

    public MetricsRegistry() {
        gauge("kuasar_process_open_fds", "Open file descriptors of the daemon.", MetricsRegistry::openFds);
        gauge("kuasar_process_threads", "Live JVM threads (platform and virtual carriers).",
                () -> ManagementFactory.getThreadMXBean().getThreadCount());
        gauge("kuasar_process_heap_used_bytes", "Java heap in use.",
                () -> ManagementFactory.getMemoryMXBean().getHeapMemoryUsage().getUsed());
    }

    /** Registers a gauge; {@code name} may carry labels, e.g. {@code kuasar_sandboxes{phase="running"}}. */
    public void gauge(String name, String help, LongSupplier value) {
        gauges.put(name, value);
        gaugeHelp.put(baseName(name), help);
    }

    /** Records one RPC: {@code api} is "sandbox" or "task", {@code code} the gRPC status code name. */
    public void recordRpc(String api, String method, String code, long nanos) {
        RpcStats s = rpcs.computeIfAbsent(new RpcKey(api, method), k -> new RpcStats());
        double seconds = nanos / 1e9;
        for (int i = 0; i < BUCKETS.length; i++) {
            if (seconds <= BUCKETS[i]) {
                s.buckets[i].increment();
                break;
            }
        }
        s.count.increment();
        s.sumNanos.add(nanos);
        s.byCode.computeIfAbsent(code, c -> new LongAdder()).increment();
    }

    /** The exposition text. */
    public String scrape() {
        StringBuilder b = new StringBuilder(4096);
        Map<String, Map<String, LongSupplier>> byBase = new TreeMap<>();
        gauges.forEach((name, v) -> byBase.computeIfAbsent(baseName(name), k -> new TreeMap<>()).put(name, v));
        byBase.forEach((base, series) -> {
            b.append("# HELP ").append(base).append(' ').append(gaugeHelp.get(base)).append('\n');
            b.append("# TYPE ").append(base).append(" gauge\n");
            series.forEach((name, v) -> b.append(name).append(' ').append(v.getAsLong()).append('\n'));
        });
        b.append("# HELP kuasar_rpc_requests_total RPCs served, by API, method and status code.\n");
        b.append("# TYPE kuasar_rpc_requests_total counter\n");
        new TreeMap<String, RpcKey>(keyed()).forEach((k, key) -> rpcs.get(key).byCode.forEach((code, n) ->
                b.append("kuasar_rpc_requests_total{api=\"").append(key.api()).append("\",method=\"")
                        .append(key.method()).append("\",code=\"").append(code).append("\"} ").append(n.sum())
                        .append('\n')));
        b.append("# HELP kuasar_rpc_duration_seconds RPC latency.\n");
        b.append("# TYPE kuasar_rpc_duration_seconds histogram\n");
        new TreeMap<String, RpcKey>(keyed()).forEach((k, key) -> {
            RpcStats s = rpcs.get(key);
            String labels = "api=\"" + key.api() + "\",method=\"" + key.method() + "\"";
            long cumulative = 0;
            for (int i = 0; i < BUCKETS.length; i++) {
                cumulative += s.buckets[i].sum();
                b.append("kuasar_rpc_duration_seconds_bucket{").append(labels).append(",le=\"").append(BUCKETS[i])
                        .append("\"} ").append(cumulative).append('\n');
            }
            b.append("kuasar_rpc_duration_seconds_bucket{").append(labels).append(",le=\"+Inf\"} ")
                    .append(s.count.sum()).append('\n');
            b.append("kuasar_rpc_duration_seconds_sum{").append(labels).append("} ")
                    .append(s.sumNanos.sum() / 1e9).append('\n');
            b.append("kuasar_rpc_duration_seconds_count{").append(labels).append("} ").append(s.count.sum())
                    .append('\n');
        });
        return b.toString();
    }

    private Map<String, RpcKey> keyed() {
        Map<String, RpcKey> m = new TreeMap<>();
        rpcs.keySet().forEach(k -> m.put(k.api() + "/" + k.method(), k));
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
