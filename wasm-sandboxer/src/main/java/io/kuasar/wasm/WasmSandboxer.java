package io.kuasar.wasm;

import io.kuasar.api.types.Metric;
import io.kuasar.sandbox.controller.Sandboxer;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.state.SandboxRecord;
import io.kuasar.sandbox.task.TaskService;

import java.time.Duration;
import java.time.Instant;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;

/**
 * A Wasm pod is bookkeeping: its containers are module instances in this daemon, so there is no process, namespace
 * or VM per pod (Kuasar's wasm sandboxer, which keeps pods in memory only). The daemon's pid stands for the pod; it
 * is ready as soon as it is created, and it stays ready across a restart of the daemon (its containers do not: they
 * ran in the old process and are reported exited).
 */
public final class WasmSandboxer implements Sandboxer {
    private static final int SELF = (int) ProcessHandle.current().pid();
    private final TaskService tasks;
    private final String taskAddress;
    private final Map<String, CompletableFuture<ExitStatus>> running = new ConcurrentHashMap<>();

    public WasmSandboxer(TaskService tasks, String taskAddress) {
        this.tasks = tasks;
        this.taskAddress = taskAddress;
    }

    @Override
    public String name() {
        return "wasm-sandboxer";
    }

    @Override
    public void create(SandboxRecord record) {
        // nothing to prepare: no process, no namespaces
    }

    @Override
    public Started start(SandboxRecord r, Instant deadline) {
        return new Started(SELF, taskAddress, running.computeIfAbsent(r.id(), k -> new CompletableFuture<>()),
                Map.of());
    }

    @Override
    public void stop(SandboxRecord r, Duration timeout) {
        tasks.killAll(r.id(), timeout);
        ended(r.id());
    }

    @Override
    public void shutdown(SandboxRecord r) {
        for (String c : tasks.containersOf(r.id())) {
            tasks.forceRemove(c);
        }
        ended(r.id());
    }

    /** The pod is over: its Wait answers (Kuasar reports a stopped Wasm pod as exit 0). */
    private void ended(String id) {
        CompletableFuture<ExitStatus> f = running.remove(id);
        if (f != null) {
            f.complete(ExitStatus.of(0));
        }
    }

    @Override
    public Started recover(SandboxRecord r) {
        return start(r, null);
    }

    @Override
    public Metric metrics(SandboxRecord r) {
        return tasks.metricsOf(r.id());
    }
}
