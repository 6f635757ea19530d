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

/**
 * Kuasar's {@code containerd.services.streaming.v1.Streaming} service in the guest: a process's stdio travels as a
 * stream on the agent connection. The client's first message is {@code StreamInit{id}}, answered with an Empty.
 * Ids end in {@code stdin}, {@code stdout} or {@code stderr}. For output, each chunk the process writes is sent as
 * {@code Data}, and the stream ends when the process closes its end. For stdin, the server grants the client a
 * window ({@code WindowUpdate}) and renews it as it writes the received {@code Data} into the process; the end of
 * the client's stream is the end of the process's stdin.
 *
 * <p>Streams survive their client (Kuasar's preemption): when the agent connection drops (the sandboxer restarted)
 * or a new stream opens with the same id, the process side stays as it is and the next stream carries on where the
 * last one stopped. An output chunk that could not be sent is sent first on the next stream; while no client is
 * attached nothing is read, so a chatty process waits on its full pipe rather than losing output.
 *
 * <p>The process side is a FIFO the {@link StreamedRuntime} made for the id; whichever of the stream and the
 * container arrives first waits for the other.
 */
final class StreamingService {
    private static final Logger LOG = LoggerFactory.getLogger(StreamingService.class);
    static final String NAME = "containerd.services.streaming.v1.Streaming";
    static final int WINDOW = 32 * 1024;
    private static final int CHUNK = 32 * 1024;
    /** How long the process side waits for its client to open the stream the first time. */
    private static final long ATTACH_TIMEOUT_MILLIS = 120_000;

    private final ConcurrentHashMap<String, Endpoint> endpoints = new ConcurrentHashMap<>();

    /**
     * One stream id: the process side (a FIFO, registered by the runtime) and the client's stream currently
     * attached to it, if any. The copy runs on a platform thread that opens the FIFO as soon as it is registered:
     * opening a FIFO blocks until the other end is opened, and must not wait for a virtual thread that may never be
     * scheduled (a guest with one vCPU has one carrier, pinned by the Create that opens the process's end).
     */
    private static final class Endpoint {
        /** The process side is finished (normally, or exceptionally when the process went away). */
        final CompletableFuture<Void> done = new CompletableFuture<>();
        /** stdin only: the process's end of the FIFO, once the copy thread has opened it. */
        final CompletableFuture<OutputStream> stdin = new CompletableFuture<>();
        private Attachment current;
        private boolean everAttached;

        /** A client stream on this id; {@code released} completes when it is replaced or its connection is gone. */
        record Attachment(ServerStream stream, CompletableFuture<Void> released) {
        }

        synchronized Attachment attach(ServerStream s) {
            if (current != null) {
                current.released().complete(null); // preempted by the newer stream
            }
            current = new Attachment(s, new CompletableFuture<>());
            everAttached = true;
            notifyAll();
            return current;
        }

        synchronized void detach(Attachment a) {
            a.released().complete(null);
            if (current == a) {
                current = null;
            }
        }

        synchronized void finish(Throwable failure) {
            if (failure == null) {
                done.complete(null);
            } else {
                done.completeExceptionally(failure);
            }
            notifyAll();
        }

        /**
         * The attached stream other than {@code failed} (a stream a send just failed on), waiting for one as long
         * as the process side lasts; null once it is finished. Only the first attach is bounded in time.
         */
        synchronized ServerStream await(String id, ServerStream failed) throws IOException, InterruptedException {
            if (failed != null && current != null && current.stream() == failed) {
                current.released().complete(null);
                current = null;
            }
            long deadline = System.currentTimeMillis() + ATTACH_TIMEOUT_MILLIS;
            while (current == null && !done.isDone()) {
                long left = everAttached ? 0 : deadline - System.currentTimeMillis();
                if (!everAttached && left <= 0) {
                    throw new IOException("stream " + id + ": no client opened it within "
                            + ATTACH_TIMEOUT_MILLIS / 1000 + " s");
                }
                wait(left);
            }
            return done.isDone() ? null : current.stream();
        }
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
                    // the process's end of stdin: the attached stream's handler writes into it (and ends it)
                    e.stdin.complete(new FileOutputStream(fifo.toFile()));
                } else {
                    copyOut(id, e, fifo);
                    end(id, e, null);
                }
            } catch (Exception ex) {
                LOG.debug("stream {}: {}", id, ex.getMessage());
                end(id, e, ex);
            }
        });
    }

    /**
     * The process is gone: its stream ends (one opened later is refused), and a copy thread still waiting for the
     * process to open its end of {@code fifo} is released.
     */
    void unregister(String id, Path fifo) {
        Endpoint e = endpoint(id);
        end(id, e, io.grpc.Status.NOT_FOUND.withDescription("stream " + id + ": its process is gone")
                .asRuntimeException());
        if (fifo != null) {
            try (java.io.RandomAccessFile peer = new java.io.RandomAccessFile(fifo.toFile(), "rw")) {
                LOG.trace("released {}", peer); // O_RDWR never blocks on a FIFO, and gives the waiter its peer
            } catch (IOException ignored) {
                // gone already
            }
        }
        e.stdin.thenAccept(StreamingService::closeQuietly);
    }

    /** The process side of {@code id} is finished: its stream ends, and the id is forgotten a while later. */
    private void end(String id, Endpoint e, Throwable failure) {
        e.finish(failure);
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
        if (e.done.isDone()) {
            rethrow(e); // the process side has finished: say how
            return;
        }
        Endpoint.Attachment a = e.attach(stream);
        LOG.debug("stream {} attached", id);
        try {
            if (id.endsWith("stdin")) {
                copyIn(id, e, a);
            } else {
                CompletableFuture.anyOf(e.done, a.released()).get(); // the copy thread does the work
                if (e.done.isDone()) {
                    rethrow(e);
                }
            }
        } catch (InterruptedException ex) {
            // the connection is gone (the sandboxer went away): the process side waits for the next stream
            LOG.info("stream {}: its client went away; waiting for it to re-attach", id);
            e.detach(a);
            throw ex;
        } catch (java.util.concurrent.ExecutionException ex) {
            rethrow(e);
        } finally {
            if (e.done.isDone()) {
                e.detach(a);
            }
        }
    }

    private static void rethrow(Endpoint e) throws Exception {
        try {
            e.done.get();
        } catch (java.util.concurrent.ExecutionException ex) {
            if (ex.getCause() instanceof Exception cause) {
                throw cause;
            }
            throw ex;
        }
    }

    private void copyOut(String id, Endpoint e, Path fifo) throws Exception {
        try (InputStream in = new FileInputStream(fifo.toFile())) {
            ServerStream stream = e.await(id, null);
            byte[] buf = new byte[CHUNK];
            int n;
            while (stream != null && (n = in.read(buf)) >= 0) {
                if (n == 0) {
                    continue;
                }
                Any chunk = pack(Data.newBuilder().setData(com.google.protobuf.ByteString.copyFrom(buf, 0, n)).build());
                while (stream != null) {
                    try {
                        stream.send(chunk);
                        break;
                    } catch (IOException ex) {
                        LOG.info("stream {}: {}; waiting for the client to re-attach", id, ex.getMessage());
                        stream = e.await(id, stream); // the chunk goes out first on the next stream
                    }
                }
            }
        }
        LOG.debug("stream {} ended", id);
    }

    /**
     * Writes what the attached stream carries into the process's stdin. The client closing its side is the end of
     * the process's stdin; a client whose connection dropped (an InterruptedException here) leaves it open for the
     * next stream.
     */
    private void copyIn(String id, Endpoint e, Endpoint.Attachment a) throws Exception {
        OutputStream out = (OutputStream) CompletableFuture.anyOf(e.stdin, e.done).get();
        if (out == null) {
            rethrow(e);
            return;
        }
        ServerStream stream = a.stream();
        stream.send(pack(WindowUpdate.newBuilder().setUpdate(WINDOW).build()));
        byte[] msg;
        while ((msg = stream.recv()) != null) {
            if (a.released().isDone()) {
                return; // a newer stream has taken over
            }
            Any any = Any.parseFrom(msg);
            if (!any.getTypeUrl().endsWith("containerd.types.transfer.Data")) {
                continue; // Kuasar ignores what it does not expect
            }
            byte[] data = Data.parseFrom(any.getValue()).getData().toByteArray();
            try {
                out.write(data);
                out.flush();
            } catch (IOException ex) {
                end(id, e, ex); // the process closed its stdin
                throw ex;
            }
            if (data.length > 0) {
                stream.send(pack(WindowUpdate.newBuilder().setUpdate(data.length).build()));
            }
        }
        if (!a.released().isDone()) {
            closeQuietly(out);
            end(id, e, null);
            LOG.debug("stdin stream {} closed", id);
        }
    }

    private static void closeQuietly(OutputStream out) {
        try {
            out.close();
        } catch (IOException ignored) {
            // the process has gone
        }
    }

    /** Kuasar's type URLs are the bare full names (which {@link Any#unpack} does not accept: parse the value). */
    static Any pack(com.google.protobuf.Message m) {
        return Any.newBuilder().setTypeUrl(m.getDescriptorForType().getFullName()).setValue(m.toByteString()).build();
    }
}
