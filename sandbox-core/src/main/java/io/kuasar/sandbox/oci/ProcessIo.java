package io.kuasar.sandbox.oci;

import io.grpc.Status;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.File;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.net.URI;
import java.util.ArrayList;
import java.util.List;

/**
 * The stdio of one container or exec process as containerd hands it over: FIFO paths (CRI, ctr), {@code file://}
 * log paths, or nothing. The process gets the FIFOs directly, so no byte passes through this daemon. While it
 * runs, we hold each output FIFO open read-write: that keeps a writer from dying of SIGPIPE while containerd is
 * restarting and has no reader on it (containerd's runc shim does the same).
 */
public final class ProcessIo implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(ProcessIo.class);
    private static final File DEV_NULL = new File("/dev/null");
    /** The runtime's own stdio when the process has a terminal (the process talks to the pty instead). */
    public static final OciRuntime.Stdio NULL_STDIO = new OciRuntime.Stdio(DEV_NULL, DEV_NULL, DEV_NULL);

    private final File stdin;
    private final File stdout;
    private final File stderr;
    private final List<RandomAccessFile> keepAlive = new ArrayList<>();

    public ProcessIo(String owner, String stdin, String stdout, String stderr) {
        this.stdin = resolve(owner, "stdin", stdin);
        this.stdout = resolve(owner, "stdout", stdout);
        this.stderr = resolve(owner, "stderr", stderr);
    }

    public File stdinFile() {
        return stdin;
    }

    public File stdoutFile() {
        return stdout;
    }

    public OciRuntime.Stdio stdio() {
        return new OciRuntime.Stdio(stdin == null ? DEV_NULL : stdin, stdout == null ? DEV_NULL : stdout,
                stderr == null ? DEV_NULL : stderr);
    }

    /** Holds the output FIFOs open (see the class comment); call once the process exists. */
    public void holdOutputs() {
        for (File f : new File[]{stdout, stderr}) {
            if (f != null && isFifo(f)) {
                try {
                    keepAlive.add(new RandomAccessFile(f, "rw"));
                } catch (IOException e) {
                    LOG.debug("cannot hold {} open: {}", f, e.getMessage());
                }
            }
        }
    }

    @Override
    public void close() {
        for (RandomAccessFile f : keepAlive) {
            try {
                f.close();
            } catch (IOException ignored) {
                // already closed
            }
        }
        keepAlive.clear();
    }

    private static boolean isFifo(File f) {
        try {
            // "other" is neither file, directory nor link: a FIFO here, since containerd made it
            return java.nio.file.Files.readAttributes(f.toPath(),
                    java.nio.file.attribute.BasicFileAttributes.class).isOther();
        } catch (IOException e) {
            return false;
        }
    }

    private static File resolve(String owner, String stream, String value) {
        if (value == null || value.isEmpty()) {
            return null;
        }
        if (value.startsWith("/")) {
            return new File(value);
        }
        URI uri;
        try {
            uri = URI.create(value);
        } catch (IllegalArgumentException e) {
            throw invalid(owner, stream, value);
        }
        if (("fifo".equals(uri.getScheme()) || "file".equals(uri.getScheme())) && uri.getPath() != null) {
            return new File(uri.getPath());
        }
        throw invalid(owner, stream, value);
    }

    private static RuntimeException invalid(String owner, String stream, String value) {
        return Status.INVALID_ARGUMENT.withDescription(owner + ": " + stream + " " + value
                + " is not supported; use a FIFO path or a file:// URI").asRuntimeException();
    }
}
