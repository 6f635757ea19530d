package io.kuasar.wasm.engine;

import io.kuasar.sandbox.logging.Progress;
import io.kuasar.sandbox.metrics.MetricsRegistry;
import io.kuasar.sandbox.tracing.Span;
import io.kuasar.sandbox.tracing.Tracing;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;

/**
 * An engine's loaded modules by content digest: each content is compiled once, even when containers of the same
 * image are created at the same time (the later ones wait for the first compile); a failed compile is not kept.
 */
public final class LoadedModules<M extends WasmEngine.Module> {
    private final Map<String, CompletableFuture<M>> byDigest = new ConcurrentHashMap<>();
    private static final Logger LOG = LoggerFactory.getLogger(LoadedModules.class);
    private static final Duration QUIET = Duration.ofSeconds(2);
    private final String engine;

    /** {@code engine} names the cache in the daemon's metrics ({@code cache="wasm.<engine>"}) and the compile step. */
    public LoadedModules(String engine) {
        this.engine = engine;
    }

    /** Compiles the module in {@code wasm}, whose bytes and digest are given. */
    @FunctionalInterface
    public interface Compiler<M> {
        M compile(byte[] bytes, String digest) throws IOException;
    }

    /** The module with the content of {@code wasm}, compiled by {@code compiler} if no module had that content. */
    public M load(Path wasm, Compiler<M> compiler) throws IOException {
        byte[] bytes = Files.readAllBytes(wasm);
        String digest = WasmEngine.digest(bytes);
        CompletableFuture<M> mine = new CompletableFuture<>();
        CompletableFuture<M> f = byDigest.putIfAbsent(digest, mine);
        // a hit: a module of this content is loaded (or being compiled) already; a miss compiles (or reads the
        // engine's on-disk output) under a wasm.compile step
        MetricsRegistry.global().cacheLookup("wasm." + engine, f != null);
        if (f == null) {
            f = mine;
            // a large module's first compile can take seconds: the log says so if it does
            try (Span step = Tracing.step("wasm.compile");
                 Progress progress = Progress.start(LOG, "compiling " + wasm + " (" + bytes.length / 1024 + " KiB) on "
                         + engine, QUIET)) {
                step.attr("kuasar.wasm.engine", engine).attr("kuasar.wasm.digest", digest)
                        .attr("kuasar.wasm.bytes", bytes.length);
                try {
                    mine.complete(compiler.compile(bytes, digest));
                } catch (IOException | RuntimeException e) {
                    step.error(e);
                    progress.failed();
                    byDigest.remove(digest, mine);
                    mine.completeExceptionally(e);
                }
            }
        }
        try {
            return f.get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted while " + wasm + " was compiled", e);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof IOException io) {
                throw new IOException(io.getMessage(), io);
            }
            if (e.getCause() instanceof RuntimeException re) {
                throw re; // e.g. a StatusRuntimeException naming what the engine lacks
            }
            throw new IOException(wasm + ": " + e.getCause().getMessage(), e.getCause());
        }
    }
}
