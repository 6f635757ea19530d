package io.kuasar.sandbox.mount;

import io.grpc.Status;
import io.kuasar.api.types.Mount;
import io.kuasar.sandbox.sys.ErrnoException;
import io.kuasar.sandbox.sys.Linux;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;

/**
 * Mounts what containerd's snapshotters prepare, the way containerd's own mount package does on Linux: flag options
 * become mount flags, a propagation change and a read-only bind take a call of their own, and an overlay whose
 * options would not fit the kernel's one-page data buffer is mounted with its lowerdirs relative to their common
 * parent directory. Loop devices, id-mapped mounts and FUSE helpers are not supported.
 */
public final class Mounts {
    private static final Logger LOG = LoggerFactory.getLogger(Mounts.class);
    /** mount(2) copies at most one page of data. */
    static final int PAGE_SIZE = 4096;
    private static final String LOWERDIR = "lowerdir=";

    private Mounts() {
    }

    /**
     * Mounts each in order onto {@code root} (or onto its own target inside root), as containerd's mount.All; if
     * one fails, those already mounted are unmounted again.
     *
     * @throws IllegalArgumentException for a mount whose options or target we cannot take
     * @throws ErrnoException           when the kernel refuses one
     */
    public static void mountAll(List<Mount> mounts, Path root) throws IOException {
        List<Path> done = new ArrayList<>();
        try {
            for (Mount m : mounts) {
                Path target = m.getTarget().isEmpty() ? root : inside(root, m.getTarget());
                mount(m.getType(), m.getSource(), m.getOptionsList(), target);
                done.add(target);
            }
        } catch (IOException | RuntimeException e) {
            for (Path p : done.reversed()) {
                Linux.umount(p.toString(), Linux.MNT_DETACH);
            }
            throw e;
        }
    }

    /**
     * Mounts what containerd's snapshotter prepared onto {@code <bundle>/rootfs}, as containerd's mount package
     * does; false if there was nothing. One mount only: create's and delete's cleanup unmount rootfs once.
     */
    public static boolean mountRootfs(String id, Path bundle, List<Mount> mounts) throws IOException {
        if (mounts.isEmpty()) {
            return false;
        }
        if (mounts.size() > 1) {
            throw Status.INVALID_ARGUMENT.withDescription("container " + id + ": " + mounts.size()
                    + " rootfs mounts given; only one is supported").asRuntimeException();
        }
        Mount m = mounts.getFirst();
        if (!m.getTarget().isEmpty()) {
            throw Status.INVALID_ARGUMENT.withDescription("container " + id + ": the rootfs mount has target "
                    + m.getTarget() + "; only a mount onto the rootfs itself is supported").asRuntimeException();
        }
        Path target = bundle.resolve("rootfs");
        Files.createDirectories(target);
        try {
            Mounts.mount(m.getType(), m.getSource(), m.getOptionsList(), target);
        } catch (IllegalArgumentException e) {
            throw Status.INVALID_ARGUMENT.withDescription("container " + id + ": cannot mount rootfs: "
                    + e.getMessage()).asRuntimeException();
        } catch (RuntimeException e) {
            throw Status.INTERNAL.withDescription("container " + id + ": cannot mount rootfs: " + e.getMessage())
                    .asRuntimeException();
        }
        return true;
    }

    /**
     * Unmounts (lazily) every mount at or below {@code dir}, deepest first, as Kuasar's cleanup_mounts; returns how
     * many there were.
     */
    public static int unmountBelow(Path dir) {
        String prefix = dir.toAbsolutePath().normalize().toString();
        List<String> targets = new ArrayList<>();
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/mounts"))) {
                String[] f = line.split(" ");
                if (f.length > 1) {
                    String t = f[1].replace("\\040", " ");
                    if (t.equals(prefix) || t.startsWith(prefix + "/")) {
                        targets.add(t);
                    }
                }
            }
        } catch (IOException e) {
            LOG.warn("cannot read /proc/self/mounts: {}", e.getMessage());
            return 0;
        }
        targets.sort(java.util.Comparator.comparingInt(String::length).reversed());
        int n = 0;
        for (String t : targets) {
            if (Linux.umount(t, Linux.MNT_DETACH)) {
                n++;
            }
        }
        return n;
    }

    /** Unmounts (lazily) everything stacked on {@code target}; returns how many mounts there were. */
    public static int unmountAll(Path target) {
        int n = 0;
        while (Linux.umount(target.toString(), Linux.MNT_DETACH)) {
            n++;
        }
        return n;
    }

    /**
     * Mounts one filesystem on {@code target}.
     *
     * @throws IllegalArgumentException for options we cannot take (too long even compacted, loop, id maps)
     * @throws ErrnoException           when the kernel refuses; a half-applied mount is undone first
     */
    public static void mount(String type, String source, List<String> options, Path target) {
        for (String o : options) {
            if (o.equals("loop") || o.startsWith("uidmap=") || o.startsWith("gidmap=")) {
                throw new IllegalArgumentException("mount option " + o + " is not supported (" + type + " on "
                        + target + ")");
            }
        }
        String chdir = null;
        if (type.equals("overlay") && size(options) >= PAGE_SIZE - 512) {
            Compacted c = compactLowerdir(options);
            if (c != null) {
                LOG.debug("overlay on {}: lowerdirs relative to {}", target, c.dir());
                chdir = c.dir();
                options = c.options();
            }
        }
        MountOptions opts = MountOptions.parse(options);
        long flags = opts.flags();
        if (type.equals("bind") || type.equals("rbind")) {
            flags |= MountOptions.MS_BIND | (type.equals("rbind") ? MountOptions.MS_REC : 0);
        }
        String data = opts.dataString();
        int dataBytes = data == null ? 0 : data.getBytes(StandardCharsets.UTF_8).length;
        if (dataBytes >= PAGE_SIZE) {
            throw new IllegalArgumentException("mount options of " + type + " on " + target + " are too long ("
                    + dataBytes + " bytes, the kernel takes " + (PAGE_SIZE - 1) + ")");
        }
        boolean remountOnly = (flags & MountOptions.MS_REMOUNT) != 0 && data == null;
        if (!remountOnly) {
            mountAt(chdir, source, target.toString(), type, flags, data);
        }
        try {
            if (opts.propagation() != 0) {
                Linux.mount("", target.toString(), "", opts.propagation(), null);
            }
            if ((flags & (MountOptions.MS_BIND | MountOptions.MS_RDONLY)) == (MountOptions.MS_BIND | MountOptions.MS_RDONLY)) {
                // The kernel ignores MS_RDONLY when it creates a bind: only a remount makes it read-only.
                Linux.mount("", target.toString(), "", flags | MountOptions.MS_REMOUNT, null);
            }
        } catch (RuntimeException e) {
            if (!remountOnly) {
                Linux.umount(target.toString(), Linux.MNT_DETACH);
            }
            throw e;
        }
    }

    /** An overlay's options with lowerdirs relative to {@code dir}. */
    record Compacted(String dir, List<String> options) {
    }

    /**
     * containerd's compactLowerdirOption: the lowerdirs' longest common prefix, cut back to a directory (snapshot
     * ids are numbers: a prefix such as {@code snapshots/1} must become {@code snapshots/}). Null if nothing can be
     * gained: a single lowerdir, no common directory, or one that would be the root.
     */
    static Compacted compactLowerdir(List<String> options) {
        int idx = -1;
        for (int i = 0; i < options.size(); i++) {
            if (options.get(i).startsWith(LOWERDIR)) {
                idx = i;
                break;
            }
        }
        if (idx < 0) {
            return null;
        }
        String[] dirs = options.get(idx).substring(LOWERDIR.length()).split(":", -1);
        if (dirs.length == 1) {
            return null;
        }
        String common = dir(commonPrefix(dirs));
        if (common.equals("/") || common.equals(".")) {
            return null;
        }
        common += "/";
        List<String> relative = new ArrayList<>(dirs.length);
        for (String d : dirs) {
            if (d.length() <= common.length()) {
                return null;
            }
            relative.add(d.substring(common.length()));
        }
        List<String> compacted = new ArrayList<>(options);
        compacted.remove(idx);
        compacted.add(LOWERDIR + String.join(":", relative));
        return new Compacted(common, compacted);
    }

    private static String commonPrefix(String[] strs) {
        String min = strs[0];
        String max = strs[0];
        for (String s : strs) {
            if (s.compareTo(min) < 0) {
                min = s;
            }
            if (s.compareTo(max) > 0) {
                max = s;
            }
        }
        int i = 0;
        while (i < min.length() && i < max.length() && min.charAt(i) == max.charAt(i)) {
            i++;
        }
        return min.substring(0, i);
    }

    /** Go's path.Dir: everything before the last slash, without trailing slashes; "." if there is no slash. */
    private static String dir(String p) {
        int slash = p.lastIndexOf('/');
        if (slash < 0) {
            return ".";
        }
        String d = p.substring(0, slash);
        while (d.endsWith("/")) {
            d = d.substring(0, d.length() - 1);
        }
        return d.isEmpty() ? "/" : d;
    }

    private static int size(List<String> options) {
        int n = 0;
        for (String o : options) {
            n += o.length();
        }
        return n;
    }

    /**
     * mount(2) with relative paths resolved against {@code chdir}. The working directory is the whole process's,
     * so the call runs on a new platform thread that first takes a private copy of it (unshare CLONE_FS) and
     * ends right after: nothing else ever runs with the changed directory.
     */
    private static void mountAt(String chdir, String source, String target, String type, long flags, String data) {
        if (chdir == null) {
            Linux.mount(source, target, type, flags, data);
            return;
        }
        AtomicReference<RuntimeException> failure = new AtomicReference<>();
        Thread t = Thread.ofPlatform().name("mount-chdir").start(() -> {
            try {
                Linux.unshare(Linux.CLONE_FS);
                Linux.chdir(chdir);
                Linux.mount(source, target, type, flags, data);
            } catch (RuntimeException e) {
                failure.set(e);
            }
        });
        boolean interrupted = false;
        while (true) {
            try {
                t.join();
                break;
            } catch (InterruptedException e) {
                interrupted = true; // the mount is under way: wait for it, so no mount appears after we return
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
        if (failure.get() != null) {
            throw failure.get();
        }
    }

    /** {@code target} under {@code root}, refusing one that leaves it (through "..", or a symlink). */
    private static Path inside(Path root, String target) throws IOException {
        Path p = root.resolve(target.replaceFirst("^/+", "")).normalize();
        Path realRoot = root.toRealPath();
        if (!p.startsWith(root) || !p.toRealPath().startsWith(realRoot)) {
            throw new IllegalArgumentException("mount target " + target + " leaves " + root);
        }
        return p;
    }
}
