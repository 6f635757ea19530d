package io.kuasar.sandbox.state;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Set;
import java.util.stream.Stream;

/**
 * The daemon's {@code --dir}. Sandboxes live in their own subtree, so no sandbox id can ever name one of the
 * daemon's own directories (a sandbox called {@code tasks} once deleted every container record):
 * <pre>
 *   &lt;dir&gt;/sandboxes/&lt;id&gt;/sandbox.json   one per sandbox, written atomically (plus the sandboxer's files)
 *   &lt;dir&gt;/tasks/&lt;container&gt;.json         the Task API's container records
 *   &lt;dir&gt;/tty/                             console sockets (short paths: sockets are limited to 108 bytes)
 *   &lt;dir&gt;/sock/                            sockets a sandbox's own programs listen on (Quark's task socket)
 *   &lt;dir&gt;/broken/                          records that could not be read, moved aside and kept for inspection
 *   &lt;dir&gt;/failed/                          what explains the last few failed starts (e.g. a VM's console log)
 * </pre>
 * A record that cannot be read is moved to {@code broken/} (never deleted), so a later sandbox or container with
 * the same id cannot overwrite it. A {@code --dir} laid out by an earlier version (sandboxes directly under it) is
 * migrated on open.
 */
public final class StateStore {
    private static final Logger LOG = LoggerFactory.getLogger(StateStore.class);
    public static final String STATE_FILE = "sandbox.json";
    static final String SANDBOXES = "sandboxes";
    static final String TASKS = "tasks";
    static final String TTY = "tty";
    static final String SOCK = "sock";
    static final String BROKEN = "broken";
    static final String FAILED = "failed";
    /** How many diagnostics of failed starts are kept: enough to compare, never a growing pile. */
    static final int FAILED_KEPT = 8;
    private static final Set<String> RESERVED = Set.of(SANDBOXES, TASKS, TTY, SOCK, BROKEN, FAILED);

    private final Path root;
    private final Path sandboxes;
    private final ObjectMapper json = new ObjectMapper()
            .disable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
            .enable(SerializationFeature.INDENT_OUTPUT);

    public StateStore(Path root) throws IOException {
        this.root = root.toAbsolutePath();
        this.sandboxes = this.root.resolve(SANDBOXES);
        Files.createDirectories(sandboxes);
        migrateFlatLayout();
    }

    public Path root() {
        return root;
    }

    public Path sandboxDir(String id) {
        return sandboxes.resolve(Ids.require("sandbox", id));
    }

    /** Where the Task API keeps its container records. */
    public Path tasksDir() {
        return root.resolve(TASKS);
    }

    /** Where console sockets are created. */
    public Path consoleDir() {
        return root.resolve(TTY);
    }

    /** Where a sandbox's own programs listen (a short path, as {@link #consoleDir()}). */
    public Path socketDir() {
        return root.resolve(SOCK);
    }

    public void save(SandboxRecord record) throws IOException {
        AtomicFiles.write(sandboxDir(record.id()).resolve(STATE_FILE), json.writeValueAsBytes(record));
    }

    /** Result of loading the state directory: the sandboxes read, and where unreadable ones were moved. */
    public record Loaded(List<SandboxRecord> records, List<String> broken) {
    }

    public Loaded loadAll() throws IOException {
        List<SandboxRecord> records = new ArrayList<>();
        List<String> broken = new ArrayList<>();
        try (Stream<Path> dirs = Files.list(sandboxes)) {
            for (Path dir : dirs.filter(Files::isDirectory).sorted(Comparator.naturalOrder()).toList()) {
                Path file = dir.resolve(STATE_FILE);
                if (!Files.exists(file)) {
                    continue; // a sandbox whose Create did not get as far as its record
                }
                try {
                    SandboxRecord r = json.readValue(file.toFile(), SandboxRecord.class);
                    if (!dir.getFileName().toString().equals(r.id())) {
                        throw new IOException("id " + r.id() + " does not match its directory");
                    }
                    records.add(r);
                } catch (IOException | RuntimeException e) {
                    Path moved = quarantine(dir);
                    LOG.error("cannot load sandbox state {}: {}; moved to {} for inspection", file, e.getMessage(),
                            moved);
                    broken.add(dir.getFileName().toString());
                }
            }
        }
        return new Loaded(records, broken);
    }

    /**
     * Moves an unreadable record (a file or a directory) to {@code broken/}, under a name that never collides, and
     * returns where it went. It is kept, and its id is free again.
     */
    public Path quarantine(Path p) throws IOException {
        Path dir = root.resolve(BROKEN);
        Files.createDirectories(dir);
        Path target = dir.resolve(p.getFileName() + "." + Instant.now().toEpochMilli());
        for (int i = 1; Files.exists(target); i++) {
            target = dir.resolve(p.getFileName() + "." + Instant.now().toEpochMilli() + "-" + i);
        }
        Files.move(p, target, StandardCopyOption.ATOMIC_MOVE);
        return target;
    }

    /**
     * Keeps {@code file} (e.g. the console log of a VM that never answered) after its sandbox is removed: moved to
     * {@code failed/<id>-<name>}, where only the newest {@value #FAILED_KEPT} are kept. Returns where it went, or
     * null if there was no such file.
     */
    public Path keepFailed(String id, Path file) throws IOException {
        if (!Files.exists(file)) {
            return null;
        }
        Path dir = root.resolve(FAILED);
        Files.createDirectories(dir);
        Path target = dir.resolve(Ids.require("sandbox", id) + "-" + file.getFileName());
        Files.move(file, target, StandardCopyOption.REPLACE_EXISTING);
        Files.setLastModifiedTime(target, java.nio.file.attribute.FileTime.from(Instant.now()));
        try (Stream<Path> kept = Files.list(dir)) {
            List<Path> oldestFirst = kept.sorted(Comparator.comparing(StateStore::modified)).toList();
            for (Path old : oldestFirst.subList(0, Math.max(0, oldestFirst.size() - FAILED_KEPT))) {
                Files.deleteIfExists(old);
            }
        }
        return target;
    }

    private static Instant modified(Path p) {
        try {
            return Files.getLastModifiedTime(p).toInstant();
        } catch (IOException e) {
            return Instant.EPOCH; // gone already: first to go
        }
    }

    public void delete(String id) throws IOException {
        deleteTree(sandboxDir(id));
    }

    /** Removes a directory tree; harmless if it is gone. Callers unmount what they mounted below it first. */
    public static void deleteTree(Path dir) throws IOException {
        if (!Files.exists(dir)) {
            return;
        }
        try (Stream<Path> walk = Files.walk(dir)) {
            for (Path p : walk.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        }
    }

    /** Earlier versions kept {@code <dir>/<id>/sandbox.json}; move those into {@code sandboxes/}. */
    private void migrateFlatLayout() throws IOException {
        List<Path> old;
        try (Stream<Path> dirs = Files.list(root)) {
            old = dirs.filter(d -> !RESERVED.contains(d.getFileName().toString()))
                    .filter(d -> Files.isDirectory(d) && Files.exists(d.resolve(STATE_FILE))).sorted().toList();
        }
        for (Path d : old) {
            Path target = sandboxes.resolve(d.getFileName().toString());
            if (Files.exists(target)) {
                Path moved = quarantine(d);
                LOG.error("sandbox directory {} from an earlier layout collides with {}; moved to {}", d, target,
                        moved);
                continue;
            }
            Files.move(d, target, StandardCopyOption.ATOMIC_MOVE); // a mount below it (the pod's shm) moves along
            LOG.info("migrated sandbox state {} to {}", d, target);
        }
    }

    public ObjectMapper json() {
        return json;
    }

    /**
     * The sandboxes of a {@code --dir} as they are on disk, for tools that only look (kuasar-ctl): nothing is
     * created, migrated or moved aside; a directory without a readable record is listed with a null record. Empty
     * when {@code root} has no sandboxes.
     */
    public static java.util.SortedMap<String, SandboxRecord> peek(Path root) throws IOException {
        java.util.SortedMap<String, SandboxRecord> found = new java.util.TreeMap<>();
        Path dir = root.resolve(SANDBOXES);
        if (!Files.isDirectory(dir)) {
            return found;
        }
        ObjectMapper reader = new ObjectMapper().disable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES);
        try (Stream<Path> dirs = Files.list(dir)) {
            for (Path d : dirs.filter(Files::isDirectory).toList()) {
                SandboxRecord r = null;
                try {
                    r = reader.readValue(d.resolve(STATE_FILE).toFile(), SandboxRecord.class);
                } catch (IOException | RuntimeException e) {
                    // not written yet, or unreadable: the daemon moves it aside when it loads it
                }
                found.put(d.getFileName().toString(), r);
            }
        }
        return found;
    }
}
