package io.kuasar.sandbox.cgroup;

import io.kuasar.sandbox.sys.Linux;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Reports OOM kills in containers' memory cgroups (cgroup v1: an eventfd registered through
 * {@code cgroup.event_control} on {@code memory.oom_control}), like containerd's runc shim does for TaskOOM.
 * One platform thread polls every registration. A notification only counts when the cgroup's {@code oom_kill}
 * counter went up: v1 also signals the eventfd when the cgroup is removed.
 */
public final class OomMonitor implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(OomMonitor.class);

    private final Path root;
    private final Object lock = new Object();
    private final Map<String, Watch> watches = new HashMap<>(); // by container id
    /** Closed by the polling thread only, so a descriptor number is never reused under a running poll. */
    private final List<Watch> retired = new ArrayList<>();
    private final int wakeFd;
    private final Thread thread;
    private volatile boolean closed;

    private record Watch(String id, Path memcg, int eventFd, int controlFd, Runnable onOom, long[] kills) {
    }

    public OomMonitor() {
        this(Path.of("/sys/fs/cgroup"));
    }

    OomMonitor(Path root) {
        this.root = root;
        this.wakeFd = Linux.eventfd();
        this.thread = Thread.ofPlatform().daemon().name("oom-monitor").unstarted(this::loop);
        thread.start();
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
        synchronized (lock) {
            Watch old = watches.put(id, new Watch(id, memcg, efd, cfd, onOom, new long[]{oomKills(memcg)}));
            if (old != null) {
                retired.add(old);
            }
        }
        Linux.eventfdSignal(wakeFd);
        return true;
    }

    public void unwatch(String id) {
        synchronized (lock) {
            Watch w = watches.remove(id);
            if (w == null) {
                return;
            }
            retired.add(w);
        }
        Linux.eventfdSignal(wakeFd);
    }

    private void loop() {
        while (!closed) {
            List<Watch> current;
            synchronized (lock) {
                retired.forEach(this::release);
                retired.clear();
                current = new ArrayList<>(watches.values());
            }
            int[] fds = new int[current.size() + 1];
            fds[0] = wakeFd;
            for (int i = 0; i < current.size(); i++) {
                fds[i + 1] = current.get(i).eventFd();
            }
            boolean[] ready;
            try {
                ready = Linux.pollIn(fds, -1);
            } catch (RuntimeException e) {
                LOG.warn("OOM poll failed: {}", e.getMessage());
                continue;
            }
            if (ready[0]) {
                Linux.eventfdDrain(wakeFd);
            }
            for (int i = 1; i < fds.length; i++) {
                if (ready[i]) {
                    try {
                        fired(current.get(i - 1));
                    } catch (RuntimeException e) {
                        LOG.debug("OOM event handling failed: {}", e.getMessage());
                    }
                }
            }
        }
    }

    private void fired(Watch w) {
        Linux.eventfdDrain(w.eventFd()); // still open: only this thread closes descriptors
        synchronized (lock) {
            if (watches.get(w.id()) != w) {
                return; // unwatched meanwhile
            }
        }
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

    private void release(Watch w) {
        Linux.close(w.eventFd());
        Linux.close(w.controlFd());
    }

    @Override
    public void close() {
        closed = true;
        Linux.eventfdSignal(wakeFd);
        try {
            thread.join(2000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        synchronized (lock) {
            watches.values().forEach(this::release);
            watches.clear();
            retired.forEach(this::release);
            retired.clear();
        }
        Linux.close(wakeFd);
    }
}
