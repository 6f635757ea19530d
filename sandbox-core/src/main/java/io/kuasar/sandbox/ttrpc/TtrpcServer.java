package io.kuasar.sandbox.ttrpc;

import com.google.protobuf.ByteString;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Message;
import io.grpc.Status;
import io.kuasar.api.ttrpc.KeyValue;
import io.kuasar.api.ttrpc.Request;
import io.kuasar.api.ttrpc.Response;
import io.kuasar.sandbox.tracing.Span;
import io.kuasar.sandbox.tracing.TraceParent;
import io.kuasar.sandbox.tracing.Tracing;
import jdk.net.ExtendedSocketOptions;
import jdk.net.UnixDomainPrincipal;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A ttrpc server on a Unix socket. One virtual thread reads each connection; each call runs on its own virtual
 * thread, so a long {@code Wait} never blocks other calls. Malformed or oversized frames are answered with an error
 * status (or end that connection when the framing itself is lost); the server keeps serving everyone else.
 * Only peers with our own uid and gid may connect, as containerd's own ttrpc servers require, and the socket is
 * never reachable with looser permissions (it is bound in a private directory, then moved into place). The bytes of
 * requests in flight are bounded per server: a reader waits for room before it reads the next request, so a burst
 * of maximum-size requests slows its senders down instead of exhausting the heap.
 */
public final class TtrpcServer implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(TtrpcServer.class);

    private final Path socketPath;
    private final Map<String, TtrpcService> services = new ConcurrentHashMap<>();
    private final Set<Connection> connections = ConcurrentHashMap.newKeySet();
    private final ScheduledExecutorService deadlines;
    private final int maxMessageLength;
    private final AtomicInteger activeCalls = new AtomicInteger();
    /** Bytes of request payloads read and not yet finished with; see the class comment. */
    private final java.util.concurrent.Semaphore inFlightBytes;
    private final int budget;
    private final java.util.concurrent.atomic.AtomicLong acceptFailures = new java.util.concurrent.atomic.AtomicLong();
    public static final int DEFAULT_IN_FLIGHT_BYTES = 16 << 20;
    private ServerSocketChannel listener;
    /** Our own uid and gid as the JDK's principals, read once from the socket we created. */
    private java.nio.file.attribute.PosixFileAttributes owner;
    private volatile boolean closed;
    private volatile CallObserver observer = (service, method, code, nanos) -> {
    };

    /** Told about every finished call (for metrics). */
    @FunctionalInterface
    public interface CallObserver {
        void finished(String service, String method, Status.Code code, long nanos);
    }

    public TtrpcServer observe(CallObserver o) {
        this.observer = o;
        return this;
    }

    public TtrpcServer(Path socketPath) {
        this(socketPath, Frame.MAX_DATA_LENGTH);
    }

    public TtrpcServer(Path socketPath, int maxMessageLength) {
        this(socketPath, maxMessageLength, DEFAULT_IN_FLIGHT_BYTES);
    }

    /**
     * A server without a listener, for connections its owner opens itself ({@link #serve}): a guest agent serves
     * the one byte stream of its virtio-serial port.
     */
    public static TtrpcServer withoutListener() {
        return new TtrpcServer(null, Frame.MAX_DATA_LENGTH, DEFAULT_IN_FLIGHT_BYTES);
    }

    public TtrpcServer(Path socketPath, int maxMessageLength, int maxInFlightBytes) {
        if (maxInFlightBytes < maxMessageLength) {
            throw new IllegalArgumentException("in-flight budget " + maxInFlightBytes
                    + " is below the maximum message length " + maxMessageLength);
        }
        this.socketPath = socketPath == null ? null : socketPath.toAbsolutePath();
        this.maxMessageLength = maxMessageLength;
        this.inFlightBytes = new java.util.concurrent.Semaphore(maxInFlightBytes);
        this.budget = maxInFlightBytes;
        this.deadlines = Executors.newSingleThreadScheduledExecutor(
                Thread.ofPlatform().daemon().name("ttrpc-deadlines").factory());
    }

    public TtrpcServer register(TtrpcService service) {
        services.put(service.name(), service);
        return this;
    }

    public Path socketPath() {
        return socketPath;
    }

    /** The address containerd dials for this server's Task API. */
    public String address() {
        return "ttrpc+unix://" + socketPath;
    }

    public int activeCalls() {
        return activeCalls.get();
    }

    /** How often accept(2) has failed (e.g. out of descriptors). */
    public long acceptFailures() {
        return acceptFailures.get();
    }

    /** Bytes of requests currently held (read and not yet finished with). */
    public int inFlightBytes() {
        return budget - inFlightBytes.availablePermits();
    }

    public synchronized TtrpcServer start() throws IOException {
        if (socketPath == null) {
            throw new IllegalStateException("this server has no socket to listen on; use serve(channel)");
        }
        listener = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        io.kuasar.sandbox.sys.UnixSockets.bindPrivately(socketPath,
                path -> listener.bind(UnixDomainSocketAddress.of(path), 1024));
        owner = Files.readAttributes(socketPath, java.nio.file.attribute.PosixFileAttributes.class,
                java.nio.file.LinkOption.NOFOLLOW_LINKS); // we created the socket: it is owned by our uid/gid
        Thread.ofVirtual().name("ttrpc-accept-" + socketPath.getFileName()).start(this::acceptLoop);
        LOG.info("ttrpc server listening on {}", socketPath);
        return this;
    }

    /**
     * Serves one already-connected byte stream on the calling thread until it ends (end of stream or an error).
     * Calls still running when it ends are treated as after a client disconnect.
     */
    public void serve(java.nio.channels.ByteChannel channel) {
        if (closed) {
            throw new IllegalStateException("the ttrpc server is closed");
        }
        Connection c = new Connection(new FrameChannel(channel, maxMessageLength, inFlightBytes));
        connections.add(c);
        c.serve();
    }

    private void acceptLoop() {
        long backoffMillis = 0;
        while (!closed) {
            SocketChannel ch;
            try {
                ch = listener.accept();
                backoffMillis = 0;
            } catch (ClosedChannelException e) {
                return;
            } catch (IOException e) {
                if (closed) {
                    return;
                }
                // EMFILE/ENFILE and the like: back off as Go's net/http does, instead of spinning on the error.
                acceptFailures.incrementAndGet();
                backoffMillis = backoffMillis == 0 ? 5 : Math.min(backoffMillis * 2, 1000);
                LOG.warn("ttrpc accept on {} failed: {}; retrying in {} ms", socketPath, e.getMessage(), backoffMillis);
                try {
                    Thread.sleep(backoffMillis);
                } catch (InterruptedException ie) {
                    return;
                }
                continue;
            }
            if (!samePeerCredentials(ch)) {
                LOG.warn("rejected a ttrpc connection on {} from another uid/gid", socketPath);
                closeQuietly(ch);
                continue;
            }
            Connection c = new Connection(new FrameChannel(ch, maxMessageLength, inFlightBytes));
            connections.add(c);
            Thread.ofVirtual().name("ttrpc-conn").start(c::serve);
        }
    }

    /** SO_PEERCRED's uid and gid against ours (the JDK's principals compare the numeric ids). */
    private boolean samePeerCredentials(SocketChannel ch) {
        try {
            UnixDomainPrincipal peer = ch.getOption(ExtendedSocketOptions.SO_PEERCRED);
            return peer.user().equals(owner.owner()) && peer.group().equals(owner.group());
        } catch (IOException | UnsupportedOperationException e) {
            return false;
        }
    }

    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        closeQuietly(listener);
        connections.forEach(Connection::close);
        deadlines.shutdownNow();
        if (socketPath == null) {
            return;
        }
        try {
            Files.deleteIfExists(socketPath);
        } catch (IOException e) {
            LOG.warn("could not remove {}: {}", socketPath, e.getMessage());
        }
    }

    private static void closeQuietly(AutoCloseable c) {
        try {
            if (c != null) {
                c.close();
            }
        } catch (Exception ignored) {
            // nothing useful to do
        }
    }

    /** One client connection and its in-flight calls. */
    private final class Connection {
        private final FrameChannel frames;
        private final Map<Integer, Call> calls = new ConcurrentHashMap<>();
        private int lastStreamId;

        Connection(FrameChannel frames) {
            this.frames = frames;
        }

        void serve() {
            try {
                while (true) {
                    Frame frame;
                    try {
                        frame = frames.read();
                    } catch (FrameTooLargeException e) {
                        respond(e.streamId(), Status.RESOURCE_EXHAUSTED.withDescription(e.getMessage()), null);
                        continue;
                    }
                    if (frame == null) {
                        break;
                    }
                    boolean held = false;
                    try {
                        held = dispatch(frame);
                    } finally {
                        if (!held) {
                            inFlightBytes.release(frame.data().length);
                        }
                    }
                }
            } catch (IOException e) {
                if (!closed) {
                    LOG.debug("ttrpc connection ended: {}", e.getMessage());
                }
            } finally {
                close();
            }
        }

        /** Returns true if a call now holds the frame's bytes (it releases them when it finishes). */
        private boolean dispatch(Frame frame) throws IOException {
            switch (frame.type()) {
                case Frame.TYPE_REQUEST -> {
                    return onRequest(frame);
                }
                case Frame.TYPE_DATA -> {
                    Call call = calls.get(frame.streamId());
                    if (call == null || call.inbound == null) {
                        LOG.debug("data frame for unknown stream {}", frame.streamId());
                        return false;
                    }
                    if (!frame.has(Frame.FLAG_NO_DATA)) {
                        call.inbound.add(frame.data());
                    }
                    if (frame.has(Frame.FLAG_REMOTE_CLOSED)) {
                        call.inbound.add(Call.END);
                    }
                }
                default -> respond(frame.streamId(),
                        Status.INVALID_ARGUMENT.withDescription("unexpected frame type " + frame.type()), null);
            }
            return false;
        }

        private boolean onRequest(Frame frame) throws IOException {
            int id = frame.streamId();
            if ((id & 1) == 0) {
                respond(id, Status.INVALID_ARGUMENT.withDescription("StreamID must be odd for client initiated streams"), null);
                return false;
            }
            if (Integer.compareUnsigned(id, lastStreamId) <= 0 || calls.containsKey(id)) {
                respond(id, Status.INVALID_ARGUMENT.withDescription("StreamID cannot be re-used and must increment"), null);
                return false;
            }
            lastStreamId = id;
            Request req;
            try {
                req = Request.parseFrom(frame.data());
            } catch (InvalidProtocolBufferException e) {
                respond(id, Status.INVALID_ARGUMENT.withDescription("malformed ttrpc request: " + e.getMessage()), null);
                return false;
            }
            TtrpcService service = services.get(req.getService());
            TtrpcService.Method method = service == null ? null : service.method(req.getMethod());
            if (method == null) {
                respond(id, Status.UNIMPLEMENTED.withDescription(service == null
                        ? "service " + req.getService() : "method " + req.getMethod()), null);
                return false;
            }
            Map<String, List<String>> md = new LinkedHashMap<>();
            for (KeyValue kv : req.getMetadataList()) {
                md.computeIfAbsent(kv.getKey(), k -> new ArrayList<>()).add(kv.getValue());
            }
            Instant deadline = req.getTimeoutNano() > 0 ? Instant.now().plusNanos(req.getTimeoutNano()) : null;
            CallContext ctx = new CallContext(req.getService(), req.getMethod(), md, deadline);
            Call call = new Call(id, method instanceof TtrpcService.Streaming ? new LinkedBlockingQueue<>() : null,
                    req.getService(), req.getMethod(), frame.data().length,
                    !(method instanceof TtrpcService.Unary u) || u.interruptible());
            calls.put(id, call);
            if (method instanceof TtrpcService.Streaming s) {
                if (!s.streamingClient()) {
                    call.inbound.add(req.getPayload().toByteArray());
                    call.inbound.add(Call.END);
                } else if (frame.has(Frame.FLAG_REMOTE_CLOSED)) {
                    call.inbound.add(Call.END);
                }
            }
            activeCalls.incrementAndGet();
            call.thread = Thread.ofVirtual().name("ttrpc-" + req.getMethod()).start(() -> run(call, ctx, method, req));
            if (deadline != null) {
                try {
                    call.timer = deadlines.schedule(() -> expire(call),
                            Math.max(0, Duration.between(Instant.now(), deadline).toNanos()), TimeUnit.NANOSECONDS);
                } catch (java.util.concurrent.RejectedExecutionException closing) {
                    // the server is closing: the call runs without a timer, its answer goes nowhere
                    LOG.debug("no deadline timer for {}/{}: the server is closing", req.getService(), req.getMethod());
                }
            }
            return true;
        }

        private void run(Call call, CallContext ctx, TtrpcService.Method method, Request req) {
            // containerd's otelttrpc client interceptor sends the W3C context in the call's metadata
            Span span = Tracing.server("ttrpc", ctx.service(), ctx.method(), ctx.first(TraceParent.KEY)).activate();
            try {
                Message result = switch (method) {
                    case TtrpcService.Unary u -> u.invoke(ctx, req.getPayload().toByteArray());
                    case TtrpcService.Streaming s -> {
                        s.handler().handle(ctx, call.stream(this));
                        yield null;
                    }
                };
                finish(call, Status.OK, result);
            } catch (Throwable t) {
                Status status = Statuses.of(t);
                if (status.getCode() == Status.Code.INTERNAL) {
                    LOG.warn("{}/{} failed", ctx.service(), ctx.method(), t);
                }
                span.error(status.getCode() + (status.getDescription() == null ? "" : ": " + status.getDescription()));
                finish(call, status, null);
            } finally {
                span.close();
                activeCalls.decrementAndGet();
                inFlightBytes.release(call.bytes);
            }
        }

        private void expire(Call call) {
            if (finish(call, Status.DEADLINE_EXCEEDED.withDescription("context deadline exceeded"), null)
                    && call.interruptible) {
                call.thread.interrupt();
            }
        }

        /** Sends the final response once; returns false if the call was already finished. */
        private boolean finish(Call call, Status status, Message result) {
            if (!call.done.compareAndSet(false, true)) {
                return false;
            }
            calls.remove(call.id);
            if (call.timer != null) {
                call.timer.cancel(false);
            }
            observer.finished(call.service, call.method, status.getCode(), System.nanoTime() - call.startNanos);
            try {
                respond(call.id, status, result);
            } catch (IOException e) {
                LOG.debug("could not answer stream {}: {}", call.id, e.getMessage());
            }
            return true;
        }

        private void respond(int streamId, Status status, Message result) throws IOException {
            Response.Builder resp = Response.newBuilder();
            if (!status.isOk()) {
                resp.setStatus(Statuses.toProto(status));
            } else if (result != null) {
                ByteString payload = result.toByteString();
                if (payload.size() > frames.maxDataLength() - 64) {
                    resp.setStatus(Statuses.toProto(Status.RESOURCE_EXHAUSTED.withDescription(
                            "response of " + payload.size() + " bytes exceeds maximum message size")));
                } else {
                    resp.setPayload(payload);
                }
            }
            frames.write(new Frame(streamId, Frame.TYPE_RESPONSE, (byte) 0, resp.build().toByteArray()));
        }

        void close() {
            frames.close();
            connections.remove(this);
            // The client is gone: nobody will read these answers, so stop waiting (a blocked Wait); calls that change
            // state run to the end, else a Create cut short would leave a half-made container behind.
            calls.values().forEach(c -> {
                if (c.done.compareAndSet(false, true) && c.thread != null && c.interruptible) {
                    c.thread.interrupt();
                }
                if (c.timer != null) {
                    c.timer.cancel(false);
                }
            });
            calls.clear();
        }
    }

    /** One in-flight call. */
    private static final class Call {
        static final byte[] END = new byte[0];
        final int id;
        final LinkedBlockingQueue<byte[]> inbound;
        final String service;
        final String method;
        final long startNanos = System.nanoTime();
        final AtomicBoolean done = new AtomicBoolean();
        final int bytes;
        final boolean interruptible;
        volatile Thread thread;
        volatile ScheduledFuture<?> timer;
        private boolean ended;

        Call(int id, LinkedBlockingQueue<byte[]> inbound, String service, String method, int bytes,
             boolean interruptible) {
            this.id = id;
            this.bytes = bytes;
            this.interruptible = interruptible;
            this.inbound = inbound;
            this.service = service;
            this.method = method;
        }

        ServerStream stream(Connection conn) {
            return new ServerStream() {
                @Override
                public byte[] recv() throws InterruptedException {
                    if (ended) {
                        return null;
                    }
                    byte[] b = inbound.take();
                    if (b == END) {
                        ended = true;
                        return null;
                    }
                    return b;
                }

                @Override
                public void send(Message message) throws IOException {
                    if (done.get()) {
                        throw new IOException("stream " + id + " is closed");
                    }
                    conn.frames.write(new Frame(id, Frame.TYPE_DATA, (byte) 0, message.toByteArray()));
                }
            };
        }
    }
}
