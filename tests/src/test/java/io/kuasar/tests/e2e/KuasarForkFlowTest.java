package io.kuasar.tests.e2e;

import com.fasterxml.jackson.databind.ObjectMapper;
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
import io.kuasar.api.sandbox.v1.ControllerStopRequest;
import io.kuasar.api.streaming.v1.StreamInit;
import io.kuasar.api.task.v3.CreateTaskRequest;
import io.kuasar.api.task.v3.DeleteRequest;
import io.kuasar.api.task.v3.DeleteResponse;
import io.kuasar.api.task.v3.ExecProcessRequest;
import io.kuasar.api.task.v3.KillRequest;
import io.kuasar.api.task.v3.StartRequest;
import io.kuasar.api.task.v3.StartResponse;
import io.kuasar.api.task.v3.WaitRequest;
import io.kuasar.api.task.v3.WaitResponse;
import io.kuasar.api.types.Mount;
import io.kuasar.api.types.transfer.Data;
import io.kuasar.sandbox.ttrpc.TtrpcClient;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollDomainSocketChannel;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.unix.DomainSocketAddress;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The request sequence Kuasar's containerd fork sends for a microVM pod, end to end into a real VM: Create with a
 * typed PodSandboxConfig asking for the guest's own task address, Start (which returns
 * {@code ttrpc+hvsock://…:1024}), then for each container and exec process {@code Update(extensions.tasks)} with
 * {@code github.com/containerd/containerd.TaskResources} <em>before</em> the Task calls, which go straight to the
 * guest agent over hybrid vsock with the client's own bundle path and rootfs (the sandboxer laid the container out
 * at Update), stdio as Kuasar's streaming URLs; removal in the fork's order (Task Delete, then Update without it).
 * Shapes from Kuasar's {@code vmm/sandbox/src/sandbox.rs} (append/update/remove_container) and
 * {@code shim/src/sandbox.rs::update_tasks_extension}. Runs on the vsock sandboxer ({@code use_vsock = true}).
 */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class KuasarForkFlowTest {
    private static final String TASK = "containerd.task.v2.Task";
    private static final String KUASAR_TASKS = "github.com/containerd/containerd.TaskResources";
    private static final Duration T = Duration.ofSeconds(60);
    private final ObjectMapper json = new ObjectMapper();

    @Test
    void aForkShapedSequenceRunsAContainerAndAnExecThroughTheGuestsOwnAddress(E2eEnvironment env) throws Exception {
        env.vmmVirtiofsCri();
        Path socket = env.workdir().resolve("vmmfs.sock");
        String id = "fork" + Long.toHexString(System.nanoTime());
        String cid = id + "-c1";
        Path work = Files.createDirectories(env.workdir().resolve("fork"));
        Path bundle = IsuladFlowTest.bundle(json, work.resolve(cid), id, "busybox-oci.tar",
                List.of("sh", "-c", "echo hello-from-the-fork; cat /etc/hostname; exec sleep 1000"));
        String mounts = "[{\"type\":\"bind\",\"source\":\"" + bundle.resolve("rootfs") + "\",\"target\":\"\","
                + "\"options\":[\"rbind\",\"rw\"]}]";
        var loop = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
        ManagedChannel ch = NettyChannelBuilder.forAddress(new DomainSocketAddress(socket.toString()))
                .channelType(EpollDomainSocketChannel.class).eventLoopGroup(loop).usePlaintext().build();
        try {
            var stub = ControllerGrpc.newBlockingStub(ch);
            PodSandboxConfig cfg = PodSandboxConfig.newBuilder().setHostname("fork-pod")
                    .setMetadata(PodSandboxMetadata.newBuilder().setName("fork").setNamespace("default").setUid("u"))
                    .putAnnotations("io.kuasar.vmm.task_address", "guest").build();
            stub.withDeadlineAfter(30, TimeUnit.SECONDS).create(ControllerCreateRequest.newBuilder().setSandboxer("vmm")
                    .setSandboxId(id).setOptions(Any.pack(cfg)).build());
            ControllerStartResponse started = stub.withDeadlineAfter(120, TimeUnit.SECONDS).start(
                    ControllerStartRequest.newBuilder().setSandboxer("vmm").setSandboxId(id).build());
            String address = started.getAddress();
            assertThat(address).startsWith("ttrpc+hvsock://").endsWith(":1024");
            String stdout = address + "?streaming_id=" + cid + "-stdout";

            // append_container: laid out before the Task API sees the container
            String spec = Files.readString(bundle.resolve("config.json"));
            IsuladFlowTest.update(stub, "vmm", id, "{\"tasks\":[{\"task_id\":\"" + cid + "\",\"spec\":" + spec
                    + ",\"rootfs\":" + mounts + ",\"stdin\":\"\",\"stdout\":\"" + stdout + "\",\"stderr\":\"\","
                    + "\"processes\":[]}]}", KUASAR_TASKS);
            Path shared = env.vmmVirtiofsStateDir().resolve("sandboxes").resolve(id).resolve("shared");
            assertThat(shared.resolve(cid).resolve("config.json")).exists();
            assertThat(Host.mountsMentioning(shared.resolve(cid).resolve("rootfs").toString())).isNotEmpty();

            try (TtrpcClient guest = dialHybridVsock(address)) {
                TtrpcClient.ClientStream out = openStream(guest, cid + "-stdout");
                Mount rootfs = Mount.newBuilder().setType("bind").setSource(bundle.resolve("rootfs").toString())
                        .addOptions("rbind").addOptions("rw").build();
                int pid = guest.call(TASK, "Create", CreateTaskRequest.newBuilder().setId(cid)
                        .setBundle("/run/containerd/io.containerd.runtime.v2.task/k8s.io/" + cid) // the client's own
                        .addRootfs(rootfs).setStdout(stdout).build(),
                        io.kuasar.api.task.v3.CreateTaskResponse.parser(), T).getPid();
                assertThat(pid).isPositive();
                guest.call(TASK, "Start", StartRequest.newBuilder().setId(cid).build(), StartResponse.parser(), T);
                assertThat(readUntil(out, "fork-pod\n")).isEqualTo("hello-from-the-fork\nfork-pod\n");

                // update_container (+process), then the exec at the guest
                String exec = "e1";
                String execOut = address + "?streaming_id=" + exec + "-stdout";
                String process = "{\"args\":[\"sh\",\"-c\",\"echo exec-out; exit 5\"],\"cwd\":\"/\","
                        + "\"env\":[\"PATH=/bin:/usr/bin\"],\"user\":{\"uid\":0,\"gid\":0},\"terminal\":false}";
                IsuladFlowTest.update(stub, "vmm", id, "{\"tasks\":[{\"task_id\":\"" + cid + "\",\"spec\":" + spec
                        + ",\"rootfs\":" + mounts + ",\"stdout\":\"" + stdout + "\",\"processes\":[{\"exec_id\":\""
                        + exec + "\",\"spec\":" + process + ",\"stdout\":\"" + execOut + "\"}]}]}", KUASAR_TASKS);
                TtrpcClient.ClientStream eout = openStream(guest, exec + "-stdout");
                guest.call(TASK, "Exec", ExecProcessRequest.newBuilder().setId(cid).setExecId(exec)
                        .setSpec(Any.newBuilder().setTypeUrl("types.containerd.io/opencontainers/runtime-spec/1/Process")
                                .setValue(ByteString.copyFromUtf8(process))).setStdout(execOut).build(),
                        com.google.protobuf.Empty.parser(), T);
                guest.call(TASK, "Start", StartRequest.newBuilder().setId(cid).setExecId(exec).build(),
                        StartResponse.parser(), T);
                assertThat(readToEnd(eout)).isEqualTo("exec-out\n");
                assertThat(guest.call(TASK, "Wait", WaitRequest.newBuilder().setId(cid).setExecId(exec).build(),
                        WaitResponse.parser(), T).getExitStatus()).isEqualTo(5);
                guest.call(TASK, "Delete", DeleteRequest.newBuilder().setId(cid).setExecId(exec).build(),
                        DeleteResponse.parser(), T);
                IsuladFlowTest.update(stub, "vmm", id, "{\"tasks\":[{\"task_id\":\"" + cid + "\",\"spec\":" + spec
                        + ",\"rootfs\":" + mounts + ",\"stdout\":\"" + stdout + "\",\"processes\":[]}]}",
                        KUASAR_TASKS);

                // removal in the fork's order: kill, wait, Task Delete, then the list without the container
                guest.call(TASK, "Kill", KillRequest.newBuilder().setId(cid).setSignal(9).build(),
                        com.google.protobuf.Empty.parser(), T);
                assertThat(guest.call(TASK, "Wait", WaitRequest.newBuilder().setId(cid).build(),
                        WaitResponse.parser(), T).getExitStatus()).isEqualTo(137);
                guest.call(TASK, "Delete", DeleteRequest.newBuilder().setId(cid).build(), DeleteResponse.parser(), T);
            }
            IsuladFlowTest.update(stub, "vmm", id, "{\"tasks\":[]}", KUASAR_TASKS);
            assertThat(shared.resolve(cid)).doesNotExist();
            assertThat(Host.mountsMentioning(shared.toString())).as("only the shared directory itself").hasSizeLessThanOrEqualTo(1);

            stub.withDeadlineAfter(30, TimeUnit.SECONDS).stop(ControllerStopRequest.newBuilder().setSandboxer("vmm")
                    .setSandboxId(id).setTimeoutSecs(10).build());
            stub.withDeadlineAfter(30, TimeUnit.SECONDS).shutdown(ControllerShutdownRequest.newBuilder()
                    .setSandboxer("vmm").setSandboxId(id).build());
            assertThat(Host.mountsMentioning(id)).isEmpty();
            assertThat(Host.pidsWithCmdline(id)).as("processes of the sandbox").isEmpty();
        } finally {
            ch.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
            loop.shutdownGracefully(0, 1, TimeUnit.SECONDS);
        }
    }

    /** Kuasar's hvsock dial: the Unix socket, {@code CONNECT <port>\n}, an {@code OK} line, then the stream. */
    private static TtrpcClient dialHybridVsock(String address) throws IOException {
        String rest = address.substring("ttrpc+hvsock://".length());
        int colon = rest.lastIndexOf(':');
        SocketChannel c = SocketChannel.open(UnixDomainSocketAddress.of(rest.substring(0, colon)));
        c.write(ByteBuffer.wrap(("CONNECT " + rest.substring(colon + 1) + "\n").getBytes(StandardCharsets.US_ASCII)));
        StringBuilder line = new StringBuilder();
        ByteBuffer one = ByteBuffer.allocate(1);
        while (true) {
            one.clear();
            if (c.read(one) < 0) {
                throw new IOException("hybrid vsock: closed during the handshake");
            }
            char ch = (char) one.get(0);
            if (ch == '\n') {
                break;
            }
            line.append(ch);
        }
        assertThat(line.toString()).startsWith("OK");
        return TtrpcClient.over(c);
    }

    private static TtrpcClient.ClientStream openStream(TtrpcClient guest, String id) throws Exception {
        TtrpcClient.ClientStream s = guest.stream("containerd.services.streaming.v1.Streaming", "Stream", null, true);
        s.send(Any.newBuilder().setTypeUrl("containerd.services.streaming.v1.StreamInit")
                .setValue(StreamInit.newBuilder().setId(id).build().toByteString()).build());
        assertThat(Any.parseFrom(s.recv()).getTypeUrl()).endsWith("google.protobuf.Empty");
        return s;
    }

    private static String readUntil(TtrpcClient.ClientStream s, String end) throws Exception {
        ByteArrayOutputStream got = new ByteArrayOutputStream();
        byte[] m;
        while (!got.toString(StandardCharsets.UTF_8).contains(end) && (m = s.recv()) != null) {
            got.write(Data.parseFrom(Any.parseFrom(m).getValue()).getData().toByteArray());
        }
        return got.toString(StandardCharsets.UTF_8);
    }

    private static String readToEnd(TtrpcClient.ClientStream s) throws Exception {
        ByteArrayOutputStream got = new ByteArrayOutputStream();
        byte[] m;
        while ((m = s.recv()) != null) {
            got.write(Data.parseFrom(Any.parseFrom(m).getValue()).getData().toByteArray());
        }
        return got.toString(StandardCharsets.UTF_8);
    }
}
