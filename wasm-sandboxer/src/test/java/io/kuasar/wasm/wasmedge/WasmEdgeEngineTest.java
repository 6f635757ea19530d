package io.kuasar.wasm.wasmedge;

import io.kuasar.wasm.engine.EngineContractTest;
import io.kuasar.wasm.engine.WasiRun;
import io.kuasar.wasm.engine.WasmEngine;
import io.kuasar.wasm.engine.WasmProcess;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The real WasmEdge CLI, as {@code make wasm-engines} installs it ({@code make test} does that first); a missing
 * binary fails these tests with the remedy, it never skips them.
 */
class WasmEdgeEngineTest extends EngineContractTest {
    static final Path BINARY = Path.of(System.getProperty("kuasar.wasmedge", WasmEdgeEngine.DEFAULT_BINARY.toString()));

    @Override
    protected WasmEngine newEngine(Path cache) throws IOException {
        assertThat(BINARY).as("the wasmedge CLI: run `make wasm-engines`").isExecutable();
        return new WasmEdgeEngine(BINARY, cache);
    }

    @Override
    protected Path trapReport(WasiRun run) {
        return run.stdout(); // WasmEdge prints its errors on stdout
    }

    @Override
    protected int cappedGrowExit() {
        return 1; // --memory-page-limit: memory.grow answered -1
    }

    @Test
    void argv0IsTheFileNameOfArgs0AndTheOtherArgumentsPassAsTheyAre() throws Exception {
        Path m = wasm("argv0", """
                (module
                  (import "%s" "args_sizes_get" (func $asg (param i32 i32) (result i32)))
                  (import "%s" "args_get" (func $ag (param i32 i32) (result i32)))
                  (import "%s" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
                  (memory (export "memory") 1)
                  (func (export "_start")
                    (drop (call $asg (i32.const 0) (i32.const 4)))
                    (drop (call $ag (i32.const 16) (i32.const 256)))
                    ;; every argument, NUL-terminated, as laid out contiguously from argv[0]
                    (i32.store (i32.const 1024) (i32.load (i32.const 16)))
                    (i32.store (i32.const 1028) (i32.load (i32.const 4)))
                    (drop (call $fd_write (i32.const 1) (i32.const 1024) (i32.const 1) (i32.const 1040)))))
                """.formatted(WASI, WASI, WASI));
        WasiRun r = run("argv0", List.of("/app/argv0.wasm", "--flag", "b 2"), 0);
        assertThat(runToEnd(m, r).code()).isZero();
        assertThat(Files.readString(r.stdout())).isEqualTo("argv0.wasm\0--flag\0b 2\0");
    }

    @Test
    void aProcessLeftByAPreviousDaemonIsEndedOnRecovery() throws Exception {
        Path m = wasm("spin2", """
                (module (memory (export "memory") 1)
                  (func (export "_start") (loop $l (br $l))))
                """);
        WasmProcess p = engine.start(engine.load(m), run("left", List.of("spin2.wasm"), 0));
        Thread.sleep(200);
        assertThat(p.exit()).isNotDone();
        newEngine(dir.resolve("cache")).reclaim("left", p.facts());
        assertThat(p.exit().get(5, TimeUnit.SECONDS).code()).isEqualTo(137);
    }
}
