package io.kuasar.wasm.chicory;

import com.dylibso.chicory.compiler.MachineFactoryCompiler;
import com.dylibso.chicory.runtime.ByteBufferMemory;
import com.dylibso.chicory.runtime.ChicoryInterruptedException;
import com.dylibso.chicory.runtime.ExecutionListener;
import com.dylibso.chicory.runtime.ImportValues;
import com.dylibso.chicory.runtime.Instance;
import com.dylibso.chicory.runtime.Machine;
import com.dylibso.chicory.wasi.WasiExitException;
import com.dylibso.chicory.wasi.WasiOptions;
import com.dylibso.chicory.wasi.WasiPreview1;
import com.dylibso.chicory.wasm.ChicoryException;
import com.dylibso.chicory.wasm.Parser;
import com.dylibso.chicory.wasm.WasmModule;
import com.dylibso.chicory.wasm.types.MemoryLimits;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.wasm.engine.LoadedModules;
import io.kuasar.wasm.engine.WasiRun;
import io.kuasar.wasm.engine.WasmEngine;
import io.kuasar.wasm.engine.WasmProcess;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.channels.Channels;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.concurrent.CompletableFuture;
import java.util.function.Function;

/**
 * Chicory, a pure-JVM engine: modules are compiled to JVM bytecode ({@link MachineFactoryCompiler}) once per content
 * (in memory, and on disk across restarts of the daemon), and each instance runs on a platform thread of its own with
 * its linear memory capped. A guest never runs on a virtual thread: guest code never yields, so two spinning guests
 * would starve every other virtual thread of the daemon.
 * <p>
 * Kill interrupts the thread: compiled code checks the interrupt flag on every backward branch and call, and functions
 * the compiler left to the interpreter are stopped by an execution listener (the interpreter does not check on
 * {@code br_if}/{@code br_table}).
 */
public final class ChicoryEngine implements WasmEngine {
    private static final Logger LOG = LoggerFactory.getLogger(ChicoryEngine.class);
    /** Deep recursion in a guest ends as a trap ("call stack exhausted"), not as the daemon's StackOverflowError. */
    private static final long GUEST_STACK_BYTES = 8L << 20;
    private static final ExecutionListener STOP_ON_INTERRUPT = (instruction, stack) -> {
        if (Thread.currentThread().isInterrupted()) {
            throw new ChicoryInterruptedException("interrupted");
        }
    };
    private static final ThreadMXBean THREADS = ManagementFactory.getThreadMXBean();
    private static final long PAGE = com.dylibso.chicory.runtime.Memory.PAGE_SIZE;

    private final DirectoryCache cache;
    private final LoadedModules<Loaded> modules = new LoadedModules<>("chicory");

    /** @param cacheDir where compiled modules are kept across restarts (created if missing) */
    public ChicoryEngine(Path cacheDir) throws IOException {
        this.cache = new DirectoryCache(cacheDir);
    }

    @Override
    public String name() {
        return "chicory";
    }

    private record Loaded(String digest, WasmModule module, Function<Instance, Machine> machines)
            implements Module {
    }

    @Override
    public Module load(Path wasm) throws IOException {
        return modules.load(wasm, (bytes, digest) -> {
            WasmModule module;
            try {
                module = Parser.parse(bytes);
            } catch (ChicoryException e) {
                throw new IOException(wasm + " is not a valid WebAssembly module: " + e.getMessage(), e);
            }
            long t0 = System.nanoTime();
            Function<Instance, Machine> machines = MachineFactoryCompiler.builder(module).withCache(cache).compile();
            LOG.debug("module {} ({}) ready in {} ms", wasm, digest, (System.nanoTime() - t0) / 1_000_000);
            return new Loaded(digest, module, machines);
        });
    }

    @Override
    public WasmProcess start(Module module, WasiRun run) throws IOException {
        if (!(module instanceof Loaded m)) {
            throw new IllegalArgumentException("module " + module.digest() + " was not loaded by " + name());
        }
        Cap cap = cap(m.module(), run);
        Guest g = new Guest(run);
        g.thread = Thread.ofPlatform().name("wasm-" + run.id()).daemon().stackSize(GUEST_STACK_BYTES)
                .unstarted(() -> g.run(m, cap));
        g.thread.start();
        return g;
    }

    /**
     * The container's cap on the module's memory: the module's initial size kept (Chicory's limits replace the
     * module's own), its maximum lowered to the cap. A module that needs more than the cap at start fails.
     */
    record Cap(MemoryLimits limits, int capPages, int declaredMaxPages) {
    }

    static Cap cap(WasmModule module, WasiRun run) throws IOException {
        var section = module.memorySection();
        if (run.memoryLimitBytes() <= 0 || section.isEmpty() || section.get().memoryCount() == 0) {
            return null; // the module's own
        }
        MemoryLimits declared = section.get().getMemory(0).limits();
        int cap = (int) Math.min(MemoryLimits.MAX_PAGES, run.memoryLimitBytes() / PAGE);
        if (declared.initialPages() > cap) {
            throw new IOException("container " + run.id() + ": the module needs " + declared.initialPages()
                    + " pages (" + ((long) declared.initialPages() * PAGE) + " bytes) of memory at start;"
                    + " its memory limit is " + run.memoryLimitBytes() + " bytes");
        }
        return new Cap(new MemoryLimits(declared.initialPages(), Math.min(declared.maximumPages(), cap)), cap,
                declared.maximumPages());
    }

    /** One running instance. */
    private static final class Guest implements WasmProcess {
        private final WasiRun run;
        private final CompletableFuture<ExitStatus> exit = new CompletableFuture<>();
        private volatile Thread thread;
        private volatile Instance instance;
        private volatile int killedBy; // 0: not killed
        private volatile long cpuAtExit = -1;
        private final CompletableFuture<Void> oom = new CompletableFuture<>();

        Guest(WasiRun run) {
            this.run = run;
        }

        void run(Loaded m, Cap cap) {
            int code;
            OutputStream err = null;
            try (InputStream in = stdin(run.stdin());
                 OutputStream out = output(run.stdout());
                 OutputStream errStream = output(run.stderr())) {
                err = errStream;
                code = execute(m, cap, in, out, errStream);
            } catch (IOException e) {
                LOG.warn("container {}: stdio: {}", run.id(), e.getMessage());
                code = killedBy != 0 ? 128 + killedBy : WasmProcess.TRAP_CODE;
            }
            cpuAtExit = THREADS.getThreadCpuTime(Thread.currentThread().threadId());
            instance = null;
            Thread.interrupted(); // the flag may still be set after an interrupted guest
            exit.complete(ExitStatus.of(code));
        }

        private int execute(Loaded m, Cap cap, InputStream in, OutputStream out, OutputStream err) {
            WasiOptions.Builder o = WasiOptions.builder().withArguments(run.argv())
                    .withStdin(in, false).withStdout(out, false).withStderr(err, false);
            run.env().forEach(o::withEnvironment);
            run.preopens().forEach(o::withDirectory);
            try (WasiPreview1 wasi = WasiPreview1.builder().withOptions(o.build()).build()) {
                Instance.Builder b = Instance.builder(m.module())
                        .withImportValues(ImportValues.builder().addFunction(wasi.toHostFunctions()).build())
                        .withMachineFactory(m.machines())
                        .withUnsafeExecutionListener(STOP_ON_INTERRUPT)
                        .withStart(false);
                if (cap != null) {
                    b.withMemoryLimits(cap.limits()).withMemoryFactory(l -> new CappedMemory(new ByteBufferMemory(l),
                            cap.capPages(), cap.declaredMaxPages(), () -> oom.complete(null)));
                }
                Instance i = b.build();
                instance = i;
                i.export("_start").apply();
                return killedBy != 0 ? 128 + killedBy : 0;
            } catch (WasiExitException e) {
                return killedBy != 0 ? 128 + killedBy : e.exitCode();
            } catch (ChicoryException | StackOverflowError | OutOfMemoryError e) {
                if (killedBy != 0) {
                    return 128 + killedBy; // an interrupted guest ends in one of these: the kill decides
                }
                if (e instanceof CappedMemory.OutOfMemory) {
                    report(err, "wasm: " + e.getMessage());
                    return 128 + 9; // as the OOM killer's SIGKILL
                }
                report(err, "wasm trap: " + (e instanceof ChicoryException ? e.getMessage() : e.toString()));
                return WasmProcess.TRAP_CODE;
            }
        }

        /** Why a guest ended goes where the container's output goes (its log), as WasmEdge prints a trap. */
        private void report(OutputStream err, String why) {
            String msg = why + "\n";
            LOG.info("container {}: {}", run.id(), why);
            try {
                err.write(msg.getBytes(StandardCharsets.UTF_8));
                err.flush();
            } catch (IOException ignored) {
                // the log is gone; the exit code still says it
            }
        }

        @Override
        public CompletableFuture<ExitStatus> exit() {
            return exit;
        }

        @Override
        public boolean kill(int signal) {
            if (exit.isDone()) {
                return false;
            }
            if (killedBy == 0) {
                killedBy = signal;
            }
            Thread t = thread;
            if (t != null) {
                t.interrupt();
            }
            // A guest still opening its stdin FIFO (no writer yet) does not see the interrupt: give it a writer.
            // O_RDWR never blocks on a FIFO (a write-only open would, once the guest no longer reads it).
            if (run.stdin() != null && Files.exists(run.stdin())) {
                try (var peer = new java.io.RandomAccessFile(run.stdin().toFile(), "rw")) {
                    LOG.trace("released {}", peer);
                } catch (IOException ignored) {
                    // gone
                }
            }
            return true;
        }

        @Override
        public boolean watchOom(Runnable onOom) {
            oom.thenRun(onOom);
            return true;
        }

        @Override
        public long memoryBytes() {
            Instance i = instance;
            try {
                return i == null ? 0 : (long) i.memory().pages() * PAGE;
            } catch (RuntimeException noMemory) {
                return 0;
            }
        }

        @Override
        public long cpuNanos() {
            long done = cpuAtExit;
            Thread t = thread;
            return done >= 0 || t == null ? Math.max(0, done) : Math.max(0, THREADS.getThreadCpuTime(t.threadId()));
        }
    }

    /** stdin as an interruptible channel stream (a FileInputStream read ignores interrupt and close). */
    private static InputStream stdin(Path p) throws IOException {
        return p == null ? InputStream.nullInputStream()
                : Channels.newInputStream(FileChannel.open(p, StandardOpenOption.READ));
    }

    private static OutputStream output(Path p) throws IOException {
        return p == null ? OutputStream.nullOutputStream()
                : Channels.newOutputStream(FileChannel.open(p, StandardOpenOption.WRITE, StandardOpenOption.APPEND,
                StandardOpenOption.CREATE));
    }
}
