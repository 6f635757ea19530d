package io.kuasar.vmm.task;

import com.google.protobuf.Any;
import io.kuasar.api.task.v3.CreateTaskRequest;
import io.kuasar.api.task.v3.ExecProcessRequest;
import io.kuasar.api.types.task.ProcessInfo;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.sys.Linux;
import io.kuasar.sandbox.task.Container;
import io.kuasar.sandbox.task.ContainerRuntime;
import io.kuasar.sandbox.task.TaskRecord;
import io.kuasar.sandbox.ttrpc.CallContext;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;

/**
 * The guest's container runtime: the host runtime (runc) behind stdio that arrives as streams. A stdio string
 * that names a stream (Kuasar's form: anything with {@code streaming_id=<id>} or {@code stream_id=<id>}) becomes a
 * FIFO in the guest, given to runc as containerd's FIFOs are on a host, and joined to the stream by
 * {@link StreamingService}. Other strings (FIFO paths, file:// URIs inside the guest) pass through unchanged.
 */
final class StreamedRuntime implements ContainerRuntime {
    static final Path IO_DIR = Path.of("/run/kuasar/io");
    /** The pod's shared directory, where the sandboxer lays out each container's bundle. */
    static final Path STATE_DIR = Path.of("/run/kuasar/state");

    private final ContainerRuntime delegate;
    private final StreamingService streams;
    private final Path ioDir;

    StreamedRuntime(ContainerRuntime delegate, StreamingService streams, Path ioDir) {
        this.delegate = delegate;
        this.streams = streams;
        this.ioDir = ioDir;
    }

    /**
     * Kuasar's flow (its containerd fork, iSulad dialing this agent): the request names the client's own bundle and
     * rootfs, and the sandboxer laid the container out in the shared directory at Update: that is the bundle.
     */
    @Override
    public CreateTaskRequest resolve(CreateTaskRequest request) {
        Path prepared = STATE_DIR.resolve(request.getId());
        if (!Files.exists(Path.of(request.getBundle()).resolve("config.json"))
                && Files.exists(prepared.resolve("config.json"))) {
            return request.toBuilder().setBundle(prepared.toString()).clearRootfs().build();
        }
        return delegate.resolve(request);
    }

    @Override
    public Container create(CallContext ctx, CreateTaskRequest request) throws Exception {
        List<String> ids = new ArrayList<>();
        CreateTaskRequest.Builder b = request.toBuilder();
        b.setStdin(fifoFor(request.getStdin(), ids)).setStdout(fifoFor(request.getStdout(), ids))
                .setStderr(fifoFor(request.getStderr(), ids));
        org.slf4j.LoggerFactory.getLogger(StreamedRuntime.class).debug("container {}: creating with stdio {}",
                request.getId(), ids);
        try {
            return new Streamed(delegate.create(ctx, b.build()), ids);
        } catch (Exception e) {
            release(ids);
            throw e;
        }
    }

    @Override
    public Container recover(TaskRecord record) {
        return null; // a guest's state lives as long as the guest: nothing to recover
    }

    /** The stream id in a stdio string, or null if it names no stream. */
    static String streamId(String stdio) {
        if (stdio == null || stdio.isEmpty()) {
            return null;
        }
        for (String key : new String[]{"streaming_id=", "stream_id="}) {
            int i = stdio.indexOf(key);
            if (i >= 0) {
                String id = stdio.substring(i + key.length());
                int amp = id.indexOf('&');
                return amp < 0 ? id : id.substring(0, amp);
            }
        }
        return null;
    }

    private String fifoFor(String stdio, List<String> ids) throws IOException {
        String id = streamId(stdio);
        if (id == null) {
            return stdio;
        }
        if (!io.kuasar.sandbox.state.Ids.isValid(id)) {
            throw io.grpc.Status.INVALID_ARGUMENT.withDescription("stream id " + id + " is not a valid name")
                    .asRuntimeException();
        }
        Files.createDirectories(ioDir);
        Path fifo = ioDir.resolve(id);
        Files.deleteIfExists(fifo);
        Linux.mkfifo(fifo.toString(), 0600);
        ids.add(id);
        streams.register(id, fifo);
        return fifo.toString();
    }

    private void release(List<String> ids) {
        for (String id : ids) {
            streams.unregister(id, ioDir.resolve(id));
            try {
                Files.deleteIfExists(ioDir.resolve(id));
            } catch (IOException ignored) {
                // a tmpfs file: gone with the guest anyway
            }
        }
    }

    /** A container whose stdio (and its exec processes') may be streams. */
    private final class Streamed implements Container {
        private final Container c;
        private final List<String> ids;

        Streamed(Container c, List<String> ids) {
            this.c = c;
            this.ids = ids;
        }

        @Override
        public String sandboxId() {
            return c.sandboxId();
        }

        @Override
        public int initPid() {
            return c.initPid();
        }

        @Override
        public CompletableFuture<ExitStatus> initExit() {
            return c.initExit();
        }

        @Override
        public void start() throws Exception {
            c.start();
        }

        @Override
        public Exec exec(ExecProcessRequest request) throws Exception {
            List<String> execIds = new ArrayList<>();
            ExecProcessRequest.Builder b = request.toBuilder();
            b.setStdin(fifoFor(request.getStdin(), execIds)).setStdout(fifoFor(request.getStdout(), execIds))
                    .setStderr(fifoFor(request.getStderr(), execIds));
            Exec e;
            try {
                e = c.exec(b.build());
            } catch (Exception ex) {
                release(execIds);
                throw ex;
            }
            return new Exec() {
                @Override
                public int start() throws Exception {
                    return e.start();
                }

                @Override
                public CompletableFuture<ExitStatus> exit() {
                    return e.exit();
                }

                @Override
                public boolean kill(int signal) throws Exception {
                    return e.kill(signal);
                }

                @Override
                public void resizePty(int width, int height) throws Exception {
                    e.resizePty(width, height);
                }

                @Override
                public void closeStdin() throws Exception {
                    e.closeStdin();
                }

                @Override
                public void delete() throws Exception {
                    try {
                        e.delete();
                    } finally {
                        release(execIds);
                    }
                }
            };
        }

        @Override
        public void kill(int signal, boolean all) throws Exception {
            c.kill(signal, all);
        }

        @Override
        public void delete() throws Exception {
            try {
                c.delete();
            } finally {
                release(ids);
            }
        }

        @Override
        public List<ProcessInfo> pids() throws Exception {
            return c.pids();
        }

        @Override
        public Any stats() throws Exception {
            return c.stats();
        }

        @Override
        public void update(Any resources) throws Exception {
            c.update(resources);
        }

        @Override
        public void pause() throws Exception {
            c.pause();
        }

        @Override
        public void resume() throws Exception {
            c.resume();
        }

        @Override
        public void resizePty(int width, int height) throws Exception {
            c.resizePty(width, height);
        }

        @Override
        public void closeStdin() throws Exception {
            c.closeStdin();
        }

        @Override
        public boolean watchOom(Runnable onOom) {
            return c.watchOom(onOom);
        }

        @Override
        public Map<String, String> facts() {
            return c.facts();
        }
    }
}
