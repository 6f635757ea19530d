package io.kuasar.wasm.wasmtime;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.kawamuray.wasmtime.Config;
import io.github.kawamuray.wasmtime.Engine;
import io.github.kawamuray.wasmtime.Extern;
import io.github.kawamuray.wasmtime.Func;
import io.github.kawamuray.wasmtime.Linker;
import io.github.kawamuray.wasmtime.Module;
import io.github.kawamuray.wasmtime.Store;
import io.github.kawamuray.wasmtime.Trap;
import io.github.kawamuray.wasmtime.WasmFunctionError;
import io.github.kawamuray.wasmtime.WasmFunctions;
import io.github.kawamuray.wasmtime.wasi.WasiCtx;
import io.github.kawamuray.wasmtime.wasi.WasiCtxBuilder;

import java.io.BufferedReader;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.PrintStream;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The Wasmtime helper process (its own JVM): the only code that loads wasmtime-java, so a crash of Wasmtime's native
 * code (a Rust panic aborts the whole JVM) costs the Wasmtime containers, never the sandboxer's control plane.
 * {@link WasmtimeEngine} starts it and speaks JSON lines with it on its stdin and stdout:
 * <pre>
 * → {"op":"load","req":1,"path":…}                       ← {"req":1} or {"req":1,"error":…}
 * → {"op":"start","req":2,"id":…,"path":…,"argv":[…],"env":{…},"preopens":{guest:host},"stdout":…,"stderr":…}
 * → {"op":"kill","id":…,"signal":9}
 * → {"op":"stats","req":3,"id":…}                          ← {"req":3,"cpu":ns,"memory":bytes}
 *                                                          ← {"event":"exit","id":…,"code":n}
 * </pre>
 * Each instance has an Engine of its own, because Wasmtime's epoch, what interrupts a running guest, is per
 * engine; Wasmtime's own on-disk cache (keyed by module content) makes that compile a cache read. The helper ends
 * when its stdin closes, so it never outlives the daemon.
 */
public final class WasmtimeHost {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final ThreadMXBean THREADS = ManagementFactory.getThreadMXBean();
    private final PrintStream out;
    private final Path cacheConfig;
    private final Map<String, Guest> guests = new ConcurrentHashMap<>();

    private WasmtimeHost(PrintStream out, Path cacheConfig) {
        this.out = out;
        this.cacheConfig = cacheConfig;
    }

    /** {@code WasmtimeHost <wasmtime cache config toml>} */
    public static void main(String[] args) throws IOException {
        // stdout carries the protocol only: whatever a library prints goes to stderr instead
        PrintStream protocol = new PrintStream(new FileOutputStream(java.io.FileDescriptor.out), false,
                StandardCharsets.UTF_8);
        System.setOut(System.err);
        WasmtimeHost host = new WasmtimeHost(protocol, Path.of(args[0]));
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line; (line = in.readLine()) != null; ) {
            try {
                host.handle(JSON.readTree(line));
            } catch (RuntimeException | IOException e) {
                System.err.println("wasmtime-host: " + line + ": " + e);
            }
        }
        System.exit(0); // the daemon is gone: so are its guests
    }

    private Engine newEngine() {
        return new Engine(new Config().epochInterruption(true).cacheConfigLoad(cacheConfig));
    }

    private void handle(JsonNode cmd) throws IOException {
        long req = cmd.path("req").asLong();
        switch (cmd.path("op").asText()) {
            case "load" -> {
                // compiles it once, into Wasmtime's cache: the containers' engines then read it from there
                Engine e = newEngine();
                try (Module m = Module.fromFile(e, cmd.path("path").asText())) {
                    reply(req, null);
                } catch (RuntimeException ex) {
                    reply(req, ex.getMessage());
                } finally {
                    e.dispose();
                }
            }
            case "start" -> {
                try {
                    Guest g = new Guest(cmd);
                    guests.put(g.id, g);
                    g.thread.start();
                    reply(req, null);
                } catch (RuntimeException ex) {
                    reply(req, String.valueOf(ex.getMessage()));
                }
            }
            case "kill" -> {
                Guest g = guests.get(cmd.path("id").asText());
                if (g != null) {
                    g.killedBy = cmd.path("signal").asInt(9);
                    g.engine.incrementEpoch();
                }
            }
            case "stats" -> {
                Guest g = guests.get(cmd.path("id").asText());
                ObjectNode r = JSON.createObjectNode().put("req", req);
                if (g != null) {
                    r.put("cpu", Math.max(0, THREADS.getThreadCpuTime(g.thread.threadId())));
                    r.put("memory", g.memoryBytes());
                }
                send(r);
            }
            default -> reply(req, "unknown op " + cmd.path("op").asText());
        }
    }

    private void reply(long req, String error) {
        ObjectNode r = JSON.createObjectNode().put("req", req);
        if (error != null) {
            r.put("error", error);
        }
        send(r);
    }

    private void send(ObjectNode msg) {
        String line = msg.toString();
        synchronized (out) {
            out.println(line);
            out.flush();
        }
    }

    /** One instance, on a platform thread of its own. */
    private final class Guest {
        final String id;
        final Engine engine;
        final Store<Void> store;
        final Linker linker;
        Module module;
        final Path stderr;
        final Thread thread;
        volatile int killedBy;
        volatile Extern memory;

        Guest(JsonNode cmd) {
            id = cmd.path("id").asText();
            stderr = cmd.hasNonNull("stderr") ? Path.of(cmd.path("stderr").asText()) : null;
            List<String> argv = new ArrayList<>();
            cmd.path("argv").forEach(a -> argv.add(a.asText()));
            WasiCtxBuilder wasi = new WasiCtxBuilder().args(argv);
            cmd.path("env").properties().forEach(e -> wasi.env(e.getKey(), e.getValue().asText()));
            cmd.path("preopens").properties().forEach(e -> wasi.preopenedDir(Path.of(e.getValue().asText()),
                    e.getKey()));
            if (cmd.hasNonNull("stdout")) {
                wasi.stdout(Path.of(cmd.path("stdout").asText()));
            }
            if (stderr != null) {
                wasi.stderr(stderr);
            }
            engine = newEngine();
            WasiCtx ctx = wasi.build();
            store = new Store<>(null, engine, ctx); // the same engine as the linker's: a mismatch aborts the JVM
            store.setEpochDeadline(1);              // one tick of this engine's epoch (a kill) interrupts it
            linker = new Linker(engine);
            WasiCtx.addToLinker(linker);
            try {
                module = Module.fromFile(engine, cmd.path("path").asText());
                linker.module(store, "", module);
            } catch (RuntimeException e) {
                dispose();
                throw e;
            }
            thread = Thread.ofPlatform().name("wasm-" + id).daemon().stackSize(8L << 20).unstarted(this::run);
        }

        void run() {
            int code;
            try (Func start = linker.get(store, "", "_start").orElseThrow(
                    () -> new IllegalStateException("the module exports no _start function")).func()) {
                memory = linker.get(store, "", "memory").orElse(null);
                WasmFunctions.consumer(store, start).accept();
                code = killedBy != 0 ? 128 + killedBy : 0;
            } catch (WasmFunctionError.I32ExitError e) {
                code = killedBy != 0 ? 128 + killedBy : e.exitCode();
            } catch (WasmFunctionError.TrapError e) {
                if (killedBy != 0 && e.trap() == Trap.INTERRUPT) {
                    code = 128 + killedBy;
                } else {
                    report("wasm trap: " + e.trap().name().toLowerCase(java.util.Locale.ROOT).replace('_', ' '));
                    code = 134;
                }
            } catch (RuntimeException e) {
                report("wasm: " + e.getMessage());
                code = killedBy != 0 ? 128 + killedBy : 134;
            }
            guests.remove(id);
            memory = null;
            dispose();
            send(JSON.createObjectNode().put("event", "exit").put("id", id).put("code", code));
        }

        long memoryBytes() {
            Extern m = memory;
            try {
                return m == null || m.type() != Extern.Type.MEMORY ? 0 : m.memory().dataSize(store);
            } catch (RuntimeException gone) {
                return 0;
            }
        }

        private void report(String why) {
            if (stderr == null) {
                return;
            }
            try (OutputStream err = new FileOutputStream(stderr.toFile(), true)) {
                err.write((why + "\n").getBytes(StandardCharsets.UTF_8));
            } catch (IOException ignored) {
                // the log is gone; the exit code still says it
            }
        }

        private void dispose() {
            if (module != null) {
                module.dispose();
            }
            linker.dispose();
            store.dispose();
            engine.dispose();
        }
    }
}
