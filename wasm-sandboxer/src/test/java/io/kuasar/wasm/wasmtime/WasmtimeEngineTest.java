package io.kuasar.wasm.wasmtime;

import io.kuasar.wasm.engine.EngineContractTest;
import io.kuasar.wasm.engine.WasiRun;
import io.kuasar.wasm.engine.WasmEngine;
import io.kuasar.wasm.engine.WasmProcess;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/** Real Wasmtime (wasmtime-java 0.19.0) in its helper JVM, started by the engine as the daemon starts it. */
class WasmtimeEngineTest extends EngineContractTest {
    @Override
    protected WasmEngine newEngine(Path cache) throws IOException {
        return new WasmtimeEngine(cache, WasmtimeEngine.sameJvm());
    }

    @Override
    protected Path trapReport(WasiRun run) {
        return run.stderr();
    }

    @Override
    protected int cappedGrowExit() {
        return 1; // the cap is the module's declared maximum: memory.grow answers -1
    }

    @Override
    protected boolean supportsStdin() {
        return false;
    }

    /** The helpers never outlive a test (in the daemon, a helper ends when the daemon does). */
    @AfterEach
    void helpersEnd() {
        ProcessHandle.current().children().forEach(p -> {
            p.destroyForcibly();
            p.onExit().join();
        });
    }

    @Test
    void aCrashOfTheHelperEndsItsContainersButNotTheEngine() throws Exception {
        Path spin = wasm("spin3", """
                (module (memory (export "memory") 1)
                  (func (export "_start") (loop $l (br $l))))
                """);
        WasmProcess p = engine.start(engine.load(spin), run("victim", List.of("spin3.wasm"), 0));
        long helper = ((WasmtimeEngine) engine).helperPid();
        assertThat(helper).isPositive();
        ProcessHandle.of(helper).orElseThrow().destroyForcibly();
        assertThat(p.exit().get(10, TimeUnit.SECONDS).code()).isEqualTo(255);
        // the next container gets a new helper
        WasiRun r = run("after", List.of("h"), 0);
        assertThat(runToEnd(wasm("hello3", HELLO), r).code()).isZero();
    }
}
