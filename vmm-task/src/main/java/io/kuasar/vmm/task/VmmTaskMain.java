package io.kuasar.vmm.task;

import io.kuasar.runc.HolderLauncher;
import io.kuasar.sandbox.oci.OciRuntime;
import io.kuasar.runc.RuncRuntime;
import io.kuasar.sandbox.cgroup.OomMonitor;
import io.kuasar.sandbox.process.ProcessReaper;
import io.kuasar.sandbox.state.StateStore;
import io.kuasar.sandbox.sys.FdPoller;
import io.kuasar.sandbox.task.TaskService;
import io.kuasar.sandbox.ttrpc.TtrpcServer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;

/**
 * {@code vmm-task}: the guest agent of a microVM pod, PID 1 of the VM (the initramfs's /init execs it). It does
 * Kuasar's guest boot steps, then serves containerd's Task API (v2 and v3), Kuasar's {@code grpc.SandboxService}
 * and the Streaming service on the virtio-serial port the sandboxer connects to. Containers run through runc in
 * the guest, with the same runtime code the runc sandboxer uses on a host.
 */
public final class VmmTaskMain {
    private static final Logger LOG = LoggerFactory.getLogger(VmmTaskMain.class);
    static final Path LIBEXEC = Path.of("/opt/kuasar/libexec");

    private VmmTaskMain() {
    }

    public static void main(String[] args) throws Exception {
        // More carriers than vCPUs: a few calls (a FIFO open in a process launch) pin theirs while they wait.
        if (System.getProperty("jdk.virtualThreadScheduler.parallelism") == null) {
            System.setProperty("jdk.virtualThreadScheduler.parallelism", "4");
        }
        if (args.length > 0 && args[0].equals("--train")) {
            Training.run();
            return;
        }
        long started = System.nanoTime();
        try {
            run();
        } catch (Throwable t) {
            // PID 1 must not just vanish: say why on the console, then let the kernel stop the VM.
            LOG.error("vmm-task failed after {} ms", (System.nanoTime() - started) / 1_000_000, t);
            System.err.flush();
            Runtime.getRuntime().halt(1);
        }
    }

    private static void run() throws Exception {
        Steps steps = new Steps();
        GuestInit.early();
        TaskConfig config = TaskConfig.parse(Files.readString(Path.of("/proc/cmdline")));
        io.kuasar.sandbox.logging.StderrLogging.setLevel(config.logLevel());
        steps.done("early mounts, logging");
        if (!config.template()) {
            GuestInit.mountShareFs(config);
            steps.done("share fs");
            GuestInit.late();
        }
        new OrphanReaper().start();
        TtrpcServer server = TtrpcServer.withoutListener();
        // A template's guest is saved before any pod owns it: each restored copy mounts its pod's share, takes
        // fresh randomness and its NIC's MAC when its pod's SetupSandbox arrives.
        Runnable restored = config.template() ? () -> GuestInit.restored(config) : () -> { };
        services(Path.of("/run/kuasar-task"), restored).forEach(server::register);
        if (config.template()) {
            TemplateWarmUp.run(new SandboxService(null, new GuestNetwork(), null, () -> { }));
            steps.done("template warm-up");
        }
        steps.done("services");
        new GuestNetwork().up("lo");
        if (config.debug()) {
            DebugConsole.start(config); // Kuasar's debug console (kuasar-ctl exec), in the background
        }
        if (config.agentVsockPort() > 0) {
            // Kuasar's channel: vsock port 1024 (vhost-user-vsock under QEMU here, Cloud Hypervisor's hybrid vsock)
            int listening = io.kuasar.sandbox.sys.Linux.vsockListen(config.agentVsockPort());
            steps.done("lo, vsock " + config.agentVsockPort());
            ready(steps);
            AgentPort.serveVsock(server, listening, config.agentVsockPort());
        }
        Path port = AgentPort.find(config.agentPort(), Duration.ofSeconds(10));
        steps.done("lo, agent port");
        ready(steps);
        AgentPort.serveForever(server, port);
    }

    private static void ready(Steps steps) throws java.io.IOException {
        LOG.info("vmm-task ready in {} ms of JVM time, uptime {} ({})",
                java.lang.management.ManagementFactory.getRuntimeMXBean().getUptime(),
                Files.readString(Path.of("/proc/uptime")).split(" ")[0], steps);
    }

    /** Where the boot's JVM time goes (a TCG guest runs it 20-30x slower than the host: worth knowing). */
    private static final class Steps {
        private final StringBuilder out = new StringBuilder("JVM start to main "
                + java.lang.management.ManagementFactory.getRuntimeMXBean().getUptime() + " ms");
        private long last = System.nanoTime();

        void done(String step) {
            long now = System.nanoTime();
            out.append(", ").append(step).append(' ').append((now - last) / 1_000_000).append(" ms");
            last = now;
        }

        @Override
        public String toString() {
            return out.toString();
        }
    }

    /** Builds the agent's services; {@code stateDir} holds the runtime's files (consoles). */
    static java.util.List<io.kuasar.sandbox.ttrpc.TtrpcService> services(Path stateDir, Runnable beforeSetup)
            throws Exception {
        FdPoller poller = new FdPoller("vmm-task");
        ProcessReaper reaper = new ProcessReaper(poller);
        StreamingService streaming = new StreamingService();
        GuestEvents events = new GuestEvents();
        Path monitor = LIBEXEC.resolve("kuasar-monitor");
        RuncRuntime runc = new RuncRuntime(new OciRuntime("runc", Path.of("/run/containerd/runc/k8s.io")), reaper,
                new StateStore(stateDir), Files.isExecutable(monitor) ? monitor : null, new OomMonitor(poller));
        TaskService tasks = new TaskService(new StreamedRuntime(runc, streaming, StreamedRuntime.IO_DIR), events);
        SandboxService sandbox = new SandboxService(new HolderLauncher(LIBEXEC.resolve("kuasar-holder")),
                new GuestNetwork(), events.queue(), beforeSetup);
        java.util.List<io.kuasar.sandbox.ttrpc.TtrpcService> all = new java.util.ArrayList<>(tasks.services());
        all.add(sandbox.service());
        all.add(streaming.service());
        return all;
    }
}
