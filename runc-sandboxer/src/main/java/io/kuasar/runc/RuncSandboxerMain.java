package io.kuasar.runc;

import io.kuasar.sandbox.cgroup.OomMonitor;
import io.kuasar.sandbox.cli.SandboxerDaemon;
import io.kuasar.sandbox.events.TtrpcEventPublisher;
import io.kuasar.sandbox.process.ProcessReaper;
import io.kuasar.sandbox.sys.FdPoller;
import io.kuasar.sandbox.state.StateStore;
import io.kuasar.sandbox.task.TaskService;
import io.kuasar.sandbox.task.TaskStore;
import io.kuasar.sandbox.ttrpc.TtrpcServer;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.List;

/** {@code runc-sandboxer}: Kuasar's runc sandboxer, with Kuasar's flags and defaults. */
@Command(name = "runc-sandboxer", mixinStandardHelpOptions = true, version = "runc-sandboxer 0.1.0",
        description = "Serves containerd's Sandbox API for pause-less runc pods, and their Task API over ttrpc.")
public final class RuncSandboxerMain extends SandboxerDaemon {
    private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(RuncSandboxerMain.class);
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
    protected Parts assemble(StateStore store, ProcessReaper reaper, FdPoller poller, Path eventsAddress)
            throws Exception {
        Path helper = holder != null ? holder : libexec().resolve("kuasar-holder");
        TtrpcEventPublisher events = new TtrpcEventPublisher(eventsAddress);
        OomMonitor oom = new OomMonitor(poller);
        TaskService tasks = new TaskService(new RuncRuntime(new Runc(runcBinary, runcRoot), reaper,
                store, libexec().resolve("kuasar-monitor")), events, oom, new TaskStore(store));
        tasks.recover();
        // containerd dials task.sock; with the proxy in front, this JVM serves the proxy's backend socket.
        TaskProxy proxy = new TaskProxy(libexec().resolve("kuasar-ttrpc-proxy"), store.root());
        TtrpcServer server = new TtrpcServer(proxy.available() ? proxy.backend() : proxy.front());
        tasks.services().forEach(server::register);
        if (proxy.available()) {
            proxy.ensureRunning(reaper);
        } else {
            LOG.warn("{} is missing: a restart of this daemon will cut containerd's task connections",
                    libexec().resolve("kuasar-ttrpc-proxy"));
        }
        RuncSandboxer sandboxer = new RuncSandboxer(store, new HolderLauncher(helper), reaper, tasks,
                "ttrpc+unix://" + proxy.front());
        AutoCloseable stopIdleProxy = () -> {
            if (proxy.available()) {
                proxy.stopIfIdle(tasks.containerCount());
            }
        };
        return new Parts(sandboxer, server, tasks, List.of(events, stopIdleProxy));
    }

    static Path libexec() {
        String p = System.getProperty("kuasar.libexec", System.getenv("KUASAR_LIBEXEC"));
        return Path.of(p != null && !p.isEmpty() ? p : "/usr/local/libexec/kuasar");
    }

    public static void main(String[] args) {
        System.exit(new CommandLine(new RuncSandboxerMain()).execute(args));
    }
}
