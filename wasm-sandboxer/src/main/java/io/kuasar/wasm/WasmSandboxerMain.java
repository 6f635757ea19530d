package io.kuasar.wasm;

import io.kuasar.sandbox.cli.SandboxerDaemon;
import io.kuasar.sandbox.events.TtrpcEventPublisher;
import io.kuasar.sandbox.task.TaskService;
import io.kuasar.sandbox.task.TaskStore;
import io.kuasar.wasm.chicory.ChicoryEngine;
import picocli.CommandLine;
import picocli.CommandLine.Command;

import java.nio.file.Path;
import java.util.List;

/** {@code wasm-sandboxer}: Kuasar's Wasm sandboxer, with Kuasar's flags and defaults; WASI modules run in-process. */
@Command(name = "wasm-sandboxer", version = "wasm-sandboxer 0.1.0 (Kuasar Java, Chicory)",
        description = "Serves containerd's Sandbox API for Wasm pods, and their Task API over ttrpc.")
public final class WasmSandboxerMain extends SandboxerDaemon {

    public WasmSandboxerMain() {
        listen = Path.of("/run/wasm-sandboxer.sock");
        dir = Path.of("/run/kuasar-wasm");
    }

    @Override
    protected Parts assemble(Context ctx) throws Exception {
        TtrpcEventPublisher events = new TtrpcEventPublisher(ctx.eventsAddress());
        ChicoryEngine engine = new ChicoryEngine(ctx.store().root().resolve("cache").resolve("chicory"));
        TaskService tasks = new TaskService(new WasmRuntime(engine), events, new TaskStore(ctx.store()));
        tasks.recover();
        WasmSandboxer sandboxer = new WasmSandboxer(tasks, ctx.taskAddress());
        return new Parts(sandboxer, tasks.services(), tasks, List.of(events));
    }

    public static void main(String[] args) {
        System.exit(new CommandLine(new WasmSandboxerMain()).execute(args));
    }
}
