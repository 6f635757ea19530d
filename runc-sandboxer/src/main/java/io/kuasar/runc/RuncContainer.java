package io.kuasar.runc;

import io.kuasar.sandbox.oci.ProcessIo;
import io.kuasar.sandbox.oci.OciRuntime;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.google.protobuf.Any;
import io.grpc.Status;
import io.kuasar.api.runc.options.ProcessDetails;
import io.kuasar.api.task.v3.ExecProcessRequest;
import io.kuasar.api.types.task.ProcessInfo;
import io.kuasar.sandbox.cgroup.CgroupStats;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.process.ProcessReaper;
import io.kuasar.sandbox.sys.Linux;
import io.kuasar.sandbox.task.Container;
import io.kuasar.sandbox.task.TaskRecord;
import io.kuasar.sandbox.process.Procfs;
import io.kuasar.sandbox.tty.Console;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;

/** One runc container: its bundle, runc state, rootfs mount and stdio. */
final class RuncContainer implements Container {
    private static final Logger LOG = LoggerFactory.getLogger(RuncContainer.class);

    private final String id;
    private final String sandboxId;
    private final Path bundle;
    private final OciRuntime runc;
    private final ProcessReaper reaper;
    private final ObjectMapper json;
    private final CgroupStats cgroups;
    private final boolean rootfsMounted;
    private final ProcessIo io;
    private final Console console;
    private final Path consoleDir;
    private final Path monitor;
    private final Map<String, RuncExec> execs = new ConcurrentHashMap<>();
    private int pid;
    private CompletableFuture<ExitStatus> exit;
    private io.kuasar.sandbox.cgroup.OomMonitor oom;

    RuncContainer(String id, String sandboxId, Path bundle, OciRuntime runc, ProcessReaper reaper, ObjectMapper json,
                  CgroupStats cgroups, boolean rootfsMounted, ProcessIo io, Path consoleDir, boolean terminal,
                  Path monitor) throws IOException {
        this.id = id;
        this.sandboxId = sandboxId;
        this.bundle = bundle;
        this.runc = runc;
        this.reaper = reaper;
        this.json = json;
        this.cgroups = cgroups;
        this.rootfsMounted = rootfsMounted;
        this.io = io;
        this.consoleDir = consoleDir;
        this.monitor = monitor;
        this.console = terminal ? openConsole(consoleDir) : null;
    }

    static final String FACT_RUNC = "runcBinary";
    static final String FACT_ROOT = "runcRoot";
    static final String FACT_ROOTFS = "rootfsMounted";
    static final String FACT_EXIT_FILE = "exitFile";
    static final String FACT_PROCESS_FILE = "processFile";

    /** Re-attaches to a container recorded before a restart; its terminal, if any, cannot be re-attached. */
    static RuncContainer recovered(TaskRecord r, OciRuntime runc, ProcessReaper reaper, ObjectMapper json,
                                   CgroupStats cgroups, Path consoleDir, Path monitor) throws IOException {
        RuncContainer c = new RuncContainer(r.id(), r.sandboxId(), Path.of(r.bundle()), runc, reaper, json, cgroups,
                Boolean.parseBoolean(r.facts().get(FACT_ROOTFS)), new ProcessIo("container " + r.id(), r.stdin(),
                r.stdout(), r.stderr()), consoleDir, false, monitor);
        c.pid = r.pid();
        c.exit = c.watch(r.pid(), r.startTime(), r.facts().get(FACT_EXIT_FILE), "STOPPED".equals(r.status()));
        if (!c.exit.isDone()) {
            c.io.holdOutputs();
            c.exit.whenComplete((s, t) -> c.io.close());
        }
        return c;
    }

    /** The exit of a recorded process: from its exit file, or watched if it is still the same live process. */
    CompletableFuture<ExitStatus> watch(int processPid, long startTime, String exitFile, boolean stopped) {
        if (stopped) {
            return CompletableFuture.completedFuture(ExitStatus.unknown()); // TaskService has the recorded status
        }
        if (exitFile != null) {
            ExitStatus recorded = ProcessReaper.readExitFile(Path.of(exitFile));
            if (recorded != null) {
                return CompletableFuture.completedFuture(recorded);
            }
            if (Procfs.isSameProcess(processPid, startTime)) {
                return reaper.watchExternal(processPid, Path.of(exitFile));
            }
        } else if (Procfs.isSameProcess(processPid, startTime)) {
            return reaper.watch(processPid);
        }
        LOG.warn("container {}: process {} is gone and left no exit status", id, processPid);
        return CompletableFuture.completedFuture(ExitStatus.unknown());
    }

    /** runc for create/exec, under kuasar-monitor when it is installed (exit statuses then survive a restart). */
    private OciRuntime monitored(Path pidFile, Path exitFile) {
        if (monitor == null || !Files.isExecutable(monitor)) {
            return runc;
        }
        return runc.monitoredBy(List.of(monitor.toString(), "--pid-file", pidFile.toString(), "--exit-file",
                exitFile.toString(), "--"));
    }

    private CompletableFuture<ExitStatus> exitOf(int processPid, Path exitFile) {
        if (monitor == null || !Files.isExecutable(monitor)) {
            return reaper.watch(processPid);
        }
        // The monitor is re-parented to us (we are a subreaper): reap it when it is done.
        Path monitorPid = Path.of(exitFile + ".pid");
        try {
            int mpid = readPid(monitorPid);
            reaper.watch(mpid);
            Files.deleteIfExists(monitorPid);
        } catch (IOException e) {
            LOG.warn("container {}: no monitor pid in {}: {}", id, monitorPid, e.getMessage());
        }
        return reaper.watchExternal(processPid, exitFile);
    }

    @Override
    public Map<String, String> facts() {
        return Map.of(FACT_RUNC, runc.binary(), FACT_ROOT, runc.root().toString(), FACT_ROOTFS,
                Boolean.toString(rootfsMounted), FACT_EXIT_FILE, bundle.resolve("init.exit").toString());
    }

    @Override
    public Exec recoverExec(TaskRecord.ExecRecord r) throws IOException {
        RuncExec e = new RuncExec(r.execId(), Path.of(r.facts().getOrDefault(FACT_PROCESS_FILE,
                bundle.resolve("exec-" + r.execId() + ".json").toString())),
                new ProcessIo("exec " + r.execId() + " in container " + id, r.stdin(), r.stdout(), r.stderr()), null);
        e.execPid = r.pid();
        e.execStartTime = r.startTime();
        e.exit = watch(r.pid(), r.startTime(), r.facts().get(FACT_EXIT_FILE), !"RUNNING".equals(r.status()));
        if (!e.exit.isDone()) {
            e.io.holdOutputs();
            e.exit.whenComplete((s, t) -> e.io.close());
        }
        execs.put(r.execId(), e);
        return e;
    }

    /** Console sockets live in a short directory of ours: bundle paths exceed the 108-byte socket path limit. */
    static Console openConsole(Path dir) throws IOException {
        return Console.listenIn(dir);
    }

    /** runc args for a terminal, or none. */
    static List<String> consoleArgs(Console c) {
        return c == null ? List.of() : List.of("--console-socket", c.socketPath().toString());
    }

    /** Wires a process's terminal to its FIFOs, or holds its output FIFOs open when it has none. */
    static void wire(Console c, ProcessIo io) throws IOException {
        if (c != null) {
            c.attach(io.stdinFile(), io.stdoutFile(), java.time.Duration.ofSeconds(10));
        } else {
            io.holdOutputs();
        }
    }

    /** {@code runc create}: the init process exists, blocked until {@link #start()}. */
    void create() throws IOException {
        Path pidFile = bundle.resolve("init.pid");
        List<String> args = new ArrayList<>(List.of("create", "--bundle", bundle.toString(), "--pid-file",
                pidFile.toString()));
        args.addAll(consoleArgs(console));
        args.add(id);
        Launched init = launch("runc create of container " + id, args, pidFile, bundle.resolve("init.exit"),
                console, io);
        pid = init.pid();
        exit = init.exit();
    }

    /** A process that runc left running under its monitor: its pid and its exit. */
    private record Launched(int pid, CompletableFuture<ExitStatus> exit) {
    }

    /**
     * Runs runc ({@code create}, or {@code exec --detach}) under the monitor, with the process's stdio or its
     * terminal, then watches the process runc leaves behind; the process's IO and terminal are released when it
     * exits. The one launch path of init and exec processes.
     */
    private Launched launch(String what, List<String> args, Path pidFile, Path exitFile, Console terminal,
                            ProcessIo stdio) throws IOException {
        Files.deleteIfExists(exitFile);
        try {
            monitored(pidFile, exitFile).run(what, log(), args,
                    terminal == null ? stdio.stdio() : ProcessIo.NULL_STDIO, null);
        } catch (IOException | RuntimeException e) {
            if (terminal != null) {
                terminal.close();
            }
            throw e;
        }
        int launched = readPid(pidFile);
        CompletableFuture<ExitStatus> exited = exitOf(launched, exitFile);
        wire(terminal, stdio);
        exited.whenComplete((s, t) -> {
            stdio.close();
            if (terminal != null) {
                terminal.close();
            }
        });
        return new Launched(launched, exited);
    }

    private Path log() {
        return bundle.resolve("log.json");
    }

    /**
     * After a failed {@link #create()}: removes what runc made (its state and a waiting {@code runc init}: runc
     * delete --force kills it, and the monitor, if it got as far, then records the exit and ends), the console and
     * the files of this attempt. Best effort; failures are logged, the Create's own error is what the caller sees.
     */
    void discardFailedCreate() {
        try {
            runc.run("runc delete of failed container " + id, log(), List.of("delete", "--force", id),
                    OciRuntime.Stdio.none(), null);
        } catch (OciRuntime.Failure e) {
            if (!e.reason().contains("does not exist")) {
                LOG.warn("container {}: runc delete after a failed create: {}", id, e.reason());
            }
        } catch (IOException | RuntimeException e) {
            LOG.warn("container {}: runc delete after a failed create: {}", id, e.getMessage());
        }
        Path monitorPid = Path.of(bundle.resolve("init.exit") + ".pid");
        try {
            if (Files.exists(monitorPid)) {
                reaper.watch(readPid(monitorPid)); // it is our child now: reap it when it ends
                Files.deleteIfExists(monitorPid);
            }
        } catch (IOException e) {
            LOG.debug("container {}: monitor pid file: {}", id, e.getMessage());
        }
        io.close();
        if (console != null) {
            console.close();
        }
    }

    static int readPid(Path pidFile) throws IOException {
        String s = Files.readString(pidFile, StandardCharsets.UTF_8).trim();
        try {
            return Integer.parseInt(s);
        } catch (NumberFormatException e) {
            throw new IOException("runc wrote an invalid pid file " + pidFile + ": " + s);
        }
    }

    /** Where OOM kills of this container are watched (its host memory cgroup); null watches none. */
    RuncContainer withOom(io.kuasar.sandbox.cgroup.OomMonitor monitor) {
        this.oom = monitor;
        return this;
    }

    @Override
    public boolean watchOom(Runnable onOom) {
        return oom != null && oom.watch(id, pid, onOom);
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
    public void start() throws IOException {
        runc.run("runc start of container " + id, log(), List.of("start", id), OciRuntime.Stdio.none(), null);
    }

    @Override
    public Exec exec(ExecProcessRequest request) throws IOException {
        String execId = request.getExecId();
        JsonNode process;
        try {
            process = json.readTree(request.getSpec().getValue().toByteArray());
        } catch (IOException e) {
            throw Status.INVALID_ARGUMENT.withDescription("exec " + execId + " in container " + id
                    + ": spec is not a valid OCI process (JSON): " + e.getMessage()).asRuntimeException();
        }
        if (process == null || !process.path("args").isArray() || process.path("args").isEmpty()) {
            throw Status.INVALID_ARGUMENT.withDescription("exec " + execId + " in container " + id
                    + ": spec.args must be a non-empty list").asRuntimeException();
        }
        boolean terminal = request.getTerminal() || process.path("terminal").asBoolean(false);
        if (terminal) {
            ((com.fasterxml.jackson.databind.node.ObjectNode) process).put("terminal", true);
        }
        Path processFile = bundle.resolve("exec-" + execId + ".json");
        Files.write(processFile, json.writeValueAsBytes(process));
        ProcessIo execIo = new ProcessIo("exec " + execId + " in container " + id, request.getStdin(),
                request.getStdout(), request.getStderr());
        RuncExec e = new RuncExec(execId, processFile, execIo, terminal ? openConsole(consoleDir) : null);
        execs.put(execId, e);
        return e;
    }

    /** An exec'd process: {@code runc exec --detach}, then tracked like the init process. */
    private final class RuncExec implements Exec {
        private final String execId;
        private final Path processFile;
        private final ProcessIo io;
        private final Console console;
        private CompletableFuture<ExitStatus> exit = new CompletableFuture<>();
        private int execPid;
        private long execStartTime;

        RuncExec(String execId, Path processFile, ProcessIo io, Console console) {
            this.execId = execId;
            this.processFile = processFile;
            this.io = io;
            this.console = console;
        }

        @Override
        public int start() throws IOException {
            Path pidFile = bundle.resolve("exec-" + execId + ".pid");
            List<String> args = new ArrayList<>(List.of("exec", "--detach", "--pid-file", pidFile.toString(),
                    "--process", processFile.toString()));
            args.addAll(consoleArgs(console));
            args.add(id);
            Launched launched = launch("runc exec " + execId + " in container " + id, args, pidFile, exitFile(),
                    console, io);
            execPid = launched.pid();
            execStartTime = Procfs.startTime(execPid);
            exit = launched.exit();
            Files.deleteIfExists(pidFile);
            return execPid;
        }

        @Override
        public CompletableFuture<ExitStatus> exit() {
            return exit;
        }

        /** Through a pidfd, and only if the pid still names the process that was started (its start time). */
        @Override
        public boolean kill(int signal) {
            if (exit.isDone() || execPid <= 0) {
                return false;
            }
            return new io.kuasar.sandbox.process.ProcessRef(execPid, execStartTime).signal(signal);
        }

        private Path exitFile() {
            return bundle.resolve("exec-" + execId + ".exit");
        }

        @Override
        public Map<String, String> facts() {
            return Map.of(FACT_PROCESS_FILE, processFile.toString(), FACT_EXIT_FILE, exitFile().toString());
        }

        @Override
        public void resizePty(int width, int height) throws IOException {
            resize(console, "exec " + execId + " in container " + id, width, height);
        }

        @Override
        public void closeStdin() {
            // Without a terminal the process holds containerd's stdin FIFO itself: EOF arrives when containerd
            // closes its end. With one, stop forwarding into the terminal.
            if (console != null) {
                console.closeStdin();
            }
        }

        @Override
        public void delete() throws IOException {
            io.close();
            if (console != null) {
                console.close();
            }
            Files.deleteIfExists(exitFile());
            execs.remove(execId);
            Files.deleteIfExists(processFile);
        }
    }

    @Override
    public void kill(int signal, boolean all) throws IOException {
        List<String> args = new ArrayList<>(List.of("kill"));
        if (all) {
            args.add("--all");
        }
        args.add(id);
        args.add(Integer.toString(signal));
        try {
            runc.run("runc kill of container " + id, log(), args, OciRuntime.Stdio.none(), null);
        } catch (OciRuntime.Failure e) {
            String r = e.reason();
            if (r.contains("not running") || r.contains("process already finished") || r.contains("does not exist")) {
                throw Status.NOT_FOUND.withDescription("container " + id + ": process already finished")
                        .asRuntimeException();
            }
            throw e;
        }
    }

    @Override
    public void delete() throws IOException {
        try {
            runc.run("runc delete of container " + id, log(), List.of("delete", "--force", id), OciRuntime.Stdio.none(),
                    null);
        } catch (OciRuntime.Failure e) {
            if (!e.reason().contains("does not exist")) {
                throw e;
            }
        }
        io.close();
        if (console != null) {
            console.close();
        }
        execs.values().forEach(e -> {
            e.io.close();
            if (e.console != null) {
                e.console.close();
            }
        });
        if (oom != null) {
            oom.unwatch(id);
        }
        if (rootfsMounted) {
            Linux.umount(bundle.resolve("rootfs").toString(), Linux.MNT_DETACH);
        }
    }

    @Override
    public List<ProcessInfo> pids() throws IOException {
        OciRuntime.Result r = runc.run("runc ps of container " + id, log(), List.of("ps", "--format", "json", id),
                OciRuntime.Stdio.none(), null);
        JsonNode arr = json.readTree(r.output().isBlank() ? "[]" : r.output());
        Map<Integer, String> execByPid = new java.util.HashMap<>();
        execs.values().forEach(e -> execByPid.put(e.execPid, e.execId));
        List<ProcessInfo> out = new ArrayList<>();
        for (JsonNode n : arr) {
            int p = n.asInt();
            ProcessInfo.Builder b = ProcessInfo.newBuilder().setPid(p);
            String execId = execByPid.get(p);
            if (execId != null) {
                b.setInfo(CgroupStats.pack(ProcessDetails.newBuilder().setExecId(execId).build()));
            }
            out.add(b.build());
        }
        return out;
    }

    @Override
    public Any stats() throws IOException {
        return cgroups.statsOf(pid);
    }

    @Override
    public void update(Any resources) throws IOException {
        byte[] value = resources.getValue().toByteArray();
        try {
            JsonNode n = json.readTree(value);
            if (n == null || !n.isObject()) {
                throw new IOException("not a JSON object");
            }
        } catch (IOException e) {
            throw Status.INVALID_ARGUMENT.withDescription("container " + id
                    + ": resources must be OCI LinuxResources as JSON: " + e.getMessage()).asRuntimeException();
        }
        runc.run("runc update of container " + id, log(), List.of("update", "--resources", "-", id),
                OciRuntime.Stdio.none(), value);
    }

    @Override
    public void pause() throws IOException {
        runc.run("runc pause of container " + id, log(), List.of("pause", id), OciRuntime.Stdio.none(), null);
    }

    @Override
    public void resume() throws IOException {
        runc.run("runc resume of container " + id, log(), List.of("resume", id), OciRuntime.Stdio.none(), null);
    }

    @Override
    public void resizePty(int width, int height) throws IOException {
        resize(console, "container " + id, width, height);
    }

    static void resize(Console c, String who, int width, int height) throws IOException {
        if (c == null) {
            throw Status.FAILED_PRECONDITION.withDescription(who + " has no terminal").asRuntimeException();
        }
        try {
            c.resize(width, height);
        } catch (io.grpc.StatusRuntimeException e) {
            throw e.getStatus().withDescription(who + ": " + e.getStatus().getDescription()).asRuntimeException();
        }
    }

    @Override
    public void closeStdin() {
        if (console != null) {
            console.closeStdin();
        }
    }

    @Override
    public String toString() {
        return "runc container " + id;
    }
}
