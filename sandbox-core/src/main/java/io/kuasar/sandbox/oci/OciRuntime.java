package io.kuasar.sandbox.oci;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.grpc.Status;
import io.kuasar.sandbox.process.ProcessReaper;
import io.kuasar.sandbox.tracing.Span;
import io.kuasar.sandbox.tracing.Tracing;
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
 * Runs an OCI runtime's CLI (runc, crun, runsc: they share {@code --root}, {@code --log} and {@code --log-format}).
 * Every call names the runtime's state root and writes the runtime's own log as JSON into the bundle, so a failure is
 * reported with the runtime's real error message instead of a bare exit code. Global flags a runtime needs on every
 * call (runsc's {@code --platform}, {@code --network}) are given once.
 */
public final class OciRuntime {
    private static final Logger LOG = LoggerFactory.getLogger(OciRuntime.class);
    private static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(60);

    private final String binary;
    private final Path root;
    private final List<String> wrapper;
    private final List<String> globalFlags;
    private final String installHint;
    private final Duration timeout;
    private final ObjectMapper json = new ObjectMapper();
    private static final Duration KILL_WAIT = Duration.ofSeconds(5);

    public OciRuntime(String binary, Path root) {
        this(binary, root, List.of(), List.of(), "install runc or pass --runc", DEFAULT_TIMEOUT);
    }

    /** {@code wrapper}: a command that runs the runtime for create/exec, e.g. kuasar-monitor and its flags, then "--". */
    private OciRuntime(String binary, Path root, List<String> wrapper, List<String> globalFlags, String installHint,
                       Duration timeout) {
        this.binary = binary;
        this.root = root;
        this.wrapper = wrapper;
        this.globalFlags = globalFlags;
        this.installHint = installHint;
        this.timeout = timeout;
    }

    public OciRuntime monitoredBy(List<String> wrapperCommand) {
        return new OciRuntime(binary, root, List.copyOf(wrapperCommand), globalFlags, installHint, timeout);
    }

    /** Flags given on every call, after {@code --root} and {@code --log}. */
    public OciRuntime withGlobalFlags(List<String> flags) {
        return new OciRuntime(binary, root, wrapper, List.copyOf(flags), installHint, timeout);
    }

    /** What a "cannot run the binary" error tells the operator to do. */
    public OciRuntime withInstallHint(String hint) {
        return new OciRuntime(binary, root, wrapper, globalFlags, hint, timeout);
    }

    /** How long one call may take before it (and everything it started) is killed. */
    public OciRuntime withTimeout(Duration other) {
        return new OciRuntime(binary, root, wrapper, globalFlags, installHint, other);
    }

    /**
     * Why the runtime cannot be run, naming the remedy, or null when its binary is there: an absolute path must be an
     * executable file, a bare name must be one on PATH. For a warning at start-up (each call fails the same way).
     */
    public String missing() {
        if (binary.contains("/")) {
            return Files.isExecutable(Path.of(binary)) ? null : binary + " is not an executable file (" + installHint + ")";
        }
        String path = System.getenv("PATH");
        for (String d : (path == null ? "" : path).split(":")) {
            if (!d.isEmpty() && Files.isExecutable(Path.of(d, binary))) {
                return null;
            }
        }
        return binary + " is not on PATH (" + path + "); " + installHint;
    }

    public String binary() {
        return binary;
    }

    public Path root() {
        return root;
    }

    public OciRuntime withBinary(String other) {
        return new OciRuntime(other, root, wrapper, globalFlags, installHint, timeout);
    }

    public OciRuntime withRoot(Path other) {
        return new OciRuntime(binary, other, wrapper, globalFlags, installHint, timeout);
    }

    /**
     * The full command line of one call, for callers that run a long-lived call themselves ({@code wait}, an attached
     * {@code exec}); no wrapper.
     */
    public List<String> command(Path logFile, List<String> args) {
        List<String> cmd = new ArrayList<>();
        cmd.add(binary);
        cmd.add("--root");
        cmd.add(root.toString());
        if (logFile != null) {
            cmd.add("--log");
            cmd.add(logFile.toString());
            cmd.add("--log-format");
            cmd.add("json");
        }
        cmd.addAll(globalFlags);
        cmd.addAll(args);
        return cmd;
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
        // one step per runtime call (oci.create, oci.start, ...): a span under the RPC and a step metric
        String sub = args.stream().filter(a -> !a.startsWith("-")).findFirst().orElse("run");
        try (Span step = Tracing.step("oci." + sub)) {
            step.attr("oci.runtime", binary);
            try {
                return execute(what, logFile, args, stdio, input);
            } catch (IOException | RuntimeException e) {
                step.error(e);
                throw e;
            }
        }
    }

    private Result execute(String what, Path logFile, List<String> args, Stdio stdio, byte[] input)
            throws IOException {
        List<String> cmd = new ArrayList<>(wrapper);
        cmd.addAll(command(logFile, args));
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
                        + " (" + installHint + ")").asRuntimeException();
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
                ProcessReaper.killTree(p, KILL_WAIT); // the runtime, `runc init` and a monitor must not run on
                Thread.currentThread().interrupt();
                throw Status.CANCELLED.withDescription(what + " interrupted").asRuntimeException();
            }
            if (!done) {
                ProcessReaper.killTree(p, KILL_WAIT);
                throw Status.DEADLINE_EXCEEDED.withDescription(what + ": " + binary + " did not finish within "
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
                throw new Failure(what, p.exitValue(), reason);
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

    /** The runtime's JSON log: one object per line; the last "error" level message is the cause of a failure. */
    public String lastLoggedError(Path logFile) {
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

    /** The runtime exited non-zero. */
    public static final class Failure extends IOException {
        private final int exitCode;
        private final String reason;

        Failure(String what, int exitCode, String reason) {
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
