package io.kuasar.tests.e2e;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.google.protobuf.Any;
import com.google.protobuf.ByteString;
import io.grpc.ManagedChannel;
import io.grpc.netty.NettyChannelBuilder;
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
import io.kuasar.api.sandbox.v1.ControllerWaitRequest;
import io.kuasar.api.sandbox.v1.ControllerWaitResponse;
import io.kuasar.api.task.v3.CreateTaskRequest;
import io.kuasar.api.task.v3.CreateTaskResponse;
import io.kuasar.api.task.v3.DeleteRequest;
import io.kuasar.api.task.v3.StartRequest;
import io.kuasar.api.task.v3.StartResponse;
import io.kuasar.api.task.v3.WaitRequest;
import io.kuasar.api.task.v3.WaitResponse;
import io.kuasar.api.types.Sandbox;
import io.kuasar.sandbox.ttrpc.TtrpcClient;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollDomainSocketChannel;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.unix.DomainSocketAddress;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * iSulad's way of driving a sandboxer, end to end into a running container on each sandboxer (runc, Wasm, gVisor, and
 * a real microVM): the Sandbox API as
 * iSulad's client sends it (options an untyped Any holding the PodSandboxConfig, Start and Wait with only ids, Wait in
 * the background, Update with {@code github.com/containerd/containerd/Tasks} before the Task calls, Stop with a
 * 10 s timeout), then the Task API at the address Start returned, with a bundle iSulad would have prepared.
 */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class IsuladFlowTest {
    private static final String TASK = "containerd.task.v3.Task";
    private static final Duration T = Duration.ofSeconds(30);
    private final ObjectMapper json = new ObjectMapper();

    /** What one sandboxer runs: its daemon's socket, the image, the process and what it prints. */
    private record Case(String sandboxer, Path socket, String image, java.util.List<String> args, int exit,
                        String output) {
    }

    private static Case caseOf(E2eEnvironment env, String sandboxer) {
        String shell = "echo hello-from-isula; cat /etc/hostname; exit 4";
        return switch (sandboxer) {
            case "runc" -> {
                env.cri(); // runc-sandboxer and containerd (the Task API's events) are up
                yield new Case("runc", env.workdir().resolve("runc.sock"), "busybox-oci.tar",
                        java.util.List.of("sh", "-c", shell), 4, "hello-from-isula\nisula-pod\n");
            }
            case "wasm" -> {
                env.wasmCri();
                yield new Case("wasm", env.workdir().resolve("wasm.sock"), "wasm-e2e-oci.tar",
                        java.util.List.of("/hello-c.wasm", "from-isula"), 0,
                        "hello from C: argc=2 [from-isula] GREETING=(unset)\n");
            }
            case "vmm" -> {
                env.vmmCri();
                yield new Case("vmm", env.workdir().resolve("vmm.sock"), "busybox-oci.tar",
                        java.util.List.of("sh", "-c", shell), 4, "hello-from-isula\nisula-pod\n");
            }
            case "quark" -> {
                env.quarkCri();
                yield new Case("quark", env.workdir().resolve("quark.sock"), "busybox-oci.tar",
                        java.util.List.of("sh", "-c", shell), 4, "hello-from-isula\nisula-pod\n");
            }
            default -> throw new IllegalArgumentException(sandboxer);
        };
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"runc", "wasm", "quark", "vmm"})
    void anISuladShapedSequenceRunsAContainer(String sandboxer, E2eEnvironment env) throws Exception {
        Case c = caseOf(env, sandboxer);
        String id = "isula" + Long.toHexString(System.nanoTime());
        String cid = id + "-c1";
        Path work = Files.createDirectories(env.workdir().resolve("isula-" + sandboxer));
        Path bundle = bundle(work.resolve(cid), id, c);
        Path out = work.resolve("c1.out");
        var loop = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
        ManagedChannel ch = NettyChannelBuilder.forAddress(new DomainSocketAddress(c.socket().toString()))
                .channelType(EpollDomainSocketChannel.class).eventLoopGroup(loop).usePlaintext().build();
        try {
            var stub = ControllerGrpc.newBlockingStub(ch);
            PodSandboxConfig cfg = PodSandboxConfig.newBuilder().setHostname("isula-pod")
                    .setMetadata(PodSandboxMetadata.newBuilder().setName("isula").setNamespace("default").setUid("u"))
                    .build();
            stub.withDeadlineAfter(30, TimeUnit.SECONDS).create(ControllerCreateRequest.newBuilder().setSandboxer(c.sandboxer())
                    .setSandboxId(id).setNetnsPath("").setOptions(Any.newBuilder().setValue(cfg.toByteString()))
                    .build());
            ControllerStartResponse started = stub.withDeadlineAfter(60, TimeUnit.SECONDS).start(
                    ControllerStartRequest.newBuilder().setSandboxer(c.sandboxer()).setSandboxId(id).build());
            CompletableFuture<ControllerWaitResponse> waiting = CompletableFuture.supplyAsync(() -> stub.wait(
                    ControllerWaitRequest.newBuilder().setSandboxer(c.sandboxer()).setSandboxId(id).build()));
            // iSulad reads the Task API's address and version from Start and from Status
            var status = stub.withDeadlineAfter(30, TimeUnit.SECONDS).status(ControllerStatusRequest.newBuilder()
                    .setSandboxId(id).setVerbose(false).build());
            assertThat(status.getState()).isEqualTo("SANDBOX_READY");
            assertThat(status.getAddress()).isEqualTo(started.getAddress()).startsWith("ttrpc+");
            assertThat(status.getVersion()).isEqualTo(started.getVersion()).isGreaterThanOrEqualTo(2);

            // iSulad's "prepare container": the task list, then the Task API calls
            update(stub, c.sandboxer(), id, "{\"tasks\":[{\"task_id\":\"" + cid + "\",\"spec\":" + Files.readString(
                    bundle.resolve("config.json")) + ",\"stdout\":\"file://" + out + "\"}]}");
            try (TtrpcClient task = TtrpcClient.connect(started.getAddress())) {
                CreateTaskResponse created = task.call(TASK, "Create", CreateTaskRequest.newBuilder().setId(cid)
                        .setBundle(bundle.toString()).setStdout("file://" + out).build(), CreateTaskResponse.parser(), T);
                assertThat(created.getPid()).isPositive();
                task.call(TASK, "Start", StartRequest.newBuilder().setId(cid).build(), StartResponse.parser(), T);
                WaitResponse w = task.call(TASK, "Wait", WaitRequest.newBuilder().setId(cid).build(),
                        WaitResponse.parser(), T);
                assertThat(w.getExitStatus()).isEqualTo(c.exit());
                // (runc, gVisor) the pod's files come from the untyped PodSandboxConfig
                assertThat(Files.readString(out)).isEqualTo(c.output());
                task.call(TASK, "Delete", DeleteRequest.newBuilder().setId(cid).build(),
                        io.kuasar.api.task.v3.DeleteResponse.parser(), T);
            }
            // iSulad's "purge container": the last removal sends an empty list
            update(stub, c.sandboxer(), id, "{\"tasks\":[]}");
            stub.withDeadlineAfter(30, TimeUnit.SECONDS).stop(ControllerStopRequest.newBuilder().setSandboxer(c.sandboxer())
                    .setSandboxId(id).setTimeoutSecs(10).build());
            ControllerWaitResponse exited = waiting.get(30, TimeUnit.SECONDS);
            assertThat(exited.hasExitedAt()).isTrue();
            // iSulad retries a Wait that failed UNAVAILABLE (a restarting sandboxer): the retry gets the same exit
            ControllerWaitResponse retried = stub.withDeadlineAfter(30, TimeUnit.SECONDS).wait(
                    ControllerWaitRequest.newBuilder().setSandboxer(c.sandboxer()).setSandboxId(id).build());
            assertThat(retried).isEqualTo(exited);
            stub.withDeadlineAfter(30, TimeUnit.SECONDS).shutdown(ControllerShutdownRequest.newBuilder()
                    .setSandboxer(c.sandboxer()).setSandboxId(id).build());
            assertThat(Host.mountsMentioning(id)).isEmpty();
            assertThat(Host.pidsWithCmdline(id)).as("processes of the sandbox").isEmpty();
        } finally {
            ch.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
            loop.shutdownGracefully(0, 1, TimeUnit.SECONDS);
        }
    }

    private static void update(ControllerGrpc.ControllerBlockingStub stub, String sandboxer, String id, String tasks) {
        update(stub, sandboxer, id, tasks, "github.com/containerd/containerd/Tasks");
    }

    /** Update(fields=[extensions.tasks]) with the whole task list, under iSulad's or Kuasar's type URL. */
    static void update(ControllerGrpc.ControllerBlockingStub stub, String sandboxer, String id, String tasks,
                       String typeUrl) {
        stub.withDeadlineAfter(30, TimeUnit.SECONDS).update(ControllerUpdateRequest.newBuilder().setSandboxer(sandboxer)
                .setSandboxId(id).addFields("extensions.tasks").setSandbox(Sandbox.newBuilder().setSandboxId(id)
                        .putLabels("name", "isula").putExtensions("tasks", Any.newBuilder()
                                .setTypeUrl(typeUrl)
                                .setValue(ByteString.copyFrom(tasks, StandardCharsets.UTF_8)).build())).build());
    }

    /** The bundle iSulad would have prepared: the image's layer, and a spec of its own. */
    private Path bundle(Path dir, String sandboxId, Case c) throws Exception {
        return bundle(json, dir, sandboxId, c.image(), c.args());
    }

    static Path bundle(ObjectMapper json, Path dir, String sandboxId, String imageTar, java.util.List<String> argv)
            throws Exception {
        io.kuasar.tests.image.OciImageTar.unpack(Path.of("/var/cache/kuasar-e2e/images/" + imageTar),
                dir.resolve("image"), dir.resolve("rootfs"));
        Host.check(Duration.ofSeconds(30), Map.of(), dir, "runc", "spec");
        ObjectNode spec = (ObjectNode) json.readTree(dir.resolve("config.json").toFile());
        ObjectNode process = spec.with("process").put("terminal", false);
        ArrayNode args = process.putArray("args");
        argv.forEach(args::add);
        spec.with("annotations").put("io.kubernetes.cri.sandbox-id", sandboxId)
                .put("io.kubernetes.cri.container-type", "container");
        Files.writeString(dir.resolve("config.json"), json.writeValueAsString(spec));
        return dir;
    }
}
