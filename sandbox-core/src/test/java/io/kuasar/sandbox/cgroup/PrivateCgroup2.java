package io.kuasar.sandbox.cgroup;

import io.kuasar.sandbox.sys.ErrnoException;
import io.kuasar.sandbox.sys.Linux;
import org.junit.jupiter.api.Assumptions;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;

/**
 * A private mount of the cgroup2 hierarchy with one child cgroup, for tests on hosts whose /sys/fs/cgroup is v1 or
 * hybrid. It is the host's one v2 hierarchy (the same as /sys/fs/cgroup/unified on a hybrid host), so the child and
 * any controller enabled at the root are seen host-wide: {@link #close} kills what is left in the child, removes it,
 * disables the controllers this test enabled and unmounts, also after a failed test. Needs root; skips otherwise.
 */
final class PrivateCgroup2 implements AutoCloseable {
    final Path mount;
    final Path child;
    private final List<String> enabled = new ArrayList<>();

    private PrivateCgroup2(Path mount, Path child) {
        this.mount = mount;
        this.child = child;
    }

    static PrivateCgroup2 mount(Path at, String childName) throws IOException {
        Files.createDirectories(at);
        try {
            Linux.mount("none", at.toString(), "cgroup2", 0, null);
        } catch (ErrnoException e) {
            Assumptions.abort("cannot mount a private cgroup2 hierarchy (needs root): " + e.getMessage());
        }
        PrivateCgroup2 cg = new PrivateCgroup2(at, at.resolve(childName));
        try {
            Files.createDirectory(cg.child);
        } catch (IOException | RuntimeException e) {
            cg.close();
            throw e;
        }
        return cg;
    }

    /** Controllers the v2 hierarchy offers here (those not bound to a v1 hierarchy). */
    Set<String> controllers() throws IOException {
        return Set.of(Files.readString(mount.resolve("cgroup.controllers")).trim().split("\\s+"));
    }

    /** Enables a controller for the child (at the root's subtree_control); false if the hierarchy lacks it. */
    boolean enable(String controller) throws IOException {
        if (!controllers().contains(controller)) {
            return false;
        }
        String on = Files.readString(mount.resolve("cgroup.subtree_control"));
        if (!Set.of(on.trim().split("\\s+")).contains(controller)) {
            Files.writeString(mount.resolve("cgroup.subtree_control"), "+" + controller);
            enabled.add(controller);
        }
        return true;
    }

    void move(long pid) throws IOException {
        Files.writeString(child.resolve("cgroup.procs"), Long.toString(pid));
    }

    @Override
    public void close() throws IOException {
        try {
            if (Files.isDirectory(child)) {
                killAll();
                Files.delete(child);
            }
            for (String c : enabled) {
                try {
                    Files.writeString(mount.resolve("cgroup.subtree_control"), "-" + c);
                } catch (IOException busy) {
                    // another cgroup now uses it: leave it on
                }
            }
        } finally {
            Linux.umount(mount.toString(), Linux.MNT_DETACH);
        }
    }

    private void killAll() throws IOException {
        for (String pid : Files.readAllLines(child.resolve("cgroup.procs"))) {
            if (!pid.isBlank()) {
                Linux.kill(Integer.parseInt(pid.trim()), 9);
            }
        }
        awaitEmpty(10_000);
    }

    /** Waits (inotify on cgroup.events, as the OOM monitor does) until no process is left in the child. */
    boolean awaitEmpty(long timeoutMillis) {
        Path events = child.resolve("cgroup.events");
        int fd = Linux.inotifyInit();
        try {
            Linux.inotifyAddWatch(fd, events.toString(), Linux.IN_MODIFY);
            long deadline = System.nanoTime() + timeoutMillis * 1_000_000;
            while (CgroupStats.keyValues(events).getOrDefault("populated", 0L) != 0) {
                long left = (deadline - System.nanoTime()) / 1_000_000;
                if (left <= 0) {
                    return false;
                }
                if (Linux.pollIn(new int[] {fd}, (int) left)[0]) {
                    Linux.inotifyDrain(fd);
                }
            }
            return true;
        } finally {
            Linux.close(fd);
        }
    }
}
