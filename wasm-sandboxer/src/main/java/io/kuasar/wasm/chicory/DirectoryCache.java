package io.kuasar.wasm.chicory;

import com.dylibso.chicory.compiler.Cache;
import io.kuasar.sandbox.state.AtomicFiles;
import io.kuasar.wasm.engine.WasmEngine;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;


/**
 * Chicory's compiler output kept on disk, one file per module digest, so a restarted daemon does not compile again
 * (a compile costs about half a second; loading from here about a tenth of that). Files are written atomically and
 * named by a hash of Chicory's key (its digest is base64, with '/' in it): no key becomes a path.
 */
final class DirectoryCache implements Cache {
    private final Path dir;

    DirectoryCache(Path dir) throws IOException {
        this.dir = dir;
        Files.createDirectories(dir);
    }

    private Path file(String key) {
        return dir.resolve(WasmEngine.digest(key.getBytes(StandardCharsets.UTF_8)).substring(7) + ".jar");
    }

    @Override
    public byte[] get(String key) throws IOException {
        try {
            return Files.readAllBytes(file(key));
        } catch (NoSuchFileException e) {
            return null;
        }
    }

    @Override
    public void putIfAbsent(String key, byte[] data) throws IOException {
        Path f = file(key);
        if (!Files.exists(f)) {
            AtomicFiles.write(f, data);
        }
    }
}
