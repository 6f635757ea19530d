package io.kuasar.sandbox.task;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.kuasar.sandbox.state.AtomicFiles;
import io.kuasar.sandbox.state.Ids;
import io.kuasar.sandbox.state.StateStore;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;

/**
 * The Task API's container records: {@code <dir>/tasks/<id>.json}, one per container, written atomically. Writers
 * of one record are serialized by {@link TaskService}; this class only reads, writes and moves files.
 */
public final class TaskStore {
    private static final Logger LOG = LoggerFactory.getLogger(TaskStore.class);
    private final Path dir;
    private final StateStore state;
    private final ObjectMapper json = new ObjectMapper();

    public TaskStore(StateStore state) throws IOException {
        this.state = state;
        this.dir = state.tasksDir();
        Files.createDirectories(dir);
    }

    public Path dir() {
        return dir;
    }

    private Path file(String id) {
        return dir.resolve(Ids.require("container", id) + ".json");
    }

    void save(TaskRecord r) throws IOException {
        AtomicFiles.write(file(r.id()), json.writeValueAsBytes(r));
    }

    void delete(String id) throws IOException {
        Files.deleteIfExists(file(id));
    }

    /**
     * The container records of a {@code --dir} as they are on disk, for tools that only look (kuasar-ctl): nothing is
     * created or moved; unreadable records are skipped.
     */
    public static List<TaskRecord> peek(Path root) throws IOException {
        Path dir = root.resolve("tasks");
        List<TaskRecord> out = new ArrayList<>();
        if (!Files.isDirectory(dir)) {
            return out;
        }
        ObjectMapper reader = new ObjectMapper();
        try (Stream<Path> s = Files.list(dir)) {
            for (Path f : s.filter(p -> p.getFileName().toString().endsWith(".json")).sorted().toList()) {
                try {
                    out.add(reader.readValue(f.toFile(), TaskRecord.class));
                } catch (IOException | RuntimeException e) {
                    // being written, or broken: the daemon deals with it
                }
            }
        }
        return out;
    }

    /** A record read from disk, and its file (to move aside if it cannot be recovered). */
    record Stored(Path file, TaskRecord record) {
    }

    /** Every readable record; an unreadable one is moved to the state directory's {@code broken/} and reported. */
    List<Stored> loadAll() throws IOException {
        List<Stored> out = new ArrayList<>();
        List<Path> files;
        try (Stream<Path> s = Files.list(dir)) {
            files = s.filter(p -> p.getFileName().toString().endsWith(".json")).sorted().toList();
        }
        for (Path f : files) {
            try {
                TaskRecord r = json.readValue(f.toFile(), TaskRecord.class);
                if (!f.getFileName().toString().equals(r.id() + ".json")) {
                    throw new IOException("id " + r.id() + " does not match its file name");
                }
                out.add(new Stored(f, r));
            } catch (IOException | RuntimeException e) {
                quarantine(f, "cannot read it: " + e.getMessage());
            }
        }
        return out;
    }

    /** Moves a record aside, so it is kept for inspection and a new container with its id cannot overwrite it. */
    void quarantine(Path f, String why) {
        try {
            Path moved = state.quarantine(f);
            LOG.error("container record {}: {}; moved to {}", f, why, moved);
        } catch (IOException e) {
            LOG.error("container record {}: {}; and it cannot be moved aside: {}", f, why, e.getMessage());
        }
    }
}
