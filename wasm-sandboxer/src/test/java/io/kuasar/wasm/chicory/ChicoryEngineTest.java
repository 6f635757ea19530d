package io.kuasar.wasm.chicory;

import io.kuasar.wasm.engine.EngineContractTest;
import io.kuasar.wasm.engine.WasiRun;
import io.kuasar.wasm.engine.WasmEngine;
import io.kuasar.wasm.engine.WasmProcess;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Chicory in this JVM: the engine contract, plus what only an in-process engine must guard against. */
class ChicoryEngineTest extends EngineContractTest {
    @Override
    protected WasmEngine newEngine(Path cache) throws IOException {
        return new ChicoryEngine(cache);
    }

    @Override
    protected Path trapReport(WasiRun run) {
        return run.stderr();
    }

    @Override
    protected int cappedGrowExit() {
        return 137; // ended as the OOM killer ends a container over its limit
    }

    @Test
    void growingPastTheLimitIsAnOomKillWithAnEventButPastTheModulesOwnMaximumIsMinusOne() throws Exception {
        String grow = """
                (module
                  (import "%s" "proc_exit" (func $exit (param i32)))
                  (memory (export "memory") 1 %s)
                  (func (export "_start")
                    (call $exit (i32.eq (memory.grow (i32.const 10)) (i32.const -1)))))
                """;
        WasiRun r = run("oom", List.of("g"), 4L * 65536);
        WasmProcess p = engine.start(engine.load(wasm("grow10", grow.formatted(WASI, ""))), r);
        java.util.concurrent.CompletableFuture<Void> oom = new java.util.concurrent.CompletableFuture<>();
        assertThat(p.watchOom(() -> oom.complete(null))).isTrue();
        assertThat(p.exit().get(30, java.util.concurrent.TimeUnit.SECONDS).code()).isEqualTo(137);
        assertThat(oom).isCompleted();
        assertThat(Files.readString(r.stderr())).contains("wasm: out of memory")
                .contains("memory limit of 262144 bytes");

        WasiRun own = run("own-max", List.of("g"), 64L * 65536);
        WasmProcess q = engine.start(engine.load(wasm("max5", grow.formatted(WASI, "5"))), own);
        java.util.concurrent.CompletableFuture<Void> none = new java.util.concurrent.CompletableFuture<>();
        q.watchOom(() -> none.complete(null));
        assertThat(q.exit().get(30, java.util.concurrent.TimeUnit.SECONDS).code()).as("grow answered -1").isEqualTo(1);
        assertThat(none).isNotDone();
    }

    @Test
    void deepRecursionIsATrapNotTheDaemonsStackOverflow() throws Exception {
        WasiRun r = run("recurse", List.of("r.wasm"), 0);
        assertThat(runToEnd(wasm("recurse", """
                (module (memory (export "memory") 1)
                  (func $f (param i32) (result i32) (call $f (i32.add (local.get 0) (i32.const 1))))
                  (func (export "_start") (drop (call $f (i32.const 0)))))
                """), r).code()).isEqualTo(WasmProcess.TRAP_CODE);
        assertThat(Files.readString(r.stderr())).startsWith("wasm trap: ");
    }

    @Test
    void aModuleNeedingMoreThanItsCapAtStartIsRefused() throws Exception {
        assertThatThrownBy(() -> engine.start(engine.load(wasm("big", """
                (module (memory (export "memory") 10) (func (export "_start")))
                """)), run("big", List.of("b"), 2L * 65536))).hasMessageContaining("needs 10 pages");
    }
}
