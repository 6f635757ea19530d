package io.kuasar.sandbox.process;

import io.kuasar.sandbox.sys.ErrnoException;
import io.kuasar.sandbox.sys.FdPoller;
import io.kuasar.sandbox.sys.Linux;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.concurrent.CompletableFuture;

/**
 * Learns the exit status of processes this daemon did not start through {@link java.lang.Process}: container init
 * and exec processes that runc leaves behind, and sandbox holders. The daemon is a child subreaper, so those
 * processes become its children when their launcher exits.
 *
 * <p>A pidfd per watched process is polled by an {@link FdPoller}. It never calls {@code waitpid(-1)}: that would
 * race the JDK's own reaper and steal exit codes of {@code java.lang.Process} children. A pidfd is opened even for a
 * zombie, so a process that exits before it is watched still reports its real status.
 */
public final class ProcessReaper implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(ProcessReaper.class);

    private final FdPoller poller;
    private final boolean ownsPoller;

    public ProcessReaper() {
        this(new FdPoller("process-reaper"), true);
    }

    public ProcessReaper(FdPoller poller) {
        this(poller, false);
    }

    private ProcessReaper(FdPoller poller, boolean ownsPoller) {
        this.poller = poller;
        this.ownsPoller = ownsPoller;
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
        poller.add(pidfd, fd -> reap(pid, fd, exit));
        return exit;
    }

    public int watched() {
        return poller.size();
    }

    private void reap(int pid, int pidfd, CompletableFuture<ExitStatus> exit) {
        ExitStatus status;
        try {
            Linux.WaitStatus ws = Linux.waitPidfd(pidfd, false);
            if (ws == null) {
                return; // readable but not yet waitable; poll again
            }
            status = ExitStatus.of(ws.code());
        } catch (ErrnoException e) {
            // ECHILD: it exited but is not our child (it was re-parented to us from a previous daemon, or never was).
            status = ExitStatus.unknown();
        }
        poller.remove(pidfd);
        LOG.debug("process {} exited with {}", pid, status.code());
        exit.complete(status);
    }

    @Override
    public void close() {
        if (ownsPoller) {
            poller.close();
        }
    }
}
