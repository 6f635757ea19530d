package io.kuasar.sandbox.grpc;

import io.grpc.BindableService;
import io.grpc.Server;
import io.grpc.netty.NettyServerBuilder;
import io.kuasar.sandbox.sys.Linux;
import io.kuasar.sandbox.sys.UnixSockets;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollDomainSocketChannel;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.epoll.EpollServerDomainSocketChannel;
import io.netty.channel.unix.DomainSocketAddress;
import io.netty.channel.unix.PeerCredentials;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;

/**
 * A gRPC server on a Unix socket (netty epoll), handlers on virtual threads. One event loop thread is enough: the
 * traffic is a handful of RPCs per pod, and every handler blocks on its own virtual thread, never on the loop.
 * The socket is 0600 from the moment it can be reached, and a peer whose uid or gid differs from ours is
 * disconnected before it can send anything (SO_PEERCRED), as containerd's own sockets require.
 */
public final class GrpcServer implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(GrpcServer.class);
    /** Sandbox API messages are small; anything near this is malformed or hostile. */
    public static final int MAX_MESSAGE_BYTES = 16 << 20;

    private final Path socket;
    private final List<BindableService> services;
    private final List<io.grpc.ServerInterceptor> interceptors;
    private final EventLoopGroup loop;
    private final ExecutorService handlers = Executors.newVirtualThreadPerTaskExecutor();
    private Server server;

    public GrpcServer(Path socket, List<BindableService> services) {
        this(socket, services, List.of());
    }

    public GrpcServer(Path socket, List<BindableService> services, List<io.grpc.ServerInterceptor> interceptors) {
        this.socket = socket.toAbsolutePath();
        this.services = List.copyOf(services);
        this.interceptors = List.copyOf(interceptors);
        this.loop = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
    }

    public synchronized GrpcServer start() throws IOException {
        // Kuasar, too, replaces a stale socket from a previous run (bindPrivately renames over it).
        UnixSockets.bindPrivately(socket, path -> {
            NettyServerBuilder b = NettyServerBuilder.forAddress(new DomainSocketAddress(path.toString()))
                    .channelFactory(GrpcServer::sameUserChannel)
                    .bossEventLoopGroup(loop).workerEventLoopGroup(loop)
                    .executor(handlers)
                    .maxInboundMessageSize(MAX_MESSAGE_BYTES)
                    .maxInboundMetadataSize(64 << 10);
            services.forEach(s -> b.addService(io.grpc.ServerInterceptors.intercept(s, interceptors)));
            b.fallbackHandlerRegistry(new RetiredMethods());
            server = b.build().start();
        });
        LOG.info("Sandbox API (gRPC) listening on {}", socket);
        return this;
    }

    public Path socket() {
        return socket;
    }

    /**
     * The listening channel, with a first handler that sees every accepted connection before gRPC does and closes
     * it unless the peer has our uid and gid.
     */
    private static EpollServerDomainSocketChannel sameUserChannel() {
        EpollServerDomainSocketChannel ch = new EpollServerDomainSocketChannel();
        ch.pipeline().addFirst("peer-credentials", new PeerCheck());
        return ch;
    }

    @io.netty.channel.ChannelHandler.Sharable
    static final class PeerCheck extends io.netty.channel.ChannelInboundHandlerAdapter {
        private static final int UID = Linux.getuid();
        private static final int GID = Linux.getgid();

        @Override
        public void channelRead(io.netty.channel.ChannelHandlerContext ctx, Object msg) {
            if (msg instanceof EpollDomainSocketChannel child) {
                PeerCredentials peer;
                try {
                    peer = child.peerCredentials();
                } catch (IOException e) {
                    peer = null;
                }
                if (peer == null || peer.uid() != UID || !hasGid(peer, GID)) {
                    LOG.warn("rejected a Sandbox API connection from {}", peer == null ? "an unknown peer" : peer);
                    child.unsafe().closeForcibly();
                    return;
                }
            }
            ctx.fireChannelRead(msg);
        }

        private static boolean hasGid(PeerCredentials peer, int gid) {
            for (int g : peer.gids()) {
                if (g == gid) {
                    return true;
                }
            }
            return false;
        }
    }

    @Override
    public void close() {
        if (server != null) {
            // Pending Waits are long-polls: cancel them rather than wait; containerd re-issues them.
            server.shutdownNow();
            try {
                server.awaitTermination(2, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                server.shutdownNow();
            }
        }
        loop.shutdownGracefully(0, 1, TimeUnit.SECONDS);
        handlers.shutdownNow();
        try {
            java.nio.file.Files.deleteIfExists(socket);
        } catch (IOException e) {
            LOG.warn("could not remove {}: {}", socket, e.getMessage());
        }
    }
}
