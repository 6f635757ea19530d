package io.kuasar.runc;

import io.grpc.Status;
import io.kuasar.api.cri.v1.NamespaceMode;
import io.kuasar.api.cri.v1.PodSandboxConfig;
import io.kuasar.api.types.Metric;
import io.kuasar.sandbox.controller.Sandboxer;
import io.kuasar.sandbox.pod.PodFiles;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.process.ProcessReaper;
import io.kuasar.sandbox.process.ProcessRef;
import io.kuasar.sandbox.state.StateStore;
import io.kuasar.sandbox.state.SandboxRecord;
import io.kuasar.sandbox.task.TaskService;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

/**
 * Pods without a pause container: each pod is a tiny namespace holder (net, ipc, uts, and pid when the pod shares
 * one) whose host pid containerd writes into every container spec. All pods share this daemon's single ttrpc Task
 * server.
 */
public final class RuncSandboxer implements Sandboxer {
    private static final Logger LOG = LoggerFactory.getLogger(RuncSandboxer.class);
    static final String HOLDER_PID = "holderPid";
    static final String HOLDER_START_TIME = "holderStartTime";

    private final StateStore store;
    private final HolderLauncher holders;
    private final ProcessReaper reaper;
    private final TaskService tasks;
    private final String taskAddress;
    private final Map<String, CompletableFuture<ExitStatus>> holderExits = new ConcurrentHashMap<>();

    public RuncSandboxer(StateStore store, HolderLauncher holders, ProcessReaper reaper, TaskService tasks,
                         String taskAddress) {
        this.store = store;
        this.holders = holders;
        this.reaper = reaper;
        this.tasks = tasks;
        this.taskAddress = taskAddress;
    }

    @Override
    public String name() {
        return "runc-sandboxer";
    }

    @Override
    public void create(SandboxRecord r) {
        PodFiles.config(r); // reject a config we cannot read now, not at start
        if (!r.netnsPath().isEmpty() && !Files.exists(Path.of(r.netnsPath()))) {
            throw Status.INVALID_ARGUMENT.withDescription("sandbox " + r.id() + ": network namespace "
                    + r.netnsPath() + " does not exist").asRuntimeException();
        }
    }

    @Override
    public Started start(SandboxRecord r, Instant deadline) throws IOException {
        PodSandboxConfig cfg = PodFiles.config(r);
        var nsOptions = cfg == null ? null : cfg.getLinux().getSecurityContext().getNamespaceOptions();
        boolean sharedPid = nsOptions != null && nsOptions.getPid() == NamespaceMode.POD;
        boolean hostNetwork = nsOptions != null ? nsOptions.getNetwork() == NamespaceMode.NODE : r.netnsPath().isEmpty();
        boolean hostIpc = nsOptions != null && nsOptions.getIpc() == NamespaceMode.NODE;
        String hostname = null;
        if (!hostNetwork) {
            // As containerd: the pod's hostname, else the node's (never the pod name: it may be 253 characters).
            hostname = cfg != null && !cfg.getHostname().isEmpty() ? cfg.getHostname() : PodFiles.hostHostname();
            if (hostname.length() > 64) {
                throw Status.INVALID_ARGUMENT.withDescription("sandbox " + r.id() + ": hostname " + hostname
                        + " is longer than 64 characters").asRuntimeException();
            }
        }
        List<Sysctls.Setting> sysctls = Sysctls.validate(r.id(), cfg == null ? Map.of() : cfg.getLinux().getSysctlsMap(),
                hostNetwork, hostIpc, hostname == null);
        Path dir = store.sandboxDir(r.id());
        PodFiles.prepare(dir, cfg, hostname);
        ProcessRef holder;
        try {
            holder = ProcessRef.of(holders.launch(r.id(), r.netnsPath(), hostname, sharedPid, !hostIpc, sysctls,
                    deadline));
        } catch (IOException | RuntimeException e) {
            PodFiles.release(dir);
            throw e;
        }
        CompletableFuture<ExitStatus> exit = reaper.watch(holder.pid());
        holderExits.put(r.id(), exit);
        return new Started(holder.pid(), taskAddress, exit, Map.of(HOLDER_PID, Integer.toString(holder.pid()),
                HOLDER_START_TIME, Long.toString(holder.startTime())));
    }

    /**
     * Stops the pod's containers (SIGTERM, up to {@code timeout}, then SIGKILL), then its holder. The holder is
     * signalled only if it is still the very process recorded (pid and start time), through a pidfd.
     */
    @Override
    public void stop(SandboxRecord r, Duration timeout) {
        tasks.killAll(r.id(), timeout);
        ProcessRef holder = holderOf(r);
        if (holder == null) {
            return;
        }
        if (holder.signal(9)) {
            CompletableFuture<ExitStatus> exit = holderExits.get(r.id());
            try {
                if (exit != null) {
                    exit.get(5, TimeUnit.SECONDS);
                }
            } catch (Exception e) {
                LOG.warn("sandbox {}: holder {} did not exit after SIGKILL", r.id(), holder.pid());
            }
        }
    }

    @Override
    public void shutdown(SandboxRecord r) {
        for (String c : tasks.containersOf(r.id())) {
            tasks.forceRemove(c);
        }
        holderExits.remove(r.id());
        PodFiles.release(store.sandboxDir(r.id()));
    }

    @Override
    public Started recover(SandboxRecord r) {
        ProcessRef holder = holderOf(r);
        if (holder == null || !holder.isAlive()) {
            return null;
        }
        CompletableFuture<ExitStatus> exit = reaper.watch(holder.pid());
        holderExits.put(r.id(), exit);
        Map<String, String> facts = new java.util.HashMap<>(r.backend());
        facts.put(HOLDER_START_TIME, Long.toString(holder.startTime()));
        return new Started(holder.pid(), taskAddress, exit, facts);
    }

    /**
     * The holder a record names: its pid and start time. Records of earlier versions have no start time; their
     * holder is accepted only if a live process with that pid has the holder's name and started within a few
     * seconds before the sandbox was recorded as started, so a reused pid is never adopted or signalled.
     */
    static ProcessRef holderOf(SandboxRecord r) {
        if (r.pid() <= 0) {
            return null;
        }
        String recorded = r.backend().get(HOLDER_START_TIME);
        if (recorded != null) {
            try {
                return new ProcessRef(r.pid(), Long.parseLong(recorded));
            } catch (NumberFormatException e) {
                LOG.warn("sandbox {}: unreadable holder start time {}", r.id(), recorded);
                return null;
            }
        }
        ProcessRef now = ProcessRef.of(r.pid());
        if (now.startTime() < 0 || !hasHolderName(r.pid(), r.id()) || r.startedAt() == 0) {
            return null;
        }
        long startedAt = io.kuasar.sandbox.process.Procfs.startEpochNanos(now.startTime());
        long skew = Math.abs(r.startedAt() - startedAt);
        return skew < TimeUnit.SECONDS.toNanos(10) ? now : null;
    }

    static boolean hasHolderName(int pid, String sandboxId) {
        try {
            String comm = Files.readString(Path.of("/proc/" + pid + "/comm")).trim();
            return comm.equals("kuasar-" + sandboxId.substring(0, Math.min(8, sandboxId.length())));
        } catch (IOException e) {
            return false;
        }
    }

    /**
     * Sums the cgroup figures of the pod's containers (the holder itself uses next to nothing), as cgroup v1 or v2
     * metrics like the containers' own.
     */
    @Override
    public Metric metrics(SandboxRecord r) {
        return tasks.metricsOf(r.id());
    }
}
