package io.kuasar.quark;

import io.kuasar.quark.gvisor.GvisorRuntime;
import io.kuasar.quark.gvisor.GvisorSandboxer;
import io.kuasar.quark.gvisor.Runsc;
import io.kuasar.quark.quark.QuarkSandboxer;
import io.kuasar.sandbox.cli.SandboxerDaemon;
import io.kuasar.sandbox.events.TtrpcEventPublisher;
import io.kuasar.sandbox.task.TaskService;
import io.kuasar.sandbox.task.TaskStore;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;

/**
 * {@code quark-sandboxer}: Kuasar's app-kernel sandboxer, with Kuasar's flags and defaults. Two backends: Kuasar's
 * Quark flow (the {@code quark} binary serves the Task API itself) and gVisor, whose containers this daemon runs
 * through {@code runsc} behind the shared Task service.
 */
@Command(name = "quark-sandboxer", version = "quark-sandboxer 0.1.0 (Kuasar Java; backends: quark, gvisor)",
        description = "Serves containerd's Sandbox API for pods on an application kernel (Quark or gVisor).")
public final class QuarkSandboxerMain extends SandboxerDaemon {

    @Option(names = "--backend", description = "quark (Kuasar's: the quark binary, which serves the Task API itself)"
            + " or gvisor (runsc; its containers run through this daemon's Task API) (default: ${DEFAULT-VALUE})")
    String backend = "quark";

    @Option(names = "--runsc", description = "gVisor's runsc (default: ${DEFAULT-VALUE}, installed by `make runsc`)")
    Path runscBinary = Path.of("/var/lib/kuasar/runsc/runsc");

    @Option(names = "--platform", description = "gVisor platform: systrap, ptrace, or kvm where /dev/kvm is hardware "
            + "virtualisation (default: ${DEFAULT-VALUE})")
    String platform = "systrap";

    @Option(names = "--network", description = "gVisor pod network: sandbox (gVisor's own stack on the pod netns), "
            + "host (host-kernel sockets inside the pod netns) or none (default: sandbox)")
    Runsc.Network network = Runsc.Network.SANDBOX;

    @Option(names = "--quark", description = "Quark's binary for the quark backend (default: ${DEFAULT-VALUE}, from PATH)")
    String quarkBinary = "quark";

    @Option(names = "--quark-config", description = "Quark's own config, which must have \"Sandboxed\": true and "
            + "\"ShimMode\": false (default: ${DEFAULT-VALUE})")
    Path quarkConfig = Path.of("/etc/quark/config.json");

    public QuarkSandboxerMain() {
        listen = Path.of("/run/quark-sandboxer.sock");
        dir = Path.of("/run/kuasar-quark");
    }

    @Override
    protected Parts assemble(Context ctx) throws Exception {
        return switch (backend) {
            case "gvisor" -> gvisor(ctx);
            case "quark" -> quark(ctx);
            default -> throw new CommandLine.ParameterException(new CommandLine(this),
                    "--backend must be quark or gvisor, not " + backend);
        };
    }

    private Parts gvisor(Context ctx) throws Exception {
        Runsc runsc = new Runsc(new Runsc.Config(runscBinary, ctx.store().root().resolve("runsc"), platform, network));
        TtrpcEventPublisher events = new TtrpcEventPublisher(ctx.eventsAddress());
        TaskService tasks = new TaskService(new GvisorRuntime(runsc, ctx.reaper(), ctx.store()), events,
                new TaskStore(ctx.store()));
        tasks.recover();
        GvisorSandboxer sandboxer = new GvisorSandboxer(runsc, ctx.store(), ctx.reaper(), tasks, ctx.taskAddress(),
                libexec().resolve("kuasar-pause"));
        // runsc's helpers that end up ours without a call that made them (a sandbox's restart of a gofer)
        ScheduledExecutorService sweeper = Executors.newSingleThreadScheduledExecutor(
                Thread.ofPlatform().name("orphan-sweep").daemon().factory());
        sweeper.scheduleWithFixedDelay(() -> ctx.reaper().adoptOrphans(GvisorRuntime::isRunscHelper), 2, 2,
                TimeUnit.SECONDS);
        return new Parts(sandboxer, tasks.services(), tasks, List.of(events, sweeper::shutdownNow));
    }

    /** Quark serves the Task API itself (its task socket): this daemon serves none. */
    private Parts quark(Context ctx) {
        QuarkSandboxer sandboxer = new QuarkSandboxer(quarkBinary, quarkConfig, ctx.store(), ctx.reaper(),
                Duration.ofSeconds(30));
        return new Parts(sandboxer, List.of(), null, List.of());
    }

    public static void main(String[] args) {
        System.exit(new CommandLine(new QuarkSandboxerMain()).setCaseInsensitiveEnumValuesAllowed(true)
                .execute(args));
    }
}
