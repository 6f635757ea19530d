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
    /** How long a stream waits for its container to be created before it gives up. */
    private static final long ATTACH_TIMEOUT_SECONDS = 120;

    private final ConcurrentHashMap<String, CompletableFuture<Path>> endpoints = new ConcurrentHashMap<>();

    TtrpcService service() {
        return TtrpcService.builder(NAME).streaming("Stream", true, this::stream).build();
    }

    /** Called by the runtime: the FIFO that carries stream {@code id} is ready. */
    void register(String id, Path fifo) {
        endpoints.computeIfAbsent(id, k -> new CompletableFuture<>()).complete(fifo);
    }

    void unregister(String id) {
        CompletableFuture<Path> f = endpoints.remove(id);
        if (f != null) {
            f.cancel(false);
        }
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
        Path fifo;
        try {
            fifo = endpoints.computeIfAbsent(id, k -> new CompletableFuture<>())
                    .get(ATTACH_TIMEOUT_SECONDS, TimeUnit.SECONDS);
        } catch (TimeoutException e) {
            endpoints.remove(id);
            throw io.grpc.Status.NOT_FOUND.withDescription("stream " + id + ": no process uses it")
                    .asRuntimeException();
        } catch (java.util.concurrent.CancellationException e) {
            throw io.grpc.Status.NOT_FOUND.withDescription("stream " + id + ": its process is gone")
                    .asRuntimeException();
        }
        if (id.endsWith("stdin")) {
            copyIn(id, stream, fifo);
        } else {
            copyOut(id, stream, fifo);
        }
    }

    private void copyOut(String id, ServerStream stream, Path fifo) throws IOException {
        try (InputStream in = new FileInputStream(fifo.toFile())) {
            byte[] buf = new byte[CHUNK];
            int n;
            while ((n = in.read(buf)) >= 0) {
                if (n > 0) {
                    stream.send(pack(Data.newBuilder().setData(com.google.protobuf.ByteString.copyFrom(buf, 0, n))
                            .build()));
                }
            }
        } finally {
            endpoints.remove(id);
        }
        LOG.debug("stream {} ended", id);
    }

    private void copyIn(String id, ServerStream stream, Path fifo) throws Exception {
        stream.send(pack(WindowUpdate.newBuilder().setUpdate(WINDOW).build()));
        try (OutputStream out = new FileOutputStream(fifo.toFile())) {
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
        } finally {
            endpoints.remove(id);
        }
        LOG.debug("stdin stream {} closed", id);
    }

    /** Kuasar's type URLs are the bare full names (which {@link Any#unpack} does not accept: parse the value). */
    static Any pack(com.google.protobuf.Message m) {
        return Any.newBuilder().setTypeUrl(m.getDescriptorForType().getFullName()).setValue(m.toByteString()).build();
    }
}
