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
 * Reports OOM kills in containers' memory cgroups (cgroup v1: an eventfd registered through
 * {@code cgroup.event_control} on {@code memory.oom_control}), like containerd's runc shim does for TaskOOM.
 * A notification only counts when the cgroup's {@code oom_kill} counter went up: v1 also signals the eventfd when
 * the cgroup is removed.
 */
public final class OomMonitor {
    private static final Logger LOG = LoggerFactory.getLogger(OomMonitor.class);

    private final Path root;
    private final FdPoller poller;
    private final Map<String, Watch> watches = new ConcurrentHashMap<>(); // by container id

    private record Watch(String id, Path memcg, int eventFd, int controlFd, Runnable onOom, long[] kills) {
    }

    public OomMonitor(FdPoller poller) {
        this(Path.of("/sys/fs/cgroup"), poller);
    }

    OomMonitor(Path root, FdPoller poller) {
        this.root = root;
        this.poller = poller;
    }

    /** Watches the memory cgroup of {@code pid}; false if there is none to watch (no cgroup v1 memory controller). */
    public boolean watch(String id, int pid, Runnable onOom) {
        Path memcg;
        try {
            String rel = CgroupStats.cgroupsOf(pid).get("memory");
            if (rel == null) {
                return false;
            }
            memcg = root.resolve("memory").resolve(rel.startsWith("/") ? rel.substring(1) : rel);
        } catch (IOException e) {
            return false;
        }
        if (!Files.exists(memcg.resolve("cgroup.event_control"))) {
            return false;
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
            return false;
        }
        // memory.oom_control stays open for as long as we watch: with it closed no notification arrives (tested).
        Watch w = new Watch(id, memcg, efd, cfd, onOom, new long[]{oomKills(memcg)});
        Watch old = watches.put(id, w);
        if (old != null) {
            release(old);
        }
        poller.add(efd, fd -> fired(w));
        return true;
    }

    public void unwatch(String id) {
        Watch w = watches.remove(id);
        if (w != null) {
            release(w);
        }
    }

    private void release(Watch w) {
        poller.remove(w.eventFd());
        Linux.close(w.controlFd());
    }

    public int watched() {
        return watches.size();
    }

    private void fired(Watch w) {
        Linux.eventfdDrain(w.eventFd());
        if (!Files.exists(w.memcg())) {
            unwatch(w.id()); // the cgroup was removed: v1 signals that too
            return;
        }
        long kills = oomKills(w.memcg());
        if (kills > w.kills()[0]) {
            w.kills()[0] = kills;
            LOG.info("container {}: out of memory (oom_kill {})", w.id(), kills);
            w.onOom().run();
        }
    }

    static long oomKills(Path memcg) {
        try {
            for (String line : Files.readAllLines(memcg.resolve("memory.oom_control"))) {
                if (line.startsWith("oom_kill ")) {
                    return Long.parseLong(line.substring("oom_kill ".length()).trim());
                }
            }
        } catch (IOException | NumberFormatException e) {
            return 0;
        }
        return 0;
    }
}
