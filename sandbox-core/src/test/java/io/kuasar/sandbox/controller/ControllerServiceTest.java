package io.kuasar.sandbox.controller;

import com.google.protobuf.Any;
import com.google.protobuf.ByteString;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.NettyChannelBuilder;
import io.kuasar.api.cri.v1.PodSandboxConfig;
import io.kuasar.api.cri.v1.PodSandboxMetadata;
import io.kuasar.api.sandbox.v1.ControllerCreateRequest;
import io.kuasar.api.sandbox.v1.ControllerGrpc;
import io.kuasar.api.sandbox.v1.ControllerPlatformRequest;
import io.kuasar.api.sandbox.v1.ControllerShutdownRequest;
import io.kuasar.api.sandbox.v1.ControllerStartRequest;
import io.kuasar.api.sandbox.v1.ControllerStartResponse;
import io.kuasar.api.sandbox.v1.ControllerStatusRequest;
import io.kuasar.api.sandbox.v1.ControllerStatusResponse;
import io.kuasar.api.sandbox.v1.ControllerStopRequest;
import io.kuasar.api.sandbox.v1.ControllerUpdateRequest;
import io.kuasar.api.sandbox.v1.ControllerWaitRequest;
import io.kuasar.api.sandbox.v1.ControllerWaitResponse;
import io.kuasar.api.sandbox.v1.ControllerMetricsRequest;
import io.kuasar.api.types.Sandbox;
import io.kuasar.sandbox.grpc.GrpcServer;
import io.kuasar.sandbox.state.StateStore;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollDomainSocketChannel;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.unix.DomainSocketAddress;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The Controller contract over a real gRPC Unix socket, with a fake sandboxer. */
class ControllerServiceTest {
    @TempDir
    Path dir;
    FakeSandboxer fake;
    StateStore store;
    GrpcServer server;
    ManagedChannel channel;
    MultiThreadIoEventLoopGroup loop;
    ControllerGrpc.ControllerBlockingStub stub;

    @BeforeEach
    void start() throws Exception {
        fake = new FakeSandboxer();
        store = new StateStore(dir.resolve("state"));
        ControllerService svc = new ControllerService(fake, store);
        svc.recover();
        server = new GrpcServer(dir.resolve("s.sock"), List.of(svc)).start();
        connect();
    }

    private void connect() {
        loop = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
        channel = NettyChannelBuilder.forAddress(new DomainSocketAddress(dir.resolve("s.sock").toString()))
                .channelType(EpollDomainSocketChannel.class).eventLoopGroup(loop).usePlaintext()
                .maxInboundMessageSize(64 << 20).build();
        stub = ControllerGrpc.newBlockingStub(channel).withDeadlineAfter(30, TimeUnit.SECONDS);
    }

    @AfterEach
    void stop() {
        channel.shutdownNow();
        loop.shutdownGracefully(0, 1, TimeUnit.SECONDS);
        server.close();
    }

    private static ControllerCreateRequest create(String id) {
        PodSandboxConfig cfg = PodSandboxConfig.newBuilder()
                .setMetadata(PodSandboxMetadata.newBuilder().setName("p").setNamespace("default").setUid("u")).build();
        return ControllerCreateRequest.newBuilder().setSandboxId(id).setSandboxer("fake")
                .setOptions(Any.pack(cfg, "type.googleapis.com")).build();
    }

    private static Status.Code codeOf(Runnable r) {
        try {
            r.run();
        } catch (StatusRuntimeException e) {
            return e.getStatus().getCode();
        }
        return Status.Code.OK;
    }

    @Test
    void fullLifecycle() throws Exception {
        stub.create(create("sb1"));
        ControllerStatusResponse created = stub.status(ControllerStatusRequest.newBuilder().setSandboxId("sb1").build());
        assertThat(created.getState()).isEqualTo("SANDBOX_NOTREADY");

        ControllerStartResponse started = stub.start(ControllerStartRequest.newBuilder().setSandboxId("sb1").build());
        assertThat(started.getVersion()).isEqualTo(3);
        assertThat(started.getAddress()).startsWith("ttrpc+unix:///");
        assertThat(started.getPid()).isPositive();
        assertThat(started.hasCreatedAt()).isTrue();

        ControllerStatusResponse st = stub.status(ControllerStatusRequest.newBuilder().setSandboxId("sb1").build());
        assertThat(st.getState()).isEqualTo("SANDBOX_READY");
        assertThat(st.getPid()).isEqualTo(started.getPid());
        assertThat(st.getVersion()).isEqualTo(3);
        assertThat(st.getAddress()).isEqualTo(started.getAddress());

        assertThat(stub.platform(ControllerPlatformRequest.newBuilder().setSandboxId("sb1").build()).getPlatform()
                .getOs()).isEqualTo("linux");

        // Wait blocks until the sandbox exits, then reports the real status.
        CompletableFuture<ControllerWaitResponse> waiting = CompletableFuture.supplyAsync(
                () -> stub.wait(ControllerWaitRequest.newBuilder().setSandboxId("sb1").build()));
        Thread.sleep(300);
        assertThat(waiting).isNotDone();
        fake.exits.get("sb1").complete(io.kuasar.sandbox.process.ExitStatus.of(3));
        assertThat(waiting.get(10, TimeUnit.SECONDS).getExitStatus()).isEqualTo(3);
        assertThat(stub.status(ControllerStatusRequest.newBuilder().setSandboxId("sb1").build()).getState())
                .isEqualTo("SANDBOX_NOTREADY");

        // Stop twice (CRI does), Shutdown twice: idempotent.
        stub.stop(ControllerStopRequest.newBuilder().setSandboxId("sb1").build());
        stub.stop(ControllerStopRequest.newBuilder().setSandboxId("sb1").build());
        stub.shutdown(ControllerShutdownRequest.newBuilder().setSandboxId("sb1").build());
        stub.shutdown(ControllerShutdownRequest.newBuilder().setSandboxId("sb1").build());
        assertThat(Files.exists(store.sandboxDir("sb1"))).isFalse();
        assertThat(codeOf(() -> stub.status(ControllerStatusRequest.newBuilder().setSandboxId("sb1").build())))
                .isEqualTo(Status.Code.NOT_FOUND);
    }

    @Test
    void stopOfARunningSandboxWakesWaiters() throws Exception {
        stub.create(create("sb2"));
        stub.start(ControllerStartRequest.newBuilder().setSandboxId("sb2").build());
        CompletableFuture<ControllerWaitResponse> waiting = CompletableFuture.supplyAsync(
                () -> stub.wait(ControllerWaitRequest.newBuilder().setSandboxId("sb2").build()));
        stub.stop(ControllerStopRequest.newBuilder().setSandboxId("sb2").setTimeoutSecs(1).build());
        assertThat(waiting.get(10, TimeUnit.SECONDS).getExitStatus()).isEqualTo(137);
    }

    @Test
    void badInputGetsTheRightCodes() {
        stub.create(create("dup"));
        StatusRuntimeException dup = org.junit.jupiter.api.Assertions.assertThrows(StatusRuntimeException.class,
                () -> stub.create(create("dup")));
        assertThat(dup.getStatus().getCode()).isEqualTo(Status.Code.ALREADY_EXISTS);
        assertThat(dup.getStatus().getDescription()).contains("dup");

        for (String bad : List.of("", "../x", "a/b", "x\0y", "..", "-lead", "a".repeat(77))) {
            assertThat(codeOf(() -> stub.create(create(bad)))).as("id %s", bad)
                    .isEqualTo(Status.Code.INVALID_ARGUMENT);
        }
        assertThat(codeOf(() -> stub.status(ControllerStatusRequest.newBuilder().setSandboxId("../etc").build())))
                .isEqualTo(Status.Code.INVALID_ARGUMENT);
        for (String unknown : List.of("nope")) {
            assertThat(codeOf(() -> stub.start(ControllerStartRequest.newBuilder().setSandboxId(unknown).build())))
                    .isEqualTo(Status.Code.NOT_FOUND);
            assertThat(codeOf(() -> stub.status(ControllerStatusRequest.newBuilder().setSandboxId(unknown).build())))
                    .isEqualTo(Status.Code.NOT_FOUND);
            assertThat(codeOf(() -> stub.wait(ControllerWaitRequest.newBuilder().setSandboxId(unknown).build())))
                    .isEqualTo(Status.Code.NOT_FOUND);
            assertThat(codeOf(() -> stub.stop(ControllerStopRequest.newBuilder().setSandboxId(unknown).build())))
                    .isEqualTo(Status.Code.NOT_FOUND);
            assertThat(codeOf(() -> stub.metrics(ControllerMetricsRequest.newBuilder().setSandboxId(unknown).build())))
                    .isEqualTo(Status.Code.NOT_FOUND);
            assertThat(codeOf(() -> stub.platform(ControllerPlatformRequest.newBuilder().setSandboxId(unknown).build())))
                    .isEqualTo(Status.Code.NOT_FOUND);
        }
        // options that claim to be a PodSandboxConfig but are garbage
        ControllerCreateRequest garbage = ControllerCreateRequest.newBuilder().setSandboxId("g1")
                .setOptions(Any.newBuilder().setTypeUrl("type.googleapis.com/runtime.v1.PodSandboxConfig")
                        .setValue(ByteString.copyFrom(new byte[]{(byte) 0xff, (byte) 0xff, 0x01}))).build();
        assertThat(codeOf(() -> stub.create(garbage))).isEqualTo(Status.Code.INVALID_ARGUMENT);
        ControllerCreateRequest relNetns = create("n1").toBuilder().setNetnsPath("var/run/netns/x").build();
        assertThat(codeOf(() -> stub.create(relNetns))).isEqualTo(Status.Code.INVALID_ARGUMENT);
        // a stopped sandbox cannot be started again
        stub.create(create("s1"));
        stub.start(ControllerStartRequest.newBuilder().setSandboxId("s1").build());
        stub.stop(ControllerStopRequest.newBuilder().setSandboxId("s1").build());
        assertThat(codeOf(() -> stub.start(ControllerStartRequest.newBuilder().setSandboxId("s1").build())))
                .isEqualTo(Status.Code.FAILED_PRECONDITION);
        // the server is still serving
        assertThat(stub.status(ControllerStatusRequest.newBuilder().setSandboxId("dup").build()).getSandboxId())
                .isEqualTo("dup");
    }

    @Test
    void oversizedMessageIsRefusedAndTheServerKeepsServing() {
        ControllerCreateRequest huge = create("big").toBuilder()
                .putAnnotations("blob", "x".repeat(GrpcServer.MAX_MESSAGE_BYTES + 1)).build();
        assertThat(codeOf(() -> stub.create(huge))).isEqualTo(Status.Code.RESOURCE_EXHAUSTED);
        stub.create(create("small"));
        assertThat(stub.status(ControllerStatusRequest.newBuilder().setSandboxId("small").build()).getState())
                .isEqualTo("SANDBOX_NOTREADY");
    }

    /** iSulad's sandboxer client, as its sources (isula-rust-extensions) send each call. */
    @Test
    void iSuladsSequenceWorks() throws Exception {
        PodSandboxConfig cfg = PodSandboxConfig.newBuilder().setHostname("isula-pod")
                .setMetadata(PodSandboxMetadata.newBuilder().setName("p").setNamespace("default").setUid("u")).build();
        // options: the serialized PodSandboxConfig in an Any without a type URL; no sandbox, rootfs or annotations
        stub.create(ControllerCreateRequest.newBuilder().setSandboxer("vmm").setSandboxId("isula1").setNetnsPath("")
                .setOptions(Any.newBuilder().setValue(cfg.toByteString())).build());
        io.kuasar.sandbox.state.SandboxRecord saved = store.loadAll().records().stream()
                .filter(r -> r.id().equals("isula1")).findFirst().orElseThrow();
        assertThat(io.kuasar.sandbox.pod.PodFiles.config(saved).getHostname()).isEqualTo("isula-pod");

        stub.start(ControllerStartRequest.newBuilder().setSandboxer("vmm").setSandboxId("isula1").build());
        CompletableFuture<ControllerWaitResponse> waiting = CompletableFuture.supplyAsync(() -> stub.wait(
                ControllerWaitRequest.newBuilder().setSandboxer("vmm").setSandboxId("isula1").build()));
        assertThat(stub.status(ControllerStatusRequest.newBuilder().setSandboxId("isula1").setVerbose(false).build())
                .getState()).isEqualTo("SANDBOX_READY");
        for (String tasks : List.of("{\"tasks\":[{\"task_id\":\"c1\"}]}", "{\"tasks\":[]}")) {
            stub.update(ControllerUpdateRequest.newBuilder().setSandboxer("vmm").setSandboxId("isula1")
                    .addFields("extensions.tasks").setSandbox(Sandbox.newBuilder().setSandboxId("isula1")
                            .putLabels("name", "p").putExtensions("tasks", Any.newBuilder()
                                    .setTypeUrl("github.com/containerd/containerd/Tasks")
                                    .setValue(ByteString.copyFrom(tasks, StandardCharsets.UTF_8)).build())).build());
        }
        assertThat(fake.lastDiff.removedTasks()).containsExactly("c1");
        stub.stop(ControllerStopRequest.newBuilder().setSandboxer("vmm").setSandboxId("isula1").setTimeoutSecs(10)
                .build());
        assertThat(waiting.get(10, TimeUnit.SECONDS).hasExitedAt()).isTrue();
        stub.shutdown(ControllerShutdownRequest.newBuilder().setSandboxer("vmm").setSandboxId("isula1").build());
    }

    @Test
    void theMethodsOfOldISuladBuildsAreUnimplementedWithTheVersionToRun() {
        for (String m : List.of("Prepare", "Purge", "UpdateResources")) {
            io.grpc.MethodDescriptor<byte[], byte[]> method = io.grpc.MethodDescriptor.<byte[], byte[]>newBuilder()
                    .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
                    .setFullMethodName("containerd.services.sandbox.v1.Controller/" + m)
                    .setRequestMarshaller(RawBytes.INSTANCE).setResponseMarshaller(RawBytes.INSTANCE).build();
            StatusRuntimeException e = org.assertj.core.api.Assertions.catchThrowableOfType(
                    StatusRuntimeException.class, () -> io.grpc.stub.ClientCalls.blockingUnaryCall(channel, method,
                            io.grpc.CallOptions.DEFAULT.withDeadlineAfter(10, TimeUnit.SECONDS), new byte[0]));
            assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.UNIMPLEMENTED);
            assertThat(e.getStatus().getDescription()).contains(m).contains("iSulad builds before 2024-09")
                    .contains("upgrade iSulad");
        }
        // a method nobody ever had stays gRPC's own answer
        io.grpc.MethodDescriptor<byte[], byte[]> bogus = io.grpc.MethodDescriptor.<byte[], byte[]>newBuilder()
                .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
                .setFullMethodName("containerd.services.sandbox.v1.Controller/Bogus")
                .setRequestMarshaller(RawBytes.INSTANCE).setResponseMarshaller(RawBytes.INSTANCE).build();
        assertThat(codeOf(() -> io.grpc.stub.ClientCalls.blockingUnaryCall(channel, bogus,
                io.grpc.CallOptions.DEFAULT.withDeadlineAfter(10, TimeUnit.SECONDS), new byte[0])))
                .isEqualTo(Status.Code.UNIMPLEMENTED);
    }

    /** Request and response bytes as they are. */
    enum RawBytes implements io.grpc.MethodDescriptor.Marshaller<byte[]> {
        INSTANCE;

        @Override
        public java.io.InputStream stream(byte[] value) {
            return new java.io.ByteArrayInputStream(value);
        }

        @Override
        public byte[] parse(java.io.InputStream stream) {
            try {
                return stream.readAllBytes();
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        }
    }

    @Test
    void updateKeepsLabelsAndDiffsKuasarTaskLists() throws Exception {
        stub.create(create("u1"));
        String v1 = "{\"tasks\":[{\"task_id\":\"c1\",\"processes\":[{\"exec_id\":\"e1\"}]}]}";
        String v2 = "{\"tasks\":[{\"task_id\":\"c1\",\"processes\":[{\"exec_id\":\"e2\"}]},{\"task_id\":\"c2\"}]}";
        for (String v : List.of(v1, v2)) {
            stub.update(ControllerUpdateRequest.newBuilder().setSandboxId("u1").addFields("extensions.tasks")
                    .addFields("labels")
                    .setSandbox(Sandbox.newBuilder().putLabels("k", "v").putExtensions("tasks", Any.newBuilder()
                            .setTypeUrl("github.com/containerd/containerd.TaskResources")
                            .setValue(ByteString.copyFrom(v, StandardCharsets.UTF_8)).build())).build());
        }
        assertThat(fake.lastDiff.addedTasks()).extracting(TaskResources.Task::taskId).containsExactly("c2");
        assertThat(fake.lastDiff.addedProcesses().get("c1")).extracting(TaskResources.Process::execId)
                .containsExactly("e2");
        assertThat(fake.lastDiff.removedProcesses().get("c1")).containsExactly("e1");
        String saved = Files.readString(store.sandboxDir("u1").resolve(StateStore.STATE_FILE));
        assertThat(saved).contains("\"k\" : \"v\"");
        // bad task JSON and a missing extension are INVALID_ARGUMENT, and nothing is lost
        ControllerUpdateRequest bad = ControllerUpdateRequest.newBuilder().setSandboxId("u1")
                .addFields("extensions.tasks").setSandbox(Sandbox.newBuilder().putExtensions("tasks",
                        Any.newBuilder().setValue(ByteString.copyFromUtf8("{not json")).build())).build();
        assertThat(codeOf(() -> stub.update(bad))).isEqualTo(Status.Code.INVALID_ARGUMENT);
        ControllerUpdateRequest missing = ControllerUpdateRequest.newBuilder().setSandboxId("u1")
                .addFields("extensions.tasks").setSandbox(Sandbox.getDefaultInstance()).build();
        assertThat(codeOf(() -> stub.update(missing))).isEqualTo(Status.Code.INVALID_ARGUMENT);
        assertThat(Files.readString(store.sandboxDir("u1").resolve(StateStore.STATE_FILE))).isEqualTo(saved);
    }

    @Test
    void stateSurvivesARestartAndBrokenStateIsMovedAsideAndKept() throws Exception {
        stub.create(create("r1"));
        stub.start(ControllerStartRequest.newBuilder().setSandboxId("r1").build());
        Files.createDirectories(store.sandboxDir("damaged"));
        Files.writeString(store.sandboxDir("damaged").resolve(StateStore.STATE_FILE), "{truncated");
        stop();
        start();
        ControllerStatusResponse st = stub.status(ControllerStatusRequest.newBuilder().setSandboxId("r1").build());
        assertThat(st.getState()).isEqualTo("SANDBOX_READY");
        assertThat(codeOf(() -> stub.status(ControllerStatusRequest.newBuilder().setSandboxId("damaged").build())))
                .isEqualTo(Status.Code.NOT_FOUND);
        // A new sandbox with the same id neither fails nor overwrites (or, on failure, deletes) the broken record.
        stub.create(create("damaged"));
        stub.shutdown(ControllerShutdownRequest.newBuilder().setSandboxId("damaged").build());
        try (var kept = Files.walk(store.root().resolve("broken"))) {
            assertThat(kept.filter(p -> p.getFileName().toString().equals(StateStore.STATE_FILE)).toList())
                    .singleElement().satisfies(p -> assertThat(Files.readString(p)).isEqualTo("{truncated"));
        }
    }

    @Test
    void aFailedStartRemovesEverythingItMade() throws Exception {
        stub.create(create("fs1"));
        fake.failStart = true;
        assertThat(codeOf(() -> stub.start(ControllerStartRequest.newBuilder().setSandboxId("fs1").build())))
                .isEqualTo(Status.Code.INTERNAL);
        // containerd forgets a sandbox whose Start failed: the sandboxer must not keep it (nor reload it later)
        assertThat(fake.calls).contains("shutdown fs1");
        assertThat(codeOf(() -> stub.status(ControllerStatusRequest.newBuilder().setSandboxId("fs1").build())))
                .isEqualTo(Status.Code.NOT_FOUND);
        assertThat(Files.exists(store.sandboxDir("fs1"))).isFalse();
        stop();
        start();
        assertThat(codeOf(() -> stub.status(ControllerStatusRequest.newBuilder().setSandboxId("fs1").build())))
                .isEqualTo(Status.Code.NOT_FOUND);
    }

    @Test
    void whenTheRunningRecordCannotBeSavedTheStartedProcessIsStopped() throws Exception {
        stub.create(create("fs2"));
        // Make the next write of fs2's record fail: a non-empty directory cannot be renamed over.
        Path file = store.sandboxDir("fs2").resolve(StateStore.STATE_FILE);
        Files.delete(file);
        Files.createDirectories(file.resolve("blocker"));
        assertThat(codeOf(() -> stub.start(ControllerStartRequest.newBuilder().setSandboxId("fs2").build())))
                .isEqualTo(Status.Code.INTERNAL);
        // stopped with the record that names the started process (not the created one, whose pid is 0)
        assertThat(fake.calls).anySatisfy(c -> assertThat(c).matches("stop fs2 pid=[1-9][0-9]*"));
        assertThat(fake.exits.get("fs2")).isCompleted();
        assertThat(fake.calls).contains("shutdown fs2");
        assertThat(Files.exists(store.sandboxDir("fs2"))).isFalse();
        assertThat(codeOf(() -> stub.status(ControllerStatusRequest.newBuilder().setSandboxId("fs2").build())))
                .isEqualTo(Status.Code.NOT_FOUND);
    }

    @Test
    void startPassesTheCallersDeadlineToTheSandboxer() {
        stub.create(create("dl1"));
        java.time.Instant before = java.time.Instant.now();
        stub.withDeadlineAfter(20, TimeUnit.SECONDS)
                .start(ControllerStartRequest.newBuilder().setSandboxId("dl1").build());
        assertThat(fake.startDeadlines.get("dl1")).isBetween(before.plusSeconds(15), before.plusSeconds(21));
    }

    @Test
    void shutdownCancelsAStartInProgress() throws Exception {
        stub.create(create("slow1"));
        fake.startGate = new java.util.concurrent.CountDownLatch(1); // a boot that would never end
        CompletableFuture<Status.Code> start = CompletableFuture.supplyAsync(() -> codeOf(() ->
                stub.start(ControllerStartRequest.newBuilder().setSandboxId("slow1").build())));
        org.awaitility.Awaitility.await().atMost(java.time.Duration.ofSeconds(10))
                .until(() -> fake.calls.contains("start slow1"));
        long t0 = System.nanoTime();
        stub.shutdown(ControllerShutdownRequest.newBuilder().setSandboxId("slow1").build());
        assertThat(java.time.Duration.ofNanos(System.nanoTime() - t0)).isLessThan(java.time.Duration.ofSeconds(5));
        assertThat(start.get(10, TimeUnit.SECONDS)).isEqualTo(Status.Code.CANCELLED);
        assertThat(fake.calls).contains("shutdown slow1");
        assertThat(Files.exists(store.sandboxDir("slow1"))).isFalse();
        assertThat(codeOf(() -> stub.status(ControllerStatusRequest.newBuilder().setSandboxId("slow1").build())))
                .isEqualTo(Status.Code.NOT_FOUND);
    }

    @Test
    void stopPassesItsTimeoutToTheSandboxer() {
        stub.create(create("to1"));
        stub.start(ControllerStartRequest.newBuilder().setSandboxId("to1").build());
        stub.stop(ControllerStopRequest.newBuilder().setSandboxId("to1").setTimeoutSecs(7).build());
        assertThat(fake.stopTimeouts).containsEntry("to1", java.time.Duration.ofSeconds(7));
    }

    @Test
    void theSocketIsPrivateAndOtherUsersAreDisconnected() throws Exception {
        Path sock = dir.resolve("s.sock");
        assertThat(Files.getPosixFilePermissions(sock))
                .isEqualTo(java.nio.file.attribute.PosixFilePermissions.fromString("rw-------"));
        // Opened up, so that the kernel lets other users connect at all: the peer check must still turn them away.
        Files.setPosixFilePermissions(sock, java.nio.file.attribute.PosixFilePermissions.fromString("rw-rw-rw-"));
        assertThat(http2Peer(sock, "0", "65534")).isEqualTo("closed");
        assertThat(http2Peer(sock, "0", "0")).isEqualTo("answered");
    }

    /** Sends the HTTP/2 preface and SETTINGS as the given uid/gid; a gRPC server answers with its SETTINGS. */
    private static String http2Peer(Path sock, String uid, String gid) throws Exception {
        String py = "import socket,sys\n"
                + "s=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1]);s.settimeout(10)\n"
                + "try:\n"
                + "    s.sendall(b'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n'+bytes([0,0,0,4,0,0,0,0,0]))\n"
                + "    d=s.recv(9)\n"
                + "except (BrokenPipeError, ConnectionResetError):\n"
                + "    d=b''\n"
                + "print('answered' if len(d)==9 else 'closed')\n";
        Process p = new ProcessBuilder("setpriv", "--reuid=" + uid, "--regid=" + gid, "--clear-groups",
                "/usr/bin/python3", "-c", py, sock.toString()).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes()).trim();
        assertThat(p.waitFor()).as(out).isZero();
        return out;
    }
}
