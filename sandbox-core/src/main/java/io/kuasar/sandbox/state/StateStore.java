package io.kuasar.sandbox.state;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.stream.Stream;

/**
 * One directory per sandbox under the daemon's {@code --dir}, each holding an atomically written
 * {@code sandbox.json}. A directory whose state cannot be read is reported and left alone for inspection; it is
 * never deleted on load.
 */
public final class StateStore {
    private static final Logger LOG = LoggerFactory.getLogger(StateStore.class);
    public static final String STATE_FILE = "sandbox.json";

    private final Path root;
    private final ObjectMapper json = new ObjectMapper()
            .disable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
            .enable(SerializationFeature.INDENT_OUTPUT);

    public StateStore(Path root) throws IOException {
        this.root = root.toAbsolutePath();
        Files.createDirectories(this.root);
    }

    public Path root() {
        return root;
    }

    public Path sandboxDir(String id) {
        return root.resolve(Ids.require("sandbox", id));
    }

    public void save(SandboxRecord record) throws IOException {
        AtomicFiles.write(sandboxDir(record.id()).resolve(STATE_FILE), json.writeValueAsBytes(record));
    }

    /** Result of loading the state directory: the sandboxes read, and the directories that could not be read. */
    public record Loaded(List<SandboxRecord> records, List<String> broken) {
    }

    public Loaded loadAll() throws IOException {
        List<SandboxRecord> records = new ArrayList<>();
        List<String> broken = new ArrayList<>();
        try (Stream<Path> dirs = Files.list(root)) {
            for (Path dir : dirs.filter(Files::isDirectory).sorted(Comparator.naturalOrder()).toList()) {
                Path file = dir.resolve(STATE_FILE);
                if (!Files.exists(file)) {
                    continue; // not a sandbox directory (e.g. the task socket's directory)
                }
                try {
                    SandboxRecord r = json.readValue(file.toFile(), SandboxRecord.class);
                    if (!dir.getFileName().toString().equals(r.id())) {
                        throw new IOException("id " + r.id() + " does not match its directory");
                    }
                    records.add(r);
                } catch (IOException | RuntimeException e) {
                    LOG.error("cannot load sandbox state {}: {}; leaving it in place for inspection", file,
                            e.getMessage());
                    broken.add(dir.getFileName().toString());
                }
            }
        }
        return new Loaded(records, broken);
    }

    public void delete(String id) throws IOException {
        Path dir = sandboxDir(id);
        if (!Files.exists(dir)) {
            return;
        }
        try (Stream<Path> walk = Files.walk(dir)) {
            for (Path p : walk.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        }
    }

    public ObjectMapper json() {
        return json;
    }
}
