package io.kuasar.sandbox.metrics;

import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.assertj.core.api.Assertions.assertThat;

class MetricsRegistryTest {
    @Test
    void everyCoreFamilyHasHelpAndTypeBeforeItsFirstSample() {
        String text = new MetricsRegistry().scrape();
        for (String f : MetricsRegistry.FAMILIES) {
            assertThat(text).contains("# HELP " + f + " ").contains("# TYPE " + f + " ");
        }
        // each family appears once, and its samples follow its own header
        List<String> headers = text.lines().filter(l -> l.startsWith("# TYPE ")).map(l -> l.split(" ")[2]).toList();
        assertThat(headers).doesNotHaveDuplicates().containsExactlyElementsOf(MetricsRegistry.FAMILIES);
    }

    @Test
    void stepsAndCachesRenderWithTheirLabels() {
        MetricsRegistry r = new MetricsRegistry();
        r.recordStep("vm.boot", 12_500_000_000L, false);
        r.recordStep("vm.boot", 3_000_000_000L, true);
        r.cacheLookup("wasm.chicory", false);
        r.cacheLookup("wasm.chicory", true);
        r.cacheLookup("wasm.chicory", true);
        r.counter("kuasar_example_total", "A daemon's own counter.").add(5);
        String text = r.scrape();
        assertThat(text).contains(
                "kuasar_step_duration_seconds_bucket{step=\"vm.boot\",le=\"2.5\"} 0",
                "kuasar_step_duration_seconds_bucket{step=\"vm.boot\",le=\"5.0\"} 1",
                "kuasar_step_duration_seconds_bucket{step=\"vm.boot\",le=\"20.0\"} 2",
                "kuasar_step_duration_seconds_count{step=\"vm.boot\"} 2",
                "kuasar_step_duration_seconds_sum{step=\"vm.boot\"} 15.5",
                "kuasar_step_failures_total{step=\"vm.boot\"} 1",
                "kuasar_cache_requests_total{cache=\"wasm.chicory\",result=\"hit\"} 2",
                "kuasar_cache_requests_total{cache=\"wasm.chicory\",result=\"miss\"} 1",
                "# TYPE kuasar_example_total counter", "kuasar_example_total 5");
        // every sample line is name{labels} value, parseable by Prometheus
        Pattern sample = Pattern.compile("[a-z_]+(\\{[a-z_]+=\"[^\"]*\"(,[a-z_]+=\"[^\"]*\")*})? -?[0-9.E+-]+");
        text.lines().filter(l -> !l.startsWith("#")).forEach(l -> {
            Matcher m = sample.matcher(l);
            assertThat(m.matches()).as(l).isTrue();
        });
    }
}
