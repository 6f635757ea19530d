package io.kuasar.tests.e2e;

import io.kuasar.api.cri.v1.ContainerState;
import io.kuasar.sandbox.metrics.MetricsRegistry;
import io.kuasar.tests.cri.CriClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Every daemon serves the same Prometheus families (one dashboard, examples/grafana, fits all), with the steps and
 * caches of what it runs: runc calls on runc-sandboxer, compiled modules on wasm-sandboxer (the microVM's vm.boot
 * is checked where VmmPodTest boots one).
 */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class MetricsTest {
    private static final Duration T = Duration.ofSeconds(30);
    private static final String WASM_IMAGE = "docker.io/library/wasm-e2e:kuasar-e2e";

    /** The value of the sample {@code series} (name with labels, exactly as exposed), 0 when absent. */
    static long sample(String text, String series) {
        return text.lines().filter(l -> l.startsWith(series + " ")).findFirst()
                .map(l -> (long) Double.parseDouble(l.substring(series.length() + 1).trim())).orElse(0L);
    }

    @Test
    void everyDaemonServesTheSameFamiliesNamingItself(E2eEnvironment env) {
        Map<String, List<String>> families = new TreeMap<>();
        for (String kind : List.of("runc", "wasm", "quark", "vmm")) {
            String text = env.scrapeMetrics(kind);
            families.put(kind, text.lines().filter(l -> l.startsWith("# TYPE ")).map(l -> l.split(" ")[2]).toList());
            assertThat(text).contains("kuasar_build_info{daemon=\"" + kind + "-sandboxer\"");
            assertThat(text).contains("kuasar_tracing_enabled 0");
        }
        families.forEach((kind, f) -> assertThat(f).as(kind).containsExactlyElementsOf(MetricsRegistry.FAMILIES));
    }

    @Test
    void runcCallsAndModuleCompilesAreStepsAndCacheLookups(E2eEnvironment env) throws Exception {
        CriClient cri = env.cri();
        long creates = sample(env.scrapeMetrics(), "kuasar_step_duration_seconds_count{step=\"oci.create\"}");
        CriClient.Pod pod = cri.runPod("metrics", true);
        String c = cri.runContainer(pod, "once", "sh", "-c", "echo counted");
        Cri.awaitState(cri, c, ContainerState.CONTAINER_EXITED, T);
        String runc = env.scrapeMetrics();
        assertThat(sample(runc, "kuasar_step_duration_seconds_count{step=\"oci.create\"}")).isEqualTo(creates + 1);
        assertThat(sample(runc, "kuasar_step_duration_seconds_count{step=\"oci.start\"}")).isPositive();
        assertThat(sample(runc, "kuasar_rpc_requests_total{api=\"sandbox\",method=\"Create\",code=\"OK\"}"))
                .isPositive();
        assertThat(sample(runc, "kuasar_rpc_requests_total{api=\"task\",method=\"Create\",code=\"OK\"}"))
                .isPositive();

        // the same module twice: at least the second is a hit of the engine's compiled modules
        CriClient wasm = env.wasmCri();
        String before = env.scrapeMetrics("wasm");
        CriClient.Pod wpod = wasm.runPod("metrics-wasm", true);
        for (int i = 0; i < 2; i++) {
            String m = wasm.runContainer(wpod, "hello" + i,
                    CriClient.ContainerOptions.defaults().image(WASM_IMAGE).logPath("hello" + i + ".log"));
            Cri.awaitState(wasm, m, ContainerState.CONTAINER_EXITED, T);
        }
        String after = env.scrapeMetrics("wasm");
        String hit = "kuasar_cache_requests_total{cache=\"wasm.chicory\",result=\"hit\"}";
        String miss = "kuasar_cache_requests_total{cache=\"wasm.chicory\",result=\"miss\"}";
        assertThat((sample(after, hit) + sample(after, miss)) - (sample(before, hit) + sample(before, miss)))
                .isEqualTo(2);
        assertThat(sample(after, hit) - sample(before, hit)).isGreaterThanOrEqualTo(1);
        // every miss of any engine's cache is one compile
        long misses = after.lines().filter(l -> l.startsWith("kuasar_cache_requests_total{cache=\"wasm.")
                && l.contains("result=\"miss\"")).mapToLong(l -> (long) Double.parseDouble(l.substring(l.lastIndexOf(' ') + 1)))
                .sum();
        assertThat(sample(after, "kuasar_step_duration_seconds_count{step=\"wasm.compile\"}")).isEqualTo(misses);
        wasm.stopAndRemovePod(wpod.id());
    }
}
