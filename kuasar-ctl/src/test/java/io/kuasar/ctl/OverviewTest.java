package io.kuasar.ctl;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.time.Instant;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

class OverviewTest {
    private final Sandboxers.Sandboxer runc = new Sandboxers.Sandboxer("runc", "runc", Path.of("/run/r.sock"),
            Path.of("/run/kuasar-runc"));
    private final Sandboxers.Sandboxer vmm = new Sandboxers.Sandboxer("vmm", "vmm", Path.of("/run/v.sock"),
            Path.of("/run/kuasar-vmm"));
    private final Sandboxers.Sandboxer wasm = new Sandboxers.Sandboxer("wasm", "wasm", Path.of("/run/w.sock"),
            Path.of("/run/kuasar-wasm"));
    private final Instant now = Instant.parse("2026-01-01T12:00:00Z");
    private final Overview.Result res = new Overview.Result(
            List.of(new Overview.Daemon(runc, true, null), new Overview.Daemon(vmm, true, "no socket /run/v.sock"),
                    new Overview.Daemon(wasm, false, "not running (no /run/w.sock)")),
            List.of(new Overview.Row("0123456789abcdef0123", runc, "SANDBOX_READY", 4242, now.minusSeconds(300), null,
                            "ttrpc+unix:///run/kuasar-runc/task.sock", List.of("c1", "c2"), null),
                    new Overview.Row("feed", vmm, "unknown", 77, now.minusSeconds(7300), null, "", List.of(),
                            "no socket /run/v.sock")));

    @Test
    void tableHasOneLinePerSandboxAndSaysWhichDaemonsAreDown() {
        String t = Overview.table(res, now, false);
        List<String> lines = t.lines().toList();
        assertThat(lines.get(0)).startsWith("SANDBOX").contains("SANDBOXER").contains("STATE").contains("PID")
                .contains("CONTAINERS").contains("CREATED").endsWith("ADDRESS");
        assertThat(lines.get(1)).startsWith("0123456789abc ").contains(" runc ").contains(" ready ")
                .contains(" 4242 ").contains(" 2 ").contains(" 5m ").endsWith("ttrpc+unix:///run/kuasar-runc/task.sock");
        assertThat(lines.get(2)).startsWith("feed ").contains(" vmm ").contains(" unknown ").contains(" 2h ")
                .endsWith("-");
        // the columns line up
        assertThat(lines.get(1).indexOf("runc")).isEqualTo(lines.get(0).indexOf("SANDBOXER"));
        assertThat(lines).contains("vmm: down: no socket /run/v.sock");
        assertThat(t).doesNotContain("wasm"); // not on this node at all
        assertThat(Overview.table(res, now, true)).contains("0123456789abcdef0123 ");
    }

    @Test
    void jsonHasEveryDaemonAndEverySandbox() throws Exception {
        JsonNode j = Overview.JSON.readTree(Overview.json(res));
        assertThat(j.path("sandboxers")).hasSize(3);
        assertThat(j.path("sandboxers").get(1).path("up").asBoolean()).isFalse();
        assertThat(j.path("sandboxers").get(2).path("present").asBoolean()).isFalse();
        JsonNode s = j.path("sandboxes").get(0);
        assertThat(s.path("id").asText()).isEqualTo("0123456789abcdef0123");
        assertThat(s.path("state").asText()).isEqualTo("SANDBOX_READY");
        assertThat(s.path("pid").asLong()).isEqualTo(4242);
        assertThat(s.path("createdAt").asText()).isEqualTo("2026-01-01T11:55:00Z");
        assertThat(s.path("containers")).hasSize(2);
        assertThat(s.has("error")).isFalse();
        assertThat(j.path("sandboxes").get(1).path("error").asText()).contains("no socket");
    }

    @Test
    void agesAreShortAndStatesPlain() {
        assertThat(Overview.age(now.minusSeconds(5), now)).isEqualTo("5s");
        assertThat(Overview.age(now.minusSeconds(3 * 86400), now)).isEqualTo("3d");
        assertThat(Overview.age(null, now)).isEqualTo("-");
        assertThat(Overview.shortState("SANDBOX_NOTREADY")).isEqualTo("notready");
    }
}
