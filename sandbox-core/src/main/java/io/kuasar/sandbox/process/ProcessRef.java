package io.kuasar.sandbox.process;

import io.kuasar.sandbox.sys.ErrnoException;
import io.kuasar.sandbox.sys.Linux;

/**
 * One host process for good: its pid plus its start time (clock ticks since boot, /proc/PID/stat field 22). A pid
 * alone may name another process after reuse; the pair never does. Long-lived processes a daemon keeps across
 * restarts (pod holders, helpers) are recorded and signalled through this, never by pid or by name alone.
 */
public record ProcessRef(int pid, long startTime) {

    /** The process that has {@code pid} now; its start time is -1 if there is none. */
    public static ProcessRef of(int pid) {
        return new ProcessRef(pid, Procfs.startTime(pid));
    }

    /** A process recorded as two strings (a daemon's state facts); null if either is missing or not a number. */
    public static ProcessRef parse(String pid, String startTime) {
        try {
            return pid == null || startTime == null ? null
                    : new ProcessRef(Integer.parseInt(pid), Long.parseLong(startTime));
        } catch (NumberFormatException e) {
            return null;
        }
    }

    /** True while the very process recorded is alive (a zombie counts until it is reaped). */
    public boolean isAlive() {
        return Procfs.isSameProcess(pid, startTime);
    }

    /**
     * Signals the recorded process through a pidfd: the pidfd is opened first and the start time checked after, so
     * the signal can only reach the process that was checked. Returns false if it is gone or the pid now names
     * another process.
     */
    public boolean signal(int signal) {
        if (pid <= 0 || startTime <= 0) {
            return false;
        }
        int pidfd;
        try {
            pidfd = Linux.pidfdOpen(pid);
        } catch (ErrnoException e) {
            return false; // no such process
        }
        try {
            if (Procfs.startTime(pid) != startTime) {
                return false;
            }
            Linux.pidfdSendSignal(pidfd, signal);
            return true;
        } catch (ErrnoException e) {
            if (e.errno() == Linux.ESRCH) {
                return false; // exited between the check and the signal
            }
            throw e;
        } finally {
            Linux.close(pidfd);
        }
    }
}
