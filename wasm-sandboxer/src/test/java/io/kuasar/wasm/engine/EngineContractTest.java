package io.kuasar.wasm.engine;

import io.kuasar.sandbox.process.ExitStatus;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * What every engine must do alike, on real modules (WAT compiled by Debian's wabt, {@code apt-get install wabt}) and
 * the real engine: each engine's test class extends this one.
 */
public abstract class EngineContractTest {
    @TempDir
    protected Path dir;
    protected WasmEngine engine;

    /** A new engine (a restarted daemon, when called twice) keeping its compiled modules in {@code cache}. */
    protected abstract WasmEngine newEngine(Path cache) throws IOException;

    /** Where the engine reports a trap's message: the guest's stderr or stdout. */
    protected abstract Path trapReport(WasiRun run);

    /** Whether the engine can give a module a stdin; one that cannot must refuse a container that asks for one. */
    protected boolean supportsStdin() {
        return true;
    }

    /** The exit code of a module whose memory.grow beyond the container's cap (4 pages) was refused. */
    protected abstract int cappedGrowExit();

    protected static final String WASI = "wasi_snapshot_preview1";

    @BeforeEach
    void engine() throws IOException {
        engine = newEngine(dir.resolve("cache"));
    }

    /** A module from WAT, through wat2wasm. */
    protected Path wasm(String name, String wat) throws Exception {
        Path src = dir.resolve(name + ".wat");
        Path out = dir.resolve(name + ".wasm");
        Files.writeString(src, wat);
        Process p;
        try {
            p = new ProcessBuilder("wat2wasm", src.toString(), "-o", out.toString()).redirectErrorStream(true).start();
        } catch (IOException e) {
            throw new IllegalStateException("wat2wasm is missing: apt-get install wabt", e);
        }
        String msg = new String(p.getInputStream().readAllBytes());
        assertThat(p.waitFor()).as("wat2wasm: " + msg).isZero();
        return out;
    }

    protected WasiRun run(String id, List<String> argv, long memoryLimit) throws IOException {
        Path out = dir.resolve(id + ".out");
        Path err = dir.resolve(id + ".err");
        Files.createFile(out);
        Files.createFile(err);
        return new WasiRun(id, argv, Map.of("GREETING", "hi"), Map.of("/", dir), null, out, err, memoryLimit);
    }

    protected ExitStatus runToEnd(Path module, WasiRun run) throws Exception {
        WasmProcess p = engine.start(engine.load(module), run);
        return p.exit().get(30, TimeUnit.SECONDS);
    }

    protected static final String HELLO = """
            (module
              (import "%s" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
              (memory (export "memory") 1)
              (data (i32.const 8) "hello from wasm\\n")
              (func (export "_start")
                (i32.store (i32.const 0) (i32.const 8))
                (i32.store (i32.const 4) (i32.const 16))
                (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 32)))))
            """.formatted(WASI);

    @Test
    void helloWritesItsStdoutAndExitsZero() throws Exception {
        WasiRun r = run("hello", List.of("hello.wasm"), 0);
        assertThat(runToEnd(wasm("hello", HELLO), r).code()).isZero();
        assertThat(Files.readString(r.stdout())).isEqualTo("hello from wasm\n");
    }

    @Test
    void theExitCodeIsProcExitsAndArgumentsReachTheModule() throws Exception {
        Path m = wasm("argc", """
                (module
                  (import "%s" "args_sizes_get" (func $asg (param i32 i32) (result i32)))
                  (import "%s" "proc_exit" (func $exit (param i32)))
                  (memory (export "memory") 1)
                  (func (export "_start")
                    (drop (call $asg (i32.const 0) (i32.const 4)))
                    (call $exit (i32.add (i32.const 4) (i32.load (i32.const 0))))))
                """.formatted(WASI, WASI));
        // argv[0] counts: 3 arguments, exit 4 + 3 = 7
        assertThat(runToEnd(m, run("argc", List.of("argc.wasm", "a", "b"), 0)).code()).isEqualTo(7);
    }

    @Test
    void aTrapExits134WithItsMessageInTheLog() throws Exception {
        WasiRun r = run("trap", List.of("trap.wasm"), 0);
        assertThat(runToEnd(wasm("trap", "(module (memory (export \"memory\") 1) (func (export \"_start\") unreachable))"),
                r).code()).isEqualTo(WasmProcess.TRAP_CODE);
        assertThat(Files.readString(trapReport(r))).contains("unreachable");
    }

    @Test
    void killStopsASpinningGuestWithin100Ms() throws Exception {
        Path m = wasm("spin", """
                (module (memory (export "memory") 1)
                  (func (export "_start") (loop $l (br_if $l (i32.const 1)))))
                """);
        WasmProcess p = engine.start(engine.load(m), run("spin", List.of("spin.wasm"), 0));
        Thread.sleep(1000); // well into the loop: a process engine may still be loading its libraries at first

        assertThat(p.exit()).isNotDone();
        long t0 = System.nanoTime();
        assertThat(p.kill(9)).isTrue();
        ExitStatus st = p.exit().get(5, TimeUnit.SECONDS);
        long ms = (System.nanoTime() - t0) / 1_000_000;
        assertThat(st.code()).isEqualTo(137);
        assertThat(ms).as("stopped in %d ms", ms).isLessThan(100);
        assertThat(p.cpuNanos()).isPositive();
        assertThat(p.kill(9)).as("a second kill of an ended guest").isFalse();
    }

    @Test
    void theMemoryLimitCapsLinearMemory() throws Exception {
        String grow = """
                (module
                  (import "%s" "proc_exit" (func $exit (param i32)))
                  (memory (export "memory") 1)
                  (func (export "_start")
                    (call $exit (i32.eq (memory.grow (i32.const 100)) (i32.const -1)))))
                """.formatted(WASI);
        Path m = wasm("grow", grow);
        assertThat(runToEnd(m, run("free", List.of("g"), 0)).code()).as("no cap: grows").isZero();
        assertThat(runToEnd(m, run("capped", List.of("g"), 4L * 65536)).code()).as("capped at 4 pages")
                .isEqualTo(cappedGrowExit());
    }

    @Test
    void aModuleIsCompiledOncePerContentAndCachedOnDisk() throws Exception {
        Path m = wasm("hello2", HELLO);
        WasmEngine.Module a = engine.load(m);
        assertThat(engine.load(m)).isSameAs(a);
        assertThat(a.digest()).startsWith("sha256:").hasSize(7 + 64);
        try (var files = Files.list(dir.resolve("cache"))) {
            assertThat(files.toList()).isNotEmpty();
        }
        // a new engine (a restarted daemon) on the same cache directory runs it without compiling again
        WasmEngine again = newEngine(dir.resolve("cache"));
        WasiRun r = run("cached", List.of("h"), 0);
        assertThat(again.start(again.load(m), r).exit().get(30, TimeUnit.SECONDS).code()).isZero();
        assertThat(Files.readString(r.stdout())).isEqualTo("hello from wasm\n");
    }

    @Test
    void notAModuleIsAClearError() throws Exception {
        Path junk = dir.resolve("junk.wasm");
        Files.writeString(junk, "not wasm");
        assertThatThrownBy(() -> engine.load(junk)).hasMessageContaining(junk.toString())
                .hasMessageContaining("not a valid WebAssembly module");
    }

    @Test
    void killEndsAGuestWaitingOnItsStdinFifoWithOrWithoutAWriter() throws Exception {
        Path m = wasm("wait", """
                (module
                  (import "%s" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
                  (memory (export "memory") 1)
                  (func (export "_start")
                    (i32.store (i32.const 0) (i32.const 64))
                    (i32.store (i32.const 4) (i32.const 1024))
                    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))))
                """.formatted(WASI));
        for (boolean writer : new boolean[]{false, true}) {
            Path fifo = dir.resolve("stdin-" + writer);
            io.kuasar.sandbox.sys.Linux.mkfifo(fifo.toString(), 0600);
            // containerd keeps its end of a stdin FIFO open; without it, the guest waits in open(2) itself
            try (var containerd = writer ? new java.io.RandomAccessFile(fifo.toFile(), "rw") : null) {
                WasiRun base = run("wait-" + writer, List.of("wait.wasm"), 0);
                WasiRun r = new WasiRun(base.id(), base.argv(), base.env(), base.preopens(), fifo, base.stdout(),
                        base.stderr(), 0);
                if (!supportsStdin()) {
                    assertThatThrownBy(() -> engine.start(engine.load(m), r)).hasMessageContaining("stdin");
                    continue;
                }
                WasmProcess p = engine.start(engine.load(m), r);
                Thread.sleep(300);
                assertThat(p.exit()).as("waiting (writer: %s)", writer).isNotDone();
                long t0 = System.nanoTime();
                p.kill(15);
                assertThat(p.exit().get(5, TimeUnit.SECONDS).code()).isEqualTo(143);
                assertThat((System.nanoTime() - t0) / 1_000_000).as("kill took (writer: %s)", writer).isLessThan(1000);
            }
        }
    }
}
