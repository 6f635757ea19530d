package io.kuasar.sandbox.metrics;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.assertj.core.api.Assertions.assertThat;

/** The example Grafana dashboard asks only for what the daemons serve, and shows every family they serve. */
class DashboardTest {
    private static final Path DASHBOARD = Path.of("..", "examples", "grafana", "kuasar-dashboard.json");

    @Test
    void everyQueryNamesAServedFamilyAndEveryFamilyIsShown() throws Exception {
        JsonNode d = new ObjectMapper().readTree(DASHBOARD.toFile());
        Set<String> used = new HashSet<>();
        Pattern metric = Pattern.compile("\\bkuasar_[a-z_]+");
        int queries = 0;
        for (JsonNode panel : d.path("panels")) {
            assertThat(panel.path("targets").size()).as(panel.path("title").asText()).isPositive();
            for (JsonNode t : panel.path("targets")) {
                queries++;
                Matcher m = metric.matcher(t.path("expr").asText());
                boolean any = false;
                while (m.find()) {
                    any = true;
                    String family = m.group().replaceAll("_(bucket|sum|count)$", "");
                    assertThat(MetricsRegistry.FAMILIES).as("in \"" + panel.path("title").asText() + "\"")
                            .contains(family);
                    used.add(family);
                }
                assertThat(any).as(t.path("expr").asText()).isTrue();
            }
        }
        assertThat(queries).isGreaterThan(15);
        assertThat(used).containsAll(MetricsRegistry.FAMILIES);
        List<String> titles = d.path("panels").findValuesAsText("title");
        assertThat(titles).doesNotHaveDuplicates();
    }
}
