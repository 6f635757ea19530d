package io.kuasar.vmm.forward;

import com.google.protobuf.Any;
import com.google.protobuf.ByteString;
import io.grpc.Status;
import io.kuasar.api.streaming.v1.StreamInit;
import io.kuasar.api.types.transfer.Data;
import io.kuasar.api.types.transfer.WindowUpdate;
import io.kuasar.sandbox.task.FifoKeeper;
import io.kuasar.sandbox.ttrpc.TtrpcClient;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.File;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.RandomAccessFile;
import java.net.URI;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Semaphore;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Carries one process's stdio between containerd's FIFOs on the host and the process in the guest, as streams of
 * Kuasar's Streaming service on the agent connection. Output: each Data message is written to containerd's FIFO,
 * and the FIFO is closed when the guest ends the stream (the process closed its output), which is the end of
 * file containerd's CRI waits for. Stdin: what containerd writes is sent as Data within the window the guest
 * grants; the end of containerd's FIFO ends the stream.
 */
final class StdioBridge implements AutoCloseable {
    /** No stdio at all (a container found stopped after a restart). */
    static final StdioBridge NONE = new StdioBridge("", "", "", "", FifoKeeper.NONE);
    private static final Logger LOG = LoggerFactory.getLogger(StdioBridge.class);
    static final String STREAMING = "containerd.services.streaming.v1.Streaming";
    private static final AtomicLong SEQUENCE = new AtomicLong();
    private static final String RUN = Long.toHexString(System.nanoTime() & 0xffffffL);

    private final List<Pump> pumps = new ArrayList<>();
    private final String base;
    private final FifoKeeper keeper;
    private final String stdin;
    private final String stdout;
    private final String stderr;

    /** The guest-side stdio strings (stream URLs), in the order stdin, stdout, stderr; empty where none. */
    private StdioBridge(String base, String stdin, String stdout, String stderr, FifoKeeper keeper) {
        this.base = base;
        this.keeper = keeper;
        this.stdin = stdin;
        this.stdout = stdout;
        this.stderr = stderr;
    }

    String stdin() {
        return stdin;
    }

    String stdout() {
        return stdout;
    }

    String stderr() {
        return stderr;
    }

    /** The stream ids' common part: kept in the container's record, so a restarted daemon can re-attach. */
    String base() {
        return base;
    }

    /**
     * Opens the streams for whichever of the host's stdio strings are set. containerd's FIFOs are also handed to
     * the keeper, so that they stay open if this daemon dies.
     */
    static StdioBridge open(TtrpcClient agent, FifoKeeper keeper, String owner, String hostStdin, String hostStdout,
                            String hostStderr) throws IOException {
        return attach(agent, keeper, owner, "io" + RUN + "-" + SEQUENCE.incrementAndGet(), hostStdin, hostStdout,
                hostStderr);
    }

    /**
     * Re-attaches to the streams of a process after a restart of this daemon: the guest kept the process's side
     * (and any output it could not send), the keeper kept containerd's FIFOs open.
     */
    static StdioBridge attach(TtrpcClient agent, FifoKeeper keeper, String owner, String base, String hostStdin,
                              String hostStdout, String hostStderr) throws IOException {
        File in = fifo(owner, "stdin", hostStdin);
        File out = fifo(owner, "stdout", hostStdout);
        File err = fifo(owner, "stderr", hostStderr);
        StdioBridge b = new StdioBridge(base, in == null ? "" : url(base + "-stdin"),
                out == null ? "" : url(base + "-stdout"), err == null ? "" : url(base + "-stderr"), keeper);
        try {
            if (in != null) {
                keeper.hold(in.getPath());
                b.pumps.add(Pump.stdin(agent, keeper, base + "-stdin", in));
            }
            if (out != null) {
                keeper.hold(out.getPath());
                b.pumps.add(Pump.output(agent, keeper, base + "-stdout", out));
            }
            if (err != null) {
                keeper.hold(err.getPath());
                b.pumps.add(Pump.output(agent, keeper, base + "-stderr", err));
            }
        } catch (IOException | RuntimeException e) {
            b.close();
            throw e;
        }
        return b;
    }

    /** Kuasar's stream URL form; the guest takes the id after {@code streaming_id=}. */
    private static String url(String id) {
        return "ttrpc+agent://stream?streaming_id=" + id;
    }

    /** Ends the stdin stream (containerd's CloseIO). */
    void closeStdin() {
        for (Pump p : pumps) {
            if (p.stdin) {
                p.close();
            }
        }
    }

    /** Stops the pumps that are still running (the process is gone, or never started); the keeper lets go. */
    @Override
    public void close() {
        pumps.forEach(Pump::close);
        pumps.forEach(p -> keeper.drop(p.hostFile.getPath()));
    }

    private static File fifo(String owner, String stream, String value) {
        if (value == null || value.isEmpty()) {
            return null;
        }
        if (value.startsWith("/")) {
            return new File(value);
        }
        try {
            URI uri = URI.create(value);
            if (("fifo".equals(uri.getScheme()) || "file".equals(uri.getScheme())) && uri.getPath() != null) {
                return new File(uri.getPath());
            }
        } catch (IllegalArgumentException ignored) {
            // reported below
        }
        throw Status.INVALID_ARGUMENT.withDescription(owner + ": " + stream + " " + value
                + " is not supported; use a FIFO path or a file:// URI").asRuntimeException();
    }

    /** One direction of one stream. */
    private static final class Pump {
        private final TtrpcClient.ClientStream stream;
        private final FifoKeeper keeper;
        private final File hostFile;
        private final boolean stdin;
        private volatile boolean closed;

        private Pump(TtrpcClient.ClientStream stream, FifoKeeper keeper, File hostFile, boolean stdin) {
            this.stream = stream;
            this.keeper = keeper;
            this.hostFile = hostFile;
            this.stdin = stdin;
        }

        private static TtrpcClient.ClientStream openStream(TtrpcClient agent, String id) throws IOException {
            TtrpcClient.ClientStream s = agent.stream(STREAMING, "Stream", null, true);
            s.send(Any.newBuilder().setTypeUrl(StreamInit.getDescriptor().getFullName())
                    .setValue(StreamInit.newBuilder().setId(id).build().toByteString()).build());
            return s;
        }

        static Pump output(TtrpcClient agent, FifoKeeper keeper, String id, File host) throws IOException {
            Pump p = new Pump(openStream(agent, id), keeper, host, false);
            // platform threads: opening a FIFO pins a virtual thread's carrier until the other end is opened
            Thread.ofPlatform().daemon().name("stdio-" + id).start(p::copyOut);
            return p;
        }

        static Pump stdin(TtrpcClient agent, FifoKeeper keeper, String id, File host) throws IOException {
            Pump p = new Pump(openStream(agent, id), keeper, host, true);
            Thread.ofPlatform().daemon().name("stdio-" + id).start(p::copyIn);
            return p;
        }

        private void copyOut() {
            try {
                byte[] ack = stream.recv(); // the guest's Empty
                if (ack == null) {
                    return;
                }
                try (OutputStream out = new FileOutputStream(hostFile)) {
                    byte[] m;
                    while ((m = stream.recv()) != null) {
                        Any any = Any.parseFrom(m);
                        if (any.getTypeUrl().endsWith("containerd.types.transfer.Data")) {
                            out.write(Data.parseFrom(any.getValue()).getData().toByteArray());
                        }
                    }
                    keeper.drop(hostFile.getPath()); // the process closed its output: containerd sees the end now
                }
                stream.status();
            } catch (Exception e) {
                if (!closed) {
                    LOG.debug("output stream to {} ended: {}", hostFile, e.getMessage());
                }
            }
        }

        private void copyIn() {
            Semaphore window = new Semaphore(0);
            try {
                if (stream.recv() == null) {
                    return; // no Empty: the stream is gone
                }
                Thread.ofVirtual().start(() -> {
                    try {
                        byte[] m;
                        while ((m = stream.recv()) != null) {
                            Any any = Any.parseFrom(m);
                            if (any.getTypeUrl().endsWith("containerd.types.transfer.WindowUpdate")) {
                                window.release(WindowUpdate.parseFrom(any.getValue()).getUpdate());
                            }
                        }
                    } catch (Exception e) {
                        LOG.debug("stdin window reader for {} ended: {}", hostFile, e.getMessage());
                    }
                    window.release(Integer.MAX_VALUE / 2); // the stream ended: unblock the sender
                });
                try (InputStream in = new FileInputStream(hostFile)) {
                    byte[] buf = new byte[32 * 1024];
                    while (!closed) {
                        int n = in.read(buf);
                        if (n < 0) {
                            break; // (only without a keeper: it holds a write end until CloseIO)
                        }
                        int sent = 0;
                        while (sent < n) {
                            int chunk = Math.min(n - sent, Math.max(1, window.availablePermits()));
                            window.acquire(chunk);
                            stream.send(Any.newBuilder().setTypeUrl(Data.getDescriptor().getFullName())
                                    .setValue(Data.newBuilder().setData(ByteString.copyFrom(buf, sent, chunk)).build()
                                            .toByteString()).build());
                            sent += chunk;
                        }
                    }
                }
                stream.closeSend();
            } catch (Exception e) {
                if (!closed) {
                    LOG.debug("stdin stream from {} ended: {}", hostFile, e.getMessage());
                }
            }
        }

        /**
         * Ends the pump. A thread blocked opening or reading containerd's FIFO is released by opening the other
         * end ourselves for a moment, which gives it its peer and then an end of file.
         */
        void close() {
            if (closed) {
                return;
            }
            closed = true;
            if (stdin) {
                try {
                    stream.closeSend();
                } catch (IOException ignored) {
                    // the connection is gone already
                }
            }
            Thread.ofPlatform().daemon().start(() -> {
                try (RandomAccessFile peer = new RandomAccessFile(hostFile, "rw")) { // O_RDWR never blocks on a FIFO
                    LOG.trace("released {}", peer);
                } catch (IOException ignored) {
                    // nobody was waiting, or the FIFO is gone
                }
            });
        }
    }
}
