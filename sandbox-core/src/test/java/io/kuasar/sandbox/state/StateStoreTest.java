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
    void unreadableStateIsMovedAsideAndKept() throws Exception {
        StateStore s = new StateStore(dir);
        s.save(record("good"));
        Files.createDirectories(s.sandboxDir("bad"));
        Files.writeString(s.sandboxDir("bad").resolve(StateStore.STATE_FILE), "{\"id\": ");
        Files.createDirectories(s.sandboxDir("other"));
        Files.writeString(s.sandboxDir("other").resolve(StateStore.STATE_FILE), "{\"id\": \"good\"}");
        StateStore.Loaded loaded = s.loadAll();
        assertThat(loaded.records()).extracting(SandboxRecord::id).containsExactly("good");
        assertThat(loaded.broken()).containsExactly("bad", "other");
        // kept, but out of the way: a new sandbox "bad" can neither overwrite nor delete it
        s.save(record("bad"));
        s.delete("bad");
        try (var kept = Files.list(dir.resolve("broken"))) {
            assertThat(kept.map(p -> p.getFileName().toString())).hasSize(2)
                    .anyMatch(n -> n.startsWith("bad.")).anyMatch(n -> n.startsWith("other."));
        }
        try (var kept = Files.walk(dir.resolve("broken"))) {
            assertThat(kept.filter(p -> p.toString().contains("/bad.") && p.endsWith(StateStore.STATE_FILE)))
                    .singleElement().satisfies(p -> assertThat(Files.readString(p)).isEqualTo("{\"id\": "));
        }
    }

    @Test
    void sandboxIdsCannotNameTheDaemonsOwnDirectories() throws Exception {
        StateStore s = new StateStore(dir);
        Files.createDirectories(s.tasksDir());
        Files.writeString(s.tasksDir().resolve("c1.json"), "{\"id\":\"c1\"}");
        Files.createDirectories(s.consoleDir());
        for (String id : new String[]{"tasks", "tty", "broken", "sandboxes"}) {
            s.save(record(id));
            assertThat(s.loadAll().records()).extracting(SandboxRecord::id).contains(id);
            s.delete(id); // a failed or removed sandbox with that id
        }
        assertThat(s.tasksDir().resolve("c1.json")).exists();
        assertThat(s.consoleDir()).isDirectory();
        assertThat(s.loadAll().records()).isEmpty();
    }

    @Test
    void aDirectoryOfTheFlatLayoutIsMigrated() throws Exception {
        Files.createDirectories(dir.resolve("tasks"));
        Files.writeString(dir.resolve("tasks").resolve("c1.json"), "{}");
        StateStore old = new StateStore(dir.resolve("unused")); // only for its JSON mapper
        Files.createDirectories(dir.resolve("sb-old"));
        Files.write(dir.resolve("sb-old").resolve(StateStore.STATE_FILE), old.json().writeValueAsBytes(record("sb-old")));
        Files.writeString(dir.resolve("sb-old").resolve("hostname"), "pod\n");
        StateStore s = new StateStore(dir);
        assertThat(s.loadAll().records()).extracting(SandboxRecord::id).containsExactly("sb-old");
        assertThat(s.sandboxDir("sb-old").resolve("hostname")).hasContent("pod\n");
        assertThat(dir.resolve("sb-old")).doesNotExist();
        assertThat(dir.resolve("tasks").resolve("c1.json")).exists(); // not a sandbox: left where it is
    }

    @Test
    void concurrentWritersOfOneFileNeverTearIt() throws Exception {
        Path target = dir.resolve("record.json");
        int writers = 8;
        int rounds = 200;
        java.util.concurrent.ExecutorService pool = java.util.concurrent.Executors.newFixedThreadPool(writers);
        java.util.List<java.util.concurrent.Future<?>> done = new java.util.ArrayList<>();
        java.util.concurrent.CyclicBarrier start = new java.util.concurrent.CyclicBarrier(writers);
        for (int w = 0; w < writers; w++) {
            byte[] content = ("writer-" + w + "-").repeat(500 + w * 37).getBytes();
            done.add(pool.submit(() -> {
                start.await();
                for (int i = 0; i < rounds; i++) {
                    AtomicFiles.write(target, content);
                }
                return null;
            }));
        }
        for (var f : done) {
            f.get(); // no writer failed (a shared temp file is renamed away under another writer)
        }
        pool.shutdown();
        String last = Files.readString(target);
        assertThat(last).matches("(writer-(\\d)-)+");
        String w = last.substring(0, last.indexOf('-', 7) + 1);
        assertThat(last).isEqualTo(w.repeat(500 + Integer.parseInt(w.substring(7, 8)) * 37)); // one writer's, whole
        try (var left = Files.list(dir)) {
            assertThat(left.map(p -> p.getFileName().toString())).containsExactly("record.json");
        }
    }

    @Test
    void aFailedStartsDiagnosticOutlivesItsSandboxAndOnlyTheNewestAreKept() throws Exception {
        StateStore s = new StateStore(dir);
        for (int i = 0; i < StateStore.FAILED_KEPT + 3; i++) {
            Path log = s.sandboxDir("sb" + i).resolve("console.log");
            Files.createDirectories(log.getParent());
            Files.writeString(log, "boot " + i);
            Path kept = s.keepFailed("sb" + i, log);
            s.delete("sb" + i);
            assertThat(kept).isEqualTo(dir.resolve("failed/sb" + i + "-console.log")).hasContent("boot " + i);
            Files.setLastModifiedTime(kept, java.nio.file.attribute.FileTime.fromMillis(1_000_000L * (i + 1)));
        }
        try (var kept = Files.list(dir.resolve("failed"))) {
            assertThat(kept.map(p -> p.getFileName().toString()).sorted().toList()).hasSize(StateStore.FAILED_KEPT)
                    .doesNotContain("sb0-console.log", "sb1-console.log", "sb2-console.log");
        }
        assertThat(s.keepFailed("gone", dir.resolve("nothing-here"))).isNull();
        assertThat(new StateStore(dir).loadAll().records()).isEmpty(); // not taken for a sandbox of an old layout
    }
}
