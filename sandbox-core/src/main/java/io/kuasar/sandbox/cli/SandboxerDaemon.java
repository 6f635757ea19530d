package io.kuasar.sandbox.cli;

import io.grpc.BindableService;
import io.kuasar.sandbox.config.SandboxerConfig;
import io.kuasar.sandbox.controller.ControllerService;
import io.kuasar.sandbox.controller.Sandboxer;
import io.kuasar.sandbox.grpc.GrpcServer;
import io.kuasar.sandbox.metrics.MetricsRegistry;
import io.kuasar.sandbox.metrics.MetricsServer;
import io.kuasar.sandbox.metrics.RpcMetricsInterceptor;
import io.kuasar.sandbox.process.ProcessReaper;
import io.kuasar.sandbox.shim.ShimSandboxService;
import io.kuasar.sandbox.state.StateStore;
import io.kuasar.sandbox.sys.FdPoller;
import io.kuasar.sandbox.task.TaskService;
import io.kuasar.sandbox.tracing.Tracing;
import io.kuasar.sandbox.tracing.TracingInterceptor;
import io.kuasar.sandbox.tracing.TracingSettings;
import io.kuasar.sandbox.ttrpc.TaskProxy;
import io.kuasar.sandbox.ttrpc.TtrpcServer;
import io.kuasar.sandbox.ttrpc.TtrpcService;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.slf4j.bridge.SLF4JBridgeHandler;
import picocli.CommandLine.Command;
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
@Command(sortOptions = true, footerHeading = "%n", footer = {
        "Signals:",
        "  SIGTERM, SIGINT  stop serving, exit 0; pods keep running, the next start",
        "                   recovers them",
        "  SIGUSR1          turn OTLP tracing on or off ([sandbox] enable_tracing)",
        "Environment:",
        "  OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL (grpc or",
        "  http/protobuf), OTEL_SERVICE_NAME and the other standard OTEL_* variables;",
        "  KUASAR_LIBEXEC (helpers; default /usr/local/libexec/kuasar)",
        "Exit codes:",
        "  0 stopped by a signal, 1 cannot serve (e.g. another daemon holds --dir),",
        "  2 bad flags, config or environment",
        "Docs: docs/containerd.md (containerd), docs/observability.md (metrics, tracing)",
        ""})
public abstract class SandboxerDaemon implements Callable<Integer> {
    private static final Logger LOG = LoggerFactory.getLogger(SandboxerDaemon.class);

    @Option(names = {"-l", "--listen"}, description = "Unix socket for containerd's Sandbox API (default: ${DEFAULT-VALUE})")
    protected Path listen;

    @Option(names = {"-d", "--dir"}, description = "State directory, one sub-directory per sandbox (default: ${DEFAULT-VALUE})")
    protected Path dir;

    @Option(names = "--log-level",
            description = "error, warn, info, debug or trace (default: [sandbox].log_level of --config, else info)")
    protected String logLevel;

    @Option(names = {"-c", "--config"}, description = "TOML config file, as Kuasar's (default: /var/lib/kuasar/config.toml for vmm-sandboxer, none for the other daemons)")
    protected Path config;

    @Option(names = {"-v", "--version"}, versionHelp = true, description = "Print version information and exit")
    boolean versionRequested;

    @Option(names = {"-h", "--help"}, usageHelp = true, description = "Show this help and exit")
    boolean helpRequested;

    /** The config this daemon runs with (after {@link #call()} has read it). */
    protected SandboxerConfig sandboxerConfig = SandboxerConfig.EMPTY;

    /** The config file read when {@code --config} is not given, if it exists (e.g. vmm's); none by default. */
    protected Path defaultConfig() {
        return null;
    }

    @Option(names = "--containerd-ttrpc-address",
            description = "containerd's ttrpc socket for task events (default: $TTRPC_ADDRESS or /run/containerd/containerd.sock.ttrpc)")
    protected Path containerdTtrpc;

    @Option(names = "--metrics-listen",
            description = "Serve Prometheus metrics at GET /metrics on unix:/path or a loopback HOST:PORT (off by default)")
    protected String metricsListen;

    private final CountDownLatch stop = new CountDownLatch(1);

    /**
     * What the shared part hands a daemon to assemble itself from. {@code poller} is the daemon's one
     * descriptor-polling thread, shared by the reaper and any other watcher; {@code taskAddress} is where containerd
     * reaches the Task API this daemon serves (the address Controller.Start answers).
     */
    public record Context(StateStore store, ProcessReaper reaper, FdPoller poller, Path eventsAddress,
                          String taskAddress) {
    }

    /**
     * The parts a concrete daemon provides. {@code taskServices} are served on the daemon's Task API socket, behind
     * the kuasar-ttrpc-proxy when it is installed (so containerd's connections survive a restart of this JVM); empty
     * when the sandbox serves the Task API itself (Quark). {@code tasks} may be null then.
     */
    public record Parts(Sandboxer sandboxer, List<TtrpcService> taskServices, TaskService tasks,
                        List<AutoCloseable> resources) {
    }

    protected abstract Parts assemble(Context context) throws Exception;

    /** Where the native helpers live: -Dkuasar.libexec, $KUASAR_LIBEXEC, else /usr/local/libexec/kuasar. */
    public static Path libexec() {
        String p = System.getProperty("kuasar.libexec", System.getenv("KUASAR_LIBEXEC"));
        return Path.of(p != null && !p.isEmpty() ? p : "/usr/local/libexec/kuasar");
    }

    protected Path eventsAddress() {
        if (containerdTtrpc != null) {
            return containerdTtrpc;
        }
        String env = System.getenv("TTRPC_ADDRESS");
        return Path.of(env != null && !env.isEmpty() ? env : "/run/containerd/containerd.sock.ttrpc");
    }

    @Override
    public Integer call() throws Exception {
        Path configFile = config != null ? config : defaultConfig();
        String level;
        try {
            if (configFile != null && (config != null || java.nio.file.Files.exists(configFile))) {
                sandboxerConfig = SandboxerConfig.load(configFile);
            }
            level = SandboxerConfig.effectiveLogLevel(logLevel, sandboxerConfig);
        } catch (java.io.IOException | IllegalArgumentException e) {
            System.err.println(e.getMessage());
            return 2;
        }
        configureLogging(level);
        TracingSettings tracing;
        try {
            tracing = TracingSettings.fromEnvironment(null);
        } catch (IllegalArgumentException e) {
            LOG.error("tracing: {}", e.getMessage());
            return 2;
        }
        try {
            return serve(tracing);
        } catch (java.nio.file.NoSuchFileException e) {
            LOG.error("cannot start: {} does not exist; check --listen, --dir and --metrics-listen", e.getFile());
        } catch (java.nio.file.AccessDeniedException e) {
            LOG.error("cannot start: permission denied on {}; the daemon runs as root (it mounts, makes cgroups "
                    + "and namespaces)", e.getFile());
        } catch (java.io.IOException | java.io.UncheckedIOException | IllegalArgumentException
                 | IllegalStateException e) {
            LOG.error("cannot start: {}", e.getMessage(), LOG.isDebugEnabled() ? e : null);
        } catch (io.grpc.StatusRuntimeException e) {
            // a daemon's own precondition (e.g. gVisor's runsc missing), worded with its remedy
            LOG.error("cannot start: {}", e.getStatus().getDescription(), LOG.isDebugEnabled() ? e : null);
        }
        return 1;
    }

    private int serve(TracingSettings tracing) throws Exception {
        ProcessReaper.becomeSubreaper();
        java.nio.file.Files.createDirectories(listen.toAbsolutePath().getParent());
        StateStore store = new StateStore(dir);
        java.nio.channels.FileChannel lockFile = java.nio.channels.FileChannel.open(store.root().resolve(".lock"),
                java.nio.file.StandardOpenOption.CREATE, java.nio.file.StandardOpenOption.WRITE);
        if (lockFile.tryLock() == null) {
            LOG.error("another sandboxer is already serving {}; stop it first", store.root());
            return 1;
        }
        // a bad --metrics-listen fails here, before anything is started
        MetricsServer metricsServer = metricsListen == null ? null
                : MetricsServer.start(metricsListen, MetricsRegistry.global());
        FdPoller poller = new FdPoller("fd-poller");
        ProcessReaper reaper = new ProcessReaper(poller);
        // containerd dials task.sock; with the proxy in front, this JVM serves the proxy's backend socket.
        TaskProxy proxy = new TaskProxy(libexec().resolve("kuasar-ttrpc-proxy"), store.root());
        Tracing.observeSteps(MetricsRegistry.global()::recordStep);
        Parts parts = assemble(new Context(store, reaper, poller, eventsAddress(), "ttrpc+unix://" + proxy.front()));
        Tracing.configure(tracing.withDefaultServiceName(tracingServiceName(parts)), sandboxerConfig.enableTracing());
        TtrpcServer taskServer = null;
        if (!parts.taskServices().isEmpty()) {
            taskServer = new TtrpcServer(proxy.available() ? proxy.backend() : proxy.front());
            parts.taskServices().forEach(taskServer::register);
            if (proxy.available()) {
                proxy.ensureRunning(reaper);
            } else {
                LOG.warn("{} is missing: a restart of this daemon will cut containerd's task connections",
                        libexec().resolve("kuasar-ttrpc-proxy"));
            }
        }
        ControllerService controller = new ControllerService(parts.sandboxer(), store);
        if (taskServer != null) {
            // containerd 1.7 (sandbox_mode "shim") drives pods through the shim Sandbox API on the task socket;
            // its launcher finds that socket at <listen>.ttrpc, as containerd's own ttrpc socket sits beside its
            // gRPC one.
            ShimSandboxService shim = new ShimSandboxService(controller, parts.sandboxer().name());
            taskServer.register(shim.service());
            if (parts.tasks() != null) {
                parts.tasks().addCreateHook(shim::beforeCreate);
            }
            linkShimEndpoint(proxy.front());
        } else {
            // no Task API here (Quark serves its own): no shim endpoint; a link left by an earlier run would mislead
            java.nio.file.Files.deleteIfExists(shimEndpointLink(listen.toAbsolutePath()));
        }
        controller.recover();
        MetricsRegistry metrics = MetricsRegistry.global();
        registerMetrics(metrics, parts, controller);
        if (taskServer != null) {
            taskServer.observe((service, method, code, nanos) -> metrics.recordRpc("task", method, code.name(), nanos));
            taskServer.start();
        }
        GrpcServer grpc = new GrpcServer(listen, List.<BindableService>of(controller),
                List.of(new RpcMetricsInterceptor(metrics), new TracingInterceptor())).start();
        // SIGTERM/SIGINT end serving and exit 0; pods keep running. (A shutdown hook alone would exit 143.)
        for (String sig : new String[]{"TERM", "INT"}) {
            sun.misc.Signal.handle(new sun.misc.Signal(sig), s -> stop.countDown());
        }
        // SIGUSR1 turns tracing on or off at run time, as in Kuasar
        sun.misc.Signal.handle(new sun.misc.Signal("USR1"), s -> Tracing.toggle());
        LOG.info("{} ready (state in {})", parts.sandboxer().name(), store.root());
        SystemdNotify.notify("READY=1\nMAINPID=" + ProcessHandle.current().pid());
        stop.await();
        SystemdNotify.notify("STOPPING=1");
        LOG.info("shutting down: pods keep running and are recovered on the next start");
        grpc.close();
        if (taskServer != null) {
            taskServer.close();
            if (proxy.available() && parts.tasks() != null) {
                proxy.stopIfIdle(parts.tasks().containerCount()); // nothing left to keep: stop it
            }
        }
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
        Tracing.shutdown(); // sends the spans still queued
        poller.close();
        return 0;
    }

    /**
     * Kuasar's OTLP service name: {@code kuasar-<daemon>-service}; vmm-sandboxer names its hypervisor
     * ({@code kuasar-vmm-sandboxer-qemu-service}). {@code OTEL_SERVICE_NAME} overrides it.
     */
    protected String tracingServiceName(Parts parts) {
        return "kuasar-" + parts.sandboxer().name() + "-service";
    }

    /** The families every daemon serves (MetricsRegistry.FAMILIES): one dashboard fits all of them. */
    private void registerMetrics(MetricsRegistry metrics, Parts parts, ControllerService controller) {
        String version = getClass().getPackage().getImplementationVersion();
        metrics.gauge("kuasar_build_info{daemon=\"" + parts.sandboxer().name() + "\",version=\""
                + (version == null ? "dev" : version) + "\"}", "", () -> 1);
        controller.registerMetrics(metrics);
        metrics.gauge("kuasar_containers", "", parts.tasks() == null ? () -> 0 : parts.tasks()::containerCount);
        metrics.gauge("kuasar_tracing_enabled", "", () -> Tracing.enabled() ? 1 : 0);
        metrics.gauge("kuasar_tracing_spans_total{result=\"exported\"}", "",
                () -> Tracing.exporter() == null ? 0 : Tracing.exporter().exported());
        metrics.gauge("kuasar_tracing_spans_total{result=\"dropped\"}", "",
                () -> Tracing.exporter() == null ? 0 : Tracing.exporter().dropped());
        metrics.gauge("kuasar_tracing_spans_total{result=\"failed\"}", "",
                () -> Tracing.exporter() == null ? 0 : Tracing.exporter().failed());
    }

    /** Where containerd 1.7's launcher looks for the shim endpoint of the daemon listening on {@code listen}. */
    static Path shimEndpointLink(Path listen) {
        return listen.resolveSibling(listen.getFileName() + ".ttrpc");
    }

    private void linkShimEndpoint(Path taskSocket) throws java.io.IOException {
        Path link = shimEndpointLink(listen.toAbsolutePath());
        java.nio.file.Files.createDirectories(link.getParent());
        Path tmp = link.resolveSibling(link.getFileName() + ".tmp");
        java.nio.file.Files.deleteIfExists(tmp);
        java.nio.file.Files.createSymbolicLink(tmp, taskSocket.toAbsolutePath());
        java.nio.file.Files.move(tmp, link, java.nio.file.StandardCopyOption.ATOMIC_MOVE,
                java.nio.file.StandardCopyOption.REPLACE_EXISTING);
    }

    public static void configureLogging(String level) {
        SLF4JBridgeHandler.removeHandlersForRootLogger();
        SLF4JBridgeHandler.install();
        io.kuasar.sandbox.logging.StderrLogging.setLevel(level);
    }
}
