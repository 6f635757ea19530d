package io.kuasar.sandbox.controller;

import com.google.protobuf.Any;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import io.kuasar.api.cri.v1.PodSandboxConfig;
import io.kuasar.api.sandbox.v1.ControllerCreateRequest;
import io.kuasar.api.sandbox.v1.ControllerCreateResponse;
import io.kuasar.api.sandbox.v1.ControllerGrpc;
import io.kuasar.api.sandbox.v1.ControllerMetricsRequest;
import io.kuasar.api.sandbox.v1.ControllerMetricsResponse;
import io.kuasar.api.sandbox.v1.ControllerPlatformRequest;
import io.kuasar.api.sandbox.v1.ControllerPlatformResponse;
import io.kuasar.api.sandbox.v1.ControllerShutdownRequest;
import io.kuasar.api.sandbox.v1.ControllerShutdownResponse;
import io.kuasar.api.sandbox.v1.ControllerStartRequest;
import io.kuasar.api.sandbox.v1.ControllerStartResponse;
import io.kuasar.api.sandbox.v1.ControllerStatusRequest;
import io.kuasar.api.sandbox.v1.ControllerStatusResponse;
import io.kuasar.api.sandbox.v1.ControllerStopRequest;
import io.kuasar.api.sandbox.v1.ControllerStopResponse;
import io.kuasar.api.sandbox.v1.ControllerUpdateRequest;
import io.kuasar.api.sandbox.v1.ControllerUpdateResponse;
import io.kuasar.api.sandbox.v1.ControllerWaitRequest;
import io.kuasar.api.sandbox.v1.ControllerWaitResponse;
import io.kuasar.api.types.Metric;
import io.kuasar.api.types.Platform;
import io.kuasar.api.types.Sandbox;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.state.Ids;
import io.kuasar.sandbox.state.SandboxRecord;
import io.kuasar.sandbox.state.SandboxRecord.AnyValue;
import io.kuasar.sandbox.state.SandboxRecord.Phase;
import io.kuasar.sandbox.state.StateStore;
import io.kuasar.sandbox.state.Times;
import io.kuasar.sandbox.ttrpc.Statuses;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.slf4j.MDC;

import java.io.IOException;
import java.time.Duration;
import java.time.Instant;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.locks.ReentrantLock;

/**
 * containerd's {@code containerd.services.sandbox.v1.Controller}, generic over a {@link Sandboxer}. It owns the
 * sandbox table, the per-sandbox lock, persistence and Wait; the sandboxer owns processes and resources.
 * Stop is idempotent on a known sandbox; Shutdown is idempotent on any id. {@code Start}/{@code Status} answer
 * {@code version: 3} so that containerd 2.1+ dials the returned ttrpc address directly.
 */
public final class ControllerService extends ControllerGrpc.ControllerImplBase {
    private static final Logger LOG = LoggerFactory.getLogger(ControllerService.class);
    /** containerd 2.1+ dials the sandbox's task address only for version >= 3. */
    public static final int TASK_API_VERSION = 3;
    private static final String POD_CONFIG_TYPE = "runtime.v1.PodSandboxConfig";
    /** What an untyped options Any is recorded as: iSulad's PodSandboxConfig, as older iSulad builds typed it. */
    static final String ISULAD_POD_CONFIG_TYPE = "type.googleapis.com/" + POD_CONFIG_TYPE;
    private static final Duration STOP_WAIT = Duration.ofSeconds(10);

    private final Sandboxer sandboxer;
    private final StateStore store;
    private final Map<String, Entry> sandboxes = new ConcurrentHashMap<>();

    /** One sandbox: its latest record, its lock, and a latch completed when it exits. */
    private static final class Entry {
        final ReentrantLock lock = new ReentrantLock();
        final CompletableFuture<ExitStatus> exited = new CompletableFuture<>();
        volatile SandboxRecord record;
        /** The thread running the sandboxer's start, while it runs; a Shutdown interrupts it to cancel the start. */
        volatile Thread starting;
        volatile boolean startCancelled;

        Entry(SandboxRecord record) {
            this.record = record;
        }
    }

    public ControllerService(Sandboxer sandboxer, StateStore store) {
        this.sandboxer = sandboxer;
        this.store = store;
    }

    public int sandboxCount() {
        return sandboxes.size();
    }

    /** Sandboxes by phase, as gauges. */
    public void registerMetrics(io.kuasar.sandbox.metrics.MetricsRegistry metrics) {
        for (Phase p : Phase.values()) {
            metrics.gauge("kuasar_sandboxes{phase=\"" + p.name().toLowerCase() + "\"}",
                    "Sandboxes known to this daemon, by phase.",
                    () -> sandboxes.values().stream().filter(e -> e.record.phase() == p).count());
        }
    }

    /**
     * Loads every sandbox under the state directory and re-attaches to the running ones. A record that cannot be read
     * is moved aside (kept for inspection, its id free again); one whose processes cannot be re-attached stays
     * known, so Shutdown can still clean it up. Recovery never deletes state.
     */
    public void recover() throws IOException {
        StateStore.Loaded loaded = store.loadAll();
        for (SandboxRecord r : loaded.records()) {
            Entry e = new Entry(r);
            sandboxes.put(r.id(), e);
            if (r.phase() == Phase.STOPPED) {
                e.exited.complete(new ExitStatus(r.exitStatus(), Times.instant(r.exitedAt()), true));
                continue;
            }
            if (r.phase() != Phase.RUNNING) {
                continue;
            }
            try {
                Sandboxer.Started s = sandboxer.recover(r);
                if (s == null) {
                    LOG.warn("sandbox {} was running but its processes are gone; marking it stopped", r.id());
                    markExited(r.id(), e, ExitStatus.unknown());
                } else {
                    s.exit().thenAccept(st -> markExited(r.id(), e, st));
                    LOG.info("recovered sandbox {} (pid {})", r.id(), s.pid());
                }
            } catch (Exception ex) {
                LOG.error("cannot recover sandbox {}: {}; its state is kept in {}", r.id(), ex.getMessage(),
                        store.sandboxDir(r.id()), ex);
            }
        }
        try {
            sandboxer.recovered();
        } catch (Exception ex) {
            LOG.error("recovery after the sandboxes: {}", ex.getMessage(), ex);
        }
        if (!loaded.broken().isEmpty()) {
            LOG.error("{} sandbox record(s) could not be read and were moved to {}: {}", loaded.broken().size(),
                    store.root().resolve("broken"), loaded.broken());
        }
        LOG.info("loaded {} sandbox(es) from {}", loaded.records().size(), store.root());
    }

    /** The record of a sandbox this daemon serves; null if it serves none by that id. */
    public SandboxRecord record(String id) {
        Entry e = id == null ? null : sandboxes.get(id);
        return e == null ? null : e.record;
    }

    /**
     * Completes when the sandbox exits (at once if it has): what a Wait of another front end (containerd 1.7's shim
     * Sandbox API) waits on. NOT_FOUND for an unknown id.
     */
    public CompletableFuture<ExitStatus> exitOf(String id) {
        return lookup(id).exited;
    }

    // ---- RPCs ----

    @Override
    public void create(ControllerCreateRequest req, StreamObserver<ControllerCreateResponse> out) {
        unary(out, "Create", req.getSandboxId(), () -> {
            String id = Ids.require("sandbox", req.getSandboxId());
            byte[] podConfig = null;
            String podConfigType = "";
            if (req.hasOptions() && !req.getOptions().getValue().isEmpty()) {
                podConfigType = req.getOptions().getTypeUrl();
                if (podConfigType.isEmpty()) {
                    // iSulad (since 2024) sends the serialized PodSandboxConfig in an Any without a type URL
                    podConfigType = ISULAD_POD_CONFIG_TYPE;
                }
                podConfig = req.getOptions().getValue().toByteArray();
                if (podConfigType.endsWith(POD_CONFIG_TYPE)) {
                    try {
                        PodSandboxConfig.parseFrom(podConfig);
                    } catch (com.google.protobuf.InvalidProtocolBufferException ex) {
                        throw Status.INVALID_ARGUMENT.withDescription("sandbox " + id
                                + ": options is not a valid runtime.v1.PodSandboxConfig: " + ex.getMessage())
                                .asRuntimeException();
                    }
                }
            }
            String netns = req.getNetnsPath();
            if (!netns.isEmpty() && (!netns.startsWith("/") || netns.contains("\0") || netns.contains("/../"))) {
                throw Status.INVALID_ARGUMENT.withDescription("sandbox " + id + ": netns_path " + Ids.printable(netns)
                        + " must be an absolute path").asRuntimeException();
            }
            Sandbox sb = req.getSandbox();
            Map<String, AnyValue> ext = new LinkedHashMap<>();
            sb.getExtensionsMap().forEach((k, v) -> ext.put(k, anyValue(v)));
            long now = Times.nanos(Instant.now());
            SandboxRecord record = new SandboxRecord(id, req.getSandboxer(), Phase.CREATED, netns, podConfig,
                    podConfigType, req.getAnnotationsMap(), sb.getLabelsMap(), ext,
                    sb.hasSpec() ? sb.getSpec().getValue().toByteArray() : null,
                    sb.hasSpec() ? sb.getSpec().getTypeUrl() : null, sb.getRuntime().getName(), 0, "", now, 0, 0, 0,
                    Map.of());
            // The entry is locked before it is published: a Start (or Shutdown) racing this Create waits for it.
            Entry entry = new Entry(record);
            entry.lock.lock();
            try {
                if (sandboxes.putIfAbsent(id, entry) != null) {
                    throw Status.ALREADY_EXISTS.withDescription("sandbox " + id + " already exists")
                            .asRuntimeException();
                }
                try {
                    store.save(record);
                    sandboxer.create(record);
                } catch (Exception ex) {
                    abandon(entry, record, "Create", ex);
                    throw ex;
                }
            } finally {
                entry.lock.unlock();
            }
            LOG.info("sandbox {} created (netns {})", id, netns.isEmpty() ? "host" : netns);
            return ControllerCreateResponse.newBuilder().setSandboxId(id).build();
        });
    }

    @Override
    public void start(ControllerStartRequest req, StreamObserver<ControllerStartResponse> out) {
        unary(out, "Start", req.getSandboxId(), () -> {
            Entry e = lookup(req.getSandboxId());
            e.lock.lock();
            try {
                SandboxRecord r = e.record;
                if (r.phase() == Phase.STOPPED) {
                    throw Status.FAILED_PRECONDITION.withDescription("sandbox " + r.id()
                            + " has already stopped; create a new sandbox").asRuntimeException();
                }
                if (r.phase() == Phase.CREATED) {
                    Sandboxer.Started s;
                    e.starting = Thread.currentThread();
                    try {
                        s = sandboxer.start(r, callDeadline());
                    } catch (Exception ex) {
                        Thread.interrupted(); // the cleanup below must not be cut short by the cancel
                        abandon(e, r, "Start", ex);
                        throw e.startCancelled ? Status.CANCELLED.withDescription("start of sandbox " + r.id()
                                + " was cancelled: the sandbox is being shut down").asRuntimeException() : ex;
                    } finally {
                        e.starting = null;
                    }
                    Thread.interrupted(); // a cancel that came too late to matter: the start is kept
                    SandboxRecord running = r.running(s.pid(), s.taskAddress(), Times.nanos(Instant.now()), s.facts());
                    try {
                        store.save(running);
                    } catch (Exception ex) {
                        abandon(e, running, "Start", ex); // the running record: its pid is what must be stopped
                        throw ex;
                    }
                    e.record = running;
                    s.exit().thenAccept(st -> markExited(r.id(), e, st));
                    LOG.info("sandbox {} started: pid {}, task API at {}", r.id(), s.pid(), s.taskAddress());
                }
                SandboxRecord now = e.record;
                return ControllerStartResponse.newBuilder().setSandboxId(now.id()).setPid(now.pid())
                        .setCreatedAt(Times.timestamp(now.createdAt())).setAddress(now.taskAddress())
                        .setVersion(TASK_API_VERSION).build();
            } finally {
                e.lock.unlock();
            }
        });
    }

    @Override
    public void platform(ControllerPlatformRequest req, StreamObserver<ControllerPlatformResponse> out) {
        unary(out, "Platform", req.getSandboxId(), () -> {
            SandboxRecord r = lookup(req.getSandboxId()).record;
            return ControllerPlatformResponse.newBuilder().setPlatform(sandboxer.platform(r)).build();
        });
    }

    @Override
    public void stop(ControllerStopRequest req, StreamObserver<ControllerStopResponse> out) {
        unary(out, "Stop", req.getSandboxId(), () -> {
            Entry e = lookup(req.getSandboxId());
            stopEntry(e, Duration.ofSeconds(req.getTimeoutSecs()));
            return ControllerStopResponse.getDefaultInstance();
        });
    }

    private void stopEntry(Entry e, Duration timeout) throws Exception {
        e.lock.lock();
        try {
            SandboxRecord r = e.record;
            if (r.phase() == Phase.STOPPED) {
                return;
            }
            sandboxer.stop(r, timeout);
            if (r.phase() == Phase.CREATED) {
                markExited(r.id(), e, ExitStatus.of(0));
                return;
            }
        } finally {
            e.lock.unlock();
        }
        try {
            e.exited.get(STOP_WAIT.toMillis(), TimeUnit.MILLISECONDS); // the sandboxer has already waited its timeout
        } catch (TimeoutException t) {
            LOG.warn("sandbox {} did not report its exit within {}s of being stopped; marking it stopped",
                    e.record.id(), STOP_WAIT.toSeconds());
            markExited(e.record.id(), e, ExitStatus.of(137));
        }
    }

    /** Answers when the sandbox exits; holds no thread while it waits, and lets go when the caller cancels. */
    @Override
    public void wait(ControllerWaitRequest req, StreamObserver<ControllerWaitResponse> out) {
        Entry e;
        try {
            e = lookup(req.getSandboxId());
        } catch (RuntimeException ex) {
            unary(out, "Wait", req.getSandboxId(), () -> {
                throw ex;
            });
            return;
        }
        ServerCallStreamObserver<ControllerWaitResponse> call = (ServerCallStreamObserver<ControllerWaitResponse>) out;
        call.setOnCancelHandler(() -> LOG.debug("wait for sandbox {} cancelled by the caller", e.record.id()));
        e.exited.whenComplete((st, t) -> {
            if (call.isCancelled()) {
                return;
            }
            unary(out, "Wait", req.getSandboxId(), () -> ControllerWaitResponse.newBuilder()
                    .setExitStatus(st.code()).setExitedAt(Times.timestamp(Times.nanos(st.exitedAt()))).build());
        });
    }

    @Override
    public void status(ControllerStatusRequest req, StreamObserver<ControllerStatusResponse> out) {
        unary(out, "Status", req.getSandboxId(), () -> {
            SandboxRecord r = lookup(req.getSandboxId()).record;
            ControllerStatusResponse.Builder b = ControllerStatusResponse.newBuilder().setSandboxId(r.id())
                    .setPid(r.phase() == Phase.RUNNING ? r.pid() : 0)
                    .setState(r.phase() == Phase.RUNNING ? "SANDBOX_READY" : "SANDBOX_NOTREADY")
                    .setCreatedAt(Times.timestamp(r.createdAt())).setAddress(r.taskAddress())
                    .setVersion(TASK_API_VERSION);
            if (r.exitedAt() != 0) {
                b.setExitedAt(Times.timestamp(r.exitedAt()));
            }
            if (req.getVerbose()) {
                b.putInfo("sandboxer", sandboxer.name());
                b.putInfo("phase", r.phase().name().toLowerCase());
                b.putInfo("netns", r.netnsPath().isEmpty() ? "host" : r.netnsPath());
                b.putInfo("stateDir", store.sandboxDir(r.id()).toString());
                r.backend().forEach(b::putInfo);
            }
            return b.build();
        });
    }

    @Override
    public void shutdown(ControllerShutdownRequest req, StreamObserver<ControllerShutdownResponse> out) {
        unary(out, "Shutdown", req.getSandboxId(), () -> {
            String id = Ids.require("sandbox", req.getSandboxId());
            Entry e = sandboxes.get(id);
            if (e == null) {
                LOG.debug("shutdown of unknown sandbox {}: nothing to do", id);
                return ControllerShutdownResponse.getDefaultInstance();
            }
            Thread starting = e.starting;
            if (starting != null) {
                // A long start (a VM boot) must not hold up the removal: cancel it; it undoes what it made.
                LOG.info("sandbox {}: shutdown cancels its start in progress", id);
                e.startCancelled = true;
                starting.interrupt();
            }
            stopEntry(e, Duration.ZERO);
            e.lock.lock();
            try {
                sandboxer.shutdown(e.record);
                store.delete(id);
                sandboxes.remove(id, e);
            } finally {
                e.lock.unlock();
            }
            LOG.info("sandbox {} shut down and removed", id);
            return ControllerShutdownResponse.getDefaultInstance();
        });
    }

    @Override
    public void metrics(ControllerMetricsRequest req, StreamObserver<ControllerMetricsResponse> out) {
        unary(out, "Metrics", req.getSandboxId(), () -> {
            SandboxRecord r = lookup(req.getSandboxId()).record;
            Metric m = sandboxer.metrics(r);
            ControllerMetricsResponse.Builder b = ControllerMetricsResponse.newBuilder();
            if (m != null) {
                b.setMetrics(m);
            }
            return b.build();
        });
    }

    @Override
    public void update(ControllerUpdateRequest req, StreamObserver<ControllerUpdateResponse> out) {
        unary(out, "Update", req.getSandboxId(), () -> {
            Entry e = lookup(req.getSandboxId());
            e.lock.lock();
            try {
                SandboxRecord r = e.record;
                Sandbox sb = req.getSandbox();
                Map<String, String> labels = new HashMap<>(r.labels());
                Map<String, AnyValue> ext = new LinkedHashMap<>(r.extensions());
                byte[] spec = r.spec();
                String specType = r.specType();
                TaskResources.Diff diff = null;
                var fields = req.getFieldsList().isEmpty()
                        ? java.util.List.of("labels", "extensions", "spec") : req.getFieldsList();
                for (String f : fields) {
                    if (f.equals("labels")) {
                        labels = new HashMap<>(sb.getLabelsMap());
                    } else if (f.startsWith("labels.")) {
                        String k = f.substring("labels.".length());
                        if (sb.containsLabels(k)) {
                            labels.put(k, sb.getLabelsOrThrow(k));
                        } else {
                            labels.remove(k);
                        }
                    } else if (f.equals("extensions")) {
                        ext = new LinkedHashMap<>();
                        for (var en : sb.getExtensionsMap().entrySet()) {
                            ext.put(en.getKey(), anyValue(en.getValue()));
                        }
                    } else if (f.equals(TaskResources.FIELD)) {
                        Any tasks = sb.getExtensionsMap().get(TaskResources.EXTENSION_KEY);
                        if (tasks == null) {
                            throw Status.INVALID_ARGUMENT.withDescription("sandbox " + r.id()
                                    + ": field extensions.tasks given but sandbox.extensions has no \"tasks\"")
                                    .asRuntimeException();
                        }
                        TaskResources next = TaskResources.parse(store.json(), tasks.getValue().toByteArray());
                        AnyValue prevValue = r.extensions().get(TaskResources.EXTENSION_KEY);
                        TaskResources prev = prevValue == null ? new TaskResources(null)
                                : TaskResources.parse(store.json(), prevValue.value());
                        diff = next.diffFrom(prev);
                        ext.put(TaskResources.EXTENSION_KEY, anyValue(tasks));
                    } else if (f.startsWith("extensions.")) {
                        String k = f.substring("extensions.".length());
                        Any v = sb.getExtensionsMap().get(k);
                        if (v == null) {
                            ext.remove(k);
                        } else {
                            ext.put(k, anyValue(v));
                        }
                    } else if (f.equals("spec")) {
                        spec = sb.hasSpec() ? sb.getSpec().getValue().toByteArray() : null;
                        specType = sb.hasSpec() ? sb.getSpec().getTypeUrl() : null;
                    } else {
                        LOG.debug("sandbox {}: update of field {} is not kept", r.id(), f);
                    }
                }
                SandboxRecord next = r.updated(labels, ext, spec, specType);
                if (diff != null && !diff.isEmpty()) {
                    LOG.info("sandbox {}: tasks +{} -{}, processes +{} -{}", r.id(), diff.addedTasks().size(),
                            diff.removedTasks().size(), diff.addedProcesses().size(), diff.removedProcesses().size());
                    // before the list is stored: if the sandboxer cannot take it, the caller's retry sees the same diff
                    sandboxer.tasksUpdated(next, diff);
                }
                store.save(next);
                e.record = next;
                return ControllerUpdateResponse.getDefaultInstance();
            } finally {
                e.lock.unlock();
            }
        });
    }

    // ---- helpers ----

    /** The deadline of the gRPC call being served, as an instant; null if it has none. */
    private static Instant callDeadline() {
        io.grpc.Deadline d = io.grpc.Context.current().getDeadline();
        return d == null ? null : Instant.now().plusNanos(d.timeRemaining(TimeUnit.NANOSECONDS));
    }

    private Entry lookup(String rawId) {
        String id = Ids.require("sandbox", rawId);
        Entry e = sandboxes.get(id);
        if (e == null) {
            throw Status.NOT_FOUND.withDescription("sandbox " + id + " not found").asRuntimeException();
        }
        return e;
    }

    /**
     * Undoes a sandbox whose Create or Start failed. containerd forgets such a sandbox and never calls Stop or
     * Shutdown for it, so whatever the sandboxer got as far as starting (processes, netns pins, mounts) and the record
     * go now. Runs with the entry locked; cleanup failures are logged, the original error is what the caller sees.
     */
    private void abandon(Entry e, SandboxRecord r, String rpc, Exception cause) {
        LOG.warn("{} of sandbox {} failed ({}); removing what it left", rpc, r.id(), cause.getMessage());
        try {
            sandboxer.stop(r, Duration.ZERO);
        } catch (Exception ex) {
            LOG.warn("sandbox {}: stop after a failed {} failed: {}", r.id(), rpc, ex.getMessage());
        }
        try {
            sandboxer.shutdown(r);
        } catch (Exception ex) {
            LOG.warn("sandbox {}: shutdown after a failed {} failed: {}", r.id(), rpc, ex.getMessage());
        }
        try {
            store.delete(r.id());
        } catch (Exception ex) {
            LOG.warn("sandbox {}: cannot remove its state after a failed {}: {}", r.id(), rpc, ex.getMessage());
        }
        sandboxes.remove(r.id(), e);
        e.exited.complete(ExitStatus.unknown());
    }

    private void markExited(String id, Entry e, ExitStatus st) {
        e.lock.lock();
        try {
            SandboxRecord r = e.record;
            if (r.phase() != Phase.STOPPED) {
                SandboxRecord stopped = r.stopped(st.code(), Times.nanos(st.exitedAt()));
                try {
                    if (sandboxes.get(id) == e) {
                        store.save(stopped);
                    }
                } catch (IOException io) {
                    LOG.error("sandbox {}: could not persist its exit: {}", id, io.getMessage());
                }
                e.record = stopped;
                LOG.info("sandbox {} exited with status {}", id, st.code());
            }
        } finally {
            e.lock.unlock();
        }
        e.exited.complete(new ExitStatus(e.record.exitStatus(), Times.instant(e.record.exitedAt()), st.known()));
    }

    /** This host's OS and architecture, in containerd's (GOARCH) spelling. */
    public static Platform hostPlatform() {
        String arch = switch (System.getProperty("os.arch")) {
            case "amd64", "x86_64" -> "amd64";
            case "aarch64", "arm64" -> "arm64";
            case "ppc64le" -> "ppc64le";
            case "s390x" -> "s390x";
            case "riscv64" -> "riscv64";
            default -> System.getProperty("os.arch");
        };
        return Platform.newBuilder().setOs("linux").setArchitecture(arch).build();
    }

    private static AnyValue anyValue(Any a) {
        return new AnyValue(a.getTypeUrl(), a.getValue().toByteArray());
    }

    /** Runs one RPC body with the sandbox id in the log context; maps any failure to a gRPC status. */
    private static <T> void unary(StreamObserver<T> out, String rpc, String sandboxId, Callable<T> body) {
        MDC.put("sandbox", sandboxId);
        try {
            T resp = body.call();
            out.onNext(resp);
            out.onCompleted();
        } catch (Throwable t) {
            Status s = t instanceof ExecutionException ee && ee.getCause() != null ? Statuses.of(ee.getCause())
                    : Statuses.of(t);
            if (s.getCode() == Status.Code.INTERNAL || s.getCode() == Status.Code.UNKNOWN) {
                LOG.error("{} of sandbox {} failed", rpc, sandboxId, t);
                s = s.withDescription(rpc + " of sandbox " + sandboxId + " failed: " + s.getDescription());
            } else {
                LOG.debug("{} of sandbox {}: {}", rpc, sandboxId, s);
            }
            StatusRuntimeException sre = s.asRuntimeException();
            out.onError(sre);
        } finally {
            MDC.remove("sandbox");
        }
    }

    @FunctionalInterface
    private interface Callable<T> {
        T call() throws Exception;
    }
}
