package io.kuasar.wasm.wasmedge;

import io.grpc.Status;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.process.ProcessRef;
import io.kuasar.wasm.engine.LoadedModules;
import io.kuasar.wasm.engine.WasiRun;
import io.kuasar.wasm.engine.WasmEngine;
import io.kuasar.wasm.engine.WasmProcess;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.regex.Pattern;

/**
 * WasmEdge, one process per container as Kuasar runs it: the {@code wasmedge} CLI (by default the launcher that
 * {@code make wasm-engines} installs: trixie's WasmEdge 0.14.1 through its own loader) runs the module compiled ahead
 * of time ({@code wasmedge compile --interruptible}, once per module content, kept on disk), with the container's
 * preopens, environment and a page limit from its memory limit. A crash of WasmEdge is a crash of that container
 * only; signals reach it directly (the launcher execs, so the pid is WasmEdge's).
 * <p>
 * WasmEdge reports a trap as exit 134 with its message on the guest's stdout, and sets {@code argv[0]} to the module
 * file's name; the compiled file is therefore linked under the name of {@code process.args[0]}.
 */
public final class WasmEdgeEngine implements WasmEngine {
    private static final Logger LOG = LoggerFactory.getLogger(WasmEdgeEngine.class);
    /** Where {@code make wasm-engines} (wasm-sandboxer/packaging/fetch-wasmedge.sh) installs the launcher. */
    public static final Path DEFAULT_BINARY = Path.of("/var/lib/kuasar/wasmedge/wasmedge");
    private static final Duration COMPILE_TIMEOUT = Duration.ofMinutes(5);
    private static final Pattern PLAIN_NAME = Pattern.compile("[A-Za-z0-9._+-]{1,128}");
    private static final long PAGE = 65536;
    /** Redirections done by the child's shell, so a FIFO with no writer yet never blocks the daemon. */
    private static final String STDIO = "exec \"$0\" \"$@\" <\"$KUASAR_STDIN\" >>\"$KUASAR_STDOUT\" 2>>\"$KUASAR_STDERR\"";
    static final String FACT_PID = "wasmedge.pid";
    static final String FACT_START = "wasmedge.start";

    private final Path binary;
    private final Path cacheDir;
    private final LoadedModules<Compiled> modules = new LoadedModules<>("wasmedge");

    public WasmEdgeEngine(Path binary, Path cacheDir) throws IOException {
        this.binary = binary;
        this.cacheDir = cacheDir;
        Files.createDirectories(cacheDir);
        // Binds the pidfd calls Kill uses now: binding them at the first Kill took ~150 ms of its 100 ms budget.
        io.kuasar.sandbox.sys.Linux.close(io.kuasar.sandbox.sys.Linux.pidfdOpen((int) ProcessHandle.current().pid()));
    }

    @Override
    public String name() {
        return "wasmedge";
    }

    private record Compiled(String digest, Path dir) implements Module {
    }

    @Override
    public Module load(Path wasm) throws IOException {
        if (!Files.isExecutable(binary)) {
            throw Status.FAILED_PRECONDITION.withDescription("the wasmedge engine needs " + binary
                    + ", which is missing: run `make wasm-engines` (or pass --wasmedge PATH)").asRuntimeException();
        }
        return modules.load(wasm, (bytes, digest) -> compile(wasm, digest));
    }

    /** AOT output in {@code <cache>/<hex>/aot.wasm}; a restarted daemon finds it there. */
    private Compiled compile(Path wasm, String digest) throws IOException {
        Path dir = cacheDir.resolve(digest.substring("sha256:".length()));
        Path aot = dir.resolve("aot.wasm");
        if (Files.isRegularFile(aot)) {
            return new Compiled(digest, dir);
        }
        Files.createDirectories(dir);
        Path tmp = dir.resolve("aot.wasm.tmp");
        long t0 = System.nanoTime();
        Process p = new ProcessBuilder(binary.toString(), "compile", "--interruptible", wasm.toString(), tmp.toString())
                .redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        try {
            if (!p.waitFor(COMPILE_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS)) {
                p.destroyForcibly();
                throw new IOException("wasmedge compile of " + wasm + " took longer than " + COMPILE_TIMEOUT);
            }
        } catch (InterruptedException e) {
            p.destroyForcibly();
            Thread.currentThread().interrupt();
            throw new IOException("interrupted while wasmedge compiled " + wasm, e);
        }
        if (p.exitValue() != 0 || !Files.isRegularFile(tmp)) {
            Files.deleteIfExists(tmp);
            throw new IOException(wasm + " is not a valid WebAssembly module (wasmedge compile: "
                    + lastErrors(out) + ")");
        }
        Files.move(tmp, aot, StandardCopyOption.ATOMIC_MOVE);
        LOG.debug("module {} ({}) compiled ahead of time in {} ms", wasm, digest, (System.nanoTime() - t0) / 1_000_000);
        return new Compiled(digest, dir);
    }

    private static String lastErrors(String out) {
        List<String> errors = out.lines().filter(l -> l.contains("[error]")).map(String::strip).toList();
        String s = String.join("; ", errors.isEmpty() ? out.lines().toList() : errors);
        return s.length() > 400 ? s.substring(0, 400) + "..." : s;
    }

    @Override
    public WasmProcess start(Module module, WasiRun run) throws IOException {
        if (!(module instanceof Compiled m)) {
            throw new IllegalArgumentException("module " + module.digest() + " was not loaded by " + name());
        }
        List<String> cmd = new ArrayList<>(List.of("/bin/sh", "-c", STDIO, binary.toString()));
        if (run.memoryLimitBytes() > 0) {
            cmd.add("--memory-page-limit");
            cmd.add(Long.toString(Math.max(1, run.memoryLimitBytes() / PAGE)));
        }
        for (Map.Entry<String, Path> d : run.preopens().entrySet()) {
            if (d.getKey().contains(":") || d.getValue().toString().contains(":")) {
                throw new IOException("container " + run.id() + ": wasmedge cannot preopen " + d.getValue() + " at "
                        + d.getKey() + " (':' separates guest and host paths in its --dir)");
            }
            cmd.add("--dir");
            cmd.add(d.getKey() + ":" + d.getValue());
        }
        run.env().forEach((k, v) -> {
            cmd.add("--env");
            cmd.add(k + "=" + v);
        });
        cmd.add(linkedAs(m, run.argv().isEmpty() ? "" : run.argv().getFirst()).toString());
        cmd.addAll(run.argv().subList(Math.min(1, run.argv().size()), run.argv().size()));
        ProcessBuilder pb = new ProcessBuilder(cmd);
        Map<String, String> env = pb.environment();
        env.clear();
        env.put("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        env.put("KUASAR_STDIN", stdio(run.stdin()));
        env.put("KUASAR_STDOUT", stdio(run.stdout()));
        env.put("KUASAR_STDERR", stdio(run.stderr()));
        pb.redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                .redirectOutput(ProcessBuilder.Redirect.DISCARD).redirectError(ProcessBuilder.Redirect.DISCARD);
        return new Instance(run.id(), pb.start());
    }

    /** WasmEdge passes the module file's name as argv[0]: the compiled module, linked under args[0]'s file name. */
    private static Path linkedAs(Compiled m, String arg0) throws IOException {
        String name = Path.of("/" + arg0).getFileName() == null ? "" : Path.of("/" + arg0).getFileName().toString();
        if (!PLAIN_NAME.matcher(name).matches()) {
            return m.dir().resolve("aot.wasm");
        }
        Path link = m.dir().resolve(name);
        if (!Files.exists(link)) {
            try {
                Files.createLink(link, m.dir().resolve("aot.wasm"));
            } catch (java.nio.file.FileAlreadyExistsException raced) {
                // another container of the same module linked it first
            }
        }
        return link;
    }

    private static String stdio(Path p) {
        return p == null ? "/dev/null" : p.toString();
    }

    /** A WasmEdge left running by the previous daemon has nobody to report to: it is ended. */
    @Override
    public void reclaim(String containerId, Map<String, String> facts) {
        ProcessRef ref = ProcessRef.parse(facts.get(FACT_PID), facts.get(FACT_START));
        if (ref != null && ref.signal(9)) {
            LOG.info("container {}: killed wasmedge {} left by the previous daemon", containerId, ref.pid());
        }
    }

    /** One WasmEdge process. */
    private static final class Instance implements WasmProcess {
        private final String id;
        private final Process process;
        private final ProcessRef ref;
        private final CompletableFuture<ExitStatus> exit;
        /** The last CPU time read: /proc forgets a process once it is reaped. */
        private volatile long cpuSeen;

        Instance(String id, Process process) {
            this.id = id;
            this.process = process;
            this.ref = ProcessRef.of((int) process.pid());
            // Java reports a death by signal as 128 + the signal, as a shell would
            this.exit = process.onExit().thenApply(p -> ExitStatus.of(p.exitValue()));
        }

        @Override
        public CompletableFuture<ExitStatus> exit() {
            return exit;
        }

        @Override
        public boolean kill(int signal) {
            cpuNanos();
            boolean sent = !exit.isDone() && ref.signal(signal);
            LOG.debug("container {}: signal {} to wasmedge {}: {}", id, signal, ref.pid(), sent ? "sent" : "gone");
            return sent;
        }

        @Override
        public long memoryBytes() {
            if (exit.isDone()) {
                return 0;
            }
            try {
                for (String line : Files.readAllLines(Path.of("/proc/" + ref.pid() + "/status"))) {
                    if (line.startsWith("VmRSS:")) {
                        return Long.parseLong(line.replaceAll("\\D", "")) * 1024;
                    }
                }
            } catch (IOException | NumberFormatException gone) {
                // exited meanwhile
            }
            return 0;
        }

        @Override
        public long cpuNanos() {
            long now = process.info().totalCpuDuration().map(Duration::toNanos).orElse(0L);
            if (now > cpuSeen) {
                cpuSeen = now;
            }
            return cpuSeen;
        }

        @Override
        public Map<String, String> facts() {
            return Map.of(FACT_PID, Integer.toString(ref.pid()), FACT_START, Long.toString(ref.startTime()));
        }
    }
}
