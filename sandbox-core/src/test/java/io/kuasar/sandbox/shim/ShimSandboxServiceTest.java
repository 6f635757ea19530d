package io.kuasar.sandbox.shim;

import com.google.protobuf.Any;
import com.google.protobuf.Message;
import com.google.protobuf.Parser;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.kuasar.api.cri.v1.DNSConfig;
import io.kuasar.api.cri.v1.LinuxPodSandboxConfig;
import io.kuasar.api.cri.v1.LinuxSandboxSecurityContext;
import io.kuasar.api.cri.v1.NamespaceMode;
import io.kuasar.api.cri.v1.NamespaceOption;
import io.kuasar.api.cri.v1.PodSandboxConfig;
import io.kuasar.api.runtime.sandbox.v1.CreateSandboxRequest;
import io.kuasar.api.runtime.sandbox.v1.CreateSandboxResponse;
import io.kuasar.api.runtime.sandbox.v1.PingRequest;
import io.kuasar.api.runtime.sandbox.v1.PingResponse;
import io.kuasar.api.runtime.sandbox.v1.PlatformRequest;
import io.kuasar.api.runtime.sandbox.v1.PlatformResponse;
import io.kuasar.api.runtime.sandbox.v1.SandboxStatusRequest;
import io.kuasar.api.runtime.sandbox.v1.SandboxStatusResponse;
import io.kuasar.api.runtime.sandbox.v1.ShutdownSandboxRequest;
import io.kuasar.api.runtime.sandbox.v1.ShutdownSandboxResponse;
import io.kuasar.api.runtime.sandbox.v1.StartSandboxRequest;
import io.kuasar.api.runtime.sandbox.v1.StartSandboxResponse;
import io.kuasar.api.runtime.sandbox.v1.StopSandboxRequest;
import io.kuasar.api.runtime.sandbox.v1.StopSandboxResponse;
import io.kuasar.api.runtime.sandbox.v1.WaitSandboxRequest;
import io.kuasar.api.runtime.sandbox.v1.WaitSandboxResponse;
import io.kuasar.api.types.Metric;
import io.kuasar.sandbox.controller.ControllerService;
import io.kuasar.sandbox.controller.Sandboxer;
import io.kuasar.sandbox.pod.PodFiles;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.state.SandboxRecord;
import io.kuasar.sandbox.state.StateStore;
import io.kuasar.sandbox.ttrpc.TtrpcClient;
import io.kuasar.sandbox.ttrpc.TtrpcServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * containerd 1.7's shim Sandbox API over a real ttrpc socket, in front of the shared controller: the calls and
 * answers containerd 1.7's sandbox controller relies on, and the CRI pod files it leaves to the shim, laid out as a
 * containerd with a private root and state would have them.
 */
class ShimSandboxServiceTest {
    static final String SVC = ShimSandboxService.SERVICE;
    static final Duration T = Duration.ofSeconds(10);
    static final String ID = "a1b2c3".repeat(10) + "d4e5";

    @TempDir
    Path dir;
    TtrpcServer server;
    TtrpcClient client;
    ControllerService controller;
    ShimSandboxService shim;
    final Map<String, CompletableFuture<ExitStatus>> exits = new ConcurrentHashMap<>();

    /** Sandboxes whose process is a future: StopSandbox completes it. */
    final class FutureSandboxer implements Sandboxer {
        @Override
        public String name() {
            return "fake";
        }

        @Override
        public void create(SandboxRecord r) {
        }

        @Override
        public Started start(SandboxRecord r, java.time.Instant deadline) {
            CompletableFuture<ExitStatus> exit = new CompletableFuture<>();
            exits.put(r.id(), exit);
            return new Started(4242, "ttrpc+unix:///run/fake/task.sock", exit, Map.of());
        }

        @Override
        public void stop(SandboxRecord r, Duration timeout) {
            CompletableFuture<ExitStatus> e = exits.get(r.id());
            if (e != null) {
                e.complete(ExitStatus.of(137));
            }
        }

        @Override
        public void shutdown(SandboxRecord r) {
        }

        @Override
        public Started recover(SandboxRecord r) {
            return null;
        }

        @Override
        public Metric metrics(SandboxRecord r) {
            return null;
        }
    }

    @BeforeEach
    void setUp() throws Exception {
        controller = new ControllerService(new FutureSandboxer(), new StateStore(dir.resolve("daemon")));
        shim = new ShimSandboxService(controller, "fake");
        server = new TtrpcServer(dir.resolve("task.sock")).register(shim.service()).start();
        client = TtrpcClient.connect(dir.resolve("task.sock"));
    }

    @AfterEach
    void tearDown() {
        client.close();
        server.close();
        // whatever a failed test left mounted
        io.kuasar.sandbox.sys.Linux.umount(criState().resolve("sandboxes").resolve(ID).resolve("shm").toString(),
                io.kuasar.sandbox.sys.Linux.MNT_DETACH);
    }

    <R extends Message> R call(String method, Message req, Parser<R> parser) {
        return client.call(SVC, method, req, parser, T);
    }

    Path criRoot() {
        return dir.resolve("root/io.containerd.grpc.v1.cri");
    }

    Path criState() {
        return dir.resolve("state/io.containerd.grpc.v1.cri");
    }

    /** The bundle containerd 1.7 makes for a pod: {@code <state>/io.containerd.runtime.v2.task/k8s.io/<id>}. */
    Path bundle() throws Exception {
        Path b = Files.createDirectories(dir.resolve("state/io.containerd.runtime.v2.task/k8s.io").resolve(ID));
        Path work = Files.createDirectories(dir.resolve("root/io.containerd.runtime.v2.task/k8s.io").resolve(ID));
        Files.createSymbolicLink(b.resolve("work"), work);
        return b;
    }

    static Any podConfig(NamespaceMode ipc) {
        PodSandboxConfig cfg = PodSandboxConfig.newBuilder().setHostname("pod-a")
                .setDnsConfig(DNSConfig.newBuilder().addServers("10.0.0.10").addSearches("svc.local"))
                .setLinux(LinuxPodSandboxConfig.newBuilder().setSecurityContext(LinuxSandboxSecurityContext.newBuilder()
                        .setNamespaceOptions(NamespaceOption.newBuilder().setIpc(ipc)))).build();
        // containerd 1.7 marshals the gogo CRI type with typeurl: the type URL has no type.googleapis.com/ prefix
        return Any.newBuilder().setTypeUrl("runtime.v1.PodSandboxConfig").setValue(cfg.toByteString()).build();
    }

    @Test
    void aPodsLifeAsContainerd17DrivesIt() throws Exception {
        assumeTrue(isRoot(), "mounts the pod's shm: needs root");
        Path bundle = bundle();
        call("CreateSandbox", CreateSandboxRequest.newBuilder().setSandboxId(ID).setBundlePath(bundle.toString())
                .setOptions(podConfig(NamespaceMode.POD)).setNetnsPath("/var/run/netns/cni-x").build(),
                CreateSandboxResponse.parser());
        Path files = criRoot().resolve("sandboxes").resolve(ID);
        assertThat(files.resolve("hostname")).content().isEqualTo("pod-a\n");
        assertThat(Files.readString(files.resolve("hosts"))).contains("127.0.1.1\tpod-a");
        assertThat(Files.readString(files.resolve("resolv.conf"))).isEqualTo("search svc.local\nnameserver 10.0.0.10\n");
        Path shm = criState().resolve("sandboxes").resolve(ID).resolve("shm");
        assertThat(PodFiles.isMountPoint(shm)).isTrue();
        assertThat(controller.record(ID).netnsPath()).isEqualTo("/var/run/netns/cni-x");

        StartSandboxResponse started = call("StartSandbox", StartSandboxRequest.newBuilder().setSandboxId(ID).build(),
                StartSandboxResponse.parser());
        assertThat(started.getPid()).isEqualTo(4242);
        assertThat(started.getCreatedAt().getSeconds()).isPositive(); // else CRI lists the pod as made in 1970
        SandboxStatusResponse st = call("SandboxStatus", SandboxStatusRequest.newBuilder().setSandboxId(ID).build(),
                SandboxStatusResponse.parser());
        assertThat(st.getSandboxId()).isEqualTo(ID); // CRI takes the container's pod id from here
        assertThat(st.getState()).isEqualTo("SANDBOX_READY");
        assertThat(st.getPid()).isEqualTo(4242);
        assertThat(call("Platform", PlatformRequest.newBuilder().setSandboxId(ID).build(), PlatformResponse.parser())
                .getPlatform().getOs()).isEqualTo("linux");
        call("PingSandbox", PingRequest.newBuilder().setSandboxId(ID).build(), PingResponse.parser());

        // WaitSandbox blocks while the pod runs: CRI learns of its end only from this answer
        CompletableFuture<WaitSandboxResponse> wait = CompletableFuture.supplyAsync(() -> client.call(SVC,
                "WaitSandbox", WaitSandboxRequest.newBuilder().setSandboxId(ID).build(), WaitSandboxResponse.parser(),
                Duration.ofMinutes(1)));
        Thread.sleep(300);
        assertThat(wait).isNotDone();
        call("StopSandbox", StopSandboxRequest.newBuilder().setSandboxId(ID).build(), StopSandboxResponse.parser());
        WaitSandboxResponse exited = wait.get(10, TimeUnit.SECONDS);
        assertThat(exited.getExitStatus()).isEqualTo(137);
        assertThat(exited.getExitedAt().getSeconds()).isPositive();
        // CRI stops again on removal: nothing to do, no error
        call("StopSandbox", StopSandboxRequest.newBuilder().setSandboxId(ID).build(), StopSandboxResponse.parser());
        assertThat(call("SandboxStatus", SandboxStatusRequest.newBuilder().setSandboxId(ID).build(),
                SandboxStatusResponse.parser()).getState()).isEqualTo("SANDBOX_NOTREADY");

        call("ShutdownSandbox", ShutdownSandboxRequest.newBuilder().setSandboxId(ID).build(),
                ShutdownSandboxResponse.parser());
        assertThat(PodFiles.isMountPoint(shm)).isFalse();
        assertThat(files).doesNotExist();
        assertThat(criState().resolve("sandboxes").resolve(ID)).doesNotExist();
        assertThat(controller.record(ID)).isNull();
        // a second Shutdown is not NOT_FOUND (containerd would then keep the bundle); a Ping now is
        call("ShutdownSandbox", ShutdownSandboxRequest.newBuilder().setSandboxId(ID).build(),
                ShutdownSandboxResponse.parser());
        StatusRuntimeException gone = catchThrowableOfType(StatusRuntimeException.class, () -> call("PingSandbox",
                PingRequest.newBuilder().setSandboxId(ID).build(), PingResponse.parser()));
        assertThat(gone.getStatus().getCode()).isEqualTo(Status.Code.NOT_FOUND);
        assertThat(gone.getStatus().getDescription()).contains(ID);
    }

    @Test
    void podFilesRemovedByARestartOfContainerdAreBackBeforeTheNextContainer() throws Exception {
        Path bundle = bundle();
        call("CreateSandbox", CreateSandboxRequest.newBuilder().setSandboxId(ID).setBundlePath(bundle.toString())
                .setOptions(podConfig(NamespaceMode.NODE)).build(), CreateSandboxResponse.parser());
        Path files = criRoot().resolve("sandboxes").resolve(ID);
        // containerd 1.7's CRI removes them on restart; a CreateContainer then makes empty directories in their place
        io.kuasar.sandbox.state.StateStore.deleteTree(files);
        Files.createDirectories(files.resolve("hosts"));
        Files.createDirectories(files.resolve("resolv.conf"));

        Path other = Files.createDirectories(dir.resolve("other-task"));
        shim.beforeCreate("c0", other); // no sandbox file: not a shim-mode task, nothing made
        assertThat(files.resolve("hostname")).doesNotExist();

        Path container = Files.createDirectories(dir.resolve("state/io.containerd.runtime.v2.task/k8s.io/c1"));
        Files.writeString(container.resolve("sandbox"), ID);
        shim.beforeCreate("c1", container);
        assertThat(files.resolve("hosts")).isRegularFile();
        assertThat(files.resolve("resolv.conf")).isRegularFile().content().contains("nameserver 10.0.0.10");
        assertThat(files.resolve("hostname")).content().isEqualTo("pod-a\n");
        // IPC=NODE: the container uses the host's /dev/shm, no tmpfs of the pod's
        assertThat(criState().resolve("sandboxes").resolve(ID).resolve("shm")).doesNotExist();

        call("ShutdownSandbox", ShutdownSandboxRequest.newBuilder().setSandboxId(ID).build(),
                ShutdownSandboxResponse.parser());
        assertThat(files).doesNotExist();
    }

    @Test
    void badIdsAndUnknownSandboxesGetClearErrors() {
        for (String bad : List.of("../x", "a/b", "")) {
            StatusRuntimeException e = catchThrowableOfType(StatusRuntimeException.class, () -> call("CreateSandbox",
                    CreateSandboxRequest.newBuilder().setSandboxId(bad).setBundlePath("/tmp").build(),
                    CreateSandboxResponse.parser()));
            assertThat(e.getStatus().getCode()).as(bad).isEqualTo(Status.Code.INVALID_ARGUMENT);
        }
        StatusRuntimeException relative = catchThrowableOfType(StatusRuntimeException.class, () -> call("CreateSandbox",
                CreateSandboxRequest.newBuilder().setSandboxId(ID).setBundlePath("relative/bundle").build(),
                CreateSandboxResponse.parser()));
        assertThat(relative.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT);
        assertThat(relative.getStatus().getDescription()).contains("bundle_path").contains("not absolute");
        assertThat(controller.record(ID)).isNull();
        for (String method : List.of("StartSandbox", "SandboxStatus", "WaitSandbox", "StopSandbox", "Platform")) {
            Message req = switch (method) {
                case "StartSandbox" -> StartSandboxRequest.newBuilder().setSandboxId(ID).build();
                case "SandboxStatus" -> SandboxStatusRequest.newBuilder().setSandboxId(ID).build();
                case "WaitSandbox" -> WaitSandboxRequest.newBuilder().setSandboxId(ID).build();
                case "StopSandbox" -> StopSandboxRequest.newBuilder().setSandboxId(ID).build();
                default -> PlatformRequest.newBuilder().setSandboxId(ID).build();
            };
            StatusRuntimeException e = catchThrowableOfType(StatusRuntimeException.class,
                    () -> call(method, req, PingResponse.parser()));
            assertThat(e.getStatus().getCode()).as(method).isEqualTo(Status.Code.NOT_FOUND);
            assertThat(e.getStatus().getDescription()).as(method).contains("sandbox " + ID + " not found");
        }
    }

    static boolean isRoot() {
        return "root".equals(System.getProperty("user.name"));
    }
}
