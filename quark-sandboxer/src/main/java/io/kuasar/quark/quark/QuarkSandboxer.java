package io.kuasar.quark.quark;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.grpc.Status;
import io.kuasar.api.cri.v1.LinuxContainerResources;
import io.kuasar.api.cri.v1.PodSandboxConfig;
import io.kuasar.api.types.Metric;
import io.kuasar.sandbox.controller.Sandboxer;
import io.kuasar.sandbox.controller.TaskResources;
import io.kuasar.sandbox.mount.Mounts;
import io.kuasar.sandbox.pod.PodFiles;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.process.ProcessReaper;
import io.kuasar.sandbox.process.ProcessRef;
import io.kuasar.sandbox.state.AtomicFiles;
import io.kuasar.sandbox.state.Ids;
import io.kuasar.sandbox.state.SandboxRecord;
import io.kuasar.sandbox.state.StateStore;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

/**
 * Kuasar's Quark flow, exactly: the pod's OCI spec (from the PodSandboxConfig) in {@code <base>/sandbox/config.json},
 * {@code quark -r <base>/sandbox sandbox --task-socket <socket> --id <id> --pid-file <base>/pid} run in
 * {@code <base>/sandbox}, its pid read once it daemonized; Quark (QVisor + QKernel) then serves the Task API itself on
 * its task socket, whose address goes back to containerd with the {@code ttrpc+unix://} scheme containerd 2.x needs
 * (Kuasar returns a bare {@code unix://}, which containerd 2.x rejects). Kuasar puts the socket at
 * {@code <base>/quark-task.sock}; here sandboxes live one level deeper ({@code <dir>/sandboxes/<id>}), which would
 * not fit a 64-character id into a socket path, so it is {@code <dir>/sock/<id>.sock}.
 * <p>
 * Containers reach Quark the way Kuasar's containerd fork and iSulad announce them: {@code Update(extensions.tasks)}.
 * Each is laid out in the sandbox bundle as Quark expects: {@code <base>/sandbox/<cid>/rootfs} with the rootfs mounts
 * on it, bind mounts mounted inside it and dropped from the spec, and the stdio files bind-mounted to
 * {@code <base>/sandbox/<cid>/{stdin,stdout,stderr}} (exec processes: {@code <cid>/<exec-id>-stdin}, ...), which Quark
 * sees as {@code /<cid>/stdin}, ...
 * <p>
 * Quark cannot be built or run on the machines this project is tested on; the flow is tested against a stand-in
 * {@code quark} that checks this contract (docs/quark.md says what was and was not run).
 */
public final class QuarkSandboxer implements Sandboxer {
    private static final Logger LOG = LoggerFactory.getLogger(QuarkSandboxer.class);
    static final String FACT_PID = "quark.pid";
    static final String FACT_START_TIME = "quark.start";
    /** sun_path holds 108 bytes, the terminating NUL included. */
    private static final int MAX_SOCKET_PATH = 107;
    private static final String[] STDIO = {"stdin", "stdout", "stderr"};
    private final ObjectMapper json = new ObjectMapper();
    private final String binary;
    private final Path quarkConfig;
    private final StateStore store;
    private final ProcessReaper reaper;
    private final Duration startTimeout;
    private final Map<String, CompletableFuture<ExitStatus>> exits = new ConcurrentHashMap<>();

    /**
     * @param binary      Quark's {@code quark} (a name looked up in PATH, or a path)
     * @param quarkConfig Quark's own config ({@code /etc/quark/config.json}), checked before a pod starts
     */
    public QuarkSandboxer(String binary, Path quarkConfig, StateStore store, ProcessReaper reaper,
                          Duration startTimeout) {
        this.binary = binary;
        this.quarkConfig = quarkConfig;
        this.store = store;
        this.reaper = reaper;
        this.startTimeout = startTimeout;
    }

    @Override
    public String name() {
        return "quark-sandboxer";
    }

    /** Quark runs a pod as Kuasar wants it only with {@code "Sandboxed": true} and {@code "ShimMode": false}. */
    void checkQuarkConfig() {
        JsonNode c;
        try {
            c = json.readTree(quarkConfig.toFile());
        } catch (IOException e) {
            throw Status.FAILED_PRECONDITION.withDescription("Quark's config " + quarkConfig + " cannot be read ("
                    + e.getMessage() + "): install Quark, whose config must have \"Sandboxed\": true and "
                    + "\"ShimMode\": false, or run quark-sandboxer --backend gvisor").asRuntimeException();
        }
        List<String> wrong = new ArrayList<>();
        if (!c.path("Sandboxed").asBoolean(false)) {
            wrong.add("\"Sandboxed\": true");
        }
        if (c.path("ShimMode").asBoolean(true)) {
            wrong.add("\"ShimMode\": false");
        }
        if (!wrong.isEmpty()) {
            throw Status.FAILED_PRECONDITION.withDescription("Quark's config " + quarkConfig + " must have "
                    + String.join(" and ", wrong) + " for Kuasar's sandbox mode").asRuntimeException();
        }
    }

    @Override
    public void create(SandboxRecord r) throws IOException {
        checkQuarkConfig();
        PodSandboxConfig cfg = PodFiles.config(r);
        if (!r.netnsPath().isEmpty() && !Files.exists(Path.of(r.netnsPath()))) {
            throw Status.INVALID_ARGUMENT.withDescription("sandbox " + r.id() + ": network namespace "
                    + r.netnsPath() + " does not exist").asRuntimeException();
        }
        Path sandbox = store.sandboxDir(r.id()).resolve("sandbox");
        Files.createDirectories(sandbox.resolve("rootfs").resolve("dev"));
        boolean given = r.spec() != null && r.spec().length > 0 && r.specType() != null
                && r.specType().endsWith("runtime-spec/1/Spec"); // containerd's Any of an OCI spec holds its JSON
        byte[] spec = given ? r.spec() : json.writeValueAsBytes(podSpec(r, cfg));
        AtomicFiles.write(sandbox.resolve("config.json"), spec);
    }

    /** Kuasar's sandbox spec: the pod's resources and network namespace, a default process, root "rootfs". */
    ObjectNode podSpec(SandboxRecord r, PodSandboxConfig cfg) {
        ObjectNode spec = json.createObjectNode().put("ociVersion", "1.0.2");
        ObjectNode process = spec.putObject("process").put("terminal", false).put("cwd", "/");
        process.putObject("user").put("uid", 0).put("gid", 0);
        process.putArray("args");
        spec.putObject("root").put("path", "rootfs");
        ObjectNode linux = spec.putObject("linux");
        ArrayNode ns = linux.putArray("namespaces");
        if (!r.netnsPath().isEmpty()) {
            ns.addObject().put("type", "network").put("path", r.netnsPath());
        }
        if (cfg != null && cfg.getLinux().hasResources()) {
            LinuxContainerResources res = cfg.getLinux().getResources();
            ObjectNode out = linux.putObject("resources");
            if (res.getMemoryLimitInBytes() > 0) {
                ObjectNode mem = out.putObject("memory").put("limit", res.getMemoryLimitInBytes());
                if (res.getMemorySwapLimitInBytes() > 0) {
                    mem.put("swap", res.getMemorySwapLimitInBytes());
                }
            }
            ObjectNode cpu = out.putObject("cpu");
            if (res.getCpuShares() > 0) {
                cpu.put("shares", res.getCpuShares());
            }
            if (res.getCpuQuota() != 0) {
                cpu.put("quota", res.getCpuQuota());
            }
            if (res.getCpuPeriod() > 0) {
                cpu.put("period", res.getCpuPeriod());
            }
            if (!res.getCpusetCpus().isEmpty()) {
                cpu.put("cpus", res.getCpusetCpus());
            }
            if (!res.getCpusetMems().isEmpty()) {
                cpu.put("mems", res.getCpusetMems());
            }
            ArrayNode huge = out.putArray("hugepageLimits");
            res.getHugepageLimitsList().forEach(h -> huge.addObject().put("pageSize", h.getPageSize())
                    .put("limit", h.getLimit()));
        }
        return spec;
    }

    @Override
    public Started start(SandboxRecord r, Instant deadline) throws IOException {
        Path base = store.sandboxDir(r.id());
        Path sandbox = base.resolve("sandbox");
        Path pidFile = base.resolve("pid");
        Files.deleteIfExists(pidFile);
        Path socket = taskSocket(r.id());
        if (socket.toString().length() > MAX_SOCKET_PATH) {
            throw Status.FAILED_PRECONDITION.withDescription("sandbox " + r.id() + ": Quark's task socket " + socket
                    + " would be longer than " + MAX_SOCKET_PATH + " bytes; use a shorter --dir").asRuntimeException();
        }
        Files.createDirectories(socket.getParent());
        Files.deleteIfExists(socket);
        File log = base.resolve("quark.log").toFile();
        ProcessBuilder pb = new ProcessBuilder(binary, "-r", sandbox.toString(), "sandbox", "--task-socket",
                socket.toString(), "--id", r.id(), "--pid-file", pidFile.toString())
                .directory(sandbox.toFile()).redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                .redirectOutput(ProcessBuilder.Redirect.appendTo(log)).redirectErrorStream(true);
        Process p;
        try {
            p = pb.start();
        } catch (IOException e) {
            throw Status.FAILED_PRECONDITION.withDescription("cannot run Quark's " + binary + ": " + e.getMessage()
                    + " (install Quark and put quark on PATH, pass --quark PATH, or run quark-sandboxer --backend "
                    + "gvisor)").asRuntimeException();
        }
        try {
            if (!p.waitFor(startTimeout.toMillis(), TimeUnit.MILLISECONDS)) {
                p.destroyForcibly();
                throw Status.DEADLINE_EXCEEDED.withDescription("sandbox " + r.id() + ": quark did not daemonize "
                        + "within " + startTimeout.toSeconds() + " s; see " + log).asRuntimeException();
            }
        } catch (InterruptedException e) {
            p.destroyForcibly();
            Thread.currentThread().interrupt();
            throw Status.CANCELLED.withDescription("sandbox " + r.id() + ": start interrupted").asRuntimeException();
        }
        if (p.exitValue() != 0 || !Files.exists(pidFile)) {
            throw Status.INTERNAL.withDescription("sandbox " + r.id() + ": quark sandbox exited " + p.exitValue()
                    + (Files.exists(pidFile) ? "" : " without writing " + pidFile) + "; see " + log)
                    .asRuntimeException();
        }
        int pid = Integer.parseInt(Files.readString(pidFile).trim());
        ProcessRef quark = ProcessRef.of(pid);
        if (!quark.isAlive()) {
            throw Status.INTERNAL.withDescription("sandbox " + r.id() + ": quark's pid " + pid + " is not running; "
                    + "see " + log).asRuntimeException();
        }
        CompletableFuture<ExitStatus> exit = reaper.watch(pid);
        exits.put(r.id(), exit);
        LOG.info("sandbox {}: quark pid {}", r.id(), pid);
        return new Started(pid, "ttrpc+unix://" + socket, exit, Map.of(FACT_PID, Integer.toString(pid), FACT_START_TIME,
                Long.toString(quark.startTime())));
    }

    Path taskSocket(String id) {
        return store.socketDir().resolve(id + ".sock");
    }

    @Override
    public void stop(SandboxRecord r, Duration timeout) {
        ProcessRef quark = quarkOf(r);
        if (quark != null && quark.signal(9)) {
            CompletableFuture<ExitStatus> exit = exits.get(r.id());
            try {
                if (exit != null) {
                    exit.get(5, TimeUnit.SECONDS);
                }
            } catch (Exception e) {
                LOG.warn("sandbox {}: quark {} did not exit after SIGKILL", r.id(), quark.pid());
            }
        }
    }

    /** Kuasar's delete: every mount below the sandbox's directory, then its files. */
    @Override
    public void shutdown(SandboxRecord r) throws IOException {
        Path base = store.sandboxDir(r.id());
        Mounts.unmountBelow(base);
        exits.remove(r.id());
        StateStore.deleteTree(base.resolve("sandbox"));
        Files.deleteIfExists(taskSocket(r.id()));
        Files.deleteIfExists(base.resolve("pid"));
    }

    @Override
    public Started recover(SandboxRecord r) {
        ProcessRef quark = quarkOf(r);
        if (quark == null || !quark.isAlive()) {
            return null;
        }
        CompletableFuture<ExitStatus> exit = reaper.watch(quark.pid());
        exits.put(r.id(), exit);
        return new Started(quark.pid(), "ttrpc+unix://" + taskSocket(r.id()), exit, r.backend());
    }

    static ProcessRef quarkOf(SandboxRecord r) {
        return ProcessRef.parse(r.backend().get(FACT_PID), r.backend().get(FACT_START_TIME));
    }

    /** Quark serves the pod's Task API (and its stats) itself. */
    @Override
    public Metric metrics(SandboxRecord r) {
        return null;
    }

    /** Kuasar's append/remove_container and the exec IO of update_container, from Update(extensions.tasks). */
    @Override
    public void tasksUpdated(SandboxRecord r, TaskResources.Diff diff) throws IOException {
        Path sandbox = store.sandboxDir(r.id()).resolve("sandbox");
        for (String id : diff.removedTasks()) {
            removeContainer(sandbox, id);
        }
        for (TaskResources.Task t : diff.addedTasks()) {
            appendContainer(sandbox, t);
        }
        for (var e : diff.removedProcesses().entrySet()) {
            Path bundle = sandbox.resolve(Ids.require("container", e.getKey()));
            for (String exec : e.getValue()) {
                for (String s : STDIO) {
                    Path f = bundle.resolve(Ids.require("exec", exec) + "-" + s);
                    Mounts.unmountAll(f);
                    Files.deleteIfExists(f);
                }
            }
        }
        for (var e : diff.addedProcesses().entrySet()) {
            Path bundle = sandbox.resolve(Ids.require("container", e.getKey()));
            for (TaskResources.Process p : e.getValue()) {
                String exec = Ids.require("exec", p.execId());
                bindIo(bundle, exec + "-", p.stdin(), p.stdout(), p.stderr());
            }
        }
    }

    private void appendContainer(Path sandbox, TaskResources.Task t) throws IOException {
        String id = Ids.require("container", t.taskId());
        Path bundle = sandbox.resolve(id);
        Path rootfs = bundle.resolve("rootfs");
        Files.createDirectories(rootfs);
        try {
            Mounts.mountAll(t.rootfsMounts(), rootfs);
            ObjectNode spec = t.spec() != null && t.spec().isObject() ? ((ObjectNode) t.spec()).deepCopy()
                    : json.createObjectNode();
            ArrayNode kept = json.createArrayNode();
            for (JsonNode m : spec.path("mounts")) {
                if (!io.kuasar.sandbox.task.OciSpec.isBindMount(m)) {
                    kept.add(m);
                    continue;
                }
                Path source = Path.of(m.path("source").asText());
                Path target = inside(rootfs, m.path("destination").asText());
                if (Files.isDirectory(source)) {
                    Files.createDirectories(target);
                } else {
                    Files.createDirectories(target.getParent());
                    if (!Files.exists(target)) {
                        Files.createFile(target);
                    }
                }
                List<String> options = new ArrayList<>();
                m.path("options").forEach(o -> options.add(o.asText()));
                if (!options.contains("bind") && !options.contains("rbind")) {
                    options.add("rbind");
                }
                Mounts.mount("bind", source.toString(), options, target);
            }
            spec.set("mounts", kept);
            spec.with("root").put("path", "rootfs");
            bindIo(bundle, "", t.stdin(), t.stdout(), t.stderr());
            AtomicFiles.write(bundle.resolve("config.json"), json.writerWithDefaultPrettyPrinter()
                    .writeValueAsBytes(spec));
            LOG.info("container {} laid out in {}", id, bundle);
        } catch (IOException | RuntimeException e) {
            removeContainer(sandbox, id);
            throw e;
        }
    }

    /** A stdio file of containerd's, bind-mounted where Quark reads it: {@code <bundle>/<prefix>stdin}, ... */
    private static void bindIo(Path bundle, String prefix, String... files) throws IOException {
        for (int i = 0; i < STDIO.length; i++) {
            String source = files[i] == null ? "" : files[i].replaceFirst("^(fifo|file)://", "");
            if (source.isEmpty()) {
                continue;
            }
            Path target = bundle.resolve(prefix + STDIO[i]);
            if (!Files.exists(target)) {
                Files.createFile(target);
            }
            Mounts.mount("bind", source, List.of("bind"), target);
        }
    }

    private void removeContainer(Path sandbox, String rawId) throws IOException {
        Path bundle = sandbox.resolve(Ids.require("container", rawId));
        Mounts.unmountBelow(bundle);
        StateStore.deleteTree(bundle);
    }

    /** {@code dest} inside {@code root}; it may not leave it. */
    private static Path inside(Path root, String dest) {
        Path p = root.resolve(dest.replaceFirst("^/+", "")).normalize();
        if (!p.startsWith(root)) {
            throw Status.INVALID_ARGUMENT.withDescription("mount destination " + dest + " leaves the rootfs")
                    .asRuntimeException();
        }
        return p;
    }

}
