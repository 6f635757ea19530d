package io.kuasar.wasm;

import io.kuasar.sandbox.cli.SandboxerDaemon;
import io.kuasar.sandbox.events.TtrpcEventPublisher;
import io.kuasar.sandbox.task.TaskService;
import io.kuasar.sandbox.task.TaskStore;
import io.kuasar.wasm.chicory.ChicoryEngine;
import picocli.CommandLine;
import io.kuasar.wasm.wasmedge.WasmEdgeEngine;
import io.kuasar.wasm.wasmtime.WasmtimeEngine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.List;

/** {@code wasm-sandboxer}: Kuasar's Wasm sandboxer, with Kuasar's flags and defaults; WASI modules run in-process. */
@Command(name = "wasm-sandboxer", version = "wasm-sandboxer 0.1.0 (Kuasar Java; engines: Chicory 1.7.5, Wasmtime 7 via wasmtime-java 0.19.0, WasmEdge)",
        description = "Serves containerd's Sandbox API for Wasm pods, and their Task API over ttrpc.")
public final class WasmSandboxerMain extends SandboxerDaemon {

    @Option(names = "--engine", description = "Engine of containers without an " + WasmRuntime.ENGINE_ANNOTATION
            + " annotation: chicory (in this daemon), wasmtime (one helper JVM for all its containers) or wasmedge"
            + " (a process per container) (default: ${DEFAULT-VALUE})")
    String engine = "chicory";

    @Option(names = "--wasmedge", description = "The wasmedge CLI of the wasmedge engine (default: ${DEFAULT-VALUE},"
            + " installed by `make wasm-engines`)")
    Path wasmedge = WasmEdgeEngine.DEFAULT_BINARY;

    public WasmSandboxerMain() {
        listen = Path.of("/run/wasm-sandboxer.sock");
        dir = Path.of("/run/kuasar-wasm");
    }

    @Override
    protected Parts assemble(Context ctx) throws Exception {
        TtrpcEventPublisher events = new TtrpcEventPublisher(ctx.eventsAddress());
        Path cache = ctx.store().root().resolve("cache");
        WasmRuntime runtime = new WasmRuntime(List.of(new ChicoryEngine(cache.resolve("chicory")),
                new WasmtimeEngine(cache.resolve("wasmtime"), WasmtimeEngine.sameJvm()),
                new WasmEdgeEngine(wasmedge, cache.resolve("wasmedge"))), engine);
        TaskService tasks = new TaskService(runtime, events, new TaskStore(ctx.store()));
        tasks.recover();
        WasmSandboxer sandboxer = new WasmSandboxer(tasks, ctx.taskAddress());
        return new Parts(sandboxer, tasks.services(), tasks, List.of(events));
    }

    public static void main(String[] args) {
        System.exit(new CommandLine(new WasmSandboxerMain()).execute(args));
    }
}
