package io.kuasar.quark.quark;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.google.protobuf.Any;
import com.google.protobuf.ByteString;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.NettyChannelBuilder;
import io.kuasar.api.cri.v1.LinuxContainerResources;
import io.kuasar.api.cri.v1.LinuxPodSandboxConfig;
import io.kuasar.api.cri.v1.PodSandboxConfig;
import io.kuasar.api.cri.v1.PodSandboxMetadata;
import io.kuasar.api.sandbox.v1.ControllerCreateRequest;
import io.kuasar.api.sandbox.v1.ControllerGrpc;
import io.kuasar.api.sandbox.v1.ControllerShutdownRequest;
import io.kuasar.api.sandbox.v1.ControllerStartRequest;
import io.kuasar.api.sandbox.v1.ControllerStartResponse;
import io.kuasar.api.sandbox.v1.ControllerStatusRequest;
import io.kuasar.api.sandbox.v1.ControllerStopRequest;
import io.kuasar.api.sandbox.v1.ControllerUpdateRequest;
import io.kuasar.api.types.Sandbox;
import io.kuasar.sandbox.controller.ControllerService;
import io.kuasar.sandbox.grpc.GrpcServer;
import io.kuasar.sandbox.process.ProcessReaper;
import io.kuasar.sandbox.state.StateStore;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollDomainSocketChannel;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.unix.DomainSocketAddress;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Kuasar's Quark flow through the real Sandbox API (gRPC on a Unix socket), as Kuasar's containerd fork drives it:
 * Create, Start, Update(extensions.tasks) announcing containers and exec processes, Stop, Shutdown. Quark itself
 * cannot run here: {@code src/test/stand-in/quark} stands in for it and checks the command line, working directory,
 * sandbox bundle and pid-file contract Quark's sources define. Needs root (the bundle layout is made of mounts).
 */
class QuarkFlowTest {
    static final Path STAND_IN = Path.of("src/test/stand-in/quark").toAbsolutePath();
    // short ids: the test's --dir under /tmp/junit-<19 digits> leaves no room for 64 characters in a socket path
    static final String ID = "quarkpod1";
    static final String CID = "ctr1";
    final ObjectMapper json = new ObjectMapper();
    @TempDir
    Path dir;
    StateStore store;
    ProcessReaper reaper;
    GrpcServer server;
    ManagedChannel channel;
    MultiThreadIoEventLoopGroup loop;
    ControllerGrpc.ControllerBlockingStub stub;

    @BeforeEach
    void start() throws Exception {
        Path quarkConfig = Files.writeString(dir.resolve("quark-config.json"), "{\"Sandboxed\": true, \"ShimMode\": false}");
        store = new StateStore(dir.resolve("state"));
        reaper = new ProcessReaper();
        ProcessReaper.becomeSubreaper();
        ControllerService svc = new ControllerService(new QuarkSandboxer(STAND_IN.toString(), quarkConfig, store,
                reaper, Duration.ofSeconds(10)), store);
        svc.recover();
        server = new GrpcServer(dir.resolve("s.sock"), List.of(svc)).start();
        loop = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
        channel = NettyChannelBuilder.forAddress(new DomainSocketAddress(dir.resolve("s.sock").toString()))
                .channelType(EpollDomainSocketChannel.class).eventLoopGroup(loop).usePlaintext().build();
        stub = ControllerGrpc.newBlockingStub(channel).withDeadlineAfter(30, TimeUnit.SECONDS);
    }

    /** A stand-in quark a failed test left running (it daemonized: not our Process) is stopped with the test. */
    @AfterEach
    void stop() throws Exception {
        ProcessHandle.allProcesses().filter(p -> p.info().commandLine().orElse("").contains(STAND_IN.toString())
                && p.info().commandLine().orElse("").contains(dir.toString())).forEach(p -> {
                    p.destroyForcibly();
                    p.onExit().join();
                });
        channel.shutdownNow();
        loop.shutdownGracefully(0, 1, TimeUnit.SECONDS);
        server.close();
        reaper.close();
    }

    ControllerCreateRequest create(String id) {
        PodSandboxConfig cfg = PodSandboxConfig.newBuilder()
                .setMetadata(PodSandboxMetadata.newBuilder().setName("q").setNamespace("default").setUid("u"))
                .setLinux(LinuxPodSandboxConfig.newBuilder().setResources(LinuxContainerResources.newBuilder()
                        .setMemoryLimitInBytes(256L << 20).setCpuShares(512))).build();
        return ControllerCreateRequest.newBuilder().setSandboxId(id).setSandboxer("quark")
                .setOptions(Any.pack(cfg, "type.googleapis.com")).build();
    }

    ControllerUpdateRequest tasks(String id, String tasksJson) {
        return ControllerUpdateRequest.newBuilder().setSandboxId(id).addFields("extensions.tasks")
                .setSandbox(Sandbox.newBuilder().putExtensions("tasks", Any.newBuilder()
                        .setTypeUrl("github.com/containerd/containerd.TaskResources")
                        .setValue(ByteString.copyFrom(tasksJson, StandardCharsets.UTF_8)).build())).build();
    }

    static boolean mounted(Path p) throws Exception {
        String target = p.toAbsolutePath().toString();
        return Files.readAllLines(Path.of("/proc/self/mounts")).stream().anyMatch(l -> l.split(" ")[1].equals(target));
    }

    @Test
    void kuasarsQuarkFlowFromCreateToShutdown() throws Exception {
        stub.create(create(ID));
        Path base = store.sandboxDir(ID);
        JsonNode spec = json.readTree(base.resolve("sandbox/config.json").toFile());
        assertThat(spec.path("root").path("path").asText()).isEqualTo("rootfs");
        assertThat(spec.path("linux").path("resources").path("memory").path("limit").asLong()).isEqualTo(256L << 20);
        assertThat(spec.path("linux").path("resources").path("cpu").path("shares").asLong()).isEqualTo(512);
        assertThat(base.resolve("sandbox/rootfs/dev")).isDirectory();

        ControllerStartResponse started = stub.start(ControllerStartRequest.newBuilder().setSandboxId(ID).build());
        // the address Quark's task server listens on, with the scheme containerd 2.x needs
        Path socket = store.socketDir().resolve(ID + ".sock");
        assertThat(started.getAddress()).isEqualTo("ttrpc+unix://" + socket);
        try (SocketChannel c = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            assertThat(c.connect(UnixDomainSocketAddress.of(socket))).isTrue();
        }
        int pid = started.getPid();
        assertThat(Files.readString(base.resolve("pid")).trim()).isEqualTo(Integer.toString(pid));
        assertThat(ProcessHandle.of(pid)).isPresent();
        JsonNode call = json.readTree(Files.readAllLines(base.resolve("calls.log")).getLast());
        assertThat(call.path("argv").toString()).isEqualTo(json.writeValueAsString(List.of(STAND_IN.toString(),
                "-r", base.resolve("sandbox").toString(), "sandbox", "--task-socket",
                socket.toString(), "--id", ID, "--pid-file", base.resolve("pid").toString())));
        assertThat(stub.status(ControllerStatusRequest.newBuilder().setSandboxId(ID).build()).getState())
                .isEqualTo("SANDBOX_READY");

        // A container announced by Update(extensions.tasks), as Kuasar's containerd fork does before Task.Create.
        Path image = Files.createDirectories(dir.resolve("image"));
        Files.writeString(image.resolve("hello"), "from-the-image");
        Path volume = Files.createDirectories(dir.resolve("volume"));
        Files.writeString(volume.resolve("data"), "from-the-volume");
        Path io = Files.createDirectories(dir.resolve("io"));
        for (String s : List.of("stdin", "stdout", "stderr", "e1-stdout")) {
            Files.writeString(io.resolve(s), s);
        }
        String task = """
                {"task_id":"%s","rootfs":[{"type":"bind","source":"%s","options":["rbind"]}],
                 "spec":{"ociVersion":"1.0.2","process":{"args":["sh"],"cwd":"/"},"root":{"path":"/elsewhere"},
                         "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
                                   {"destination":"/data","type":"bind","source":"%s","options":["rbind","rw"]}]},
                 "stdin":"%s","stdout":"%s","stderr":"%s","processes":[]}
                """.formatted(CID, image, volume, io.resolve("stdin"), io.resolve("stdout"), io.resolve("stderr"));
        stub.update(tasks(ID, "{\"tasks\":[" + task + "]}"));
        Path bundle = base.resolve("sandbox").resolve(CID);
        assertThat(Files.readString(bundle.resolve("rootfs/hello"))).isEqualTo("from-the-image");
        assertThat(Files.readString(bundle.resolve("rootfs/data/data"))).isEqualTo("from-the-volume");
        for (String s : List.of("stdin", "stdout", "stderr")) {
            assertThat(mounted(bundle.resolve(s))).as(s).isTrue();
            assertThat(Files.readString(bundle.resolve(s))).isEqualTo(s);
        }
        JsonNode cspec = json.readTree(bundle.resolve("config.json").toFile());
        assertThat(cspec.path("root").path("path").asText()).isEqualTo("rootfs");
        assertThat(cspec.path("mounts").findValuesAsText("destination")).containsExactly("/proc");

        // An exec process of it: its stdio beside the container's, as <exec-id>-stdout.
        String withExec = task.replace("\"processes\":[]", "\"processes\":[{\"exec_id\":\"e1\",\"stdout\":\""
                + io.resolve("e1-stdout") + "\"}]");
        stub.update(tasks(ID, "{\"tasks\":[" + withExec + "]}"));
        assertThat(Files.readString(bundle.resolve("e1-stdout"))).isEqualTo("e1-stdout");
        stub.update(tasks(ID, "{\"tasks\":[" + task + "]}"));
        assertThat(bundle.resolve("e1-stdout")).doesNotExist();

        // Removed from the list: its mounts and its bundle go.
        stub.update(tasks(ID, "{\"tasks\":[]}"));
        assertThat(bundle).doesNotExist();
        assertThat(Files.readString(Path.of("/proc/self/mounts"))).doesNotContain(base.toString());
        assertThat(Files.readString(volume.resolve("data"))).isEqualTo("from-the-volume");

        stub.stop(ControllerStopRequest.newBuilder().setSandboxId(ID).build());
        long end = System.nanoTime() + Duration.ofSeconds(5).toNanos();
        while (ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false) && System.nanoTime() < end) {
            Thread.sleep(20);
        }
        assertThat(ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false)).as("quark killed").isFalse();
        stub.shutdown(ControllerShutdownRequest.newBuilder().setSandboxId(ID).build());
        assertThat(base).doesNotExist();
        assertThat(socket).doesNotExist();
    }

    @Test
    void aBadQuarkConfigOrAMissingBinaryIsAClearError() throws Exception {
        Path cfg = Files.writeString(dir.resolve("bad.json"), "{\"Sandboxed\": false, \"ShimMode\": true}");
        QuarkSandboxer bad = new QuarkSandboxer(STAND_IN.toString(), cfg, store, reaper, Duration.ofSeconds(5));
        StatusRuntimeException e = org.assertj.core.api.Assertions.catchThrowableOfType(StatusRuntimeException.class,
                bad::checkQuarkConfig);
        assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.FAILED_PRECONDITION);
        assertThat(e.getMessage()).contains("\"Sandboxed\": true and \"ShimMode\": false").contains(cfg.toString());

        Path good = Files.writeString(dir.resolve("good.json"), "{\"Sandboxed\": true, \"ShimMode\": false}");
        StateStore other = new StateStore(dir.resolve("other"));
        ControllerService svc = new ControllerService(new QuarkSandboxer("/nonexistent/quark", good, other, reaper,
                Duration.ofSeconds(5)), other);
        svc.recover();
        try (GrpcServer s2 = new GrpcServer(dir.resolve("s2.sock"), List.of(svc)).start()) {
            ManagedChannel ch = NettyChannelBuilder.forAddress(new DomainSocketAddress(dir.resolve("s2.sock").toString()))
                    .channelType(EpollDomainSocketChannel.class).eventLoopGroup(loop).usePlaintext().build();
            try {
                var st = ControllerGrpc.newBlockingStub(ch).withDeadlineAfter(30, TimeUnit.SECONDS);
                st.create(create("quarkpod2"));
                StatusRuntimeException missing = org.assertj.core.api.Assertions.catchThrowableOfType(
                        StatusRuntimeException.class,
                        () -> st.start(ControllerStartRequest.newBuilder().setSandboxId("quarkpod2").build()));
                assertThat(missing.getStatus().getCode()).isEqualTo(Status.Code.FAILED_PRECONDITION);
                assertThat(missing.getMessage()).contains("/nonexistent/quark").contains("--backend gvisor");
            } finally {
                ch.shutdownNow();
            }
        }
    }
}
