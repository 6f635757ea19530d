package io.kuasar.sandbox.process;

import io.kuasar.sandbox.sys.ErrnoException;
import io.kuasar.sandbox.sys.Linux;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;

/**
 * Learns the exit status of processes this daemon did not start through {@link java.lang.Process}: container init
 * and exec processes that runc leaves behind, and sandbox holders. The daemon is a child subreaper, so those
 * processes become its children when their launcher exits.
 *
 * <p>One platform thread polls a pidfd per watched process. It never calls {@code waitpid(-1)}: that would race the
 * JDK's own reaper and steal exit codes of {@code java.lang.Process} children. A pidfd is opened even for a zombie,
 * so a process that exits before it is watched still reports its real status.
 */
public final class ProcessReaper implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(ProcessReaper.class);

    private final Object lock = new Object();
    private final Map<Integer, Watch> watches = new HashMap<>(); // by pidfd
    private final int wakeFd;
    private final Thread thread;
    private volatile boolean closed;

    private record Watch(int pid, int pidfd, CompletableFuture<ExitStatus> exit) {
    }

    public ProcessReaper() {
        this.wakeFd = Linux.eventfd();
        this.thread = Thread.ofPlatform().daemon().name("process-reaper").unstarted(this::loop);
        thread.start();
    }

    /** Makes this JVM the reaper of orphaned descendants (runc's detached container processes). */
    public static void becomeSubreaper() {
        Linux.setChildSubreaper();
    }

    /**
     * Watches a process. The future completes with its exit status; with {@link ExitStatus#unknown()} if it is not
     * our child or already gone.
     */
    public CompletableFuture<ExitStatus> watch(int pid) {
        CompletableFuture<ExitStatus> exit = new CompletableFuture<>();
        int pidfd;
        try {
            pidfd = Linux.pidfdOpen(pid);
        } catch (ErrnoException e) {
            LOG.warn("process {} is already gone ({}); its exit status is unknown", pid, e.getMessage());
            exit.complete(ExitStatus.unknown());
            return exit;
        }
        synchronized (lock) {
            if (closed) {
                Linux.close(pidfd);
                throw new IllegalStateException("process reaper is closed");
            }
            watches.put(pidfd, new Watch(pid, pidfd, exit));
        }
        Linux.eventfdSignal(wakeFd);
        return exit;
    }

    public int watched() {
        synchronized (lock) {
            return watches.size();
        }
    }

    private void loop() {
        while (!closed) {
            List<Watch> current;
            synchronized (lock) {
                current = new ArrayList<>(watches.values());
            }
            int[] fds = new int[current.size() + 1];
            fds[0] = wakeFd;
            for (int i = 0; i < current.size(); i++) {
                fds[i + 1] = current.get(i).pidfd();
            }
            boolean[] ready;
            try {
                ready = Linux.pollIn(fds, -1);
            } catch (RuntimeException e) {
                LOG.error("poll on pidfds failed; retrying", e);
                sleepQuietly();
                continue;
            }
            if (ready[0]) {
                Linux.eventfdDrain(wakeFd);
            }
            for (int i = 1; i < fds.length; i++) {
                if (ready[i]) {
                    reap(current.get(i - 1));
                }
            }
        }
    }

    private void reap(Watch w) {
        ExitStatus status;
        try {
            Linux.WaitStatus ws = Linux.waitPidfd(w.pidfd(), false);
            if (ws == null) {
                return; // readable but not yet waitable; poll again
            }
            status = ExitStatus.of(ws.code());
        } catch (ErrnoException e) {
            // ECHILD: it exited but is not our child (it was re-parented to us from a previous daemon, or never was).
            status = ExitStatus.unknown();
        }
        synchronized (lock) {
            watches.remove(w.pidfd());
        }
        Linux.close(w.pidfd());
        LOG.debug("process {} exited with {}", w.pid(), status.code());
        w.exit().complete(status);
    }

    private static void sleepQuietly() {
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
            watches.values().forEach(w -> Linux.close(w.pidfd()));
            watches.clear();
        }
        Linux.close(wakeFd);
    }
}
