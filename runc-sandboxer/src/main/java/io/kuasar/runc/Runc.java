package io.kuasar.runc;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.grpc.Status;
import io.kuasar.sandbox.process.ProcessReaper;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.time.Duration;
import java.util.concurrent.TimeUnit;

/**
 * Runs the runc binary. Every call names the runc state root and writes runc's own log as JSON into the bundle,
 * so a failure is reported with runc's real error message instead of a bare exit code.
 */
public final class Runc {
    private static final Logger LOG = LoggerFactory.getLogger(Runc.class);
    private static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(60);

    private final String binary;
    private final Path root;
    private final List<String> wrapper;
    private final Duration timeout;
    private final ObjectMapper json = new ObjectMapper();
    private static final Duration KILL_WAIT = Duration.ofSeconds(5);

    public Runc(String binary, Path root) {
        this(binary, root, List.of(), DEFAULT_TIMEOUT);
    }

    /** {@code wrapper}: a command that runs runc for create/exec, e.g. kuasar-monitor and its flags, then "--". */
    private Runc(String binary, Path root, List<String> wrapper, Duration timeout) {
        this.binary = binary;
        this.root = root;
        this.wrapper = wrapper;
        this.timeout = timeout;
    }

    public Runc monitoredBy(List<String> wrapperCommand) {
        return new Runc(binary, root, List.copyOf(wrapperCommand), timeout);
    }

    /** How long one runc call may take before it (and everything it started) is killed. */
    public Runc withTimeout(Duration other) {
        return new Runc(binary, root, wrapper, other);
    }

    public String binary() {
        return binary;
    }

    public Path root() {
        return root;
    }

    public Runc withBinary(String other) {
        return new Runc(other, root, wrapper, timeout);
    }

    public Runc withRoot(Path other) {
        return new Runc(binary, other, wrapper, timeout);
    }

    /** Standard streams for a runc invocation whose child inherits them (create, exec). */
    public record Stdio(File in, File out, File err) {
        public static Stdio none() {
            return new Stdio(null, null, null);
        }
    }

    /** Result of one invocation; {@code output} is stdout when it was captured. */
    public record Result(int exitCode, String output, String error) {
    }

    /**
     * Runs {@code runc <global flags> <args>}. stdio that is not given is captured (stdout) or discarded. A non-zero
     * exit becomes an exception carrying runc's last logged error.
     */
    public Result run(String what, Path logFile, List<String> args, Stdio stdio, byte[] input) throws IOException {
        List<String> cmd = new ArrayList<>(wrapper);
        cmd.add(binary);
        cmd.add("--root");
        cmd.add(root.toString());
        if (logFile != null) {
            cmd.add("--log");
            cmd.add(logFile.toString());
            cmd.add("--log-format");
            cmd.add("json");
        }
        cmd.addAll(args);
        ProcessBuilder pb = new ProcessBuilder(cmd);
        Path errFile = null;
        if (stdio.in() != null) {
            pb.redirectInput(stdio.in());
        } else if (input == null) {
            pb.redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")));
        }
        if (stdio.out() != null) {
            pb.redirectOutput(ProcessBuilder.Redirect.appendTo(stdio.out()));
        }
        if (stdio.err() != null) {
            pb.redirectError(ProcessBuilder.Redirect.appendTo(stdio.err()));
        } else {
            // A detached child inherits stderr; a file (not a pipe) never holds runc's call open.
            errFile = Files.createTempFile("runc-", ".err");
            pb.redirectError(errFile.toFile());
        }
        boolean captureOut = stdio.out() == null;
        Path outFile = null;
        if (captureOut) {
            outFile = Files.createTempFile("runc-", ".out");
            pb.redirectOutput(outFile.toFile());
        }
        try {
            Process p;
            try {
                p = pb.start();
            } catch (IOException e) {
                throw Status.FAILED_PRECONDITION.withDescription("cannot run " + binary + ": " + e.getMessage()
                        + " (install runc or pass --runc)").asRuntimeException();
            }
            if (input != null) {
                try (var os = p.getOutputStream()) {
                    os.write(input);
                }
            }
            boolean done;
            try {
                done = p.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS);
            } catch (InterruptedException e) {
                ProcessReaper.killTree(p, KILL_WAIT); // runc, `runc init` and a monitor must not run on
                Thread.currentThread().interrupt();
                throw Status.CANCELLED.withDescription(what + " interrupted").asRuntimeException();
            }
            if (!done) {
                ProcessReaper.killTree(p, KILL_WAIT);
                throw Status.DEADLINE_EXCEEDED.withDescription(what + ": runc did not finish within "
                        + timeout.toMillis() + " ms; it was killed").asRuntimeException();
            }
            String out = captureOut ? Files.readString(outFile, StandardCharsets.UTF_8) : "";
            String err = errFile != null ? Files.readString(errFile, StandardCharsets.UTF_8).trim() : "";
            if (p.exitValue() != 0) {
                String reason = lastLoggedError(logFile);
                if (reason == null || reason.isEmpty()) {
                    reason = err.isEmpty() ? "exit status " + p.exitValue() : err;
                }
                LOG.debug("{} failed: {}", what, reason);
                throw new RuncException(what, p.exitValue(), reason);
            }
            return new Result(0, out, err);
        } finally {
            if (outFile != null) {
                Files.deleteIfExists(outFile);
            }
            if (errFile != null) {
                Files.deleteIfExists(errFile);
            }
        }
    }

    /** runc's JSON log: one object per line; the last "error" level message is the cause of a failure. */
    String lastLoggedError(Path logFile) {
        if (logFile == null || !Files.exists(logFile)) {
            return null;
        }
        try {
            List<String> lines = Files.readAllLines(logFile);
            for (int i = lines.size() - 1; i >= 0; i--) {
                String line = lines.get(i).trim();
                if (line.isEmpty()) {
                    continue;
                }
                try {
                    JsonNode n = json.readTree(line);
                    if ("error".equals(n.path("level").asText()) || "fatal".equals(n.path("level").asText())) {
                        return n.path("msg").asText();
                    }
                } catch (IOException ignored) {
                    // a partial line at the end of the log
                }
            }
        } catch (IOException e) {
            return null;
        }
        return null;
    }

    /** runc exited non-zero. */
    public static final class RuncException extends IOException {
        private final int exitCode;
        private final String reason;

        RuncException(String what, int exitCode, String reason) {
            super(what + " failed: " + reason);
            this.exitCode = exitCode;
            this.reason = reason;
        }

        public int exitCode() {
            return exitCode;
        }

        public String reason() {
            return reason;
        }
    }
}
