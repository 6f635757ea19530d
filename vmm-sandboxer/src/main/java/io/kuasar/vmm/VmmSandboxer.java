package io.kuasar.vmm;

import com.google.protobuf.Any;
import com.google.protobuf.ByteString;
import com.google.protobuf.util.JsonFormat;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.kuasar.api.cri.v1.PodSandboxConfig;
import io.kuasar.api.types.Metric;
import io.kuasar.api.vmm.SetupSandboxRequest;
import io.kuasar.sandbox.pod.PodFiles;
import io.kuasar.sandbox.cgroup.SandboxCgroup;
import io.kuasar.sandbox.controller.Sandboxer;
import io.kuasar.sandbox.mount.Mounts;
import io.kuasar.sandbox.process.ProcessRef;
import io.kuasar.sandbox.state.AtomicFiles;
import io.kuasar.sandbox.state.SandboxRecord;
import io.kuasar.sandbox.state.StateStore;
import io.kuasar.sandbox.task.TaskService;
import io.kuasar.sandbox.tracing.Span;
import io.kuasar.sandbox.tracing.Tracing;
import io.kuasar.vmm.agent.Agent;
import io.kuasar.sandbox.controller.TaskResources;
import io.kuasar.vmm.forward.GuestPods;
import io.kuasar.vmm.forward.GuestRuntime;
import io.kuasar.vmm.hypervisor.Hypervisor;
import io.kuasar.vmm.hypervisor.Vm;
import io.kuasar.vmm.hypervisor.VmSizing;
import io.kuasar.vmm.hypervisor.VmSpec;
import io.kuasar.vmm.network.PodNetwork;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Every pod is a VM: one hypervisor process per pod, the vmm-task guest agent inside, the pod's network carried
 * into the VM through a tap, and the pod's directory shared with the guest. All pods share this daemon's Task API,
 * which forwards to each pod's guest agent ({@link io.kuasar.vmm.forward.GuestRuntime}).
 */
public final class VmmSandboxer implements Sandboxer, GuestPods {
    private static final Logger LOG = LoggerFactory.getLogger(VmmSandboxer.class);
    static final String SHARED = "shared";
    private static final Duration QUIT_GRACE = Duration.ofSeconds(5);
    /** Kuasar's parent of the sandbox cgroups when the pod names none. */
    static final String DEFAULT_CGROUP_PARENT = "kuasar-vmm";
    private static final String FACT_CGROUP = "cgroup";
    /** {@code "false"}: the pod's VM boots rather than start from the VM template (enable_template). */
    public static final String TEMPLATE_ANNOTATION = "io.kuasar.vmm.template";
    /** A pod's choice of task address (see {@link #guestAddress}). */
    public static final String TASK_ADDRESS_ANNOTATION = "io.kuasar.vmm.task_address";
    /** A recovered VM's agent answers at once: it has been up all along. */
    private static final Duration RECOVER_AGENT_TIMEOUT = Duration.ofSeconds(10);

    private final StateStore store;
    private final Hypervisor hypervisor;
    private final VmSizing config;
    private final String taskAddress;
    private final boolean guestAddressByDefault;
    private final SandboxCgroup.Hierarchies cgroups;
    private final Hypervisor.ExitWatcher exitWatcher;
    private final Map<String, PodVm> pods = new ConcurrentHashMap<>();
    private volatile TaskService tasks;
    private volatile GuestRuntime runtime;

    /** A running pod's VM and what was made for it. */
    private record PodVm(Vm vm, Agent agent, PodNetwork network, Path shared, String cgroup) {
    }

    /** {@code exitWatcher} watches VMs recovered after a restart: they are not this daemon's children. */
    public VmmSandboxer(StateStore store, Hypervisor hypervisor, VmSizing config, String taskAddress,
                        boolean guestAddressByDefault, SandboxCgroup.Hierarchies cgroups,
                        Hypervisor.ExitWatcher exitWatcher) {
        this.store = store;
        this.guestAddressByDefault = guestAddressByDefault;
        this.hypervisor = hypervisor;
        this.config = config;
        this.taskAddress = taskAddress;
        this.cgroups = cgroups;
        this.exitWatcher = exitWatcher;
    }

    /** The Task service that forwards to the guests (it needs this sandboxer to find them, hence set later). */
    public void tasks(TaskService tasks, GuestRuntime runtime) {
        this.tasks = tasks;
        this.runtime = runtime;
    }

    /** Kuasar's flow: Update(extensions.tasks) lays containers out before their Task calls. */
    @Override
    public void tasksUpdated(SandboxRecord r, TaskResources.Diff diff) throws IOException {
        if (runtime != null) {
            runtime.tasksUpdated(r.id(), store.sandboxDir(r.id()).resolve(SHARED), diff);
        }
    }

    @Override
    public String name() {
        return "vmm-sandboxer";
    }

    @Override
    public Pod pod(String sandboxId) {
        PodVm p = pods.get(sandboxId);
        if (p == null) {
            throw Status.FAILED_PRECONDITION.withDescription("sandbox " + sandboxId
                    + " has no running VM (not started, stopped, or not a pod of this sandboxer)").asRuntimeException();
        }
        if (p.agent().isClosed() || p.vm().exit().isDone()) {
            throw Status.FAILED_PRECONDITION.withDescription("sandbox " + sandboxId + ": its VM has exited; see "
                    + p.vm().consoleLog()).asRuntimeException();
        }
        return new Pod(sandboxId, p.agent(), p.shared());
    }

    @Override
    public Pod recovered(String sandboxId) {
        PodVm p = pods.get(sandboxId);
        return p != null ? new Pod(sandboxId, p.agent(), p.shared())
                : new Pod(sandboxId, Agent.gone(sandboxId), store.sandboxDir(sandboxId).resolve(SHARED));
    }

    @Override
    public void create(SandboxRecord r) throws IOException {
        PodSandboxConfig cfg = PodFiles.config(r);
        if (!r.netnsPath().isEmpty() && !Files.exists(Path.of(r.netnsPath()))) {
            throw Status.INVALID_ARGUMENT.withDescription("sandbox " + r.id() + ": network namespace "
                    + r.netnsPath() + " does not exist").asRuntimeException();
        }
        hypervisor.check();
        Path shared = store.sandboxDir(r.id()).resolve(SHARED);
        Files.createDirectories(shared);
        // Kuasar's setup_sandbox_files: the guest takes the hostname from here, containers these three files.
        String hostname = cfg != null && !cfg.getHostname().isEmpty() ? cfg.getHostname() : PodFiles.hostHostname();
        AtomicFiles.write(shared.resolve(PodFiles.HOSTNAME), (hostname + "\n").getBytes(StandardCharsets.UTF_8));
        AtomicFiles.write(shared.resolve(PodFiles.HOSTS), PodFiles.hosts(hostname));
        AtomicFiles.write(shared.resolve(PodFiles.RESOLV),
                PodFiles.resolvConf(cfg == null ? null : cfg.getDnsConfig()));
    }

    @Override
    public Started start(SandboxRecord r, Instant callerDeadline) throws Exception {
        PodSandboxConfig cfg = PodFiles.config(r);
        Instant deadline = Instant.now().plusSeconds(config.agentTimeoutSecs());
        if (callerDeadline != null && callerDeadline.isBefore(deadline)) {
            deadline = callerDeadline;
        }
        Path dir = store.sandboxDir(r.id());
        Path shared = dir.resolve(SHARED);
        PodNetwork network = null;
        Vm vm = null;
        Agent agent = null;
        SandboxCgroup cgroup = null;
        try {
            long begun = System.nanoTime();
            List<VmSpec.Nic> nics = List.of();
            if (!r.netnsPath().isEmpty()) {
                try (Span step = Tracing.step("network.attach")) {
                    PodNetwork.removeStaleTaps(r.netnsPath());
                    network = PodNetwork.scan(r.netnsPath());
                    nics = network.attach();
                    step.attr("kuasar.nics", nics.size());
                }
            }
            VmSpec spec = new VmSpec(r.id(), dir, shared, vcpus(cfg), memoryInMb(cfg), r.netnsPath(), nics,
                    cfg == null || !"false".equals(cfg.getAnnotationsOrDefault(TEMPLATE_ANNOTATION, "")));
            long t0 = System.nanoTime();
            cgroup = SandboxCgroup.create(cgroups, cgroupPath(r.id(), cfg), cgroupLimits(cfg));
            // vm.boot: from launching the hypervisor until the guest agent answers (a template copy: its restore)
            try (Span boot = Tracing.step("vm.boot")) {
                boot.attr("kuasar.hypervisor", hypervisor.name()).attr("kuasar.vm.template_allowed", spec.templateAllowed());
                try {
                    vm = hypervisor.launch(spec, deadline);
                    // The whole VMM (boot included) runs in the pod's cgroup; its threads follow the process.
                    cgroup.add(vm.pid());
                    for (long helper : vm.affiliatedPids()) {
                        cgroup.add(helper);
                    }
                    agent = Agent.connect(r.id(), vm, deadline);
                } catch (Exception e) {
                    boot.error(e);
                    throw e;
                }
            }
            long booted = System.nanoTime();
            SetupSandboxRequest.Builder setup = SetupSandboxRequest.newBuilder()
                    .setConfig(Any.newBuilder().setTypeUrl("PodSandboxConfig").setValue(ByteString.copyFromUtf8(
                            cfg == null ? "{}" : JsonFormat.printer().preservingProtoFieldNames().print(cfg))));
            if (network != null) {
                setup.addAllInterfaces(network.interfaces()).addAllRoutes(network.routes());
            }
            try {
                agent.syncClock(); // a VM from a template wakes with the template's time
            } catch (StatusRuntimeException e) {
                // a guest too busy to answer within a second (many VMs booting under TCG): the clock loop retries
                LOG.debug("sandbox {}: clock sync before setup: {}", r.id(), e.getMessage());
            }
            try (Span step = Tracing.step("vm.setup")) {
                agent.setup(setup.build());
            }
            agent.startLoops();
            LOG.info("sandbox {}: VM {} booted, agent answered in {} ms, set up in {} ms (taps {} ms before)", r.id(),
                    vm.pid(), (booted - t0) / 1_000_000, (System.nanoTime() - booted) / 1_000_000,
                    (t0 - begun) / 1_000_000);
        } catch (Exception e) {
            if (agent != null) {
                agent.close();
            }
            if (vm != null) {
                vm.stop(Duration.ZERO);
                LOG.warn("sandbox {}: start failed ({}); the guest console said:\n{}", r.id(), e.getMessage(),
                        tail(vm.consoleLog(), 30));
                e = keepConsole(r.id(), vm.consoleLog(), e);
            }
            if (network != null) {
                network.detach();
            }
            if (cgroup != null) {
                removeCgroup(r.id(), cgroup.path());
            }
            if (e instanceof InterruptedException) {
                Thread.currentThread().interrupt();
                throw Status.CANCELLED.withDescription("sandbox " + r.id() + ": start cancelled").asRuntimeException();
            }
            throw e;
        }
        String address = taskAddress;
        if (guestAddress(r.id(), cfg)) {
            address = vm.guestTaskAddress();
            if (address == null) {
                agent.close();
                vm.stop(Duration.ZERO);
                if (network != null) {
                    network.detach();
                }
                removeCgroup(r.id(), cgroup.path());
                throw Status.FAILED_PRECONDITION.withDescription("sandbox " + r.id() + " asks for its guest's own "
                        + "task address, but its VM's agent channel takes one connection only: set use_vsock = true "
                        + "(or use Cloud Hypervisor)").asRuntimeException();
            }
        }
        return running(r.id(), new PodVm(vm, agent, network, shared, cgroup.path()), address);
    }

    /**
     * Whether Start returns the guest agent's own address (Kuasar's: its containerd fork and iSulad dial the guest
     * themselves) rather than this daemon's Task API: the pod's annotation {@value #TASK_ADDRESS_ANNOTATION}
     * ({@code guest} or {@code host}), else {@code [sandbox].task_address} of the config.
     */
    private boolean guestAddress(String id, PodSandboxConfig cfg) {
        String v = cfg == null ? "" : cfg.getAnnotationsOrDefault(TASK_ADDRESS_ANNOTATION, "");
        return switch (v) {
            case "" -> guestAddressByDefault;
            case "guest" -> true;
            case "host" -> false;
            default -> throw Status.INVALID_ARGUMENT.withDescription("sandbox " + id + ": annotation "
                    + TASK_ADDRESS_ANNOTATION + " is \"" + v + "\"; use \"guest\" or \"host\"").asRuntimeException();
        };
    }

    private Started running(String id, PodVm pod, String address) {
        pods.put(id, pod);
        pod.vm().exit().whenComplete((s, t) -> {
            pod.agent().close();
            LOG.info("sandbox {}: VM exited with status {}", id, s == null ? "?" : s.code());
            LOG.debug("sandbox {}: the guest console's last lines:\n{}", id, tail(pod.vm().consoleLog(), 30));
        });
        Map<String, String> facts = new java.util.HashMap<>(pod.vm().facts());
        facts.put(FACT_CGROUP, pod.cgroup());
        return new Started(pod.vm().pid(), address, pod.vm().exit(), facts);
    }

    /** Kuasar's sandbox cgroup: {@code <cgroup_parent>/<id>}, under "kuasar-vmm" when the pod names no parent. */
    static String cgroupPath(String id, PodSandboxConfig cfg) {
        String parent = cfg == null ? "" : cfg.getLinux().getCgroupParent();
        try {
            return SandboxCgroup.pathOf(parent.isBlank() ? DEFAULT_CGROUP_PARENT : parent, id);
        } catch (IllegalArgumentException e) {
            throw Status.INVALID_ARGUMENT.withDescription("sandbox " + id + ": linux.cgroup_parent: " + e.getMessage())
                    .asRuntimeException();
        }
    }

    /**
     * The VMM's limits: the pod's resources plus its overhead (Kuasar's merge). Memory is capped only when the pod
     * declares an overhead: the VM's RAM already bounds the guest, and a cap of the bare pod limit would OOM-kill a
     * VMM whose RAM is the agent's share plus that limit.
     */
    static SandboxCgroup.Limits cgroupLimits(PodSandboxConfig cfg) {
        if (cfg == null) {
            return SandboxCgroup.Limits.NONE;
        }
        var res = cfg.getLinux().getResources();
        var over = cfg.getLinux().getOverhead();
        long period = res.getCpuPeriod() > 0 ? res.getCpuPeriod() : over.getCpuPeriod();
        long quota = 0;
        if (res.getCpuQuota() > 0 && res.getCpuPeriod() > 0) {
            quota = res.getCpuQuota();
            if (over.getCpuQuota() > 0 && over.getCpuPeriod() > 0) {
                quota += over.getCpuQuota() * res.getCpuPeriod() / over.getCpuPeriod();
            }
        }
        long shares = res.getCpuShares() + over.getCpuShares();
        long memory = over.getMemoryLimitInBytes() > 0 && res.getMemoryLimitInBytes() > 0
                ? res.getMemoryLimitInBytes() + over.getMemoryLimitInBytes() : 0;
        return new SandboxCgroup.Limits(quota > 0 ? period : 0, quota, shares, memory, res.getCpusetCpus(),
                res.getCpusetMems());
    }

    private void removeCgroup(String id, String path) {
        try {
            SandboxCgroup.remove(cgroups, path);
        } catch (IOException e) {
            LOG.warn("sandbox {}: {}", id, e.getMessage());
        }
    }

    /**
     * The pod's directory goes with the failed start: its console log, which the error names, is kept in the state
     * directory's {@code failed/} instead, and the error names it there.
     */
    private Exception keepConsole(String id, Path console, Exception e) {
        Path kept;
        try {
            kept = store.keepFailed(id, console);
        } catch (IOException io) {
            LOG.warn("sandbox {}: cannot keep the console log {}: {}", id, console, io.getMessage());
            return e;
        }
        if (kept != null && e instanceof StatusRuntimeException sre && sre.getStatus().getDescription() != null) {
            return sre.getStatus().withDescription(sre.getStatus().getDescription()
                    .replace(console.toString(), kept.toString())).asRuntimeException(sre.getTrailers());
        }
        return e;
    }

    static String tail(Path file, int lines) {
        try {
            List<String> all = Files.readAllLines(file, StandardCharsets.ISO_8859_1);
            return String.join("\n", all.subList(Math.max(0, all.size() - lines), all.size()));
        } catch (IOException e) {
            return "(no console log: " + e.getMessage() + ")";
        }
    }

    /** Kuasar's pre_start: the pod's CPU quota decides the vCPUs; its memory limit is added to the VM's memory. */
    private int vcpus(PodSandboxConfig cfg) {
        if (cfg != null) {
            var res = cfg.getLinux().getResources();
            if (res.getCpuPeriod() > 0 && res.getCpuQuota() > 0) {
                return (int) Math.max(1, Math.min(255, (res.getCpuQuota() + res.getCpuPeriod() - 1) / res.getCpuPeriod()));
            }
        }
        return config.vcpus();
    }

    private int memoryInMb(PodSandboxConfig cfg) {
        long extra = cfg == null ? 0 : cfg.getLinux().getResources().getMemoryLimitInBytes() >> 20;
        return (int) Math.min(Integer.MAX_VALUE, config.memoryInMb() + Math.max(0, extra));
    }

    @Override
    public void stop(SandboxRecord r, Duration timeout) {
        PodVm pod = pods.get(r.id());
        if (pod == null) {
            killLeftover(r);
            return;
        }
        if (tasks != null && !pod.vm().exit().isDone()) {
            tasks.killAll(r.id(), timeout);
        }
        pod.agent().close();
        pod.vm().stop(QUIT_GRACE);
        if (pod.network() != null) {
            pod.network().detach();
        }
    }

    @Override
    public void shutdown(SandboxRecord r) throws IOException {
        if (tasks != null) {
            for (String c : tasks.containersOf(r.id())) {
                tasks.forceRemove(c);
            }
        }
        PodVm pod = pods.remove(r.id());
        if (pod != null) {
            pod.agent().close();
            pod.vm().stop(Duration.ZERO);
            if (pod.network() != null) {
                pod.network().detach();
            }
        } else {
            killLeftover(r);
            if (!r.netnsPath().isEmpty() && Files.exists(Path.of(r.netnsPath()))) {
                PodNetwork.removeStaleTaps(r.netnsPath()); // a VM that died while this daemon was away
            }
        }
        String cgroup = pod != null ? pod.cgroup() : r.backend().get(FACT_CGROUP);
        if (cgroup != null) {
            SandboxCgroup.remove(cgroups, cgroup);
        }
        removeShared(store.sandboxDir(r.id()).resolve(SHARED));
    }

    /** The shared directory's container bundles hold mounts: unmount them before anything is deleted. */
    private static void removeShared(Path shared) throws IOException {
        if (!Files.isDirectory(shared)) {
            return;
        }
        List<Path> entries;
        try (var s = Files.list(shared)) {
            entries = new ArrayList<>(s.toList());
        }
        for (Path p : entries) {
            if (Files.isDirectory(p, java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
                io.kuasar.vmm.forward.Bundles.remove(p);
            } else {
                Files.deleteIfExists(p);
            }
        }
        Mounts.unmountAll(shared); // a VirtioFS pod's shared directory is a (shared) bind mount of itself
        Files.deleteIfExists(shared);
    }

    /**
     * Re-attaches to a pod's VM after a restart of this daemon (Kuasar's recovery): the VMM and its helpers found
     * by the pid and start time recorded, the guest agent reconnected (it serves a new connection whenever one
     * comes), its taps taken as they are. A VM that is gone, or whose agent does not answer within
     * {@link #RECOVER_AGENT_TIMEOUT}, is stopped and its pod reported exited (null): never removed here, so
     * containerd still sees it and removes it. The pod's containers are recovered afterwards ({@link #recovered()}).
     */
    @Override
    public Started recover(SandboxRecord r) throws IOException {
        Path dir = store.sandboxDir(r.id());
        VmSpec spec = new VmSpec(r.id(), dir, dir.resolve(SHARED), 0, 0, r.netnsPath(), List.of());
        Vm vm = hypervisor.recover(spec, r.backend(), exitWatcher);
        if (vm == null) {
            LOG.warn("sandbox {}: its VM is gone (it died while this daemon was away)", r.id());
            return null;
        }
        Agent agent;
        try {
            agent = Agent.connect(r.id(), vm, Instant.now().plus(RECOVER_AGENT_TIMEOUT));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            vm.stop(Duration.ZERO);
            return null;
        } catch (RuntimeException e) {
            LOG.warn("sandbox {}: its guest agent does not answer ({}); stopping the VM", r.id(), e.getMessage());
            vm.stop(Duration.ZERO);
            return null;
        }
        agent.startLoops();
        PodNetwork network = r.netnsPath().isEmpty() ? null : PodNetwork.recover(r.netnsPath());
        LOG.info("sandbox {}: re-attached to VM {}", r.id(), vm.pid());
        return running(r.id(), new PodVm(vm, agent, network, dir.resolve(SHARED), r.backend().get(FACT_CGROUP)),
                r.taskAddress().isEmpty() ? taskAddress : r.taskAddress());
    }

    /** Every pod is back (or known gone): now their containers, whose stdio and Wait go through the agents. */
    @Override
    public void recovered() {
        if (tasks != null) {
            tasks.recover();
        }
    }

    private static void killLeftover(SandboxRecord r) {
        killLeftover(r, "virtiofsdPid", "virtiofsdStartTime");
        killLeftover(r, "qemuPid", "qemuStartTime");
        killLeftover(r, "vmmPid", "vmmStartTime"); // Cloud Hypervisor's
        killLeftover(r, "vsockPid", "vsockStartTime"); // vhost-device-vsock
    }

    private static void killLeftover(SandboxRecord r, String pidFact, String startFact) {
        String pid = r.backend().get(pidFact);
        String start = r.backend().get(startFact);
        if (pid == null || start == null) {
            return;
        }
        try {
            ProcessRef ref = new ProcessRef(Integer.parseInt(pid), Long.parseLong(start));
            if (ref.signal(9)) {
                LOG.warn("sandbox {}: killed {} {} left by an earlier run", r.id(), pidFact.replace("Pid", ""), pid);
            }
        } catch (NumberFormatException e) {
            LOG.warn("sandbox {}: unreadable VM facts {}/{}", r.id(), pid, start);
        }
    }

    @Override
    public Metric metrics(SandboxRecord r) {
        return tasks != null ? tasks.metricsOf(r.id()) : Metric.newBuilder().setId(r.id()).build();
    }
}
