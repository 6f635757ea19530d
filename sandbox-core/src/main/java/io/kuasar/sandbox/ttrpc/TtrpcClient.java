package io.kuasar.sandbox.ttrpc;

import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Message;
import com.google.protobuf.Parser;
import io.grpc.Status;
import io.kuasar.api.ttrpc.KeyValue;
import io.kuasar.api.ttrpc.Request;
import io.kuasar.api.ttrpc.Response;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * A ttrpc client on one Unix socket connection. Calls are multiplexed on odd, increasing stream ids; one virtual
 * thread reads responses. Errors arrive as {@link io.grpc.StatusRuntimeException}, like grpc-java's.
 */
public final class TtrpcClient implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(TtrpcClient.class);

    private final FrameChannel frames;
    private final Map<Integer, PendingCall> pending = new ConcurrentHashMap<>();
    private final Object idLock = new Object();
    private int nextStreamId = 1;
    private volatile boolean closed;

    private TtrpcClient(FrameChannel frames) {
        this.frames = frames;
        Thread.ofVirtual().name("ttrpc-client-reader").start(this::readLoop);
    }

    public static TtrpcClient connect(Path socket) throws IOException {
        SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            ch.connect(UnixDomainSocketAddress.of(socket));
        } catch (IOException e) {
            ch.close();
            throw new IOException("cannot connect to ttrpc server at " + socket + ": " + e.getMessage(), e);
        }
        return new TtrpcClient(new FrameChannel(ch, Frame.MAX_DATA_LENGTH));
    }

    /**
     * A client on a stream that is already connected, e.g. one a hybrid vsock handshake (Cloud Hypervisor's
     * {@code CONNECT <port>}) turned into a byte stream to the guest.
     */
    public static TtrpcClient over(SocketChannel connected) {
        return new TtrpcClient(new FrameChannel(connected, Frame.MAX_DATA_LENGTH));
    }

    /** Accepts {@code ttrpc+unix:///path}, {@code unix:///path} or a bare absolute path. */
    public static TtrpcClient connect(String address) throws IOException {
        String a = address;
        if (a.startsWith("ttrpc+")) {
            a = a.substring("ttrpc+".length());
        }
        if (a.startsWith("unix://")) {
            a = a.substring("unix://".length());
        }
        return connect(Path.of(a));
    }

    public <R extends Message> R call(String service, String method, Message request, Parser<R> parser,
                                      Duration timeout) {
        return call(service, method, request, parser, timeout, Map.of());
    }

    public <R extends Message> R call(String service, String method, Message request, Parser<R> parser,
                                      Duration timeout, Map<String, String> metadata) {
        Request.Builder req = Request.newBuilder().setService(service).setMethod(method)
                .setPayload(request.toByteString());
        if (timeout != null) {
            req.setTimeoutNano(timeout.toNanos());
        }
        metadata.forEach((k, v) -> req.addMetadata(KeyValue.newBuilder().setKey(k).setValue(v)));
        PendingCall call = new PendingCall(null);
        int id = send(req.build(), (byte) 0, call);
        try {
            Response resp = timeout == null ? call.response.get()
                    : call.response.get(timeout.toNanos(), TimeUnit.NANOSECONDS);
            if (resp.hasStatus() && resp.getStatus().getCode() != 0) {
                throw Statuses.fromProto(resp.getStatus());
            }
            return parser.parseFrom(resp.getPayload());
        } catch (TimeoutException e) {
            throw Status.DEADLINE_EXCEEDED.withDescription(service + "/" + method + " timed out after " + timeout)
                    .asRuntimeException();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw Status.CANCELLED.withDescription("interrupted").asRuntimeException();
        } catch (ExecutionException e) {
            throw Status.UNAVAILABLE.withDescription(e.getCause().getMessage()).asRuntimeException();
        } catch (InvalidProtocolBufferException e) {
            throw Status.INTERNAL.withDescription("malformed response: " + e.getMessage()).asRuntimeException();
        } finally {
            pending.remove(id);
        }
    }

    /** Opens a stream; {@code request} (may be null) is sent with the opening frame. */
    public ClientStream stream(String service, String method, Message request, boolean streamingClient) {
        Request.Builder req = Request.newBuilder().setService(service).setMethod(method);
        if (request != null) {
            req.setPayload(request.toByteString());
        }
        PendingCall call = new PendingCall(new LinkedBlockingQueue<>());
        byte flags = streamingClient ? Frame.FLAG_REMOTE_OPEN : Frame.FLAG_REMOTE_CLOSED;
        int id = send(req.build(), flags, call);
        return new ClientStream(id, call);
    }

    private int send(Request req, byte flags, PendingCall call) {
        if (closed) {
            throw Status.UNAVAILABLE.withDescription("ttrpc client is closed").asRuntimeException();
        }
        int id;
        synchronized (idLock) {
            id = nextStreamId;
            nextStreamId += 2;
            pending.put(id, call);
            try {
                frames.write(new Frame(id, Frame.TYPE_REQUEST, flags, req.toByteArray()));
            } catch (IOException e) {
                pending.remove(id);
                throw Status.UNAVAILABLE.withDescription("ttrpc send failed: " + e.getMessage()).asRuntimeException();
            }
        }
        return id;
    }

    private void readLoop() {
        try {
            while (true) {
                Frame f = frames.read();
                if (f == null) {
                    break;
                }
                PendingCall call = pending.get(f.streamId());
                if (call == null) {
                    continue;
                }
                if (f.type() == Frame.TYPE_DATA && call.data != null) {
                    if (!f.has(Frame.FLAG_NO_DATA)) {
                        call.data.add(f.data());
                    }
                } else if (f.type() == Frame.TYPE_RESPONSE) {
                    try {
                        call.response.complete(Response.parseFrom(f.data()));
                    } catch (InvalidProtocolBufferException e) {
                        call.response.completeExceptionally(e);
                    }
                    if (call.data != null) {
                        call.data.add(ClientStream.END);
                    }
                }
            }
        } catch (IOException e) {
            LOG.debug("ttrpc client connection ended: {}", e.getMessage());
        } finally {
            closed = true;
            IOException gone = new IOException("ttrpc connection closed");
            pending.values().forEach(c -> {
                c.response.completeExceptionally(gone);
                if (c.data != null) {
                    c.data.add(ClientStream.END);
                }
            });
        }
    }

    public boolean isClosed() {
        return closed;
    }

    @Override
    public void close() {
        closed = true;
        frames.close();
    }

    private record PendingCall(LinkedBlockingQueue<byte[]> data, CompletableFuture<Response> response) {
        PendingCall(LinkedBlockingQueue<byte[]> data) {
            this(data, new CompletableFuture<>());
        }
    }

    /** The client's side of a streaming call. */
    public final class ClientStream {
        static final byte[] END = new byte[0];
        private final int id;
        private final PendingCall call;

        private ClientStream(int id, PendingCall call) {
            this.id = id;
            this.call = call;
        }

        public void send(Message message) throws IOException {
            frames.write(new Frame(id, Frame.TYPE_DATA, (byte) 0, message.toByteArray()));
        }

        public void closeSend() throws IOException {
            frames.write(new Frame(id, Frame.TYPE_DATA, (byte) (Frame.FLAG_REMOTE_CLOSED | Frame.FLAG_NO_DATA),
                    new byte[0]));
        }

        /** The next message from the server, or null once the server has finished (see {@link #status()}). */
        public byte[] recv() throws InterruptedException {
            byte[] b = call.data.take();
            if (b == END) {
                call.data.add(END);
                return null;
            }
            return b;
        }

        /** Waits for the final status; throws it as a StatusRuntimeException if it is not OK. */
        public void status() throws InterruptedException {
            try {
                Response r = call.response.get();
                if (r.hasStatus() && r.getStatus().getCode() != 0) {
                    throw Statuses.fromProto(r.getStatus());
                }
            } catch (ExecutionException e) {
                throw Status.UNAVAILABLE.withDescription(e.getCause().getMessage()).asRuntimeException();
            } finally {
                pending.remove(id);
            }
        }
    }
}
