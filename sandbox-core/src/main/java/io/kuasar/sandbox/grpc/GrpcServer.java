package io.kuasar.sandbox.grpc;

import io.grpc.BindableService;
import io.grpc.Server;
import io.grpc.netty.NettyServerBuilder;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.epoll.EpollServerDomainSocketChannel;
import io.netty.channel.unix.DomainSocketAddress;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;

/**
 * A gRPC server on a Unix socket (netty epoll), handlers on virtual threads. One event loop thread is enough: the
 * traffic is a handful of RPCs per pod, and every handler blocks on its own virtual thread, never on the loop.
 */
public final class GrpcServer implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(GrpcServer.class);
    /** Sandbox API messages are small; anything near this is malformed or hostile. */
    public static final int MAX_MESSAGE_BYTES = 16 << 20;

    private final Path socket;
    private final EventLoopGroup loop;
    private final ExecutorService handlers = Executors.newVirtualThreadPerTaskExecutor();
    private final Server server;

    public GrpcServer(Path socket, List<BindableService> services) {
        this(socket, services, List.of());
    }

    public GrpcServer(Path socket, List<BindableService> services, List<io.grpc.ServerInterceptor> interceptors) {
        this.socket = socket.toAbsolutePath();
        this.loop = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
        NettyServerBuilder b = NettyServerBuilder.forAddress(new DomainSocketAddress(this.socket.toString()))
                .channelType(EpollServerDomainSocketChannel.class)
                .bossEventLoopGroup(loop).workerEventLoopGroup(loop)
                .executor(handlers)
                .maxInboundMessageSize(MAX_MESSAGE_BYTES)
                .maxInboundMetadataSize(64 << 10);
        services.forEach(s -> b.addService(io.grpc.ServerInterceptors.intercept(s, interceptors)));
        this.server = b.build();
    }

    public GrpcServer start() throws IOException {
        Files.createDirectories(socket.getParent());
        Files.deleteIfExists(socket); // Kuasar, too, replaces a stale socket from a previous run
        server.start();
        Files.setPosixFilePermissions(socket, PosixFilePermissions.fromString("rw-------"));
        LOG.info("Sandbox API (gRPC) listening on {}", socket);
        return this;
    }

    public Path socket() {
        return socket;
    }

    @Override
    public void close() {
        // Pending Waits are long-polls: cancel them rather than wait; containerd re-issues them.
        server.shutdownNow();
        try {
            server.awaitTermination(2, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            server.shutdownNow();
        }
        loop.shutdownGracefully(0, 1, TimeUnit.SECONDS);
        handlers.shutdownNow();
        try {
            Files.deleteIfExists(socket);
        } catch (IOException e) {
            LOG.warn("could not remove {}: {}", socket, e.getMessage());
        }
    }
}
