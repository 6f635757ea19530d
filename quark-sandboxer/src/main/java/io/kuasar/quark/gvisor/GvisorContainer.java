package io.kuasar.quark.gvisor;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.google.protobuf.Any;
import io.grpc.Status;
import io.kuasar.api.cgroups.v2.CPUStat;
import io.kuasar.api.cgroups.v2.MemoryStat;
import io.kuasar.api.cgroups.v2.Metrics;
import io.kuasar.api.cgroups.v2.PidsStat;
import io.kuasar.api.task.v3.ExecProcessRequest;
import io.kuasar.api.types.task.ProcessInfo;
import io.kuasar.sandbox.cgroup.CgroupStats;
import io.kuasar.sandbox.oci.OciRuntime;
import io.kuasar.sandbox.oci.ProcessIo;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.process.ProcessReaper;
import io.kuasar.sandbox.state.AtomicFiles;
import io.kuasar.sandbox.sys.Linux;
import io.kuasar.sandbox.task.Container;
import io.kuasar.sandbox.task.TaskRecord;
import io.kuasar.sandbox.tty.Console;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;

/**
 * One container in a gVisor sandbox. Its pid is the sandbox's (as gVisor's shim reports it: the container's
 * processes live inside the app kernel); its exit comes from a {@code runsc wait} started with it, and a sandbox that
 * died under it reports it killed (137). Exec runs through {@code runsc exec}: attached for plain stdio (the exit
 * status of that call is the process's), detached with a console socket for a terminal.
 */
final class GvisorContainer implements Container {
    private static final Logger LOG = LoggerFactory.getLogger(GvisorContainer.class);
    /** What a process killed with its sandbox reports: gVisor keeps no exit status for it. */
    private static final int KILLED = 137;
    private final String id;
    private final String sandboxId;
    private final Path bundle;
    private final Runsc runsc;
    private final ProcessReaper reaper;
    private final boolean mounted;
    private final ProcessIo io;
    private final Console console;
    private final int pid;
    private final ObjectMapper json;
    private final Path consoleDir;
    private final CompletableFuture<ExitStatus> exit = new CompletableFuture<>();
    private final Map<String, GvisorExec> execs = new ConcurrentHashMap<>();
    private volatile Process waiter;
    private volatile boolean started;

    GvisorContainer(String id, String sandboxId, Path bundle, Runsc runsc, ProcessReaper reaper, boolean mounted,
                    ProcessIo io, Console console, int pid, ObjectMapper json, Path consoleDir) {
        this.id = id;
        this.sandboxId = sandboxId;
        this.bundle = bundle;
        this.runsc = runsc;
        this.reaper = reaper;
        this.mounted = mounted;
        this.io = io;
        this.console = console;
        this.pid = pid;
        this.json = json;
        this.consoleDir = consoleDir;
    }

    static Path log(Path bundle) {
        return bundle.resolve("runsc.log");
    }

    static GvisorContainer recovered(TaskRecord r, Path bundle, Runsc runsc, ProcessReaper reaper, ObjectMapper json,
                                     JsonNode state, Path consoleDir) {
        GvisorContainer c = new GvisorContainer(r.id(), r.sandboxId(), bundle, runsc, reaper, true,
                new ProcessIo("container " + r.id(), null, null, null), null, r.pid(), json, consoleDir);
        String status = state == null ? "" : state.path("status").asText();
        if (status.equals("running") || status.equals("paused") || status.equals("created")) {
            c.started = !status.equals("created");
            if (c.started) {
                c.watch();
            }
        } else {
            c.exit.complete(state == null ? ExitStatus.unknown() : ExitStatus.of(KILLED));
        }
        return c;
    }

    @Override
    public String sandboxId() {
        return sandboxId;
    }

    @Override
    public int initPid() {
        return pid;
    }

    @Override
    public CompletableFuture<ExitStatus> initExit() {
        return exit;
    }

    @Override
    public synchronized void start() throws Exception {
        if (started) {
            throw Status.FAILED_PRECONDITION.withDescription("container " + id + " has already started")
                    .asRuntimeException();
        }
        // A subcontainer's stdio is that of `runsc start`: containerd's FIFOs, kept by the sandbox.
        runsc.cli().run("runsc start of container " + id, log(bundle), List.of("start", id),
                console != null ? ProcessIo.NULL_STDIO : io.stdio(), null);
        started = true;
        reaper.adoptOrphans(GvisorRuntime::isRunscHelper); // its gofer
        if (console != null) {
            console.attach(io.stdinFile(), io.stdoutFile(), Duration.ofSeconds(10));
        } else {
            io.holdOutputs();
        }
        watch();
    }

    /** {@code runsc wait}: its output carries the exit status; without one, the sandbox is gone. */
    private void watch() {
        Path out = bundle.resolve("wait.json");
        try {
            Process w = runsc.startWait(id, log(bundle), out);
            waiter = w;
            w.onExit().thenRun(() -> exit.complete(waitResult(out)));
        } catch (IOException e) {
            LOG.warn("container {}: runsc wait: {}", id, e.getMessage());
            exit.complete(ExitStatus.unknown());
        }
        exit.whenComplete((s, t) -> {
            io.close();
            if (console != null) {
                console.close();
            }
        });
    }

    private ExitStatus waitResult(Path out) {
        try {
            JsonNode r = json.readTree(Files.readString(out));
            if (r != null && r.has("exitStatus")) {
                return ExitStatus.of(r.path("exitStatus").asInt());
            }
        } catch (IOException | RuntimeException e) {
            // no output: runsc could not reach the sandbox
        }
        LOG.info("container {}: its sandbox is gone; reported killed", id);
        return ExitStatus.of(KILLED);
    }

    @Override
    public Exec exec(ExecProcessRequest request) throws IOException {
        if (!started || exit.isDone()) {
            throw Status.FAILED_PRECONDITION.withDescription("container " + id + " is not running")
                    .asRuntimeException();
        }
        String execId = request.getExecId();
        Path process = bundle.resolve("exec-" + execId + ".json");
        AtomicFiles.write(process, request.getSpec().getValue().toByteArray());
        ProcessIo execIo = new ProcessIo("exec " + execId + " in container " + id, request.getStdin(),
                request.getStdout(), request.getStderr());
        GvisorExec e = new GvisorExec(execId, process, execIo, request.getTerminal());
        execs.put(execId, e);
        return e;
    }

    @Override
    public void kill(int signal, boolean all) throws IOException {
        if (!started) {
            exit.complete(ExitStatus.of(128 + signal)); // never started: it never runs
            return;
        }
        if (exit.isDone()) {
            return;
        }
        List<String> args = new ArrayList<>(List.of("kill"));
        if (all) {
            args.add("--all");
        }
        args.add(id);
        args.add(Integer.toString(signal));
        try {
            runsc.cli().run("runsc kill of container " + id, log(bundle), args, OciRuntime.Stdio.none(), null);
        } catch (OciRuntime.Failure e) {
            if (!exit.isDone() && !e.reason().contains("no such process") && !e.reason().contains("not running")) {
                throw e;
            }
        }
    }

    @Override
    public void delete() {
        Process w = waiter;
        if (w != null) {
            w.destroyForcibly();
        }
        deleteQuietly(runsc, id, bundle);
        io.close();
        if (console != null) {
            console.close();
        }
        execs.values().forEach(GvisorExec::delete);
        if (mounted) {
            Linux.umount(bundle.resolve("rootfs").toString(), Linux.MNT_DETACH);
        }
    }

    /** {@code runsc delete --force}: the container's processes, gofer, state, cgroup and filestore. */
    static void deleteQuietly(Runsc runsc, String id, Path bundle) {
        runsc.deleteQuietly("container " + id, id, log(bundle));
    }

    @Override
    public List<ProcessInfo> pids() throws IOException {
        if (!started || exit.isDone()) {
            return List.of();
        }
        JsonNode ps = json.readTree(runsc.cli().run("runsc ps of container " + id, log(bundle),
                List.of("ps", "--format", "json", id), OciRuntime.Stdio.none(), null).output());
        List<ProcessInfo> out = new ArrayList<>();
        for (JsonNode p : ps) {
            out.add(ProcessInfo.newBuilder().setPid(p.isInt() ? p.asInt() : p.path("PID").asInt()).build());
        }
        return out;
    }

    /**
     * {@code runsc events --stats}: the sentry's accounting of this container (CPU in ns, memory in bytes), as
     * cgroup v2 metrics. The pod's real host footprint is its sandbox's cgroup.
     */
    @Override
    public Any stats() throws IOException {
        Metrics.Builder m = Metrics.newBuilder();
        if (started && !exit.isDone()) {
            JsonNode ev = json.readTree(runsc.cli().run("runsc events of container " + id, log(bundle),
                    List.of("events", "--stats", id), OciRuntime.Stdio.none(), null).output());
            JsonNode d = ev.path("data");
            long cpuUsec = d.path("cpu").path("usage").path("total").asLong() / 1000;
            m.setCpu(CPUStat.newBuilder().setUsageUsec(cpuUsec));
            m.setMemory(MemoryStat.newBuilder().setUsage(d.path("memory").path("usage").path("usage").asLong())
                    .setUsageLimit(d.path("memory").path("usage").path("limit").asLong()));
            m.setPids(PidsStat.newBuilder().setCurrent(d.path("pids").path("current").asLong()));
        }
        return CgroupStats.pack(m.build());
    }

    @Override
    public void update(Any resources) {
        throw Status.UNIMPLEMENTED.withDescription("container " + id + ": gVisor enforces resources per pod "
                + "(its sandbox), not per container; update the pod instead").asRuntimeException();
    }

    @Override
    public void pause() throws IOException {
        runsc.cli().run("runsc pause of container " + id, log(bundle), List.of("pause", id), OciRuntime.Stdio.none(),
                null);
    }

    @Override
    public void resume() throws IOException {
        runsc.cli().run("runsc resume of container " + id, log(bundle), List.of("resume", id),
                OciRuntime.Stdio.none(), null);
    }

    /** gVisor resizes a container's terminal but sends no SIGWINCH (its shim neither): we send it. */
    @Override
    public void resizePty(int width, int height) throws IOException {
        if (console == null) {
            throw Status.FAILED_PRECONDITION.withDescription("container " + id + " has no terminal")
                    .asRuntimeException();
        }
        console.resize(width, height);
        try {
            runsc.cli().run("runsc kill WINCH of container " + id, log(bundle), List.of("kill", id, "WINCH"),
                    OciRuntime.Stdio.none(), null);
        } catch (OciRuntime.Failure e) {
            LOG.debug("container {}: SIGWINCH: {}", id, e.reason());
        }
    }

    @Override
    public void closeStdin() {
        if (console != null) {
            console.closeStdin();
        }
    }

    /** One exec process. */
    private final class GvisorExec implements Exec {
        private final String execId;
        private final Path processFile;
        private final ProcessIo io;
        private final boolean terminal;
        private final CompletableFuture<ExitStatus> exit = new CompletableFuture<>();
        private volatile Console console;
        private volatile Process attached;

        GvisorExec(String execId, Path processFile, ProcessIo io, boolean terminal) {
            this.execId = execId;
            this.processFile = processFile;
            this.io = io;
            this.terminal = terminal;
        }

        private Path internalPidFile() {
            return bundle.resolve("exec-" + execId + ".ipid");
        }

        @Override
        public int start() throws Exception {
            Files.deleteIfExists(internalPidFile());
            if (!terminal) {
                // Attached: the call's stdio are the process's, and its exit status is the process's.
                OciRuntime.Stdio s = io.stdio();
                Process p = new ProcessBuilder(runsc.command(log(bundle), List.of("exec", "--process",
                        processFile.toString(), "--internal-pid-file", internalPidFile().toString(), id)))
                        .redirectInput(s.in()).redirectOutput(ProcessBuilder.Redirect.appendTo(s.out()))
                        .redirectError(ProcessBuilder.Redirect.appendTo(s.err())).start();
                attached = p;
                io.holdOutputs();
                p.onExit().thenRun(() -> exit.complete(ExitStatus.of(p.exitValue())));
                exit.whenComplete((st, t) -> io.close());
                return (int) p.pid();
            }
            // A terminal needs --detach: runsc sends the pty master to our console socket; the runsc-exec helper it
            // leaves (re-parented to us) waits for the process and exits with its status.
            Console c = Console.listenIn(consoleDir);
            console = c;
            Path pidFile = bundle.resolve("exec-" + execId + ".pid");
            try {
                runsc.cli().run("runsc exec " + execId + " in container " + id, log(bundle), List.of("exec",
                        "--detach", "--console-socket", c.socketPath().toString(), "--pid-file", pidFile.toString(),
                        "--internal-pid-file", internalPidFile().toString(), "--process", processFile.toString(), id),
                        OciRuntime.Stdio.none(), null);
            } catch (IOException | RuntimeException e) {
                c.close();
                throw e;
            }
            int helper = Integer.parseInt(Files.readString(pidFile).trim());
            reaper.watch(helper).whenComplete((st, t) -> exit.complete(st != null ? st : ExitStatus.unknown()));
            c.attach(io.stdinFile(), io.stdoutFile(), Duration.ofSeconds(10));
            exit.whenComplete((st, t) -> c.close());
            return helper;
        }

        @Override
        public CompletableFuture<ExitStatus> exit() {
            return exit;
        }

        @Override
        public boolean kill(int signal) throws IOException {
            if (exit.isDone()) {
                return false;
            }
            String internal = Files.exists(internalPidFile()) ? Files.readString(internalPidFile()).trim() : "";
            if (internal.isEmpty()) {
                Process p = attached;
                if (p != null) {
                    Linux.kill((int) p.pid(), signal); // runsc exec forwards it to the process
                }
                return true;
            }
            try {
                runsc.cli().run("runsc kill of exec " + execId, log(bundle), List.of("kill", "--pid", internal, id,
                        Integer.toString(signal)), OciRuntime.Stdio.none(), null);
            } catch (OciRuntime.Failure e) {
                if (!e.reason().contains("no such process")) {
                    throw e;
                }
                return false;
            }
            return true;
        }

        @Override
        public void resizePty(int width, int height) throws IOException {
            Console c = console;
            if (c == null) {
                throw Status.FAILED_PRECONDITION.withDescription("exec " + execId + " has no terminal")
                        .asRuntimeException();
            }
            c.resize(width, height); // the runsc-exec helper forwards SIGWINCH itself
        }

        @Override
        public void closeStdin() {
            Console c = console;
            if (c != null) {
                c.closeStdin();
            }
        }

        @Override
        public void delete() {
            io.close();
            Console c = console;
            if (c != null) {
                c.close();
            }
            try {
                Files.deleteIfExists(processFile);
                Files.deleteIfExists(internalPidFile());
                Files.deleteIfExists(bundle.resolve("exec-" + execId + ".pid"));
            } catch (IOException e) {
                LOG.debug("exec {}: {}", execId, e.getMessage());
            }
        }
    }
}
