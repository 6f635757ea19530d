package io.kuasar.sandbox.cli;

import ch.qos.logback.classic.Level;
import ch.qos.logback.classic.LoggerContext;
import io.grpc.BindableService;
import io.kuasar.sandbox.controller.ControllerService;
import io.kuasar.sandbox.controller.Sandboxer;
import io.kuasar.sandbox.grpc.GrpcServer;
import io.kuasar.sandbox.task.TaskService;
import io.kuasar.sandbox.metrics.MetricsRegistry;
import io.kuasar.sandbox.metrics.MetricsServer;
import io.kuasar.sandbox.metrics.RpcMetricsInterceptor;
import io.kuasar.sandbox.process.ProcessReaper;
import io.kuasar.sandbox.state.StateStore;
import io.kuasar.sandbox.sys.FdPoller;
import io.kuasar.sandbox.ttrpc.TtrpcServer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.slf4j.bridge.SLF4JBridgeHandler;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Callable;

/**
 * The command line and lifecycle every sandboxer daemon shares: Kuasar's {@code --listen}, {@code --dir} and
 * {@code --log-level}; the Sandbox API on a Unix socket; recovery of the state directory; and a clean exit 0 on
 * SIGTERM that leaves pods running.
 */
public abstract class SandboxerDaemon implements Callable<Integer> {
    private static final Logger LOG = LoggerFactory.getLogger(SandboxerDaemon.class);

    @Option(names = {"-l", "--listen"}, description = "Unix socket for containerd's Sandbox API (default: ${DEFAULT-VALUE})")
    protected Path listen;

    @Option(names = {"-d", "--dir"}, description = "State directory, one sub-directory per sandbox (default: ${DEFAULT-VALUE})")
    protected Path dir;

    @Option(names = "--log-level", defaultValue = "info",
            description = "error, warn, info, debug or trace (default: ${DEFAULT-VALUE})")
    protected String logLevel;

    @Option(names = "--containerd-ttrpc-address",
            description = "containerd's ttrpc socket for task events (default: $TTRPC_ADDRESS or /run/containerd/containerd.sock.ttrpc)")
    protected Path containerdTtrpc;

    @Option(names = "--metrics-listen",
            description = "Serve Prometheus metrics at GET /metrics on unix:/path or a loopback HOST:PORT (off by default)")
    protected String metricsListen;

    private final CountDownLatch stop = new CountDownLatch(1);

    /** The parts a concrete daemon provides once the shared ones exist. */
    public record Parts(Sandboxer sandboxer, TtrpcServer taskServer, TaskService tasks, List<AutoCloseable> resources) {
    }

    /** {@code poller} is the daemon's one descriptor-polling thread, shared by the reaper and any other watcher. */
    protected abstract Parts assemble(StateStore store, ProcessReaper reaper, FdPoller poller, Path eventsAddress)
            throws Exception;

    protected Path eventsAddress() {
        if (containerdTtrpc != null) {
            return containerdTtrpc;
        }
        String env = System.getenv("TTRPC_ADDRESS");
        return Path.of(env != null && !env.isEmpty() ? env : "/run/containerd/containerd.sock.ttrpc");
    }

    @Override
    public Integer call() throws Exception {
        configureLogging(logLevel);
        ProcessReaper.becomeSubreaper();
        StateStore store = new StateStore(dir);
        java.nio.channels.FileChannel lockFile = java.nio.channels.FileChannel.open(store.root().resolve(".lock"),
                java.nio.file.StandardOpenOption.CREATE, java.nio.file.StandardOpenOption.WRITE);
        if (lockFile.tryLock() == null) {
            LOG.error("another sandboxer is already serving {}; stop it first", store.root());
            return 1;
        }
        FdPoller poller = new FdPoller("fd-poller");
        ProcessReaper reaper = new ProcessReaper(poller);
        Parts parts = assemble(store, reaper, poller, eventsAddress());
        ControllerService controller = new ControllerService(parts.sandboxer(), store);
        controller.recover();
        MetricsRegistry metrics = new MetricsRegistry();
        controller.registerMetrics(metrics);
        if (parts.tasks() != null) {
            metrics.gauge("kuasar_containers", "Containers served by this daemon's Task API.",
                    parts.tasks()::containerCount);
        }
        parts.taskServer().observe((service, method, code, nanos) ->
                metrics.recordRpc("task", method, code.name(), nanos));
        parts.taskServer().start();
        GrpcServer grpc = new GrpcServer(listen, List.<BindableService>of(controller),
                List.of(new RpcMetricsInterceptor(metrics))).start();
        MetricsServer metricsServer = metricsListen == null ? null : MetricsServer.start(metricsListen, metrics);
        // SIGTERM/SIGINT end serving and exit 0; pods keep running. (A shutdown hook alone would exit 143.)
        for (String sig : new String[]{"TERM", "INT"}) {
            sun.misc.Signal.handle(new sun.misc.Signal(sig), s -> stop.countDown());
        }
        LOG.info("{} ready (state in {})", parts.sandboxer().name(), store.root());
        SystemdNotify.notify("READY=1\nMAINPID=" + ProcessHandle.current().pid());
        stop.await();
        SystemdNotify.notify("STOPPING=1");
        LOG.info("shutting down: pods keep running and are recovered on the next start");
        grpc.close();
        parts.taskServer().close();
        if (metricsServer != null) {
            metricsServer.close();
        }
        for (AutoCloseable r : parts.resources()) {
            try {
                r.close();
            } catch (Exception e) {
                LOG.debug("closing {} failed: {}", r, e.getMessage());
            }
        }
        poller.close();
        return 0;
    }

    public static void configureLogging(String level) {
        SLF4JBridgeHandler.removeHandlersForRootLogger();
        SLF4JBridgeHandler.install();
        if (LoggerFactory.getILoggerFactory() instanceof LoggerContext ctx) {
            ctx.getLogger(org.slf4j.Logger.ROOT_LOGGER_NAME).setLevel(Level.toLevel(level, Level.INFO));
        }
    }
}
