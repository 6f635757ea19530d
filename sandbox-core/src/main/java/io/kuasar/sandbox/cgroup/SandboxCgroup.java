package io.kuasar.sandbox.cgroup;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Pattern;

/**
 * The host cgroup of one sandbox whose processes the daemon starts itself (a VMM, an app kernel): created at
 * {@code <parent>/<name>} in every cgroup v1 hierarchy, or once in the unified v2 hierarchy, limited to the pod's
 * resources, and removed when the pod is. Kuasar's vmm-sandboxer does this on v1 only (its issue #85); v2 is the same
 * idea with v2's files.
 * <p>
 * The path is relative to each hierarchy's root, so it can be recorded and removed by a later run of the daemon
 * ({@link #remove(Hierarchies, String)}).
 */
public final class SandboxCgroup {
    private static final Logger LOG = LoggerFactory.getLogger(SandboxCgroup.class);
    /** Path segments as cgroupfs accepts them: no "..", nothing empty. */
    private static final Pattern SEGMENT = Pattern.compile("[A-Za-z0-9_.:@+=-]+");
    /** Controllers a v2 sandbox cgroup asks its ancestors to delegate, where the host has them. */
    private static final List<String> V2_CONTROLLERS = List.of("cpu", "cpuset", "memory", "pids");

    /**
     * What the sandbox's processes may use; 0 (or empty) leaves a value unset. {@code cpuShares} is v1's scale
     * (2..262144), converted to {@code cpu.weight} on v2 as runc does.
     */
    public record Limits(long cpuPeriod, long cpuQuota, long cpuShares, long memoryBytes, String cpusetCpus,
                         String cpusetMems) {
        public static final Limits NONE = new Limits(0, 0, 0, 0, "", "");

        public Limits {
            cpusetCpus = cpusetCpus == null ? "" : cpusetCpus;
            cpusetMems = cpusetMems == null ? "" : cpusetMems;
        }
    }

    private final Hierarchies hierarchies;
    private final String path;

    private SandboxCgroup(Hierarchies hierarchies, String path) {
        this.hierarchies = hierarchies;
        this.path = path;
    }

    /** The relative path {@code parent/name} with a leading "/" dropped; rejects anything that could escape. */
    public static String pathOf(String parent, String name) {
        String p = (parent == null ? "" : parent.strip()).replaceAll("^/+", "").replaceAll("/+$", "");
        return validated(p.isEmpty() ? name : p + "/" + name);
    }

    private static String validated(String path) {
        for (String s : path.split("/", -1)) {
            if (!SEGMENT.matcher(s).matches() || s.equals(".") || s.equals("..")) {
                throw new IllegalArgumentException("cgroup path " + path + ": invalid segment '" + s + "'");
            }
        }
        return path;
    }

    /**
     * Creates the cgroup (and missing ancestors) and applies {@code limits}. On failure nothing created here is left.
     */
    public static SandboxCgroup create(Hierarchies hierarchies, String path, Limits limits) throws IOException {
        SandboxCgroup cg = new SandboxCgroup(hierarchies, validated(path));
        try {
            if (hierarchies.unified() != null) {
                cg.createV2(hierarchies.unified(), limits);
            } else {
                for (Hierarchies.V1 h : hierarchies.v1()) {
                    cg.createV1(h, limits);
                }
            }
        } catch (IOException | RuntimeException e) {
            try {
                remove(hierarchies, path);
            } catch (IOException suppressed) {
                e.addSuppressed(suppressed);
            }
            throw e;
        }
        return cg;
    }

    public String path() {
        return path;
    }

    /** Moves a process (all its threads) into the cgroup, in every hierarchy. */
    public void add(long pid) throws IOException {
        for (Path dir : dirs(hierarchies, path)) {
            Files.writeString(dir.resolve("cgroup.procs"), Long.toString(pid));
        }
    }

    /** The pids in the cgroup (from the first hierarchy; every hierarchy holds the same). */
    public List<Long> pids() throws IOException {
        List<Path> dirs = dirs(hierarchies, path);
        return dirs.isEmpty() ? List.of() : readPids(dirs.getFirst());
    }

    /** Removes the cgroup everywhere; see {@link #remove(Hierarchies, String)}. */
    public void remove() throws IOException {
        remove(hierarchies, path);
    }

    /**
     * Removes the cgroup at {@code path} in every hierarchy: processes still in it are moved to its parent first
     * (as Kuasar does: a VMM that survived its kill must not pin the directory). Idempotent; ancestors are kept.
     */
    public static void remove(Hierarchies hierarchies, String path) throws IOException {
        IOException failure = null;
        for (Path dir : dirs(hierarchies, validated(path))) {
            try {
                removeDir(dir);
            } catch (IOException e) {
                if (failure == null) {
                    failure = e;
                } else {
                    failure.addSuppressed(e);
                }
            }
        }
        if (failure != null) {
            throw failure;
        }
    }

    private static void removeDir(Path dir) throws IOException {
        for (int attempt = 0; ; attempt++) {
            if (!Files.isDirectory(dir)) {
                return;
            }
            for (long pid : readPids(dir)) {
                try {
                    Files.writeString(dir.getParent().resolve("cgroup.procs"), Long.toString(pid));
                } catch (IOException e) {
                    LOG.debug("cgroup {}: cannot move {} to the parent: {}", dir, pid, e.getMessage());
                }
            }
            try {
                Files.delete(dir); // rmdir(2): cgroupfs removes the control files with it
                return;
            } catch (NoSuchFileException e) {
                return;
            } catch (IOException e) {
                // EBUSY while an exiting task is still being released: short and rare, so retry briefly.
                if (attempt >= 50) {
                    throw new IOException("cannot remove cgroup " + dir + ": " + e.getMessage()
                            + " (processes still in it: " + readPids(dir) + ")", e);
                }
                try {
                    Thread.sleep(20);
                } catch (InterruptedException ie) {
                    Thread.currentThread().interrupt();
                    throw new IOException("interrupted while removing cgroup " + dir, e);
                }
            }
        }
    }

    private static List<Path> dirs(Hierarchies hierarchies, String path) {
        List<Path> dirs = new ArrayList<>();
        if (hierarchies.unified() != null) {
            dirs.add(hierarchies.unified().resolve(path));
        } else {
            for (Hierarchies.V1 h : hierarchies.v1()) {
                dirs.add(h.mount().resolve(path));
            }
        }
        return dirs;
    }

    private static List<Long> readPids(Path dir) throws IOException {
        List<Long> pids = new ArrayList<>();
        try {
            for (String line : Files.readAllLines(dir.resolve("cgroup.procs"))) {
                if (!line.isBlank()) {
                    pids.add(Long.parseLong(line.strip()));
                }
            }
        } catch (NoSuchFileException e) {
            return List.of();
        }
        return pids;
    }

    private void createV1(Hierarchies.V1 h, Limits limits) throws IOException {
        Path dir = h.mount();
        for (String segment : path.split("/")) {
            Path parent = dir;
            dir = dir.resolve(segment);
            if (!Files.isDirectory(dir)) {
                Files.createDirectory(dir);
            }
            if (h.controllers().contains("cpuset")) {
                // A new v1 cpuset cgroup has no CPUs and no memory nodes: no task could join it. Inherit them.
                inheritIfEmpty(parent, dir, "cpuset.cpus");
                inheritIfEmpty(parent, dir, "cpuset.mems");
            }
        }
        if (h.controllers().contains("cpu")) {
            if (limits.cpuPeriod() > 0) {
                write(dir, "cpu.cfs_period_us", limits.cpuPeriod());
            }
            if (limits.cpuQuota() > 0) {
                write(dir, "cpu.cfs_quota_us", limits.cpuQuota());
            }
            if (limits.cpuShares() > 0) {
                write(dir, "cpu.shares", limits.cpuShares());
            }
        }
        if (h.controllers().contains("memory") && limits.memoryBytes() > 0) {
            write(dir, "memory.limit_in_bytes", limits.memoryBytes());
        }
        if (h.controllers().contains("cpuset")) {
            if (!limits.cpusetCpus().isEmpty()) {
                Files.writeString(dir.resolve("cpuset.cpus"), limits.cpusetCpus());
            }
            if (!limits.cpusetMems().isEmpty()) {
                Files.writeString(dir.resolve("cpuset.mems"), limits.cpusetMems());
            }
        }
    }

    private void createV2(Path root, Limits limits) throws IOException {
        Path dir = root;
        for (String segment : path.split("/")) {
            delegate(dir);
            dir = dir.resolve(segment);
            if (!Files.isDirectory(dir)) {
                Files.createDirectory(dir);
            }
        }
        if (limits.cpuQuota() > 0 || limits.cpuPeriod() > 0) {
            long period = limits.cpuPeriod() > 0 ? limits.cpuPeriod() : 100_000;
            writeIfPresent(dir, "cpu.max", (limits.cpuQuota() > 0 ? Long.toString(limits.cpuQuota()) : "max")
                    + " " + period);
        }
        if (limits.cpuShares() > 0) {
            writeIfPresent(dir, "cpu.weight", Long.toString(weightOf(limits.cpuShares())));
        }
        if (limits.memoryBytes() > 0) {
            writeIfPresent(dir, "memory.max", Long.toString(limits.memoryBytes()));
        }
        if (!limits.cpusetCpus().isEmpty()) {
            writeIfPresent(dir, "cpuset.cpus", limits.cpusetCpus());
        }
        if (!limits.cpusetMems().isEmpty()) {
            writeIfPresent(dir, "cpuset.mems", limits.cpusetMems());
        }
    }

    /** runc's conversion of v1 cpu.shares [2, 262144] to v2 cpu.weight [1, 10000]. */
    static long weightOf(long shares) {
        return 1 + ((Math.clamp(shares, 2L, 262_144L) - 2) * 9999) / 262_142;
    }

    /** Enables in {@code dir}'s subtree the controllers the sandbox cgroup needs, of those {@code dir} has. */
    private static void delegate(Path dir) throws IOException {
        Path available = dir.resolve("cgroup.controllers");
        if (!Files.exists(available)) {
            return;
        }
        List<String> have = List.of(Files.readString(available).strip().split("\\s+"));
        String enabled = Files.readString(dir.resolve("cgroup.subtree_control"));
        StringBuilder add = new StringBuilder();
        for (String c : V2_CONTROLLERS) {
            if (have.contains(c) && !List.of(enabled.strip().split("\\s+")).contains(c)) {
                add.append(add.isEmpty() ? "" : " ").append('+').append(c);
            }
        }
        if (!add.isEmpty()) {
            Files.writeString(dir.resolve("cgroup.subtree_control"), add.toString());
        }
    }

    private static void inheritIfEmpty(Path parent, Path dir, String file) throws IOException {
        Path f = dir.resolve(file);
        if (Files.exists(f) && Files.readString(f).isBlank()) {
            Files.writeString(f, Files.readString(parent.resolve(file)).strip());
        }
    }

    private static void write(Path dir, String file, long value) throws IOException {
        Files.writeString(dir.resolve(file), Long.toString(value));
    }

    /** A limit whose controller this host does not delegate is skipped (logged): the pod still runs. */
    private static void writeIfPresent(Path dir, String file, String value) throws IOException {
        Path f = dir.resolve(file);
        if (Files.exists(f)) {
            Files.writeString(f, value);
        } else {
            LOG.info("cgroup {}: {} is not available here; limit {} not applied", dir, file, value);
        }
    }

    /** The host's cgroup hierarchies: either v1 controller hierarchies, or the unified v2 hierarchy. */
    public record Hierarchies(List<V1> v1, Path unified) {
        public record V1(Path mount, List<String> controllers) {
        }

        public Hierarchies {
            v1 = List.copyOf(v1);
        }

        /**
         * From {@code /proc/self/mountinfo}: v2 when {@code /sys/fs/cgroup} itself is cgroup2; otherwise every v1
         * hierarchy mounted at its root (a hybrid host's {@code unified} tree holds no controllers and is left alone).
         */
        public static Hierarchies host() throws IOException {
            return parse(Files.readAllLines(Path.of("/proc/self/mountinfo")));
        }

        static Hierarchies parse(List<String> mountinfo) {
            List<V1> v1 = new ArrayList<>();
            List<String> seen = new ArrayList<>();
            Path unified = null;
            for (String line : mountinfo) {
                String[] f = line.split(" ");
                int dash = List.of(f).indexOf("-");
                if (dash < 5 || dash + 3 >= f.length) {
                    continue;
                }
                String root = f[3];
                String mount = f[4].replace("\\040", " ");
                String type = f[dash + 1];
                String superOpts = f[dash + 3];
                if (!root.equals("/")) {
                    continue;
                }
                if (type.equals("cgroup2") && mount.equals("/sys/fs/cgroup")) {
                    unified = Path.of(mount);
                } else if (type.equals("cgroup")) {
                    List<String> controllers = new ArrayList<>();
                    for (String o : superOpts.split(",")) {
                        if (!o.equals("rw") && !o.equals("ro") && !o.startsWith("release_agent=")
                                && !o.equals("clone_children") && !o.equals("noprefix") && !o.equals("xattr")
                                && !o.equals("cpuset_v2_mode")) {
                            controllers.add(o);
                        }
                    }
                    String key = String.join(",", controllers);
                    if (!seen.contains(key)) { // one hierarchy may be mounted more than once
                        seen.add(key);
                        v1.add(new V1(Path.of(mount), List.copyOf(controllers)));
                    }
                }
            }
            return unified != null ? new Hierarchies(List.of(), unified) : new Hierarchies(v1, null);
        }
    }
}
