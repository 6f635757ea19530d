package io.kuasar.wasm;

import com.google.protobuf.Any;
import io.grpc.Status;
import io.kuasar.api.cgroups.v2.CPUStat;
import io.kuasar.api.cgroups.v2.MemoryStat;
import io.kuasar.api.cgroups.v2.Metrics;
import io.kuasar.api.task.v3.ExecProcessRequest;
import io.kuasar.api.types.task.ProcessInfo;
import io.kuasar.sandbox.cgroup.CgroupStats;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.sys.Linux;
import io.kuasar.sandbox.task.Container;
import io.kuasar.sandbox.task.TaskRecord;
import io.kuasar.wasm.engine.WasiRun;
import io.kuasar.wasm.engine.WasmEngine;
import io.kuasar.wasm.engine.WasmProcess;

import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;

/**
 * A container whose process is a module instance in this daemon. It has no pid of its own: the daemon's pid stands
 * for it (as for Kuasar's in-process Wasmtime containers), and no signal ever reaches the daemon for it; Kill ends
 * the instance.
 */
final class WasmContainer implements Container {
    private static final int SELF = (int) ProcessHandle.current().pid();
    private final String id;
    private final String sandboxId;
    private final Path bundle;
    private final boolean mounted;
    private final WasmEngine engine;
    private final WasmEngine.Module module;
    private final WasiRun run;
    private final CompletableFuture<ExitStatus> exit = new CompletableFuture<>();
    private volatile WasmProcess process;

    WasmContainer(String id, String sandboxId, Path bundle, boolean mounted, WasmEngine engine,
                  WasmEngine.Module module, WasiRun run) {
        this.id = id;
        this.sandboxId = sandboxId;
        this.bundle = bundle;
        this.mounted = mounted;
        this.engine = engine;
        this.module = module;
        this.run = run;
    }

    /** A container of the previous daemon: its instance died with it. */
    static WasmContainer gone(TaskRecord r) {
        WasmContainer c = new WasmContainer(r.id(), r.sandboxId(), Path.of(r.bundle()), true, null, null, null);
        c.exit.complete(ExitStatus.unknown());
        return c;
    }

    @Override
    public String sandboxId() {
        return sandboxId;
    }

    @Override
    public int initPid() {
        return SELF;
    }

    @Override
    public CompletableFuture<ExitStatus> initExit() {
        return exit;
    }

    @Override
    public synchronized void start() throws Exception {
        if (process != null || exit.isDone()) {
            throw Status.FAILED_PRECONDITION.withDescription("container " + id + " has already started")
                    .asRuntimeException();
        }
        WasmProcess p = engine.start(module, run);
        process = p;
        p.exit().whenComplete((st, t) -> exit.complete(st != null ? st : ExitStatus.unknown()));
    }

    @Override
    public boolean watchOom(Runnable onOom) {
        WasmProcess p = process;
        return p != null && p.watchOom(onOom);
    }

    /** The engine, and what it needs to end this instance's process after a daemon restart. */
    @Override
    public java.util.Map<String, String> facts() {
        java.util.Map<String, String> f = new java.util.HashMap<>();
        if (engine != null) {
            f.put(WasmRuntime.FACT_ENGINE, engine.name());
        }
        WasmProcess p = process;
        if (p != null && !exit.isDone()) {
            f.putAll(p.facts());
        }
        return f;
    }

    @Override
    public Exec exec(ExecProcessRequest request) {
        throw Status.UNIMPLEMENTED.withDescription("exec is not supported for wasm containers (container " + id
                + ")").asRuntimeException();
    }

    @Override
    public synchronized void kill(int signal, boolean all) {
        WasmProcess p = process;
        if (p != null) {
            p.kill(signal);
        } else if (!exit.isDone()) {
            exit.complete(ExitStatus.of(128 + signal)); // killed before it started: it never runs
        }
    }

    @Override
    public void delete() {
        if (mounted) {
            Linux.umount(bundle.resolve("rootfs").toString(), Linux.MNT_DETACH);
        }
    }

    @Override
    public List<ProcessInfo> pids() {
        return exit.isDone() ? List.of() : List.of(ProcessInfo.newBuilder().setPid(SELF).build());
    }

    /** cgroup v2 metrics as containerd reads them: the instance's linear memory and its thread's CPU time. */
    @Override
    public Any stats() {
        WasmProcess p = process;
        long mem = p == null ? 0 : p.memoryBytes();
        long cpuUsec = p == null ? 0 : p.cpuNanos() / 1000;
        return CgroupStats.pack(Metrics.newBuilder()
                .setCpu(CPUStat.newBuilder().setUsageUsec(cpuUsec).setUserUsec(cpuUsec))
                .setMemory(MemoryStat.newBuilder().setUsage(mem).setAnon(mem)
                        .setUsageLimit(run == null ? 0 : run.memoryLimitBytes()))
                .build());
    }

    @Override
    public void update(Any resources) {
        throw Status.UNIMPLEMENTED.withDescription("updating the resources of wasm container " + id
                + " is not supported").asRuntimeException();
    }

    @Override
    public void pause() {
        throw Status.UNIMPLEMENTED.withDescription("pause of wasm container " + id + " is not supported")
                .asRuntimeException();
    }

    @Override
    public void resume() {
        throw Status.UNIMPLEMENTED.withDescription("resume of wasm container " + id + " is not supported")
                .asRuntimeException();
    }

    @Override
    public void resizePty(int width, int height) {
        throw Status.FAILED_PRECONDITION.withDescription("wasm container " + id + " has no terminal")
                .asRuntimeException();
    }

    @Override
    public void closeStdin() {
        // the module reads containerd's stdin FIFO itself; containerd closing its end is the EOF
    }
}
