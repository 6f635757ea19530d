package io.kuasar.sandbox.controller;

import io.kuasar.api.types.Metric;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.state.SandboxRecord;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

/** A sandboxer whose "processes" are futures, to test the controller's contract without root. */
final class FakeSandboxer implements Sandboxer {
    final Map<String, CompletableFuture<ExitStatus>> exits = new ConcurrentHashMap<>();
    final List<String> calls = java.util.Collections.synchronizedList(new ArrayList<>());
    final AtomicInteger nextPid = new AtomicInteger(1000);
    volatile TaskResources.Diff lastDiff;
    volatile boolean failStart;
    /** While set, start waits for it, as a slow VM boot would; an interrupt cancels it. */
    volatile java.util.concurrent.CountDownLatch startGate;
    final Map<String, Duration> stopTimeouts = new ConcurrentHashMap<>();
    final Map<String, java.time.Instant> startDeadlines = new ConcurrentHashMap<>();

    @Override
    public String name() {
        return "fake";
    }

    @Override
    public synchronized void create(SandboxRecord record) {
        calls.add("create " + record.id());
    }

    @Override
    public Started start(SandboxRecord record, java.time.Instant deadline) throws InterruptedException {
        synchronized (this) {
            calls.add("start " + record.id());
        }
        var gate = startGate;
        if (gate != null) {
            gate.await(); // throws when the start is cancelled
        }
        return started(record, deadline);
    }

    private synchronized Started started(SandboxRecord record, java.time.Instant deadline) {
        if (deadline != null) {
            startDeadlines.put(record.id(), deadline);
        }
        if (failStart) {
            throw new IllegalStateException("the sandbox's process could not be started");
        }
        CompletableFuture<ExitStatus> exit = new CompletableFuture<>();
        exits.put(record.id(), exit);
        return new Started(nextPid.incrementAndGet(), "ttrpc+unix:///run/fake/task.sock", exit, Map.of());
    }

    @Override
    public synchronized void stop(SandboxRecord record, Duration timeout) {
        calls.add("stop " + record.id() + (record.pid() > 0 ? " pid=" + record.pid() : ""));
        stopTimeouts.put(record.id(), timeout);
        CompletableFuture<ExitStatus> e = exits.get(record.id());
        if (e != null) {
            e.complete(ExitStatus.of(137));
        }
    }

    @Override
    public synchronized void shutdown(SandboxRecord record) {
        calls.add("shutdown " + record.id());
    }

    @Override
    public Started recover(SandboxRecord record) {
        CompletableFuture<ExitStatus> exit = new CompletableFuture<>();
        exits.put(record.id(), exit);
        return new Started(record.pid(), record.taskAddress(), exit, Map.of());
    }

    @Override
    public Metric metrics(SandboxRecord record) {
        return Metric.newBuilder().setId(record.id()).build();
    }

    @Override
    public void tasksUpdated(SandboxRecord record, TaskResources.Diff diff) {
        lastDiff = diff;
    }
}
