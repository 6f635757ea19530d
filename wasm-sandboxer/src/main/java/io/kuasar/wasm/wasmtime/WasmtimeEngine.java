package io.kuasar.wasm.wasmtime;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.grpc.Status;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.state.AtomicFiles;
import io.kuasar.wasm.engine.LoadedModules;
import io.kuasar.wasm.engine.WasiRun;
import io.kuasar.wasm.engine.WasmEngine;
import io.kuasar.wasm.engine.WasmProcess;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Wasmtime (Kuasar's default engine) through wasmtime-java 0.19.0 (Wasmtime 7), hosted in one helper JVM per daemon
 * ({@link WasmtimeHost}), never in the daemon's own: a Rust panic aborts the JVM it happens in, and wasmtime-java
 * offers no memory limit the daemon could rely on. The helper starts with the first Wasmtime container; if it dies,
 * its containers are reported exited and the next container starts a new one.
 * <p>
 * Limits are enforced around wasmtime-java rather than through it: the container's memory limit is written into the
 * module as its memory maximum ({@link MemoryCap}), Kill ticks the epoch of the instance's own engine (a guest inside
 * a WASI call notices it only when the call returns; if it has not ended within {@link #KILL_GRACE_MS} ms, the
 * container is reported killed and its thread is left to the helper). wasmtime-java can give a module no stdin (it
 * opens every file it is given write-only), so a container asking for one is refused.
 */
public final class WasmtimeEngine implements WasmEngine {
    private static final Logger LOG = LoggerFactory.getLogger(WasmtimeEngine.class);
    private static final ObjectMapper JSON = new ObjectMapper();
    static final String NATIVE_LIBRARY = "libwasmtime_jni_0.19.0_linux_x86_64.so";
    static final long KILL_GRACE_MS = 2000;
    private static final long REPLY_TIMEOUT_MS = 60_000;
    private static final long STATS_TIMEOUT_MS = 1_000;
    /** How long one answer of the helper serves Stats (it asks for memory, then CPU time). */
    private static final long STATS_FRESH_NANOS = 100_000_000L;
    private static final long PAGE = 65536;
    private static final long DEFAULT_CAP_PAGES = 65536; // 4 GiB: every page a 32-bit memory can have

    private final Path cacheDir;
    private final List<String> jvm;
    private final LoadedModules<Loaded> modules = new LoadedModules<>("wasmtime");
    private Host host;

    /**
     * @param cacheDir capped modules, Wasmtime's own compile cache and the extracted JNI library live here
     * @param jvm      how to start a JVM with this module's classpath (the helper's main class is appended)
     */
    public WasmtimeEngine(Path cacheDir, List<String> jvm) throws IOException {
        this.cacheDir = cacheDir;
        this.jvm = List.copyOf(jvm);
        Files.createDirectories(cacheDir);
    }

    /** The daemon's own java and classpath, with a small heap: the helper holds no module memory on its heap. */
    public static List<String> sameJvm() {
        String java = ProcessHandle.current().info().command().orElse(System.getProperty("java.home") + "/bin/java");
        return List.of(java, "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "--enable-native-access=ALL-UNNAMED", "-cp", System.getProperty("java.class.path"));
    }

    @Override
    public String name() {
        return "wasmtime";
    }

    private record Loaded(String digest, Path file, byte[] bytes) implements Module {
    }

    @Override
    public Module load(Path wasm) throws IOException {
        return modules.load(wasm, (bytes, digest) -> {
            Path file = cacheDir.resolve("modules").resolve(digest.substring(7) + ".wasm");
            if (!Files.exists(file)) {
                Files.createDirectories(file.getParent());
                AtomicFiles.write(file, bytes);
            }
            JsonNode r = host().call(JSON.createObjectNode().put("op", "load").put("path", file.toString()));
            if (r.has("error")) {
                throw new IOException(wasm + " is not a valid WebAssembly module (wasmtime: "
                        + r.path("error").asText() + ")");
            }
            return new Loaded(digest, file, bytes);
        });
    }

    @Override
    public WasmProcess start(Module module, WasiRun run) throws IOException {
        if (!(module instanceof Loaded m)) {
            throw new IllegalArgumentException("module " + module.digest() + " was not loaded by " + name());
        }
        if (run.stdin() != null) {
            throw Status.INVALID_ARGUMENT.withDescription("container " + run.id() + ": the wasmtime engine cannot "
                    + "give a module a stdin (wasmtime-java 0.19 opens it write-only); use the chicory or wasmedge "
                    + "engine, or stdin: false").asRuntimeException();
        }
        long capPages = run.memoryLimitBytes() > 0 ? Math.max(1, run.memoryLimitBytes() / PAGE) : DEFAULT_CAP_PAGES;
        Path capped = cacheDir.resolve("modules").resolve(m.digest().substring(7) + "-" + capPages + ".wasm");
        if (!Files.exists(capped)) {
            try {
                AtomicFiles.write(capped, MemoryCap.apply(m.bytes(), capPages));
            } catch (IOException e) {
                throw new IOException("container " + run.id() + ": " + e.getMessage(), e);
            }
        }
        ObjectNode cmd = JSON.createObjectNode().put("op", "start").put("id", run.id()).put("path", capped.toString());
        run.argv().forEach(cmd.putArray("argv")::add);
        ObjectNode env = cmd.putObject("env");
        run.env().forEach(env::put);
        ObjectNode pre = cmd.putObject("preopens");
        run.preopens().forEach((guest, hostDir) -> pre.put(guest, hostDir.toString()));
        if (run.stdout() != null) {
            cmd.put("stdout", run.stdout().toString());
        }
        if (run.stderr() != null) {
            cmd.put("stderr", run.stderr().toString());
        }
        Host h = host();
        Instance i = new Instance(h, run.id());
        h.instances.put(run.id(), i);
        JsonNode r = h.call(cmd);
        if (r.has("error")) {
            h.instances.remove(run.id(), i);
            throw new IOException("container " + run.id() + ": wasmtime could not instantiate the module: "
                    + r.path("error").asText());
        }
        return i;
    }

    /** The helper's pid, or -1 while there is none. */
    synchronized long helperPid() {
        return host != null && host.process.isAlive() ? host.process.pid() : -1;
    }

    /** The running helper, started on first use and again after it died. */
    private synchronized Host host() throws IOException {
        if (host == null || !host.process.isAlive()) {
            host = new Host(startHelper());
        }
        return host;
    }

    private Process startHelper() throws IOException {
        Path nativeDir = cacheDir.resolve("native");
        Path lib = nativeDir.resolve("libwasmtime_jni.so");
        if (!Files.exists(lib)) {
            // once, instead of wasmtime-java's own copy into /tmp at every start, which it never deletes
            try (InputStream in = ClassLoader.getSystemResourceAsStream(NATIVE_LIBRARY)) {
                if (in == null) {
                    throw Status.FAILED_PRECONDITION.withDescription("the wasmtime engine needs wasmtime-java's "
                            + NATIVE_LIBRARY + " on the classpath; reinstall wasm-sandboxer (make install)")
                            .asRuntimeException();
                }
                Files.createDirectories(nativeDir);
                AtomicFiles.write(lib, in.readAllBytes());
            }
        }
        Path cacheConfig = cacheDir.resolve("wasmtime-cache.toml");
        AtomicFiles.write(cacheConfig, ("[cache]\nenabled = true\ndirectory = \""
                + cacheDir.resolve("compiled") + "\"\n").getBytes(StandardCharsets.UTF_8));
        List<String> cmd = new ArrayList<>(jvm);
        cmd.add(1, "-Djava.library.path=" + nativeDir);
        cmd.add(WasmtimeHost.class.getName());
        cmd.add(cacheConfig.toString());
        Process p = new ProcessBuilder(cmd).redirectError(ProcessBuilder.Redirect.INHERIT).start();
        LOG.info("wasmtime helper started, pid {}", p.pid());
        return p;
    }

    /** One helper process and the conversation with it. */
    private static final class Host {
        final Process process;
        final OutputStream to;
        final AtomicLong nextReq = new AtomicLong();
        final Map<Long, CompletableFuture<JsonNode>> replies = new ConcurrentHashMap<>();
        final Map<String, Instance> instances = new ConcurrentHashMap<>();

        Host(Process process) {
            this.process = process;
            this.to = process.getOutputStream();
            Thread.ofPlatform().name("wasmtime-helper-" + process.pid()).daemon().start(this::readEvents);
        }

        JsonNode call(ObjectNode cmd) throws IOException {
            return call(cmd, REPLY_TIMEOUT_MS);
        }

        JsonNode call(ObjectNode cmd, long timeoutMs) throws IOException {
            long req = nextReq.incrementAndGet();
            CompletableFuture<JsonNode> reply = new CompletableFuture<>();
            replies.put(req, reply);
            try {
                send(cmd.put("req", req));
                return reply.get(timeoutMs, TimeUnit.MILLISECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException("interrupted while waiting for the wasmtime helper", e);
            } catch (ExecutionException | TimeoutException e) {
                throw new IOException("the wasmtime helper did not answer: "
                        + (e.getCause() != null ? e.getCause().getMessage() : "timeout"), e);
            } finally {
                replies.remove(req);
            }
        }

        void send(ObjectNode cmd) throws IOException {
            byte[] line = (cmd + "\n").getBytes(StandardCharsets.UTF_8);
            synchronized (to) {
                to.write(line);
                to.flush();
            }
        }

        private void readEvents() {
            try (BufferedReader in = new BufferedReader(new InputStreamReader(process.getInputStream(),
                    StandardCharsets.UTF_8))) {
                for (String line; (line = in.readLine()) != null; ) {
                    JsonNode msg = JSON.readTree(line);
                    if (msg.has("event")) {
                        Instance i = instances.remove(msg.path("id").asText());
                        if (i != null) {
                            i.exit.complete(ExitStatus.of(msg.path("code").asInt()));
                        }
                    } else {
                        CompletableFuture<JsonNode> f = replies.get(msg.path("req").asLong());
                        if (f != null) {
                            f.complete(msg);
                        }
                    }
                }
            } catch (IOException e) {
                LOG.warn("wasmtime helper {}: {}", process.pid(), e.getMessage());
            }
            // The helper is gone (a Wasmtime crash aborts its JVM): its instances with it.
            int code = -1;
            try {
                code = process.waitFor();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            LOG.error("wasmtime helper {} exited ({}); {} running Wasmtime container(s) are reported exited",
                    process.pid(), code, instances.size());
            IOException gone = new IOException("the wasmtime helper exited (" + code + ")");
            replies.values().forEach(f -> f.completeExceptionally(gone));
            instances.values().forEach(i -> i.exit.complete(ExitStatus.unknown()));
            instances.clear();
        }
    }

    /** One instance in the helper. */
    private static final class Instance implements WasmProcess {
        private final Host host;
        private final String id;
        private final CompletableFuture<ExitStatus> exit = new CompletableFuture<>();
        private volatile long cpu;
        private volatile long memory;
        private volatile long refreshedAt;

        Instance(Host host, String id) {
            this.host = host;
            this.id = id;
        }

        @Override
        public CompletableFuture<ExitStatus> exit() {
            return exit;
        }

        @Override
        public boolean kill(int signal) {
            if (exit.isDone()) {
                return false;
            }
            refresh(); // the CPU time it used, read while it still runs
            try {
                host.send(JSON.createObjectNode().put("op", "kill").put("id", id).put("signal", signal));
            } catch (IOException e) {
                LOG.warn("container {}: kill through the wasmtime helper: {}", id, e.getMessage());
            }
            // A guest blocked inside a WASI call sees the epoch only when the call returns.
            CompletableFuture.delayedExecutor(KILL_GRACE_MS, TimeUnit.MILLISECONDS).execute(() -> {
                if (exit.complete(ExitStatus.of(128 + signal))) {
                    host.instances.remove(id);
                    LOG.warn("container {}: Wasmtime did not stop it within {} ms (a guest inside a WASI call);"
                            + " reported killed, its thread stays in the helper until the call returns", id,
                            KILL_GRACE_MS);
                }
            });
            return true;
        }

        /** One stats round trip to the helper serves both figures of one Stats call. */
        private void refresh() {
            long now = System.nanoTime();
            if (exit.isDone() || now - refreshedAt < STATS_FRESH_NANOS) {
                return;
            }
            refreshedAt = now;
            try {
                JsonNode r = host.call(JSON.createObjectNode().put("op", "stats").put("id", id), STATS_TIMEOUT_MS);
                if (r.has("cpu")) {
                    cpu = r.path("cpu").asLong();
                    memory = r.path("memory").asLong();
                }
            } catch (IOException e) {
                LOG.debug("container {}: stats: {}", id, e.getMessage());
            }
        }

        @Override
        public long memoryBytes() {
            refresh();
            return exit.isDone() ? 0 : memory;
        }

        @Override
        public long cpuNanos() {
            refresh();
            return cpu;
        }
    }
}
