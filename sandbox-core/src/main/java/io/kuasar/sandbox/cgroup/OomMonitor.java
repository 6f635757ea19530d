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
 * As in containerd's cgroups library, a notification counts unless the cgroup is gone (v1 also signals the eventfd
 * when the cgroup is removed). The {@code oom_kill} counter cannot decide it: the kernel notifies when the cgroup
 * enters OOM, before the kill is counted.
 */
public final class OomMonitor {
    private static final Logger LOG = LoggerFactory.getLogger(OomMonitor.class);

    private final Path root;
    private final FdPoller poller;
    private final Map<String, Watch> watches = new ConcurrentHashMap<>(); // by container id

    private record Watch(String id, Path memcg, int eventFd, int controlFd, Runnable onOom) {
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
        Watch w = new Watch(id, memcg, efd, cfd, onOom);
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
        LOG.info("container {}: out of memory", w.id());
        w.onOom().run();
    }
}
