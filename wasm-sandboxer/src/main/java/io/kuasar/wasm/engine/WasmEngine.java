package io.kuasar.wasm.engine;

import java.io.IOException;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;

/**
 * One way of running WASI (preview 1) modules, one instance per container. Engines compile a module once per content
 * and start any number of instances of it; each instance runs until its module exits, traps or is killed.
 */
public interface WasmEngine {
    /** The name containers select it by (an annotation or the daemon's default). */
    String name();

    /**
     * The module in {@code wasm}, ready to start: compiled, or taken from the engine's cache when a module with the
     * same content was loaded before. Fails with a message naming the file if it is not a valid module.
     */
    Module load(Path wasm) throws IOException;

    /** Starts an instance; it runs on a thread of its own and never on the caller's. */
    WasmProcess start(Module module, WasiRun run) throws IOException;

    /**
     * Ends what an instance of a previous daemon left running, from the {@link WasmProcess#facts() facts} recorded
     * for it. In-process engines have nothing to do: their instances died with that daemon.
     */
    default void reclaim(String containerId, java.util.Map<String, String> facts) {
    }

    /** {@code sha256:<hex>} of a module's bytes: what every engine's compile cache is keyed by. */
    static String digest(byte[] bytes) {
        try {
            return "sha256:" + HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /** A loaded module. */
    interface Module {
        /**
     * Ends what an instance of a previous daemon left running, from the {@link WasmProcess#facts() facts} recorded
     * for it. In-process engines have nothing to do: their instances died with that daemon.
     */
    default void reclaim(String containerId, java.util.Map<String, String> facts) {
    }

    /** {@code sha256:<hex>} of the module's bytes: what the compile cache is keyed by. */
        String digest();
    }
}
