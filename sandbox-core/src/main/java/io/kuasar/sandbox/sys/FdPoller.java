package io.kuasar.sandbox.sys;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.IntConsumer;

/**
 * One platform thread that polls kernel descriptors (pidfds, eventfds, inotify) and runs a callback when one becomes
 * readable. Callbacks run on the poller thread and must only read the descriptor and hand off: one slow callback
 * (a lock, an fsync) would hold up every other process exit and OOM event on the node. A descriptor handed to
 * {@link #remove} is closed by
 * the poller thread itself after its current poll, so its number can never be reused under a running poll.
 */
public final class FdPoller implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(FdPoller.class);

    private final Object lock = new Object();
    private final Map<Integer, IntConsumer> callbacks = new LinkedHashMap<>();
    private final List<Integer> toClose = new ArrayList<>();
    private final int wakeFd;
    private final Thread thread;
    private volatile boolean closed;

    public FdPoller(String name) {
        this.wakeFd = Linux.eventfd();
        this.thread = Thread.ofPlatform().daemon().name(name).unstarted(this::loop);
        thread.start();
    }

    /** Calls {@code onReadable} (with the fd) each time {@code fd} polls readable, until removed. */
    public void add(int fd, IntConsumer onReadable) {
        synchronized (lock) {
            if (closed) {
                throw new IllegalStateException("poller is closed");
            }
            callbacks.put(fd, onReadable);
        }
        Linux.eventfdSignal(wakeFd);
    }

    /** Stops watching {@code fd} and closes it (on the poller thread). */
    public void remove(int fd) {
        synchronized (lock) {
            if (callbacks.remove(fd) != null) {
                toClose.add(fd);
            }
        }
        if (Thread.currentThread() != thread) {
            Linux.eventfdSignal(wakeFd);
        }
    }

    public int size() {
        synchronized (lock) {
            return callbacks.size();
        }
    }

    private void loop() {
        while (!closed) {
            int[] fds;
            List<IntConsumer> handlers = new ArrayList<>();
            synchronized (lock) {
                toClose.forEach(Linux::close);
                toClose.clear();
                fds = new int[callbacks.size() + 1];
                fds[0] = wakeFd;
                int i = 1;
                for (var e : callbacks.entrySet()) {
                    fds[i++] = e.getKey();
                    handlers.add(e.getValue());
                }
            }
            boolean[] ready;
            try {
                ready = Linux.pollIn(fds, -1);
            } catch (RuntimeException e) {
                LOG.error("poll failed; retrying", e);
                sleep();
                continue;
            }
            if (ready[0]) {
                Linux.eventfdDrain(wakeFd);
            }
            for (int i = 1; i < fds.length; i++) {
                if (!ready[i]) {
                    continue;
                }
                synchronized (lock) {
                    if (!callbacks.containsKey(fds[i])) {
                        continue; // removed meanwhile; its fd is still open until the next round
                    }
                }
                try {
                    handlers.get(i - 1).accept(fds[i]);
                } catch (RuntimeException e) {
                    LOG.warn("poll callback for fd {} failed: {}", fds[i], e.getMessage());
                }
            }
        }
    }

    private static void sleep() {
        try {
            Thread.sleep(100);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    @Override
    public void close() {
        synchronized (lock) {
            if (closed) {
                return;
            }
            closed = true;
        }
        Linux.eventfdSignal(wakeFd);
        try {
            thread.join(2000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        synchronized (lock) {
            callbacks.keySet().forEach(Linux::close);
            callbacks.clear();
            toClose.forEach(Linux::close);
            toClose.clear();
        }
        Linux.close(wakeFd);
    }
}
