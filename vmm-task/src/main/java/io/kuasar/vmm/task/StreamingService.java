package io.kuasar.vmm.task;

import com.google.protobuf.Any;
import com.google.protobuf.Empty;
import io.kuasar.api.streaming.v1.StreamInit;
import io.kuasar.api.types.transfer.Data;
import io.kuasar.api.types.transfer.WindowUpdate;
import io.kuasar.sandbox.ttrpc.CallContext;
import io.kuasar.sandbox.ttrpc.ServerStream;
import io.kuasar.sandbox.ttrpc.TtrpcService;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * Kuasar's {@code containerd.services.streaming.v1.Streaming} service in the guest: a process's stdio travels as a
 * stream on the agent connection. The client's first message is {@code StreamInit{id}}, answered with an Empty.
 * Ids end in {@code stdin}, {@code stdout} or {@code stderr}. For output, each chunk the process writes is sent as
 * {@code Data}, and the stream ends when the process closes its end. For stdin, the server grants the client a
 * window ({@code WindowUpdate}) and renews it as it writes the received {@code Data} into the process; the end of
 * the client's stream is the end of the process's stdin.
 *
 * <p>The process side is a FIFO the {@link StreamedRuntime} made for the id; whichever of the stream and the
 * container arrives first waits for the other.
 */
final class StreamingService {
    private static final Logger LOG = LoggerFactory.getLogger(StreamingService.class);
    static final String NAME = "containerd.services.streaming.v1.Streaming";
    static final int WINDOW = 32 * 1024;
    private static final int CHUNK = 32 * 1024;
    /** How long the process side waits for its client to open the stream. */
    private static final long ATTACH_TIMEOUT_SECONDS = 120;

    private final ConcurrentHashMap<String, Endpoint> endpoints = new ConcurrentHashMap<>();

    /**
     * One stream id: the process side (a FIFO, registered by the runtime) and the client side (a stream, when the
     * client opens it), whichever comes first. The copy runs on a platform thread that opens the FIFO as soon as it
     * is registered: opening a FIFO blocks until the other end is opened, and must not wait for a virtual thread
     * that may never be scheduled (a guest with one vCPU has one carrier, pinned by the Create that opens the
     * process's end).
     */
    private static final class Endpoint {
        final CompletableFuture<ServerStream> stream = new CompletableFuture<>();
        final CompletableFuture<Void> done = new CompletableFuture<>();
    }

    TtrpcService service() {
        return TtrpcService.builder(NAME).streaming("Stream", true, this::stream).build();
    }

    private Endpoint endpoint(String id) {
        return endpoints.computeIfAbsent(id, k -> new Endpoint());
    }

    /** Called by the runtime: the FIFO that carries stream {@code id} exists; the copy starts now. */
    void register(String id, Path fifo) {
        Endpoint e = endpoint(id);
        Thread.ofPlatform().daemon().name("stream-" + id).start(() -> {
            try {
                if (id.endsWith("stdin")) {
                    copyIn(id, e, fifo);
                } else {
                    copyOut(id, e, fifo);
                }
                e.done.complete(null);
            } catch (Exception ex) {
                LOG.debug("stream {}: {}", id, ex.getMessage());
                e.done.completeExceptionally(ex);
            } finally {
                forgetLater(id, e);
            }
        });
    }

    /**
     * The process is gone: its stream ends (one opened later is refused), and a copy thread still waiting for the
     * process to open its end of {@code fifo} is released.
     */
    void unregister(String id, Path fifo) {
        Endpoint e = endpoint(id);
        e.done.completeExceptionally(io.grpc.Status.NOT_FOUND.withDescription("stream " + id
                + ": its process is gone").asRuntimeException());
        e.stream.cancel(false);
        if (fifo != null) {
            try (java.io.RandomAccessFile peer = new java.io.RandomAccessFile(fifo.toFile(), "rw")) {
                LOG.trace("released {}", peer); // O_RDWR never blocks on a FIFO, and gives the waiter its peer
            } catch (IOException ignored) {
                // gone already
            }
        }
        forgetLater(id, e);
    }

    /** Forgets an id after a while: a stream that arrives late still learns how its process ended. */
    private void forgetLater(String id, Endpoint e) {
        Thread.ofVirtual().start(() -> {
            try {
                Thread.sleep(60_000);
            } catch (InterruptedException ignored) {
                // forget it now
            }
            endpoints.remove(id, e);
        });
    }

    private void stream(CallContext ctx, ServerStream stream) throws Exception {
        byte[] first = stream.recv();
        if (first == null) {
            return;
        }
        String id = StreamInit.parseFrom(Any.parseFrom(first).getValue()).getId();
        if (id.isEmpty()) {
            throw io.grpc.Status.INVALID_ARGUMENT.withDescription("StreamInit has no id").asRuntimeException();
        }
        stream.send(pack(Empty.getDefaultInstance()));
        Endpoint e = endpoint(id);
        LOG.debug("stream {} opened", id);
        if (!e.done.isDone() && !e.stream.complete(stream)) {
            throw io.grpc.Status.ALREADY_EXISTS.withDescription("stream " + id + " is already open")
                    .asRuntimeException();
        }
        try {
            e.done.get(); // parks: the copy thread does the work (or has ended: then this says how)
        } catch (java.util.concurrent.ExecutionException ex) {
            if (ex.getCause() instanceof Exception cause) {
                throw cause;
            }
            throw ex;
        }
    }

    private ServerStream awaitStream(String id, Endpoint e) throws Exception {
        try {
            CompletableFuture.anyOf(e.stream, e.done).get(ATTACH_TIMEOUT_SECONDS, TimeUnit.SECONDS);
        } catch (TimeoutException ex) {
            throw new IOException("stream " + id + ": no client opened it within " + ATTACH_TIMEOUT_SECONDS + " s");
        } catch (java.util.concurrent.ExecutionException | java.util.concurrent.CancellationException ex) {
            throw new IOException("stream " + id + ": its process is gone");
        }
        if (!e.stream.isDone() || e.stream.isCancelled()) {
            throw new IOException("stream " + id + ": its process is gone");
        }
        return e.stream.join();
    }

    private void copyOut(String id, Endpoint e, Path fifo) throws Exception {
        try (InputStream in = new FileInputStream(fifo.toFile())) {
            ServerStream stream = awaitStream(id, e);
            byte[] buf = new byte[CHUNK];
            int n;
            while ((n = in.read(buf)) >= 0) {
                if (n > 0) {
                    stream.send(pack(Data.newBuilder().setData(com.google.protobuf.ByteString.copyFrom(buf, 0, n))
                            .build()));
                }
            }
        }
        LOG.debug("stream {} ended", id);
    }

    private void copyIn(String id, Endpoint e, Path fifo) throws Exception {
        try (OutputStream out = new FileOutputStream(fifo.toFile())) {
            ServerStream stream = awaitStream(id, e);
            stream.send(pack(WindowUpdate.newBuilder().setUpdate(WINDOW).build()));
            byte[] msg;
            while ((msg = stream.recv()) != null) {
                Any any = Any.parseFrom(msg);
                if (!any.getTypeUrl().endsWith("containerd.types.transfer.Data")) {
                    continue; // Kuasar ignores what it does not expect
                }
                byte[] data = Data.parseFrom(any.getValue()).getData().toByteArray();
                out.write(data);
                out.flush();
                if (data.length > 0) {
                    stream.send(pack(WindowUpdate.newBuilder().setUpdate(data.length).build()));
                }
            }
        }
        LOG.debug("stdin stream {} closed", id);
    }

    /** Kuasar's type URLs are the bare full names (which {@link Any#unpack} does not accept: parse the value). */
    static Any pack(com.google.protobuf.Message m) {
        return Any.newBuilder().setTypeUrl(m.getDescriptorForType().getFullName()).setValue(m.toByteString()).build();
    }
}
