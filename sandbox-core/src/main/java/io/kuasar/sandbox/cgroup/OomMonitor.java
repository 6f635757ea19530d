package io.kuasar.sandbox.cgroup;

import io.kuasar.sandbox.sys.FdPoller;
import io.kuasar.sandbox.sys.Linux;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Reports OOM kills in containers' memory cgroups, like containerd's runc shim does for TaskOOM.
 * <p>
 * cgroup v1: an eventfd registered through {@code cgroup.event_control} on {@code memory.oom_control}. As in
 * containerd's cgroups library, a notification counts unless the cgroup is gone (v1 also signals the eventfd when the
 * cgroup is removed). The {@code oom_kill} counter cannot decide it: the kernel notifies when the cgroup enters OOM,
 * before the kill is counted.
 * <p>
 * cgroup v2 (the host's root is the unified hierarchy): inotify IN_MODIFY on {@code memory.events} and
 * {@code cgroup.events}, as containerd's cgroup2 manager does. Each event re-reads {@code memory.events} and reports
 * an OOM when {@code oom_kill} rose above the last value seen (containerd's oom/v2 watcher; the first value seen is
 * compared with 0, so a kill between the container's start and this watch is still reported). The watch ends when the
 * cgroup is gone or has no process left ({@code populated 0}), as containerd's does.
 */
public final class OomMonitor {
    private static final Logger LOG = LoggerFactory.getLogger(OomMonitor.class);

    private final Path root;
    private final boolean unified;
    private final FdPoller poller;
    private final Map<String, Watch> watches = new ConcurrentHashMap<>(); // by container id

    private sealed interface Watch permits V1Watch, V2Watch {
        String id();

        /** The descriptor on the poller; the poller closes it on remove. */
        int fd();
    }

    private record V1Watch(String id, Path memcg, int fd, int controlFd, Runnable onOom) implements Watch {
    }

    private static final class V2Watch implements Watch {
        final String id;
        final Path group;
        final int fd;
        final Runnable onOom;
        long lastOomKill; // only touched on the poller thread

        V2Watch(String id, Path group, int fd, Runnable onOom) {
            this.id = id;
            this.group = group;
            this.fd = fd;
            this.onOom = onOom;
        }

        @Override
        public String id() {
            return id;
        }

        @Override
        public int fd() {
            return fd;
        }
    }

    public OomMonitor(FdPoller poller) {
        this(CgroupStats.ROOT, CgroupStats.isUnified(CgroupStats.ROOT), poller);
    }

    /** For tests: a cgroup root and its layout (a private cgroup2 mount, or a fake tree). */
    OomMonitor(Path root, boolean unified, FdPoller poller) {
        this.root = root;
        this.unified = unified;
        this.poller = poller;
    }

    /** Watches the memory cgroup of {@code pid}; false if there is none to watch (no memory controller). */
    public boolean watch(String id, int pid, Runnable onOom) {
        CgroupStats cgroups = new CgroupStats(root, unified);
        Watch w;
        try {
            w = unified ? watchV2(id, cgroups.unifiedGroupOf(pid), onOom)
                    : watchV1(id, cgroups.v1GroupOf(pid, "memory"), onOom);
        } catch (IOException e) {
            LOG.debug("cannot watch OOM of {}: no cgroup for pid {}: {}", id, pid, e.getMessage());
            return false;
        }
        if (w == null) {
            return false;
        }
        Watch old = watches.put(id, w);
        if (old != null) {
            release(old);
        }
        poller.add(w.fd(), fd -> fired(w));
        return true;
    }

    private static V1Watch watchV1(String id, Path memcg, Runnable onOom) {
        if (memcg == null || !Files.exists(memcg.resolve("cgroup.event_control"))) {
            return null;
        }
        int efd = -1;
        int cfd = -1;
        try {
            efd = Linux.eventfd();
            cfd = Linux.open(memcg.resolve("memory.oom_control").toString(), Linux.O_RDONLY | Linux.O_CLOEXEC);
            Files.writeString(memcg.resolve("cgroup.event_control"), efd + " " + cfd);
        } catch (IOException | RuntimeException e) {
            LOG.debug("cannot watch OOM of {} in {}: {}", id, memcg, e.getMessage());
            Linux.close(efd);
            Linux.close(cfd);
            return null;
        }
        // memory.oom_control stays open for as long as we watch: with it closed no notification arrives (tested).
        return new V1Watch(id, memcg, efd, cfd, onOom);
    }

    private static V2Watch watchV2(String id, Path group, Runnable onOom) {
        // memory.events exists only where the memory controller is enabled for the cgroup
        if (group == null || !Files.exists(group.resolve("memory.events"))) {
            return null;
        }
        int fd = -1;
        try {
            fd = Linux.inotifyInit();
            int mask = Linux.IN_MODIFY | Linux.IN_DELETE_SELF;
            Linux.inotifyAddWatch(fd, group.resolve("memory.events").toString(), mask);
            // cgroup.events changes when the last process leaves: the watch ends then
            if (Files.exists(group.resolve("cgroup.events"))) {
                Linux.inotifyAddWatch(fd, group.resolve("cgroup.events").toString(), mask);
            }
        } catch (RuntimeException e) {
            LOG.debug("cannot watch OOM of {} in {}: {}", id, group, e.getMessage());
            Linux.close(fd);
            return null;
        }
        return new V2Watch(id, group, fd, onOom);
    }

    public void unwatch(String id) {
        Watch w = watches.remove(id);
        if (w != null) {
            release(w);
        }
    }

    /** Ends a watch from the poller thread, unless a newer watch already replaced it. */
    private void end(Watch w) {
        if (watches.remove(w.id(), w)) {
            release(w);
        }
    }

    private void release(Watch w) {
        poller.remove(w.fd());
        if (w instanceof V1Watch v1) {
            Linux.close(v1.controlFd());
        }
    }

    public int watched() {
        return watches.size();
    }

    private void fired(Watch w) {
        switch (w) {
            case V1Watch v1 -> firedV1(v1);
            case V2Watch v2 -> firedV2(v2);
        }
    }

    private void firedV1(V1Watch w) {
        Linux.eventfdDrain(w.fd());
        if (!Files.exists(w.memcg())) {
            end(w); // the cgroup was removed: v1 signals that too
            return;
        }
        LOG.info("container {}: out of memory", w.id());
        w.onOom().run();
    }

    private void firedV2(V2Watch w) {
        int mask = Linux.inotifyDrain(w.fd);
        // populated first: the kernel counts a kill before the cgroup can empty, so a memory.events read after
        // seeing it empty holds every kill
        boolean populated = populated(w.group);
        Map<String, Long> events;
        try {
            events = CgroupStats.keyValuesOrFail(w.group.resolve("memory.events"));
        } catch (IOException e) {
            // a removed cgroup's files vanish, or read ENODEV while they go
            if (!Files.exists(w.group.resolve("memory.events"))) {
                end(w);
            } else {
                LOG.warn("container {}: cannot read {}: {}", w.id, w.group.resolve("memory.events"), e.getMessage());
            }
            return;
        }
        long oomKill = events.getOrDefault("oom_kill", 0L);
        if (Long.compareUnsigned(oomKill, w.lastOomKill) > 0) {
            LOG.info("container {}: out of memory (oom_kill {})", w.id, oomKill);
            w.onOom.run();
        }
        if (oomKill != 0) {
            w.lastOomKill = oomKill;
        }
        if ((mask & (Linux.IN_DELETE_SELF | Linux.IN_IGNORED)) != 0 || !populated) {
            end(w);
        }
    }

    /** cgroup.events "populated": false once no process is left; true where the file cannot tell. */
    private static boolean populated(Path group) {
        return CgroupStats.keyValues(group.resolve("cgroup.events")).getOrDefault("populated", 1L) != 0;
    }
}
