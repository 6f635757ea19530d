package io.kuasar.vmm.task;

import io.kuasar.sandbox.sys.Linux;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.HashMap;
import java.util.Map;

/**
 * As PID 1 the agent inherits every orphan of the guest, and their zombies must be reaped. {@code waitpid(-1)}
 * would race the JDK, which waits for each {@link Process} it started by pid (and so does the pidfd-based
 * {@link io.kuasar.sandbox.process.ProcessReaper}): whoever reaps first takes the exit status. So this reaper only
 * looks ({@code waitid(P_ALL, WNOWAIT)}) and reaps a child only once it has stayed a zombie for
 * {@value #GRACE_MILLIS} ms: those waiters reap their children within milliseconds of the exit, so a zombie that
 * old has nobody waiting for it.
 */
final class OrphanReaper {
    private static final Logger LOG = LoggerFactory.getLogger(OrphanReaper.class);
    static final long GRACE_MILLIS = 2000;
    private static final long SCAN_MILLIS = 500;

    private final Map<Integer, Long> firstSeen = new HashMap<>();

    void start() {
        Thread.ofPlatform().daemon().name("orphan-reaper").start(() -> {
            while (true) {
                try {
                    Thread.sleep(SCAN_MILLIS);
                    scan(System.nanoTime());
                } catch (InterruptedException e) {
                    return;
                } catch (RuntimeException e) {
                    LOG.warn("orphan scan failed: {}", e.getMessage());
                }
            }
        });
    }

    /** Reaps the zombies that have waited long enough; returns how many. */
    int scan(long nowNanos) {
        int reaped = 0;
        while (true) {
            int pid = Linux.peekExitedChild();
            if (pid <= 0) {
                firstSeen.clear();
                return reaped;
            }
            Long seen = firstSeen.get(pid);
            if (seen == null) {
                // only the first exited child is visible; older ones wait for the next scans
                firstSeen.keySet().retainAll(java.util.Set.of(pid));
                firstSeen.put(pid, nowNanos);
                return reaped;
            }
            if (nowNanos - seen < GRACE_MILLIS * 1_000_000L) {
                return reaped;
            }
            Linux.WaitStatus s = Linux.reap(pid);
            firstSeen.remove(pid);
            if (s == null) {
                return reaped; // its waiter took it after all
            }
            reaped++;
            LOG.debug("reaped orphan {} (exit status {})", pid, s.exitStatus());
        }
    }
}
