package io.kuasar.wasm;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.grpc.Status;
import io.kuasar.api.task.v3.CreateTaskRequest;
import io.kuasar.sandbox.mount.Mounts;
import io.kuasar.sandbox.sys.Linux;
import io.kuasar.sandbox.task.Container;
import io.kuasar.sandbox.task.ContainerRuntime;
import io.kuasar.sandbox.task.OciSpec;
import io.kuasar.sandbox.task.TaskRecord;
import io.kuasar.sandbox.ttrpc.CallContext;
import io.kuasar.wasm.engine.WasiRun;
import io.kuasar.wasm.engine.WasmEngine;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Containers whose entrypoint is a WASI module, run in this daemon (Kuasar's semantics): the module is
 * {@code <rootfs>/<args[0]>}, WASI arguments and environment come from the OCI process, the rootfs is preopened as
 * {@code /} and each bind mount at its destination, stdio is containerd's FIFOs, and the memory limit caps the
 * module's linear memory. The module is compiled at Create, so a bad module fails CreateContainer.
 */
public final class WasmRuntime implements ContainerRuntime {
    static final String SANDBOX_ID_ANNOTATION = "io.kubernetes.cri.sandbox-id";
    /**
     * The engine a container runs on, when not the daemon's default (containerd passes it into the OCI spec when the
     * runtime's {@code container_annotations} lists it).
     */
    public static final String ENGINE_ANNOTATION = "io.kuasar.wasm.engine";
    /** The record fact naming the engine a container ran on, for recovery. */
    static final String FACT_ENGINE = "wasm.engine";
    /**
     * The cap of a container without a memory limit: modules live in the daemon's heap, and one growing without
     * bound would take it from every other container.
     */
    static final long DEFAULT_MEMORY_LIMIT = 128L << 20;
    private final Map<String, WasmEngine> engines;
    private final String defaultEngine;

    /** @param engines by name; {@code defaultEngine} must be one of them */
    public WasmRuntime(List<WasmEngine> engines, String defaultEngine) {
        Map<String, WasmEngine> byName = new LinkedHashMap<>();
        engines.forEach(e -> byName.put(e.name(), e));
        if (!byName.containsKey(defaultEngine)) {
            throw new IllegalArgumentException("unknown wasm engine " + defaultEngine + "; known: " + byName.keySet());
        }
        this.engines = byName;
        this.defaultEngine = defaultEngine;
    }

    /** The container's engine: its annotation's, else the daemon's default. */
    WasmEngine engineFor(String id, JsonNode spec) {
        String name = spec.path("annotations").path(ENGINE_ANNOTATION).asText("");
        WasmEngine e = engines.get(name.isEmpty() ? defaultEngine : name);
        if (e == null) {
            throw Status.INVALID_ARGUMENT.withDescription("container " + id + ": unknown wasm engine '" + name
                    + "' in annotation " + ENGINE_ANNOTATION + "; this daemon has " + engines.keySet())
                    .asRuntimeException();
        }
        return e;
    }

    @Override
    public Container create(CallContext ctx, CreateTaskRequest req) throws Exception {
        String id = req.getId();
        Path bundle = Path.of(req.getBundle());
        ObjectNode spec = OciSpec.read(id, bundle);
        if (req.getTerminal()) {
            throw Status.INVALID_ARGUMENT.withDescription("container " + id + ": a wasm container has no terminal "
                    + "(set tty: false)").asRuntimeException();
        }
        WasmEngine engine = engineFor(id, spec);
        boolean mounted = Mounts.mountRootfs(id, bundle, req.getRootfsList());
        try {
            Path rootfs = bundle.resolve(spec.path("root").path("path").asText("rootfs")).normalize();
            WasiRun run = wasiRun(id, spec, rootfs, req);
            Path module = modulePath(id, rootfs, run.argv().getFirst());
            WasmEngine.Module m;
            try {
                m = engine.load(module);
            } catch (IOException e) {
                throw Status.INVALID_ARGUMENT.withDescription("container " + id + ": " + e.getMessage())
                        .asRuntimeException();
            }
            String sandboxId = spec.path("annotations").path(SANDBOX_ID_ANNOTATION).asText("");
            return new WasmContainer(id, sandboxId, bundle, mounted, engine, m, run);
        } catch (RuntimeException e) {
            if (mounted) {
                Linux.umount(bundle.resolve("rootfs").toString(), Linux.MNT_DETACH);
            }
            throw e;
        }
    }

    /** Kuasar's module lookup: args[0] inside the rootfs (a leading '/' dropped); it may not leave the rootfs. */
    static Path modulePath(String id, Path rootfs, String arg0) {
        Path p = rootfs.resolve(arg0.replaceFirst("^/+", "")).normalize();
        if (!p.startsWith(rootfs)) {
            throw Status.INVALID_ARGUMENT.withDescription("container " + id + ": process.args[0] " + arg0
                    + " leaves the rootfs").asRuntimeException();
        }
        if (!Files.isRegularFile(p)) {
            throw Status.INVALID_ARGUMENT.withDescription("container " + id + ": no module at " + arg0
                    + " in the image (process.args[0] must name the .wasm file)").asRuntimeException();
        }
        return p;
    }

    static WasiRun wasiRun(String id, JsonNode spec, Path rootfs, CreateTaskRequest req) {
        List<String> argv = new ArrayList<>();
        spec.path("process").path("args").forEach(a -> argv.add(a.asText()));
        Map<String, String> env = new LinkedHashMap<>();
        for (JsonNode e : spec.path("process").path("env")) {
            String kv = e.asText();
            int eq = kv.indexOf('=');
            if (eq > 0) {
                env.put(kv.substring(0, eq), kv.substring(eq + 1));
            }
        }
        Map<String, Path> preopens = new LinkedHashMap<>();
        preopens.put("/", rootfs);
        for (JsonNode m : spec.path("mounts")) {
            boolean bind = OciSpec.isBindMount(m);
            String dest = m.path("destination").asText();
            String source = m.path("source").asText();
            if (bind && dest.startsWith("/") && !dest.equals("/") && Files.isDirectory(Path.of(source))) {
                preopens.put(dest, Path.of(source));
            }
        }
        long memory = spec.path("linux").path("resources").path("memory").path("limit").asLong(0);
        return new WasiRun(id, argv, env, preopens, stdio(req.getStdin()), stdio(req.getStdout()),
                stdio(req.getStderr()), memory > 0 ? memory : DEFAULT_MEMORY_LIMIT);
    }

    private static Path stdio(String s) {
        return s == null || s.isEmpty() ? null : Path.of(s.replaceFirst("^file://", ""));
    }

    /**
     * A module that ran in the previous daemon died with it, or is ended now if its engine ran it in a process of its
     * own: the container is reported exited (255, status lost), so containerd can remove it; its rootfs mount is
     * released on Delete.
     */
    @Override
    public Container recover(TaskRecord record) {
        WasmEngine e = engines.get(record.facts().getOrDefault(FACT_ENGINE, ""));
        if (e != null) {
            e.reclaim(record.id(), record.facts());
        }
        return WasmContainer.gone(record);
    }
}
