package io.kuasar.ctl;

import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.NettyChannelBuilder;
import io.kuasar.api.sandbox.v1.ControllerGrpc;
import io.kuasar.api.sandbox.v1.ControllerStatusRequest;
import io.kuasar.api.sandbox.v1.ControllerStatusResponse;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollDomainSocketChannel;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.unix.DomainSocketAddress;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;

/** A daemon's Sandbox API ({@code containerd.services.sandbox.v1.Controller}, gRPC on its Unix socket). */
final class SandboxApi implements AutoCloseable {
    /** The id a probe asks about: no daemon has it, so a daemon that answers says NOT_FOUND. */
    static final String PROBE_ID = "kuasar-ctl-probe";
    private final MultiThreadIoEventLoopGroup loop;
    private final ManagedChannel channel;
    private final Duration timeout;

    SandboxApi(Path socket, Duration timeout) {
        this.timeout = timeout;
        this.loop = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
        this.channel = NettyChannelBuilder.forAddress(new DomainSocketAddress(socket.toString()))
                .channelType(EpollDomainSocketChannel.class).eventLoopGroup(loop).usePlaintext()
                .maxInboundMessageSize(16 << 20).build();
    }

    ControllerStatusResponse status(String id, boolean verbose) {
        return ControllerGrpc.newBlockingStub(channel).withDeadlineAfter(timeout.toMillis(), TimeUnit.MILLISECONDS)
                .status(ControllerStatusRequest.newBuilder().setSandboxId(id).setVerbose(verbose).build());
    }

    /** Null if the daemon behind {@code socket} answers, else why not. */
    static String probe(Path socket, Duration timeout) {
        if (!Files.exists(socket)) {
            return "no socket " + socket;
        }
        try (SandboxApi api = new SandboxApi(socket, timeout)) {
            api.status(PROBE_ID, false);
            return null;
        } catch (StatusRuntimeException e) {
            Status.Code c = e.getStatus().getCode();
            if (c == Status.Code.UNAVAILABLE || c == Status.Code.DEADLINE_EXCEEDED || c == Status.Code.UNKNOWN
                    || c == Status.Code.UNIMPLEMENTED) {
                return "does not answer on " + socket + " (" + describe(e) + ")";
            }
            return null; // NOT_FOUND (or another verdict): it answered
        }
    }

    static String describe(StatusRuntimeException e) {
        String d = e.getStatus().getDescription();
        Throwable cause = e.getCause();
        return e.getStatus().getCode() + (d != null ? ": " + d : cause != null ? ": " + cause.getMessage() : "");
    }

    @Override
    public void close() {
        channel.shutdownNow();
        try {
            channel.awaitTermination(2, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        loop.shutdownGracefully(0, 0, TimeUnit.SECONDS).syncUninterruptibly();
    }
}
