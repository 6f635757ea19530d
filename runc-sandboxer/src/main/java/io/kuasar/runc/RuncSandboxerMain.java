package io.kuasar.runc;

import io.kuasar.sandbox.oci.OciRuntime;
import io.kuasar.sandbox.cgroup.OomMonitor;
import io.kuasar.sandbox.cli.SandboxerDaemon;
import io.kuasar.sandbox.events.TtrpcEventPublisher;
import io.kuasar.sandbox.task.TaskService;
import io.kuasar.sandbox.task.TaskStore;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.List;

/** {@code runc-sandboxer}: Kuasar's runc sandboxer, with Kuasar's flags and defaults. */
@Command(name = "runc-sandboxer", version = "runc-sandboxer 0.1.0 (Kuasar Java)",
        description = "Serves containerd's Sandbox API for pause-less runc pods, and their Task API over ttrpc.")
public final class RuncSandboxerMain extends SandboxerDaemon {
    private static final Logger LOG = LoggerFactory.getLogger(RuncSandboxerMain.class);

    @Option(names = "--runc", defaultValue = "runc", description = "runc binary (default: ${DEFAULT-VALUE} from PATH)")
    String runcBinary;

    @Option(names = "--runc-root", defaultValue = "/run/containerd/runc/k8s.io",
            description = "runc state root (default: ${DEFAULT-VALUE}, as Kuasar)")
    Path runcRoot;

    @Option(names = "--holder", description = "kuasar-holder helper (default: $KUASAR_LIBEXEC/kuasar-holder)")
    Path holder;

    public RuncSandboxerMain() {
        listen = Path.of("/run/runc-sandboxer.sock");
        dir = Path.of("/run/kuasar-runc");
    }

    @Override
    protected Parts assemble(Context ctx) throws Exception {
        Path helper = holder != null ? holder : libexec().resolve("kuasar-holder");
        TtrpcEventPublisher events = new TtrpcEventPublisher(ctx.eventsAddress());
        OomMonitor oom = new OomMonitor(ctx.poller());
        OciRuntime runc = new OciRuntime(runcBinary, runcRoot);
        String missing = runc.missing();
        if (missing != null) {
            // serve anyway (pods already running are recovered); every new container fails with this until fixed
            LOG.warn("containers cannot start yet: {}", missing);
        }
        TaskService tasks = new TaskService(new RuncRuntime(runc, ctx.reaper(),
                ctx.store(), libexec().resolve("kuasar-monitor"), oom), events, new TaskStore(ctx.store()));
        tasks.recover();
        RuncSandboxer sandboxer = new RuncSandboxer(ctx.store(), new HolderLauncher(helper), ctx.reaper(), tasks,
                ctx.taskAddress());
        return new Parts(sandboxer, tasks.services(), tasks, List.of(events));
    }

    public static void main(String[] args) {
        System.exit(new CommandLine(new RuncSandboxerMain()).execute(args));
    }
}
