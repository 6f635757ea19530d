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
        return 1; // memory.grow answered -1
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
