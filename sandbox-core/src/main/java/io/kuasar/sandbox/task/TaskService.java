package io.kuasar.sandbox.task;

import com.google.protobuf.Empty;
import io.grpc.Status;
import io.kuasar.api.task.v3.CheckpointTaskRequest;
import io.kuasar.api.task.v3.CloseIORequest;
import io.kuasar.api.task.v3.ConnectRequest;
import io.kuasar.api.task.v3.ConnectResponse;
import io.kuasar.api.task.v3.CreateTaskRequest;
import io.kuasar.api.task.v3.CreateTaskResponse;
import io.kuasar.api.task.v3.DeleteRequest;
import io.kuasar.api.task.v3.DeleteResponse;
import io.kuasar.api.task.v3.ExecProcessRequest;
import io.kuasar.api.task.v3.KillRequest;
import io.kuasar.api.task.v3.PauseRequest;
import io.kuasar.api.task.v3.PidsRequest;
import io.kuasar.api.task.v3.PidsResponse;
import io.kuasar.api.task.v3.ResizePtyRequest;
import io.kuasar.api.task.v3.ResumeRequest;
import io.kuasar.api.task.v3.ShutdownRequest;
import io.kuasar.api.task.v3.StartRequest;
import io.kuasar.api.task.v3.StartResponse;
import io.kuasar.api.task.v3.StateRequest;
import io.kuasar.api.task.v3.StateResponse;
import io.kuasar.api.task.v3.StatsRequest;
import io.kuasar.api.task.v3.StatsResponse;
import io.kuasar.api.task.v3.UpdateTaskRequest;
import io.kuasar.api.task.v3.WaitRequest;
import io.kuasar.api.task.v3.WaitResponse;
import io.kuasar.sandbox.events.EventPublisher;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.state.Ids;
import io.kuasar.sandbox.state.Times;
import io.kuasar.sandbox.sys.Linux;
import io.kuasar.sandbox.ttrpc.CallContext;
import io.kuasar.sandbox.ttrpc.TtrpcService;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.slf4j.MDC;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * containerd's Task API ({@code containerd.task.v3.Task}, and the wire-identical {@code v2}) over any
 * {@link ContainerRuntime}: the process table, status transitions, exit tracking with real exit codes, Wait, and
 * the task events a runc shim publishes. Errors carry containerd's codes: NOT_FOUND for unknown containers or
 * processes, ALREADY_EXISTS for duplicates, FAILED_PRECONDITION for calls in the wrong state.
 */
public final class TaskService {
    private static final Logger LOG = LoggerFactory.getLogger(TaskService.class);
    public static final String V2 = "containerd.task.v2.Task";
    public static final String V3 = "containerd.task.v3.Task";
    private static final String DEFAULT_NAMESPACE = "k8s.io";

    private final ContainerRuntime runtime;
    private final TaskEvents events;
    private final TaskStore store;
    private final Map<String, ContainerEntry> containers = new ConcurrentHashMap<>();
    /** Ids whose Create is under way: reserved first, so two Creates of one id never both run the runtime. */
    private final java.util.Set<String> creating = ConcurrentHashMap.newKeySet();

    public TaskService(ContainerRuntime runtime, EventPublisher events) {
        this(runtime, events, null);
    }

    /**
     * {@code store}: where each container's {@link TaskRecord} is kept so that {@link #recover()} can re-attach
     * after a daemon restart; null keeps nothing.
     */
    public TaskService(ContainerRuntime runtime, EventPublisher events, TaskStore store) {
        this.runtime = runtime;
        this.events = new TaskEvents(events);
        this.store = store;
    }

    /**
     * Something to do with a container's bundle before the runtime creates it (containerd 1.7's shim mode makes
     * sure the CRI pod files the spec mounts exist). Runs on every Create; must be cheap when it has nothing to do.
     */
    @FunctionalInterface
    public interface CreateHook {
        void beforeCreate(String containerId, Path bundle) throws Exception;
    }

    private final List<CreateHook> createHooks = new java.util.concurrent.CopyOnWriteArrayList<>();

    public void addCreateHook(CreateHook hook) {
        createHooks.add(hook);
    }

    /** The same handlers under both service names; v2 and v3 messages are identical on the wire. */
    public List<TtrpcService> services() {
        return List.of(build(V3), build(V2));
    }

    public int containerCount() {
        return containers.size();
    }

    /** Ids of the containers that belong to a sandbox (to clean up when the sandbox goes away). */
    public List<String> containersOf(String sandboxId) {
        return containers.values().stream().filter(c -> c.container.sandboxId().equals(sandboxId))
                .map(c -> c.id).toList();
    }

    /**
     * Stops every container of a sandbox (the sandbox is stopping; containerd deletes them afterwards): SIGTERM and
     * up to {@code grace} for them to exit, then SIGKILL and up to 5 s more. A zero grace kills at once.
     */
    public void killAll(String sandboxId, java.time.Duration grace) {
        List<ContainerEntry> running = containersOf(sandboxId).stream().map(containers::get)
                .filter(c -> c != null && c.init.status != ProcStatus.STOPPED).toList();
        if (!grace.isZero() && !grace.isNegative()) {
            running.forEach(c -> signalQuietly(c, 15));
            long deadline = System.nanoTime() + grace.toNanos();
            for (ContainerEntry c : running) {
                awaitQuietly(c.init.exit, Math.max(0, deadline - System.nanoTime()));
            }
        }
        List<ContainerEntry> left = running.stream().filter(c -> !c.init.exit.isDone()).toList();
        left.forEach(c -> signalQuietly(c, 9));
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
        for (ContainerEntry c : left) {
            awaitQuietly(c.init.exit, Math.max(0, deadline - System.nanoTime()));
        }
    }

    private static void signalQuietly(ContainerEntry c, int signal) {
        try {
            c.container.kill(signal, true);
        } catch (Exception e) {
            LOG.debug("container {}: signal {} while stopping its sandbox: {}", c.id, signal, e.getMessage());
        }
    }

    /** Kills and deletes a container regardless of its state; used when its sandbox is shut down. */
    public void forceRemove(String id) {
        ContainerEntry c = containers.get(id);
        if (c == null) {
            return;
        }
        try {
            if (c.init.status != ProcStatus.STOPPED) {
                c.container.kill(9, true);
                c.init.exit.get(5, TimeUnit.SECONDS);
            }
        } catch (Exception e) {
            LOG.warn("container {}: kill during sandbox removal failed: {}", id, e.getMessage());
        }
        try {
            c.container.delete();
        } catch (Exception e) {
            LOG.warn("container {}: delete during sandbox removal failed: {}", id, e.getMessage());
        }
        containers.remove(id);
        forget(c);
    }

    private TtrpcService build(String name) {
        return TtrpcService.builder(name)
                .unary("State", StateRequest.parser(), (ctx, r) -> traced(r.getId(), () -> state(r)))
                .unary("Create", CreateTaskRequest.parser(), (ctx, r) -> traced(r.getId(), () -> create(ctx, r)))
                .unary("Start", StartRequest.parser(), (ctx, r) -> traced(r.getId(), () -> start(ctx, r)))
                .unary("Delete", DeleteRequest.parser(), (ctx, r) -> traced(r.getId(), () -> delete(ctx, r)))
                .unary("Pids", PidsRequest.parser(), (ctx, r) -> traced(r.getId(), () -> pids(r)))
                .unary("Pause", PauseRequest.parser(), (ctx, r) -> traced(r.getId(), () -> pause(ctx, r)))
                .unary("Resume", ResumeRequest.parser(), (ctx, r) -> traced(r.getId(), () -> resume(ctx, r)))
                .unary("Checkpoint", CheckpointTaskRequest.parser(), (ctx, r) -> {
                    throw Status.UNIMPLEMENTED.withDescription("checkpoint of container " + r.getId()
                            + " is not supported by this sandboxer").asRuntimeException();
                })
                .unary("Kill", KillRequest.parser(), (ctx, r) -> traced(r.getId(), () -> kill(r)))
                .unary("Exec", ExecProcessRequest.parser(), (ctx, r) -> traced(r.getId(), () -> exec(ctx, r)))
                .unary("ResizePty", ResizePtyRequest.parser(), (ctx, r) -> traced(r.getId(), () -> resizePty(r)))
                .unary("CloseIO", CloseIORequest.parser(), (ctx, r) -> traced(r.getId(), () -> closeIo(r)))
                .unary("Update", UpdateTaskRequest.parser(), (ctx, r) -> traced(r.getId(), () -> update(r)))
                .waiting("Wait", WaitRequest.parser(), (ctx, r) -> traced(r.getId(), () -> waitFor(r)))
                .unary("Stats", StatsRequest.parser(), (ctx, r) -> traced(r.getId(), () -> stats(r)))
                .unary("Connect", ConnectRequest.parser(), (ctx, r) -> traced(r.getId(), () -> connect(r)))
                .unary("Shutdown", ShutdownRequest.parser(), (ctx, r) -> Empty.getDefaultInstance())
                .build();
    }

    // ---- state ----

    enum ProcStatus { CREATED, RUNNING, PAUSED, STOPPED }

    /** Status and IO of one process (init or exec). Guarded by its container entry's monitor. */
    static final class Proc {
        final String execId; // "" for init
        final String stdin;
        final String stdout;
        final String stderr;
        final boolean terminal;
        volatile ProcStatus status = ProcStatus.CREATED;
        volatile int pid;
        volatile long startTime;
        volatile ExitStatus exitStatus;
        final CompletableFuture<ExitStatus> exit = new CompletableFuture<>();
        Container.Exec exec;

        Proc(String execId, String stdin, String stdout, String stderr, boolean terminal) {
            this.execId = execId;
            this.stdin = stdin;
            this.stdout = stdout;
            this.stderr = stderr;
            this.terminal = terminal;
        }
    }

    static final class ContainerEntry {
        final String id;
        final String bundle;
        final String namespace;
        final Container container;
        final Proc init;
        final Map<String, Proc> execs = new ConcurrentHashMap<>();
        /** Serializes writes of this container's record, and orders them after its removal. */
        final Object persistLock = new Object();
        boolean forgotten; // guarded by persistLock

        ContainerEntry(String id, String bundle, String namespace, Container container, Proc init) {
            this.id = id;
            this.bundle = bundle;
            this.namespace = namespace;
            this.container = container;
            this.init = init;
        }
    }

    // ---- RPCs ----

    private CreateTaskResponse create(CallContext ctx, CreateTaskRequest request) throws Exception {
        String id = Ids.require("container", request.getId());
        CreateTaskRequest r = runtime.resolve(request);
        if (r.getBundle().isEmpty() || !Path.of(r.getBundle()).isAbsolute() || !Files.isDirectory(Path.of(r.getBundle()))) {
            throw Status.INVALID_ARGUMENT.withDescription("container " + id + ": bundle " + Ids.printable(r.getBundle())
                    + " is not an existing absolute directory").asRuntimeException();
        }
        if (!r.getCheckpoint().isEmpty()) {
            throw Status.UNIMPLEMENTED.withDescription("container " + id + ": restore from checkpoint is not supported")
                    .asRuntimeException();
        }
        if (containers.containsKey(id) || !creating.add(id)) {
            throw Status.ALREADY_EXISTS.withDescription("container " + id + " already exists").asRuntimeException();
        }
        Proc init = new Proc("", r.getStdin(), r.getStdout(), r.getStderr(), r.getTerminal());
        String ns = ctx.namespaceOr(DEFAULT_NAMESPACE);
        ContainerEntry entry;
        Container c;
        try {
            for (CreateHook h : createHooks) {
                h.beforeCreate(id, Path.of(r.getBundle()));
            }
            c = runtime.create(ctx, r);
            entry = new ContainerEntry(id, r.getBundle(), ns, c, init);
            containers.put(id, entry);
        } finally {
            creating.remove(id);
        }
        init.pid = c.initPid();
        init.startTime = startTimeOf(init.pid);
        save(entry);
        c.initExit().thenAccept(st -> exited(entry, init, st));
        events.created(ns, r, init.pid);
        LOG.info("container {} created, pid {}", id, init.pid);
        return CreateTaskResponse.newBuilder().setPid(init.pid).build();
    }

    private StartResponse start(CallContext ctx, StartRequest r) throws Exception {
        ContainerEntry c = container(r.getId());
        if (r.getExecId().isEmpty()) {
            synchronized (c) {
                requireStatus(c, c.init, ProcStatus.CREATED, "start");
                c.container.start();
                if (c.init.status == ProcStatus.CREATED) {
                    c.init.status = ProcStatus.RUNNING;
                }
            }
            save(c);
            events.started(c.namespace, c.id, c.init.pid);
            watchOom(c);
            LOG.info("container {} started", c.id);
            return StartResponse.newBuilder().setPid(c.init.pid).build();
        }
        Proc p = exec(c, r.getExecId());
        synchronized (c) {
            requireStatus(c, p, ProcStatus.CREATED, "start");
            p.pid = p.exec.start();
            p.startTime = startTimeOf(p.pid);
            if (p.status == ProcStatus.CREATED) {
                p.status = ProcStatus.RUNNING;
            }
        }
        save(c);
        p.exec.exit().thenAccept(st -> exited(c, p, st));
        events.execStarted(c.namespace, c.id, p.execId, p.pid);
        return StartResponse.newBuilder().setPid(p.pid).build();
    }

    private void exited(ContainerEntry c, Proc p, ExitStatus st) {
        synchronized (c) {
            if (p.status == ProcStatus.STOPPED) {
                return;
            }
            p.status = ProcStatus.STOPPED;
            p.exitStatus = st;
        }
        if (containers.get(c.id) == c) {
            save(c);
        }
        p.exit.complete(st);
        LOG.info("container {}{} exited with status {}", c.id, p.execId.isEmpty() ? "" : " exec " + p.execId,
                st.code());
        events.exited(c.namespace, c.id, p.execId.isEmpty() ? c.id : p.execId, p.pid, st);
    }

    private DeleteResponse delete(CallContext ctx, DeleteRequest r) throws Exception {
        ContainerEntry c = container(r.getId());
        if (!r.getExecId().isEmpty()) {
            Proc p = exec(c, r.getExecId());
            if (p.status == ProcStatus.RUNNING) {
                throw Status.FAILED_PRECONDITION.withDescription("exec " + p.execId + " in container " + c.id
                        + " is still running; kill it before deleting").asRuntimeException();
            }
            p.exec.delete();
            c.execs.remove(p.execId);
            save(c);
            ExitStatus st = p.exitStatus == null ? ExitStatus.of(0) : p.exitStatus;
            events.deleted(c.namespace, c.id, p.execId, p.pid, st);
            return DeleteResponse.newBuilder().setPid(p.pid).setExitStatus(st.code())
                    .setExitedAt(Times.timestamp(st.exitedAt())).build();
        }
        ProcStatus s = c.init.status;
        if (s == ProcStatus.RUNNING || s == ProcStatus.PAUSED) {
            throw Status.FAILED_PRECONDITION.withDescription("container " + c.id + " is still "
                    + s.name().toLowerCase() + "; kill it before deleting").asRuntimeException();
        }
        if (s == ProcStatus.CREATED) {
            // Created but never started (e.g. CRI's StartContainer failed): kill the waiting init first.
            c.container.kill(9, true);
            awaitQuietly(c.init.exit, 5);
        }
        c.container.delete();
        containers.remove(c.id);
        forget(c);
        ExitStatus st = c.init.exitStatus == null ? ExitStatus.of(137) : c.init.exitStatus;
        events.deleted(c.namespace, c.id, c.id, c.init.pid, st);
        LOG.info("container {} deleted", c.id);
        return DeleteResponse.newBuilder().setPid(c.init.pid).setExitStatus(st.code())
                .setExitedAt(Times.timestamp(st.exitedAt())).build();
    }

    private StateResponse state(StateRequest r) {
        ContainerEntry c = container(r.getId());
        Proc p = r.getExecId().isEmpty() ? c.init : exec(c, r.getExecId());
        StateResponse.Builder b = StateResponse.newBuilder().setId(r.getExecId().isEmpty() ? c.id : p.execId)
                .setBundle(c.bundle).setPid(p.pid).setStatus(toApi(p.status)).setStdin(p.stdin)
                .setStdout(p.stdout).setStderr(p.stderr).setTerminal(p.terminal).setExecId(p.execId);
        ExitStatus st = p.exitStatus;
        if (st != null) {
            b.setExitStatus(st.code()).setExitedAt(Times.timestamp(st.exitedAt()));
        }
        return b.build();
    }

    private PidsResponse pids(PidsRequest r) throws Exception {
        ContainerEntry c = container(r.getId());
        return PidsResponse.newBuilder().addAllProcesses(c.container.pids()).build();
    }

    private Empty kill(KillRequest r) throws Exception {
        ContainerEntry c = container(r.getId());
        int signal = r.getSignal() == 0 ? 15 : r.getSignal();
        if (signal < 0 || signal > 64) {
            throw Status.INVALID_ARGUMENT.withDescription("signal " + signal + " is not a valid signal")
                    .asRuntimeException();
        }
        if (r.getExecId().isEmpty()) {
            if (c.init.status == ProcStatus.STOPPED && !r.getAll()) {
                throw Status.NOT_FOUND.withDescription("container " + c.id + ": process already finished")
                        .asRuntimeException();
            }
            c.container.kill(signal, r.getAll());
            return Empty.getDefaultInstance();
        }
        Proc p = exec(c, r.getExecId());
        if (p.status == ProcStatus.CREATED) {
            throw Status.FAILED_PRECONDITION.withDescription("exec " + p.execId + " in container " + c.id
                    + " has not started").asRuntimeException();
        }
        if (p.status == ProcStatus.STOPPED || !p.exec.kill(signal)) {
            throw Status.NOT_FOUND.withDescription("exec " + p.execId + " in container " + c.id
                    + ": process already finished").asRuntimeException();
        }
        return Empty.getDefaultInstance();
    }

    private Empty exec(CallContext ctx, ExecProcessRequest r) throws Exception {
        ContainerEntry c = container(r.getId());
        String execId = Ids.require("exec", r.getExecId());
        if (!r.hasSpec() || r.getSpec().getValue().isEmpty()) {
            throw Status.INVALID_ARGUMENT.withDescription("exec " + execId + " in container " + c.id
                    + ": spec (an OCI process) is required").asRuntimeException();
        }
        Proc p = new Proc(execId, r.getStdin(), r.getStdout(), r.getStderr(), r.getTerminal());
        synchronized (c) {
            if (c.init.status != ProcStatus.RUNNING) {
                throw Status.FAILED_PRECONDITION.withDescription("container " + c.id + " is "
                        + c.init.status.name().toLowerCase() + "; exec needs a running container").asRuntimeException();
            }
            if (c.execs.putIfAbsent(execId, p) != null) {
                throw Status.ALREADY_EXISTS.withDescription("exec " + execId + " already exists in container "
                        + c.id).asRuntimeException();
            }
        }
        try {
            p.exec = c.container.exec(r);
        } catch (Exception e) {
            c.execs.remove(execId);
            throw e;
        }
        save(c);
        events.execAdded(c.namespace, c.id, execId);
        return Empty.getDefaultInstance();
    }

    private Empty resizePty(ResizePtyRequest r) throws Exception {
        ContainerEntry c = container(r.getId());
        if (r.getExecId().isEmpty()) {
            c.container.resizePty(r.getWidth(), r.getHeight());
        } else {
            exec(c, r.getExecId()).exec.resizePty(r.getWidth(), r.getHeight());
        }
        return Empty.getDefaultInstance();
    }

    private Empty closeIo(CloseIORequest r) throws Exception {
        ContainerEntry c = container(r.getId());
        if (r.getStdin()) {
            if (r.getExecId().isEmpty()) {
                c.container.closeStdin();
            } else {
                exec(c, r.getExecId()).exec.closeStdin();
            }
        }
        return Empty.getDefaultInstance();
    }

    private Empty update(UpdateTaskRequest r) throws Exception {
        ContainerEntry c = container(r.getId());
        if (!r.hasResources()) {
            throw Status.INVALID_ARGUMENT.withDescription("container " + c.id + ": update without resources")
                    .asRuntimeException();
        }
        if (c.init.status == ProcStatus.STOPPED) {
            throw Status.FAILED_PRECONDITION.withDescription("container " + c.id + " has stopped; cannot update it")
                    .asRuntimeException();
        }
        c.container.update(r.getResources());
        return Empty.getDefaultInstance();
    }

    private WaitResponse waitFor(WaitRequest r) throws Exception {
        ContainerEntry c = container(r.getId());
        Proc p = r.getExecId().isEmpty() ? c.init : exec(c, r.getExecId());
        ExitStatus st = p.exit.get();
        return WaitResponse.newBuilder().setExitStatus(st.code()).setExitedAt(Times.timestamp(st.exitedAt())).build();
    }

    private StatsResponse stats(StatsRequest r) throws Exception {
        ContainerEntry c = container(r.getId());
        if (c.init.status == ProcStatus.STOPPED) {
            throw Status.FAILED_PRECONDITION.withDescription("container " + c.id + " has stopped; it has no stats")
                    .asRuntimeException();
        }
        return StatsResponse.newBuilder().setStats(c.container.stats()).build();
    }

    /**
     * Answers for any id, as containerd's runc shim does: containerd 1.7 connects to a container's task before its
     * Create, and to a sandbox's id (no task) when it reloads after a restart; task_pid is 0 until the task exists.
     */
    private ConnectResponse connect(ConnectRequest r) {
        ContainerEntry c = containers.get(Ids.require("container", r.getId()));
        return ConnectResponse.newBuilder().setShimPid(Linux.getpid()).setTaskPid(c == null ? 0 : c.init.pid)
                .setVersion("3").build();
    }

    private Empty pause(CallContext ctx, PauseRequest r) throws Exception {
        return transition(r.getId(), ProcStatus.RUNNING, ProcStatus.PAUSED, "pause", Container::pause,
                events::paused);
    }

    private Empty resume(CallContext ctx, ResumeRequest r) throws Exception {
        return transition(r.getId(), ProcStatus.PAUSED, ProcStatus.RUNNING, "resume", Container::resume,
                events::resumed);
    }

    @FunctionalInterface
    private interface ContainerAction {
        void apply(Container c) throws Exception;
    }

    /** Moves a container's init from one status to another through the runtime, then persists and publishes. */
    private Empty transition(String rawId, ProcStatus from, ProcStatus to, String verb, ContainerAction action,
                             java.util.function.BiConsumer<String, String> event)
            throws Exception {
        ContainerEntry c = container(rawId);
        synchronized (c) {
            requireStatus(c, c.init, from, verb);
            action.apply(c.container);
            c.init.status = to;
        }
        save(c);
        event.accept(c.namespace, c.id);
        return Empty.getDefaultInstance();
    }

    /** Publishes /tasks/oom for the container whenever its runtime reports an OOM kill. */
    private void watchOom(ContainerEntry c) {
        if (!c.container.watchOom(() -> events.oom(c.namespace, c.id))) {
            LOG.debug("container {}: its runtime reports no OOM events", c.id);
        }
    }

    // ---- persistence and recovery ----

    /**
     * Writes the container's record from its state at the time of writing. Writers are serialized per container,
     * so the last write always carries the newest state, and nothing is written once the container is forgotten.
     */
    private void save(ContainerEntry c) {
        if (store == null) {
            return;
        }
        synchronized (c.persistLock) {
            if (c.forgotten) {
                return;
            }
            try {
                store.save(record(c));
            } catch (java.io.IOException e) {
                LOG.error("container {}: cannot persist its state: {}", c.id, e.getMessage());
            }
        }
    }

    private static TaskRecord record(ContainerEntry c) {
        List<TaskRecord.ExecRecord> execs = new ArrayList<>();
        for (Proc p : c.execs.values()) {
            ExitStatus st = p.exitStatus;
            execs.add(new TaskRecord.ExecRecord(p.execId, p.stdin, p.stdout, p.stderr, p.terminal, p.status.name(),
                    p.pid, p.startTime, st == null ? 0 : st.code(), st == null ? 0 : Times.nanos(st.exitedAt()),
                    p.exec == null ? Map.of() : p.exec.facts()));
        }
        ExitStatus st = c.init.exitStatus;
        return new TaskRecord(c.id, c.bundle, c.namespace, c.container.sandboxId(), c.init.stdin,
                c.init.stdout, c.init.stderr, c.init.terminal, c.init.status.name(), c.init.pid, c.init.startTime,
                st == null ? 0 : st.code(), st == null ? 0 : Times.nanos(st.exitedAt()), c.container.facts(), execs);
    }

    private void forget(ContainerEntry c) {
        if (store == null) {
            return;
        }
        synchronized (c.persistLock) {
            c.forgotten = true;
            try {
                store.delete(c.id);
            } catch (java.io.IOException e) {
                LOG.warn("container {}: cannot remove its state file: {}", c.id, e.getMessage());
            }
        }
    }

    /**
     * Re-attaches to every container recorded by a previous run of this daemon. A record that cannot be read or
     * recovered is moved aside (kept for inspection); it is never deleted here.
     */
    public int recover() {
        if (store == null) {
            return 0;
        }
        int n = 0;
        try {
            for (TaskStore.Stored s : store.loadAll()) {
                try {
                    if (recoverOne(s.record())) {
                        n++;
                    } else {
                        store.quarantine(s.file(), "the runtime cannot recover container " + s.record().id());
                    }
                } catch (Exception e) {
                    store.quarantine(s.file(), "cannot recover container " + s.record().id() + ": " + e.getMessage());
                }
            }
        } catch (java.io.IOException e) {
            LOG.error("cannot list {}: {}", store.dir(), e.getMessage());
        }
        LOG.info("recovered {} container(s) from {}", n, store.dir());
        return n;
    }

    private boolean recoverOne(TaskRecord r) throws Exception {
        Container c = runtime.recover(r);
        if (c == null) {
            return false;
        }
        Proc init = new Proc("", r.stdin(), r.stdout(), r.stderr(), r.terminal());
        init.pid = r.pid();
        init.startTime = r.startTime();
        init.status = ProcStatus.valueOf(r.status());
        if (init.status == ProcStatus.STOPPED) {
            init.exitStatus = new ExitStatus(r.exitCode(), Instant.ofEpochSecond(0, r.exitedAt()), true);
            init.exit.complete(init.exitStatus);
        }
        ContainerEntry entry = new ContainerEntry(r.id(), r.bundle(), r.namespace(), c, init);
        for (TaskRecord.ExecRecord er : r.execs()) {
            Proc p = new Proc(er.execId(), er.stdin(), er.stdout(), er.stderr(), er.terminal());
            p.pid = er.pid();
            p.startTime = er.startTime();
            p.status = ProcStatus.valueOf(er.status());
            if (p.status == ProcStatus.STOPPED) {
                p.exitStatus = new ExitStatus(er.exitCode(), Instant.ofEpochSecond(0, er.exitedAt()), true);
                p.exit.complete(p.exitStatus);
            }
            try {
                p.exec = c.recoverExec(er);
            } catch (Exception e) {
                LOG.warn("container {}: exec {} cannot be recovered: {}", r.id(), er.execId(), e.getMessage());
                continue;
            }
            entry.execs.put(p.execId, p);
            if (p.status == ProcStatus.RUNNING) {
                p.exec.exit().thenAccept(st -> exited(entry, p, st));
            }
        }
        containers.put(r.id(), entry);
        if (init.status != ProcStatus.STOPPED) {
            c.initExit().thenAccept(st -> exited(entry, init, st));
            if (init.status != ProcStatus.CREATED) {
                watchOom(entry);
            }
        }
        LOG.info("recovered container {} ({}, pid {})", r.id(), init.status.name().toLowerCase(), init.pid);
        return true;
    }

    // ---- helpers ----

    private ContainerEntry container(String rawId) {
        String id = Ids.require("container", rawId);
        ContainerEntry c = containers.get(id);
        if (c == null) {
            throw Status.NOT_FOUND.withDescription("container " + id + " not found").asRuntimeException();
        }
        return c;
    }

    private static Proc exec(ContainerEntry c, String rawExecId) {
        String execId = Ids.require("exec", rawExecId);
        Proc p = c.execs.get(execId);
        if (p == null) {
            throw Status.NOT_FOUND.withDescription("exec " + execId + " not found in container " + c.id)
                    .asRuntimeException();
        }
        return p;
    }

    private static void requireStatus(ContainerEntry c, Proc p, ProcStatus wanted, String action) {
        if (p.status != wanted) {
            String who = p.execId.isEmpty() ? "container " + c.id : "exec " + p.execId + " in container " + c.id;
            throw Status.FAILED_PRECONDITION.withDescription("cannot " + action + " " + who + ": it is "
                    + p.status.name().toLowerCase()).asRuntimeException();
        }
    }

    private static io.kuasar.api.types.task.Status toApi(ProcStatus s) {
        return switch (s) {
            case CREATED -> io.kuasar.api.types.task.Status.CREATED;
            case RUNNING -> io.kuasar.api.types.task.Status.RUNNING;
            case PAUSED -> io.kuasar.api.types.task.Status.PAUSED;
            case STOPPED -> io.kuasar.api.types.task.Status.STOPPED;
        };
    }

    private static void awaitQuietly(CompletableFuture<?> f, int seconds) {
        awaitQuietly(f, TimeUnit.SECONDS.toNanos(seconds));
    }

    private static void awaitQuietly(CompletableFuture<?> f, long nanos) {
        try {
            f.get(nanos, TimeUnit.NANOSECONDS);
        } catch (TimeoutException | java.util.concurrent.ExecutionException e) {
            LOG.debug("process did not exit within {} ms", TimeUnit.NANOSECONDS.toMillis(nanos));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    @FunctionalInterface
    private interface Body<T> {
        T run() throws Exception;
    }

    /** Runs a handler with the container id in the log context. */
    private long startTimeOf(int pid) {
        return runtime.hostPids() ? io.kuasar.sandbox.process.Procfs.startTime(pid) : -1;
    }

    private static <T> T traced(String containerId, Body<T> body) throws Exception {
        MDC.put("container", containerId);
        try {
            return body.run();
        } finally {
            MDC.remove("container");
        }
    }

    /** Controller.Metrics of a sandbox: the sum of its running containers' stats. */
    public io.kuasar.api.types.Metric metricsOf(String sandboxId) {
        java.util.List<com.google.protobuf.Any> stats = new java.util.ArrayList<>();
        for (String c : containersOf(sandboxId)) {
            try {
                com.google.protobuf.Any any = statsOf(c);
                if (any != null) {
                    stats.add(any);
                }
            } catch (Exception e) {
                LOG.debug("sandbox {}: no stats for container {}: {}", sandboxId, c, e.getMessage());
            }
        }
        java.time.Instant now = java.time.Instant.now();
        return io.kuasar.api.types.Metric.newBuilder().setId(sandboxId)
                .setTimestamp(com.google.protobuf.Timestamp.newBuilder().setSeconds(now.getEpochSecond())
                        .setNanos(now.getNano()))
                .setData(io.kuasar.sandbox.cgroup.CgroupStats.sum(stats)).build();
    }

    /** Stats of a running container, or null if it is unknown or stopped (for sandbox-level metrics). */
    public com.google.protobuf.Any statsOf(String id) throws Exception {
        ContainerEntry c = containers.get(id);
        if (c == null || c.init.status == ProcStatus.STOPPED) {
            return null;
        }
        return c.container.stats();
    }
}
