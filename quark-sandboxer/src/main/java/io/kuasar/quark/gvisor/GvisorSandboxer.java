package io.kuasar.quark.gvisor;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.grpc.Status;
import io.kuasar.api.cri.v1.LinuxContainerResources;
import io.kuasar.api.cri.v1.NamespaceMode;
import io.kuasar.api.cri.v1.PodSandboxConfig;
import io.kuasar.api.types.Metric;
import io.kuasar.sandbox.controller.Sandboxer;
import io.kuasar.sandbox.oci.OciRuntime;
import io.kuasar.sandbox.pod.PodFiles;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.process.ProcessReaper;
import io.kuasar.sandbox.process.ProcessRef;
import io.kuasar.sandbox.state.AtomicFiles;
import io.kuasar.sandbox.state.SandboxRecord;
import io.kuasar.sandbox.state.StateStore;
import io.kuasar.sandbox.task.TaskService;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.time.Instant;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

/**
 * A pod is one gVisor sandbox: an app kernel (runsc's sentry, in user space) that every container of the pod joins,
 * as gVisor's own multi-container pods do. Kuasar has no pause container, but gVisor needs a root container to make a
 * sandbox: it runs {@code kuasar-pause}, a static program alone in a rootfs of its own, with the pod's namespaces,
 * network (the CNI netns containerd made) and resources. Containers join it by gVisor's CRI annotations
 * ({@link GvisorRuntime}).
 * <p>
 * The sandbox process is re-parented to this daemon (a child subreaper), which reaps it and learns of its death
 * (an app kernel that dies takes the pod with it). runsc's own helpers (one gofer per container) are reaped here
 * too: runsc polls for them to vanish when it deletes a container.
 */
public final class GvisorSandboxer implements Sandboxer {
    private static final Logger LOG = LoggerFactory.getLogger(GvisorSandboxer.class);
    static final String FACT_PID = "gvisor.pid";
    static final String FACT_START_TIME = "gvisor.start";
    static final String PAUSE = "kuasar-pause";
    private final ObjectMapper json = new ObjectMapper();
    private final Runsc runsc;
    private final StateStore store;
    private final ProcessReaper reaper;
    private final TaskService tasks;
    private final String taskAddress;
    private final Path pauseBinary;
    private final Map<String, CompletableFuture<ExitStatus>> exits = new ConcurrentHashMap<>();

    public GvisorSandboxer(Runsc runsc, StateStore store, ProcessReaper reaper, TaskService tasks, String taskAddress,
                           Path pauseBinary) {
        this.runsc = runsc;
        this.store = store;
        this.reaper = reaper;
        this.tasks = tasks;
        this.taskAddress = taskAddress;
        this.pauseBinary = pauseBinary;
    }

    @Override
    public String name() {
        return "quark-sandboxer";
    }

    @Override
    public void create(SandboxRecord r) {
        PodSandboxConfig cfg = PodFiles.config(r); // reject a config we cannot read now, not at start
        if (!r.netnsPath().isEmpty() && !Files.exists(Path.of(r.netnsPath()))) {
            throw Status.INVALID_ARGUMENT.withDescription("sandbox " + r.id() + ": network namespace "
                    + r.netnsPath() + " does not exist").asRuntimeException();
        }
        if (hostNetwork(r, cfg)) {
            throw Status.INVALID_ARGUMENT.withDescription("sandbox " + r.id() + ": a gVisor pod cannot use the "
                    + "node's network namespace (hostNetwork); it runs its own network stack in the pod's")
                    .asRuntimeException();
        }
        if (!Files.isExecutable(pauseBinary)) {
            throw Status.FAILED_PRECONDITION.withDescription("sandbox " + r.id() + ": " + pauseBinary
                    + " is missing: reinstall quark-sandboxer (make install)").asRuntimeException();
        }
    }

    private static boolean hostNetwork(SandboxRecord r, PodSandboxConfig cfg) {
        var ns = cfg == null ? null : cfg.getLinux().getSecurityContext().getNamespaceOptions();
        return ns != null ? ns.getNetwork() == NamespaceMode.NODE : r.netnsPath().isEmpty();
    }

    @Override
    public Started start(SandboxRecord r, Instant deadline) throws IOException {
        PodSandboxConfig cfg = PodFiles.config(r);
        String hostname = cfg != null && !cfg.getHostname().isEmpty() ? cfg.getHostname() : PodFiles.hostHostname();
        Path dir = store.sandboxDir(r.id());
        Path bundle = dir.resolve("pause");
        Path log = dir.resolve("runsc.log");
        PodFiles.prepare(dir, cfg, hostname);
        try {
            writeBundle(r, cfg, hostname, bundle);
            File out = dir.resolve("pause.out").toFile();
            runsc.cli().run("runsc create of sandbox " + r.id(), log, java.util.List.of("create", "--bundle",
                    bundle.toString(), "--pid-file", bundle.resolve("init.pid").toString(), r.id()),
                    new OciRuntime.Stdio(new File("/dev/null"), out, out), null);
            runsc.startSandbox(r.id(), log, OciRuntime.Stdio.none());
            int pid = Integer.parseInt(Files.readString(bundle.resolve("init.pid")).trim());
            reaper.adoptOrphans(GvisorRuntime::isRunscHelper);
            ProcessRef sandbox = ProcessRef.of(pid);
            CompletableFuture<ExitStatus> exit = reaper.watch(pid);
            exits.put(r.id(), exit);
            LOG.info("sandbox {}: gVisor sandbox pid {}", r.id(), pid);
            return new Started(pid, taskAddress, exit, Map.of(FACT_PID, Integer.toString(pid), FACT_START_TIME,
                    Long.toString(sandbox.startTime())));
        } catch (IOException | RuntimeException e) {
            deleteSandbox(r.id(), log);
            PodFiles.release(dir);
            throw e;
        }
    }

    /** The root container: kuasar-pause alone in a rootfs, with the pod's namespaces, network and resources. */
    private void writeBundle(SandboxRecord r, PodSandboxConfig cfg, String hostname, Path bundle) throws IOException {
        Path rootfs = bundle.resolve("rootfs");
        for (String d : new String[]{"proc", "dev", "sys", "tmp"}) {
            Files.createDirectories(rootfs.resolve(d));
        }
        Path pause = rootfs.resolve(PAUSE);
        Files.copy(pauseBinary, pause, StandardCopyOption.REPLACE_EXISTING);
        pause.toFile().setExecutable(true, false);

        ObjectNode spec = json.createObjectNode().put("ociVersion", "1.0.2");
        ObjectNode process = spec.putObject("process").put("terminal", false).put("cwd", "/")
                .put("noNewPrivileges", true);
        process.putObject("user").put("uid", 0).put("gid", 0);
        process.putArray("args").add("/" + PAUSE);
        process.putArray("env").add("PATH=/");
        spec.putObject("root").put("path", rootfs.toString()).put("readonly", true);
        spec.put("hostname", hostname);
        ArrayNode mounts = spec.putArray("mounts");
        mounts.addObject().put("destination", "/proc").put("type", "proc").put("source", "proc");
        mounts.addObject().put("destination", "/dev").put("type", "tmpfs").put("source", "tmpfs")
                .putArray("options").add("nosuid").add("strictatime").add("mode=755").add("size=65536k");
        mounts.addObject().put("destination", "/sys").put("type", "sysfs").put("source", "sysfs")
                .putArray("options").add("nosuid").add("noexec").add("nodev").add("ro");
        ObjectNode linux = spec.putObject("linux");
        ArrayNode ns = linux.putArray("namespaces");
        for (String t : new String[]{"pid", "ipc", "uts", "mount"}) {
            ns.addObject().put("type", t);
        }
        ns.addObject().put("type", "network").put("path", r.netnsPath());
        linux.put("cgroupsPath", "/kuasar-quark/" + r.id());
        if (cfg != null && cfg.getLinux().hasResources()) {
            resources(linux.putObject("resources"), cfg.getLinux().getResources());
        }
        ObjectNode annotations = spec.putObject("annotations");
        annotations.put(GvisorRuntime.CONTAINER_TYPE, "sandbox");
        annotations.put(GvisorRuntime.SANDBOX_ID, r.id());
        AtomicFiles.write(bundle.resolve("config.json"), json.writerWithDefaultPrettyPrinter().writeValueAsBytes(spec));
    }

    /** The pod's limits go onto the sandbox: gVisor enforces limits per pod only, never per container. */
    static void resources(ObjectNode out, LinuxContainerResources res) {
        ObjectNode cpu = out.putObject("cpu");
        if (res.getCpuShares() > 0) {
            cpu.put("shares", res.getCpuShares());
        }
        if (res.getCpuQuota() > 0) {
            cpu.put("quota", res.getCpuQuota());
        }
        if (res.getCpuPeriod() > 0) {
            cpu.put("period", res.getCpuPeriod());
        }
        if (!res.getCpusetCpus().isEmpty()) {
            cpu.put("cpus", res.getCpusetCpus());
        }
        if (res.getMemoryLimitInBytes() > 0) {
            out.putObject("memory").put("limit", res.getMemoryLimitInBytes());
        }
    }

    /** Stops the pod's containers, then the sandbox (the pause container: its end ends the sandbox). */
    @Override
    public void stop(SandboxRecord r, Duration timeout) {
        tasks.killAll(r.id(), timeout);
        ProcessRef sandbox = sandboxOf(r);
        if (sandbox == null || !sandbox.isAlive()) {
            return;
        }
        try {
            runsc.cli().run("runsc kill of sandbox " + r.id(), store.sandboxDir(r.id()).resolve("runsc.log"),
                    java.util.List.of("kill", r.id(), "KILL"), OciRuntime.Stdio.none(), null);
        } catch (IOException | RuntimeException e) {
            LOG.debug("sandbox {}: runsc kill: {}; killing the sandbox process", r.id(), e.getMessage());
            sandbox.signal(9);
        }
        CompletableFuture<ExitStatus> exit = exits.get(r.id());
        try {
            if (exit != null) {
                exit.get(10, TimeUnit.SECONDS);
            }
        } catch (Exception e) {
            LOG.warn("sandbox {}: gVisor sandbox {} did not end after SIGKILL; killing its process", r.id(),
                    sandbox.pid());
            sandbox.signal(9);
        }
    }

    /** Containers first, then the sandbox: runsc removes its processes, state, cgroup and filestores. */
    @Override
    public void shutdown(SandboxRecord r) {
        for (String c : tasks.containersOf(r.id())) {
            tasks.forceRemove(c);
        }
        Path dir = store.sandboxDir(r.id());
        deleteSandbox(r.id(), dir.resolve("runsc.log"));
        exits.remove(r.id());
        PodFiles.release(dir);
    }

    private void deleteSandbox(String id, Path log) {
        runsc.deleteQuietly("sandbox " + id, id, log);
    }

    @Override
    public Started recover(SandboxRecord r) {
        ProcessRef sandbox = sandboxOf(r);
        if (sandbox == null || !sandbox.isAlive()) {
            return null;
        }
        CompletableFuture<ExitStatus> exit = reaper.watch(sandbox.pid());
        exits.put(r.id(), exit);
        reaper.adoptOrphans(GvisorRuntime::isRunscHelper);
        return new Started(sandbox.pid(), taskAddress, exit, r.backend());
    }

    static ProcessRef sandboxOf(SandboxRecord r) {
        return ProcessRef.parse(r.backend().get(FACT_PID), r.backend().get(FACT_START_TIME));
    }

    @Override
    public Metric metrics(SandboxRecord r) {
        return tasks.metricsOf(r.id());
    }
}
