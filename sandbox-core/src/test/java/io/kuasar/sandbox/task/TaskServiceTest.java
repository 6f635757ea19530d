package io.kuasar.sandbox.task;

import com.google.protobuf.Any;
import com.google.protobuf.ByteString;
import com.google.protobuf.Empty;
import com.google.protobuf.Message;
import com.google.protobuf.Parser;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.kuasar.api.task.v3.CreateTaskRequest;
import io.kuasar.api.task.v3.CreateTaskResponse;
import io.kuasar.api.task.v3.DeleteRequest;
import io.kuasar.api.task.v3.DeleteResponse;
import io.kuasar.api.task.v3.ExecProcessRequest;
import io.kuasar.api.task.v3.KillRequest;
import io.kuasar.api.task.v3.StartRequest;
import io.kuasar.api.task.v3.StartResponse;
import io.kuasar.api.task.v3.StateRequest;
import io.kuasar.api.task.v3.StateResponse;
import io.kuasar.api.task.v3.WaitRequest;
import io.kuasar.api.task.v3.WaitResponse;
import io.kuasar.api.types.task.ProcessInfo;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.ttrpc.TtrpcClient;
import io.kuasar.sandbox.ttrpc.TtrpcServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/** The Task API contract over real ttrpc, on a runtime whose processes are futures. */
class TaskServiceTest {
    @TempDir
    Path dir;
    TtrpcServer server;
    TtrpcClient client;
    final Map<String, FakeContainer> created = new ConcurrentHashMap<>();
    final List<String> events = new ArrayList<>();

    static final class FakeContainer implements Container {
        final CompletableFuture<ExitStatus> init = new CompletableFuture<>();
        final Map<String, CompletableFuture<ExitStatus>> execs = new ConcurrentHashMap<>();
        final List<String> calls = new ArrayList<>();

        public String sandboxId() { return "sb"; }
        int pid = 4242;

        public int initPid() { return pid; }
        public CompletableFuture<ExitStatus> initExit() { return init; }
        public void start() { calls.add("start"); }
        public Exec exec(ExecProcessRequest r) {
            CompletableFuture<ExitStatus> f = new CompletableFuture<>();
            execs.put(r.getExecId(), f);
            return new Exec() {
                public int start() { return 5000 + execs.size(); }
                public CompletableFuture<ExitStatus> exit() { return f; }
                public boolean kill(int signal) {
                    calls.add("kill-exec " + r.getExecId() + " " + signal);
                    return f.complete(ExitStatus.of(128 + signal)) || !f.isDone();
                }
                public void resizePty(int w, int h) { }
                public void closeStdin() { }
                public void delete() { calls.add("delete-exec " + r.getExecId()); }
            };
        }
        public void kill(int signal, boolean all) { calls.add("kill " + signal); init.complete(ExitStatus.of(128 + signal)); }
        public void delete() { calls.add("delete"); }
        public List<ProcessInfo> pids() { return List.of(); }
        public Any stats() { return Any.getDefaultInstance(); }
        public void update(Any resources) { }
        public void pause() { }
        public void resume() { }
        public void resizePty(int w, int h) { }
        public void closeStdin() { }
    }

    /** While set, the runtime's create waits for it (to hold a Create in flight). */
    volatile java.util.concurrent.CountDownLatch createGate;
    final java.util.concurrent.atomic.AtomicInteger runtimeCreates = new java.util.concurrent.atomic.AtomicInteger();
    TaskService tasks;

    @BeforeEach
    void start() throws Exception {
        ContainerRuntime rt = (ctx, req) -> {
            runtimeCreates.incrementAndGet();
            var gate = createGate;
            if (gate != null) {
                gate.await();
            }
            FakeContainer c = new FakeContainer();
            created.put(req.getId(), c);
            return c;
        };
        tasks = new TaskService(rt, (ns, topic, event) -> {
            synchronized (events) {
                events.add(ns + " " + topic);
            }
        });
        server = new TtrpcServer(dir.resolve("task.sock"));
        tasks.services().forEach(server::register);
        server.start();
        client = TtrpcClient.connect(server.address());
    }

    @AfterEach
    void stop() {
        client.close();
        server.close();
    }

    <R extends Message> R call(String method, Message req, Parser<R> parser) {
        return client.call(TaskService.V3, method, req, parser, Duration.ofSeconds(10),
                Map.of("containerd-namespace-ttrpc", "k8s.io"));
    }

    Status.Code code(Runnable r) {
        try {
            r.run();
            return Status.Code.OK;
        } catch (StatusRuntimeException e) {
            return e.getStatus().getCode();
        }
    }

    CreateTaskRequest create(String id) {
        return CreateTaskRequest.newBuilder().setId(id).setBundle(dir.toString()).setStdout("/dev/null").build();
    }

    @Test
    void lifecycleWithRealExitCodesAndEvents() throws Exception {
        CreateTaskResponse cr = call("Create", create("c1"), CreateTaskResponse.parser());
        assertThat(cr.getPid()).isEqualTo(4242);
        assertThat(call("State", StateRequest.newBuilder().setId("c1").build(), StateResponse.parser()).getStatus())
                .isEqualTo(io.kuasar.api.types.task.Status.CREATED);
        assertThat(call("Start", StartRequest.newBuilder().setId("c1").build(), StartResponse.parser()).getPid())
                .isEqualTo(4242);

        call("Exec", ExecProcessRequest.newBuilder().setId("c1").setExecId("e1")
                .setSpec(Any.newBuilder().setValue(ByteString.copyFromUtf8("{\"args\":[\"true\"]}"))).build(),
                Empty.parser());
        assertThat(code(() -> call("Exec", ExecProcessRequest.newBuilder().setId("c1").setExecId("e1")
                .setSpec(Any.newBuilder().setValue(ByteString.copyFromUtf8("{}"))).build(), Empty.parser())))
                .isEqualTo(Status.Code.ALREADY_EXISTS);
        call("Start", StartRequest.newBuilder().setId("c1").setExecId("e1").build(), StartResponse.parser());
        CompletableFuture<WaitResponse> execWait = CompletableFuture.supplyAsync(() ->
                call("Wait", WaitRequest.newBuilder().setId("c1").setExecId("e1").build(), WaitResponse.parser()));
        created.get("c1").execs.get("e1").complete(ExitStatus.of(7));
        assertThat(execWait.get(10, TimeUnit.SECONDS).getExitStatus()).isEqualTo(7);
        DeleteResponse de = call("Delete", DeleteRequest.newBuilder().setId("c1").setExecId("e1").build(),
                DeleteResponse.parser());
        assertThat(de.getExitStatus()).isEqualTo(7);

        // a running container cannot be deleted
        assertThat(code(() -> call("Delete", DeleteRequest.newBuilder().setId("c1").build(), DeleteResponse.parser())))
                .isEqualTo(Status.Code.FAILED_PRECONDITION);
        CompletableFuture<WaitResponse> wait = CompletableFuture.supplyAsync(() ->
                call("Wait", WaitRequest.newBuilder().setId("c1").build(), WaitResponse.parser()));
        call("Kill", KillRequest.newBuilder().setId("c1").setSignal(9).build(), Empty.parser());
        assertThat(wait.get(10, TimeUnit.SECONDS).getExitStatus()).isEqualTo(137);
        StateResponse st = call("State", StateRequest.newBuilder().setId("c1").build(), StateResponse.parser());
        assertThat(st.getStatus()).isEqualTo(io.kuasar.api.types.task.Status.STOPPED);
        assertThat(st.getExitStatus()).isEqualTo(137);
        // killing a finished process is NOT_FOUND, as containerd's runc shim answers
        assertThat(code(() -> call("Kill", KillRequest.newBuilder().setId("c1").setSignal(15).build(), Empty.parser())))
                .isEqualTo(Status.Code.NOT_FOUND);
        assertThat(call("Delete", DeleteRequest.newBuilder().setId("c1").build(), DeleteResponse.parser())
                .getExitStatus()).isEqualTo(137);
        assertThat(code(() -> call("State", StateRequest.newBuilder().setId("c1").build(), StateResponse.parser())))
                .isEqualTo(Status.Code.NOT_FOUND);
        // the v2 service answers the same
        assertThat(code(() -> client.call(TaskService.V2, "State", StateRequest.newBuilder().setId("c1").build(),
                StateResponse.parser(), Duration.ofSeconds(5)))).isEqualTo(Status.Code.NOT_FOUND);

        org.awaitility.Awaitility.await().atMost(Duration.ofSeconds(10)).untilAsserted(() -> {
            synchronized (events) {
                assertThat(events).contains("k8s.io /tasks/delete");
            }
        });
        synchronized (events) {
            assertThat(events).containsSubsequence("k8s.io /tasks/create", "k8s.io /tasks/start",
                    "k8s.io /tasks/exec-added", "k8s.io /tasks/exec-started", "k8s.io /tasks/exit",
                    "k8s.io /tasks/delete", "k8s.io /tasks/exit", "k8s.io /tasks/delete");
        }
    }

    @Test
    void badInput() {
        call("Create", create("dup"), CreateTaskResponse.parser());
        assertThat(code(() -> call("Create", create("dup"), CreateTaskResponse.parser())))
                .isEqualTo(Status.Code.ALREADY_EXISTS);
        for (String bad : List.of("../x", "a/b", "x\0y", "")) {
            assertThat(code(() -> call("Create", create(bad), CreateTaskResponse.parser()))).as(bad)
                    .isEqualTo(Status.Code.INVALID_ARGUMENT);
            assertThat(code(() -> call("State", StateRequest.newBuilder().setId(bad).build(), StateResponse.parser())))
                    .isEqualTo(Status.Code.INVALID_ARGUMENT);
        }
        assertThat(code(() -> call("Create", create("nobundle").toBuilder().setBundle("relative/dir").build(),
                CreateTaskResponse.parser()))).isEqualTo(Status.Code.INVALID_ARGUMENT);
        assertThat(code(() -> call("Start", StartRequest.newBuilder().setId("ghost").build(), StartResponse.parser())))
                .isEqualTo(Status.Code.NOT_FOUND);
        assertThat(code(() -> call("Wait", WaitRequest.newBuilder().setId("dup").setExecId("ghost").build(),
                WaitResponse.parser()))).isEqualTo(Status.Code.NOT_FOUND);
        assertThat(code(() -> call("Exec", ExecProcessRequest.newBuilder().setId("dup").setExecId("e")
                .setSpec(Any.newBuilder().setValue(ByteString.copyFromUtf8("{}"))).build(), Empty.parser())))
                .as("exec into a container that is not running").isEqualTo(Status.Code.FAILED_PRECONDITION);
        assertThat(code(() -> call("Checkpoint", io.kuasar.api.task.v3.CheckpointTaskRequest.newBuilder()
                .setId("dup").build(), Empty.parser()))).isEqualTo(Status.Code.UNIMPLEMENTED);
        assertThat(code(() -> call("Kill", KillRequest.newBuilder().setId("dup").setSignal(999).build(),
                Empty.parser()))).isEqualTo(Status.Code.INVALID_ARGUMENT);
    }

    @Test
    void concurrentCreatesOfOneIdRunTheRuntimeOnce() throws Exception {
        createGate = new java.util.concurrent.CountDownLatch(1);
        CompletableFuture<CreateTaskResponse> first = CompletableFuture.supplyAsync(() ->
                call("Create", create("race"), CreateTaskResponse.parser()));
        org.awaitility.Awaitility.await().atMost(Duration.ofSeconds(10)).until(() -> runtimeCreates.get() == 1);
        // The second Create arrives while the first is still in the runtime: it must not run the runtime again
        // (the loser would kill the winner's container and unmount its rootfs).
        assertThat(code(() -> call("Create", create("race"), CreateTaskResponse.parser())))
                .isEqualTo(Status.Code.ALREADY_EXISTS);
        createGate.countDown();
        assertThat(first.get(10, TimeUnit.SECONDS).getPid()).isEqualTo(4242);
        assertThat(runtimeCreates.get()).isEqualTo(1);
        assertThat(created.get("race").calls).doesNotContain("kill 9", "delete");
    }

    @Test
    void negativeSignalsAreRejected() {
        call("Create", create("sig"), CreateTaskResponse.parser());
        assertThat(code(() -> call("Kill", KillRequest.newBuilder().setId("sig").setSignal(-9).build(),
                Empty.parser()))).isEqualTo(Status.Code.INVALID_ARGUMENT);
        assertThat(created.get("sig").calls).isEmpty();
    }

    @Test
    void stoppingASandboxGivesItsContainersTheGracePeriod() throws Exception {
        call("Create", create("g1"), CreateTaskResponse.parser());
        call("Start", StartRequest.newBuilder().setId("g1").build(), StartResponse.parser());
        tasks.killAll("sb", Duration.ofSeconds(5));
        // FakeContainer exits on the first signal it gets: SIGTERM, not SIGKILL
        assertThat(created.get("g1").calls).containsSubsequence("start", "kill 15").doesNotContain("kill 9");
        assertThat(created.get("g1").init.get(1, TimeUnit.SECONDS).code()).isEqualTo(143);
        call("Create", create("g2"), CreateTaskResponse.parser());
        call("Start", StartRequest.newBuilder().setId("g2").build(), StartResponse.parser());
        tasks.killAll("sb", Duration.ZERO);
        assertThat(created.get("g2").calls).contains("kill 9").doesNotContain("kill 15");
    }

    @Test
    void recordsAreWrittenInOrderAndNeverTorn() throws Exception {
        Path state = dir.resolve("state");
        TaskStore store = new TaskStore(new io.kuasar.sandbox.state.StateStore(state));
        TaskService persisted = new TaskService((ctx, req) -> new FakeContainer(), (ns, t, e) -> { }, store);
        TtrpcServer s2 = new TtrpcServer(dir.resolve("task2.sock"));
        persisted.services().forEach(s2::register);
        s2.start();
        try (TtrpcClient c2 = TtrpcClient.connect(s2.address())) {
            for (int i = 0; i < 20; i++) {
                String id = "p" + i;
                c2.call(TaskService.V3, "Create", create(id), CreateTaskResponse.parser(), Duration.ofSeconds(10));
                c2.call(TaskService.V3, "Start", StartRequest.newBuilder().setId(id).build(), StartResponse.parser(),
                        Duration.ofSeconds(10));
                // the exit (on another thread) races the Start's own write; the file must end as STOPPED
                c2.call(TaskService.V3, "Kill", KillRequest.newBuilder().setId(id).setSignal(9).build(),
                        Empty.parser(), Duration.ofSeconds(10));
            }
            for (int i = 0; i < 20; i++) {
                Path f = store.dir().resolve("p" + i + ".json");
                org.awaitility.Awaitility.await().atMost(Duration.ofSeconds(10)).untilAsserted(() ->
                        assertThat(Files.readString(f)).contains("\"status\":\"STOPPED\""));
            }
            try (var files = Files.list(store.dir())) {
                assertThat(files.map(p -> p.getFileName().toString())).allMatch(n -> n.endsWith(".json")
                        && !n.startsWith("."));
            }
        } finally {
            s2.close();
        }
    }

    @Test
    void onlyHostPidsGetTheStartTimeThatIdentifiesThemAfterARestart() throws Exception {
        int self = (int) ProcessHandle.current().pid();
        for (boolean hostPids : new boolean[]{true, false}) {
            TaskStore store = new TaskStore(new io.kuasar.sandbox.state.StateStore(dir.resolve("st-" + hostPids)));
            ContainerRuntime rt = new ContainerRuntime() {
                @Override
                public Container create(io.kuasar.sandbox.ttrpc.CallContext ctx, CreateTaskRequest r) {
                    FakeContainer c = new FakeContainer();
                    c.pid = self; // a live host pid: a guest's pid 1234 may well name some host process too
                    return c;
                }

                @Override
                public boolean hostPids() {
                    return hostPids;
                }
            };
            TaskService ts = new TaskService(rt, (ns, t, e) -> { }, store);
            TtrpcServer s2 = new TtrpcServer(dir.resolve("task-" + hostPids + ".sock"));
            ts.services().forEach(s2::register);
            s2.start();
            try (TtrpcClient c2 = TtrpcClient.connect(s2.address())) {
                c2.call(TaskService.V3, "Create", create("c"), CreateTaskResponse.parser(), Duration.ofSeconds(10));
            } finally {
                s2.close();
            }
            String record = Files.readString(store.dir().resolve("c.json"));
            long expected = hostPids ? io.kuasar.sandbox.process.Procfs.startTime(self) : -1;
            assertThat(expected).isNotZero();
            assertThat(record).contains("\"startTime\":" + expected + ",");
        }
    }
}
