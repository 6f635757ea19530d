package io.kuasar.runc;

import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Timestamp;
import io.grpc.Status;
import io.kuasar.api.cgroups.v1.CPUStat;
import io.kuasar.api.cgroups.v1.CPUUsage;
import io.kuasar.api.cgroups.v1.MemoryEntry;
import io.kuasar.api.cgroups.v1.MemoryStat;
import io.kuasar.api.cgroups.v1.Metrics;
import io.kuasar.api.cgroups.v1.PidsStat;
import io.kuasar.api.cri.v1.NamespaceMode;
import io.kuasar.api.cri.v1.PodSandboxConfig;
import io.kuasar.api.types.Metric;
import io.kuasar.sandbox.cgroup.CgroupStats;
import io.kuasar.sandbox.controller.Sandboxer;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.process.ProcessReaper;
import io.kuasar.sandbox.state.SandboxRecord;
import io.kuasar.sandbox.sys.Linux;
import io.kuasar.sandbox.task.TaskService;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
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

    private final Path stateRoot;
    private final HolderLauncher holders;
    private final ProcessReaper reaper;
    private final TaskService tasks;
    private final String taskAddress;
    private final Map<String, CompletableFuture<ExitStatus>> holderExits = new ConcurrentHashMap<>();

    public RuncSandboxer(Path stateRoot, HolderLauncher holders, ProcessReaper reaper, TaskService tasks,
                         String taskAddress) {
        this.stateRoot = stateRoot;
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
        podConfig(r); // reject a config we cannot read now, not at start
        if (!r.netnsPath().isEmpty() && !Files.exists(Path.of(r.netnsPath()))) {
            throw Status.INVALID_ARGUMENT.withDescription("sandbox " + r.id() + ": network namespace "
                    + r.netnsPath() + " does not exist").asRuntimeException();
        }
    }

    @Override
    public Started start(SandboxRecord r) throws IOException {
        PodSandboxConfig cfg = podConfig(r);
        boolean sharedPid = cfg != null && cfg.getLinux().getSecurityContext().getNamespaceOptions().getPid()
                == NamespaceMode.POD;
        boolean hostNetwork = cfg != null
                ? cfg.getLinux().getSecurityContext().getNamespaceOptions().getNetwork() == NamespaceMode.NODE
                : r.netnsPath().isEmpty();
        String hostname = null;
        if (!hostNetwork) {
            hostname = cfg != null && !cfg.getHostname().isEmpty() ? cfg.getHostname()
                    : cfg != null && !cfg.getMetadata().getName().isEmpty() ? cfg.getMetadata().getName() : r.id();
            if (hostname.length() > 64) {
                throw Status.INVALID_ARGUMENT.withDescription("sandbox " + r.id() + ": hostname " + hostname
                        + " is longer than 64 characters").asRuntimeException();
            }
        }
        PodFiles.prepare(stateRoot.resolve(r.id()), cfg, hostname);
        int pid;
        try {
            pid = holders.launch(r.id(), r.netnsPath(), hostname, sharedPid);
        } catch (IOException | RuntimeException e) {
            PodFiles.release(stateRoot.resolve(r.id()));
            throw e;
        }
        CompletableFuture<ExitStatus> exit = reaper.watch(pid);
        holderExits.put(r.id(), exit);
        return new Started(pid, taskAddress, exit, Map.of(HOLDER_PID, Integer.toString(pid)));
    }

    @Override
    public void stop(SandboxRecord r, Duration timeout) {
        tasks.killAll(r.id());
        CompletableFuture<ExitStatus> exit = holderExits.get(r.id());
        int pid = r.pid();
        if (pid > 0 && exit != null && !exit.isDone()) {
            Linux.kill(pid, 9);
            try {
                exit.get(5, TimeUnit.SECONDS);
            } catch (Exception e) {
                LOG.warn("sandbox {}: holder {} did not exit after SIGKILL", r.id(), pid);
            }
        } else if (pid > 0 && exit == null && isOurHolder(pid, r.id())) {
            Linux.kill(pid, 9); // recovered without a watch; still ours by name
        }
    }

    @Override
    public void shutdown(SandboxRecord r) {
        for (String c : tasks.containersOf(r.id())) {
            tasks.forceRemove(c);
        }
        holderExits.remove(r.id());
        PodFiles.release(stateRoot.resolve(r.id()));
    }

    @Override
    public Started recover(SandboxRecord r) {
        int pid = r.pid();
        if (pid <= 0 || !isOurHolder(pid, r.id())) {
            return null;
        }
        CompletableFuture<ExitStatus> exit = reaper.watch(pid);
        holderExits.put(r.id(), exit);
        return new Started(pid, taskAddress, exit, r.backend());
    }

    /** A live process with the holder's name for this sandbox (guards against pid reuse). */
    static boolean isOurHolder(int pid, String sandboxId) {
        try {
            String comm = Files.readString(Path.of("/proc/" + pid + "/comm")).trim();
            String expected = "kuasar-" + sandboxId.substring(0, Math.min(8, sandboxId.length()));
            return comm.equals(expected);
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
        java.util.List<com.google.protobuf.Any> stats = new java.util.ArrayList<>();
        for (String c : tasks.containersOf(r.id())) {
            try {
                var any = tasks.statsOf(c);
                if (any != null) {
                    stats.add(any);
                }
            } catch (Exception e) {
                LOG.debug("sandbox {}: no stats for container {}: {}", r.id(), c, e.getMessage());
            }
        }
        Instant now = Instant.now();
        return Metric.newBuilder().setId(r.id())
                .setTimestamp(Timestamp.newBuilder().setSeconds(now.getEpochSecond()).setNanos(now.getNano()))
                .setData(CgroupStats.sum(stats)).build();
    }

    static PodSandboxConfig podConfig(SandboxRecord r) {
        if (r.podConfig() == null || r.podConfigType() == null || !r.podConfigType().endsWith("PodSandboxConfig")) {
            return null;
        }
        try {
            return PodSandboxConfig.parseFrom(r.podConfig());
        } catch (InvalidProtocolBufferException e) {
            throw Status.INVALID_ARGUMENT.withDescription("sandbox " + r.id()
                    + ": options is not a valid PodSandboxConfig").asRuntimeException();
        }
    }
}
