package io.kuasar.sandbox.state;

import io.grpc.StatusRuntimeException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class StateStoreTest {
    @TempDir
    Path dir;

    static SandboxRecord record(String id) {
        return new SandboxRecord(id, "runc", SandboxRecord.Phase.CREATED, "", new byte[]{1, 2, 3},
                "runtime.v1.PodSandboxConfig", Map.of("a", "b"), Map.of(), Map.of(), null, null, "rt", 0, "", 42, 0,
                0, 0, Map.of("holderPid", "7"));
    }

    @Test
    void roundTripsEveryField() throws Exception {
        StateStore s = new StateStore(dir);
        SandboxRecord r = record("sb-1").running(99, "ttrpc+unix:///x", 43, Map.of("holderPid", "99"));
        s.save(r);
        SandboxRecord back = s.loadAll().records().getFirst();
        assertThat(back).usingRecursiveComparison().isEqualTo(r);
        assertThat(Files.list(s.sandboxDir("sb-1")).map(p -> p.getFileName().toString()))
                .containsExactly(StateStore.STATE_FILE); // no temp file left behind
    }

    @Test
    void pathLikeIdsNeverBecomePaths() {
        StateStore s = assertDoesNotThrow();
        for (String bad : new String[]{"../x", "/abs", "a/../../b", "..", ".", "x\0", "a b"}) {
            assertThatThrownBy(() -> s.sandboxDir(bad)).isInstanceOf(StatusRuntimeException.class)
                    .hasMessageContaining("INVALID_ARGUMENT");
        }
        assertThat(Ids.require("container", "abc.def_1-2")).isEqualTo("abc.def_1-2");
    }

    private StateStore assertDoesNotThrow() {
        try {
            return new StateStore(dir);
        } catch (Exception e) {
            throw new AssertionError(e);
        }
    }

    @Test
    void unreadableStateIsReportedAndKept() throws Exception {
        StateStore s = new StateStore(dir);
        s.save(record("good"));
        Files.createDirectories(dir.resolve("bad"));
        Files.writeString(dir.resolve("bad").resolve(StateStore.STATE_FILE), "{\"id\": ");
        Files.createDirectories(dir.resolve("other"));
        Files.writeString(dir.resolve("other").resolve(StateStore.STATE_FILE), "{\"id\": \"good\"}");
        StateStore.Loaded loaded = s.loadAll();
        assertThat(loaded.records()).extracting(SandboxRecord::id).containsExactly("good");
        assertThat(loaded.broken()).containsExactly("bad", "other");
        assertThat(Files.exists(dir.resolve("bad").resolve(StateStore.STATE_FILE))).isTrue();
    }
}
