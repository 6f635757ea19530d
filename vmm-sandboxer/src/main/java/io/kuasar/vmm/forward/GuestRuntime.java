package io.kuasar.vmm.forward;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.google.protobuf.Any;
import com.google.protobuf.Empty;
import com.google.protobuf.Message;
import com.google.protobuf.Parser;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.kuasar.api.task.v3.CloseIORequest;
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
import io.kuasar.api.task.v3.StartRequest;
import io.kuasar.api.task.v3.StartResponse;
import io.kuasar.api.task.v3.StatsRequest;
import io.kuasar.api.task.v3.StatsResponse;
import io.kuasar.api.task.v3.UpdateTaskRequest;
import io.kuasar.api.task.v3.WaitRequest;
import io.kuasar.api.task.v3.WaitResponse;
import io.kuasar.api.types.task.ProcessInfo;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.task.Container;
import io.kuasar.sandbox.task.ContainerRuntime;
import io.kuasar.sandbox.task.FifoKeeper;
import io.kuasar.sandbox.task.TaskRecord;
import io.kuasar.sandbox.ttrpc.CallContext;
import io.kuasar.sandbox.ttrpc.TtrpcClient;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.concurrent.CompletableFuture;

/**
 * The microVM sandboxer's container runtime: containers run in the pod's VM, and this forwards each Task call to the
 * guest agent. Before Create it does what stock containerd cannot ask for (it never sends Kuasar's
 * {@code extensions.tasks}): it lays the container out in the shared directory ({@link ContainerPrep}) and bridges
 * containerd's stdio FIFOs to streams ({@link StdioBridge}), undoing both if the guest refuses the container.
 * The sandboxer's own {@link io.kuasar.sandbox.task.TaskService} keeps the bookkeeping, Wait and events.
 */
public final class GuestRuntime implements ContainerRuntime {
    private static final Logger LOG = LoggerFactory.getLogger(GuestRuntime.class);
    static final String TASK = "containerd.task.v2.Task";
    /** CRI's annotation naming a container's pod. */
    static final String SANDBOX_ID_ANNOTATION = "io.kubernetes.cri.sandbox-id";
    private static final Duration CALL_TIMEOUT = Duration.ofSeconds(60);
    /**
     * Calls that run processes in the guest (runc create/start/exec/delete): on a host crowded with TCG guests one
     * takes over a minute (measured: ten copies of a VM template starting containers at once on 2 cores).
     */
    private static final Duration PROCESS_CALL_TIMEOUT = Duration.ofMinutes(5);
    private static final java.util.Set<String> PROCESS_CALLS = java.util.Set.of("Create", "Start", "Exec", "Delete");
    /** Guest calls slower than this are logged (at debug): a TCG guest is slow, a stuck one is slower. */
    private static final long SLOW_CALL_MS = 500;

    /** The container's record keeps its stream ids, so that a restarted daemon re-attaches its stdio. */
    static final String FACT_STDIO = "stdio";

    private final GuestPods pods;
    private final FifoKeeper keeper;
    private final ContainerPrep prep = new ContainerPrep();
    private final ObjectMapper json = new ObjectMapper();

    public GuestRuntime(GuestPods pods, FifoKeeper keeper) {
        this.pods = pods;
        this.keeper = keeper;
    }

    /**
     * A container of a pod recovered after a restart of this daemon: its process runs on in the guest, which kept
     * its stdio streams; they are re-attached to containerd's FIFOs (which the keeper held open). The container of
     * a pod whose VM died meanwhile is recovered as exited (status unknown), so that containerd learns of its end
     * and can remove it.
     */
    @Override
    public Container recover(TaskRecord r) throws Exception {
        GuestPods.Pod pod = pods.recovered(r.sandboxId());
        String base = r.facts().get(FACT_STDIO);
        boolean running = !r.status().equals("STOPPED") && !pod.agent().isClosed();
        StdioBridge io = running && base != null
                ? StdioBridge.attach(pod.agent().client(), keeper, "container " + r.id(), base, r.stdin(),
                r.stdout(), r.stderr())
                : StdioBridge.NONE;
        if (!running) {
            for (String f : new String[]{r.stdin(), r.stdout(), r.stderr()}) {
                keeper.drop(f);
            }
        }
        return new GuestContainer(pod, r.id(), r.pid(), io, pod.sharedDir().resolve(r.id()));
    }

    /** Containers run in the guest: their pids are the guest's. */
    @Override
    public boolean hostPids() {
        return false;
    }

    @Override
    public Container create(CallContext ctx, CreateTaskRequest req) throws Exception {
        String id = req.getId();
        Path hostBundle = Path.of(req.getBundle());
        String sandboxId = sandboxOf(id, hostBundle);
        GuestPods.Pod pod = pods.pod(sandboxId);
        Rollback undo = new Rollback();
        try {
            String guestBundle;
            if (ContainerPrep.preparedByUpdate(pod.sharedDir(), id)) {
                guestBundle = ContainerPrep.guestBundle(id); // Kuasar's flow: Update laid it out; it stays till then
            } else {
                guestBundle = prep.prepare(id, hostBundle, req.getRootfsList(), pod.sharedDir(), undo);
                LOG.debug("container {}: laid out at {} for sandbox {}", id, guestBundle, sandboxId);
            }
            StdioBridge io = StdioBridge.open(pod.agent().client(), keeper, "container " + id, req.getStdin(),
                    req.getStdout(), req.getStderr());
            undo.onFailure("stdio of " + id, io::close);
            CreateTaskRequest guest = req.toBuilder().clearRootfs().setBundle(guestBundle).setStdin(io.stdin())
                    .setStdout(io.stdout()).setStderr(io.stderr()).build();
            LOG.debug("container {}: stdio {} {} {}; creating in the guest", id, io.stdin(), io.stdout(), io.stderr());
            CreateTaskResponse r = call(pod, "Create", guest, CreateTaskResponse.parser());
            undo.commit();
            return new GuestContainer(pod, id, r.getPid(), io, pod.sharedDir().resolve(id));
        } catch (Exception e) {
            undo.run();
            throw e;
        }
    }

    /**
     * Kuasar's append_container and remove_container, from {@code Update(extensions.tasks)}: the containers the
     * list adds are laid out in the pod's shared directory now, before their Task calls (which may go straight to
     * the guest, at the address its Start returned); the ones it drops lose their layout, unless a Task Delete
     * through this daemon already removed it.
     */
    public void tasksUpdated(String sandboxId, Path sharedDir, io.kuasar.sandbox.controller.TaskResources.Diff diff)
            throws IOException {
        for (io.kuasar.sandbox.controller.TaskResources.Task t : diff.addedTasks()) {
            io.kuasar.sandbox.state.Ids.require("container", t.taskId());
            prep.prepareForUpdate(t, sharedDir);
            LOG.info("sandbox {}: container {} laid out from Update", sandboxId, t.taskId());
        }
        for (String id : diff.removedTasks()) {
            Bundles.remove(sharedDir.resolve(io.kuasar.sandbox.state.Ids.require("container", id)));
        }
    }

    private String sandboxOf(String id, Path bundle) {
        try {
            String s = json.readTree(bundle.resolve("config.json").toFile()).path("annotations")
                    .path(SANDBOX_ID_ANNOTATION).asText("");
            if (s.isEmpty()) {
                throw Status.INVALID_ARGUMENT.withDescription("container " + id + ": the spec has no "
                        + SANDBOX_ID_ANNOTATION + " annotation; a microVM container must belong to a pod")
                        .asRuntimeException();
            }
            return s;
        } catch (IOException e) {
            throw Status.INVALID_ARGUMENT.withDescription("container " + id + ": cannot read " + bundle
                    + "/config.json: " + e.getMessage()).asRuntimeException();
        }
    }

    static <R extends Message> R call(GuestPods.Pod pod, String method, Message req, Parser<R> parser) {
        return call(pod.agent().client(), pod.id(), method, req, parser,
                PROCESS_CALLS.contains(method) ? PROCESS_CALL_TIMEOUT : CALL_TIMEOUT);
    }

    static <R extends Message> R call(TtrpcClient c, String sandboxId, String method, Message req, Parser<R> parser,
                                      Duration timeout) {
        long t0 = System.nanoTime();
        try {
            return c.call(TASK, method, req, parser, timeout);
        } catch (StatusRuntimeException e) {
            if (e.getStatus().getCode() == Status.Code.UNAVAILABLE) {
                throw Status.UNAVAILABLE.withDescription("sandbox " + sandboxId + ": the VM's guest agent is gone ("
                        + e.getStatus().getDescription() + ")").asRuntimeException();
            }
            throw e;
        } finally {
            long ms = (System.nanoTime() - t0) / 1_000_000;
            if (ms >= SLOW_CALL_MS) {
                LOG.debug("sandbox {}: guest {} took {} ms", sandboxId, method, ms);
            }
        }
    }

    /** A container in the pod's VM. */
    final class GuestContainer implements Container {
        private final GuestPods.Pod pod;
        private final String id;
        private final int pid;
        private final StdioBridge io;
        private final Path hostDir;
        private final CompletableFuture<ExitStatus> exit;

        GuestContainer(GuestPods.Pod pod, String id, int pid, StdioBridge io, Path hostDir) {
            this.pod = pod;
            this.id = id;
            this.pid = pid;
            this.io = io;
            this.hostDir = hostDir;
            this.exit = waitFor(pod, id, "");
        }

        @Override
        public String sandboxId() {
            return pod.id();
        }

        @Override
        public int initPid() {
            return pid;
        }

        @Override
        public CompletableFuture<ExitStatus> initExit() {
            return exit;
        }

        @Override
        public void start() {
            call(pod, "Start", StartRequest.newBuilder().setId(id).build(), StartResponse.parser());
        }

        @Override
        public Exec exec(ExecProcessRequest request) throws Exception {
            StdioBridge eio = StdioBridge.open(pod.agent().client(), keeper, "exec " + request.getExecId() + " in " + id,
                    request.getStdin(), request.getStdout(), request.getStderr());
            try {
                call(pod, "Exec", request.toBuilder().setStdin(eio.stdin()).setStdout(eio.stdout())
                        .setStderr(eio.stderr()).build(), Empty.parser());
            } catch (RuntimeException e) {
                eio.close();
                throw e;
            }
            String execId = request.getExecId();
            return new Exec() {
                private final CompletableFuture<ExitStatus> exit = new CompletableFuture<>();

                @Override
                public int start() {
                    int p = call(pod, "Start", StartRequest.newBuilder().setId(id).setExecId(execId).build(),
                            StartResponse.parser()).getPid();
                    waitFor(pod, id, execId).thenAccept(exit::complete);
                    return p;
                }

                @Override
                public CompletableFuture<ExitStatus> exit() {
                    return exit;
                }

                @Override
                public boolean kill(int signal) {
                    try {
                        killInGuest(KillRequest.newBuilder().setId(id).setExecId(execId).setSignal(signal).build());
                        return true;
                    } catch (StatusRuntimeException e) {
                        if (e.getStatus().getCode() == Status.Code.NOT_FOUND) {
                            return false;
                        }
                        throw e;
                    }
                }

                @Override
                public void resizePty(int width, int height) {
                    call(pod, "ResizePty", ResizePtyRequest.newBuilder().setId(id).setExecId(execId).setWidth(width)
                            .setHeight(height).build(), Empty.parser());
                }

                @Override
                public void closeStdin() {
                    eio.closeStdin();
                    call(pod, "CloseIO", CloseIORequest.newBuilder().setId(id).setExecId(execId).setStdin(true)
                            .build(), Empty.parser());
                }

                @Override
                public void delete() {
                    try {
                        call(pod, "Delete", DeleteRequest.newBuilder().setId(id).setExecId(execId).build(),
                                DeleteResponse.parser());
                    } catch (StatusRuntimeException e) {
                        if (e.getStatus().getCode() != Status.Code.NOT_FOUND
                                && e.getStatus().getCode() != Status.Code.UNAVAILABLE) {
                            throw e;
                        }
                    } finally {
                        eio.close();
                    }
                }
            };
        }

        @Override
        public void kill(int signal, boolean all) {
            killInGuest(KillRequest.newBuilder().setId(id).setSignal(signal).setAll(all).build());
        }

        /**
         * Kill answers NOT_FOUND once the VM is gone: no process of the container is left, and that is what
         * containerd's kill-then-delete (CRI's handling of a task exit, StopContainer) accepts as "already dead".
         */
        private void killInGuest(KillRequest req) {
            try {
                call(pod, "Kill", req, Empty.parser());
            } catch (StatusRuntimeException e) {
                // A closed agent connection fails the call with UNAVAILABLE.
                if (e.getStatus().getCode() == Status.Code.UNAVAILABLE && pod.agent().isClosed()) {
                    throw Status.NOT_FOUND.withDescription("container " + id
                            + (req.getExecId().isEmpty() ? "" : " exec " + req.getExecId())
                            + ": process already finished (the VM of sandbox " + pod.id() + " has exited)")
                            .asRuntimeException();
                }
                throw e;
            }
        }

        /** Deletes the container in the guest (if the guest is still there), then its bundle on the host. */
        @Override
        public void delete() throws Exception {
            try {
                if (!pod.agent().isClosed()) {
                    call(pod, "Delete", DeleteRequest.newBuilder().setId(id).build(), DeleteResponse.parser());
                }
            } catch (StatusRuntimeException e) {
                if (e.getStatus().getCode() != Status.Code.NOT_FOUND
                        && e.getStatus().getCode() != Status.Code.UNAVAILABLE) {
                    throw e;
                }
            } finally {
                io.close();
                pod.agent().unwatch(id);
            }
            Bundles.remove(hostDir);
        }

        @Override
        public List<ProcessInfo> pids() {
            return call(pod, "Pids", PidsRequest.newBuilder().setId(id).build(), PidsResponse.parser())
                    .getProcessesList();
        }

        @Override
        public Any stats() {
            return call(pod, "Stats", StatsRequest.newBuilder().setId(id).build(), StatsResponse.parser()).getStats();
        }

        @Override
        public void update(Any resources) {
            call(pod, "Update", UpdateTaskRequest.newBuilder().setId(id).setResources(resources).build(),
                    Empty.parser());
        }

        @Override
        public void pause() {
            call(pod, "Pause", PauseRequest.newBuilder().setId(id).build(), Empty.parser());
        }

        @Override
        public void resume() {
            call(pod, "Resume", ResumeRequest.newBuilder().setId(id).build(), Empty.parser());
        }

        @Override
        public void resizePty(int width, int height) {
            call(pod, "ResizePty", ResizePtyRequest.newBuilder().setId(id).setWidth(width).setHeight(height).build(),
                    Empty.parser());
        }

        @Override
        public void closeStdin() {
            io.closeStdin();
            call(pod, "CloseIO", CloseIORequest.newBuilder().setId(id).setStdin(true).build(), Empty.parser());
        }

        @Override
        public boolean watchOom(Runnable onOom) {
            pod.agent().watchOom(id, onOom);
            return true;
        }

        @Override
        public java.util.Map<String, String> facts() {
            return io == StdioBridge.NONE ? java.util.Map.of() : java.util.Map.of(FACT_STDIO, io.base());
        }
    }

    /**
     * The exit of a process in the guest: a Wait call that stays open until it ends. If the VM goes away first, the
     * status is unknown (255), as for any process whose parent vanished.
     */
    static CompletableFuture<ExitStatus> waitFor(GuestPods.Pod pod, String id, String execId) {
        CompletableFuture<ExitStatus> f = new CompletableFuture<>();
        Thread.ofVirtual().name("wait-" + id + (execId.isEmpty() ? "" : "-" + execId)).start(() -> {
            try {
                WaitResponse w = call(pod.agent().client(), pod.id(), "Wait",
                        WaitRequest.newBuilder().setId(id).setExecId(execId).build(), WaitResponse.parser(), null);
                f.complete(new ExitStatus(w.getExitStatus(), Instant.ofEpochSecond(w.getExitedAt().getSeconds(),
                        w.getExitedAt().getNanos()), true));
            } catch (RuntimeException e) {
                LOG.info("sandbox {}: container {}{}: no exit status from the guest ({})", pod.id(), id,
                        execId.isEmpty() ? "" : " exec " + execId, e.getMessage());
                f.complete(ExitStatus.unknown());
            }
        });
        return f;
    }
}
