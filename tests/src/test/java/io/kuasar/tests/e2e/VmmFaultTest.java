package io.kuasar.tests.e2e;

import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.NettyChannelBuilder;
import io.kuasar.api.sandbox.v1.ControllerCreateRequest;
import io.kuasar.api.sandbox.v1.ControllerGrpc;
import io.kuasar.api.sandbox.v1.ControllerShutdownRequest;
import io.kuasar.api.sandbox.v1.ControllerStartRequest;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollDomainSocketChannel;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.unix.DomainSocketAddress;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.function.UnaryOperator;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

/**
 * Faults of the microVM path, driven through a vmm-sandboxer's Sandbox API (not containerd: each case needs a
 * daemon whose config is broken on purpose): a missing guest kernel, and a guest that boots but never answers.
 * The second boots real QEMU with the real kernel and an initramfs whose init only sleeps.
 */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class VmmFaultTest {
    private static final int AGENT_TIMEOUT_SECS = 8;

    @Test
    void aMissingKernelIsNamedWithTheTargetThatBuildsIt(E2eEnvironment env) throws Exception {
        env.vmmCri(); // the guest image and the installed daemon
        try (Daemon d = Daemon.start(env, "vmmf1", c -> c.replace("\"/var/lib/kuasar/vmlinux.bin\"",
                "\"/nonexistent/kuasar/vmlinux.bin\""))) {
            StatusRuntimeException e = catchThrowableOfType(StatusRuntimeException.class,
                    () -> d.stub().create(ControllerCreateRequest.newBuilder().setSandboxId("nokernel").build()));
            assertThat(e).as("Create without a kernel").isNotNull();
            assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.FAILED_PRECONDITION);
            assertThat(e.getStatus().getDescription()).contains("/nonexistent/kuasar/vmlinux.bin")
                    .contains("kernel_path").contains("make vmm-image");
            assertThat(Host.pidsWithCmdline(d.dir + "/sandboxes/")).as("no QEMU").isEmpty();
            d.stub().shutdown(ControllerShutdownRequest.newBuilder().setSandboxId("nokernel").build());
            assertThat(d.dir.resolve("sandboxes/nokernel")).doesNotExist();
            assertThat(d.process.isAlive()).isTrue();
        }
    }

    @Test
    void aGuestThatNeverAnswersFailsStartWithinTheTimeoutNamesTheConsoleAndLeavesNothing(E2eEnvironment env)
            throws Exception {
        env.vmmCri();
        Path initrd = silentInitrd(env.workdir().resolve("silent"));
        try (Daemon d = Daemon.start(env, "vmmf2", c -> c
                .replace("\"/var/lib/kuasar/kuasar.initrd\"", "\"" + initrd + "\"")
                .replace("agent_timeout_secs = 45", "agent_timeout_secs = " + AGENT_TIMEOUT_SECS))) {
            String id = "silent";
            d.stub().create(ControllerCreateRequest.newBuilder().setSandboxId(id).build());
            long t0 = System.nanoTime();
            StatusRuntimeException e = catchThrowableOfType(StatusRuntimeException.class,
                    () -> d.stub().start(ControllerStartRequest.newBuilder().setSandboxId(id).build()));
            long ms = (System.nanoTime() - t0) / 1_000_000;
            E2eEnvironment.log("Start of a silent guest failed after " + ms + " ms");
            assertThat(e).as("Start of a guest that never answers").isNotNull();
            assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.DEADLINE_EXCEEDED);
            // The pod's directory goes with the failed start; its console log is kept where the error says.
            Path console = d.dir.resolve("failed").resolve(id + "-console.log");
            assertThat(e.getStatus().getDescription()).contains("sandbox " + id).contains(console.toString());
            assertThat(ms).as("fails at agent_timeout_secs, not much later")
                    .isBetween(AGENT_TIMEOUT_SECS * 1000L - 500, AGENT_TIMEOUT_SECS * 1000L + 10_000);
            // The console says what the guest did: it booted our kernel and ran the init that never answers.
            assertThat(Files.readString(console)).contains("Linux version").contains("silent init: no agent here");
            assertThat(Host.pidsWithCmdline(d.dir + "/sandboxes/")).as("QEMU killed").isEmpty();
            assertThat(Path.of("/sys/fs/cgroup/memory/kuasar-vmm", id)).as("cgroup").doesNotExist();

            d.stub().shutdown(ControllerShutdownRequest.newBuilder().setSandboxId(id).build());
            assertThat(d.dir.resolve("sandboxes").resolve(id)).doesNotExist();
            assertThat(Host.mountsMentioning(d.dir.toString())).isEmpty();
            assertThat(d.process.isAlive()).isTrue();
        }
    }

    /** An initramfs whose /init (busybox, static) sleeps: the kernel boots, the agent never comes. */
    private static Path silentInitrd(Path dir) throws Exception {
        Path root = dir.resolve("root");
        Files.createDirectories(root.resolve("bin"));
        Files.copy(Path.of("/bin/busybox"), root.resolve("bin/busybox"));
        Path init = root.resolve("init");
        Files.writeString(init, "#!/bin/busybox sh\necho silent init: no agent here\nexec /bin/busybox sleep 600\n");
        Files.setPosixFilePermissions(init, PosixFilePermissions.fromString("rwxr-xr-x"));
        Path out = dir.resolve("silent.initrd");
        Host.check(Duration.ofSeconds(60), Map.of("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), root, "sh", "-c",
                "find . | cpio -o -H newc --quiet > " + out);
        return out;
    }

    /** An extra vmm-sandboxer with its own config, and a Sandbox API client to it. */
    private record Daemon(Process process, Path dir, ManagedChannel channel, MultiThreadIoEventLoopGroup loop)
            implements AutoCloseable {
        static Daemon start(E2eEnvironment env, String name, UnaryOperator<String> config) {
            Path sock = env.workdir().resolve(name + ".sock");
            // Short: QEMU's sockets under <dir>/sandboxes/<id>/ must fit into sun_path.
            Path dir = Path.of("/run/" + name + "-" + ProcessHandle.current().pid());
            Process p = env.launchVmm(sock, dir, env.workdir().resolve(name + ".log"), config);
            var loop = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
            ManagedChannel ch = NettyChannelBuilder.forAddress(new DomainSocketAddress(sock.toString()))
                    .channelType(EpollDomainSocketChannel.class).eventLoopGroup(loop).usePlaintext().build();
            return new Daemon(p, dir, ch, loop);
        }

        ControllerGrpc.ControllerBlockingStub stub() {
            return ControllerGrpc.newBlockingStub(channel).withDeadlineAfter(120, TimeUnit.SECONDS);
        }

        @Override
        public void close() throws Exception {
            channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
            loop.shutdownGracefully(0, 1, TimeUnit.SECONDS);
            process.destroy();
            if (!process.waitFor(15, TimeUnit.SECONDS)) {
                process.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
            }
            Host.run(Duration.ofSeconds(30), Map.of(), Path.of("/"), "rm", "-rf", dir.toString());
        }
    }
}
