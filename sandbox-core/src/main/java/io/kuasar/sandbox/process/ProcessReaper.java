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
 * <p>A pidfd per watched process is polled by an {@link FdPoller}; exits are delivered on virtual threads, never on
 * the poller's own. It never calls {@code waitpid(-1)}: that would
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

    /**
     * Watches a process whose exit status someone else records in {@code exitFile} ("&lt;status&gt; &lt;unix nanos&gt;", as
     * kuasar-monitor writes it): readiness comes from a pidfd, which works for any process, and the status from the
     * file, which survives a restart of this daemon. If the file does not appear within a few seconds of the exit,
     * the status is unknown.
     */
    public CompletableFuture<ExitStatus> watchExternal(int pid, java.nio.file.Path exitFile) {
        CompletableFuture<ExitStatus> exit = new CompletableFuture<>();
        ExitStatus recorded = readExitFile(exitFile);
        if (recorded != null) {
            exit.complete(recorded);
            return exit;
        }
        int pidfd;
        try {
            pidfd = Linux.pidfdOpen(pid);
        } catch (ErrnoException e) {
            Thread.ofVirtual().start(() -> exit.complete(awaitExitFile(exitFile)));
            return exit;
        }
        poller.add(pidfd, fd -> {
            poller.remove(fd);
            // Off the poller thread: the recorder writes the file just after it reaps the process.
            Thread.ofVirtual().start(() -> exit.complete(awaitExitFile(exitFile)));
        });
        return exit;
    }

    private static ExitStatus awaitExitFile(java.nio.file.Path exitFile) {
        long waited = 0;
        for (long delay = 1; waited < 5000; waited += delay, delay = Math.min(delay * 2, 100)) {
            ExitStatus st = readExitFile(exitFile);
            if (st != null) {
                return st;
            }
            try {
                Thread.sleep(delay); // the recorder writes it right after reaping: usually within a millisecond
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        LOG.warn("no exit status was recorded in {}; reporting it as unknown", exitFile);
        return ExitStatus.unknown();
    }

    /** The status recorded in an exit file, or null if there is none (yet). */
    public static ExitStatus readExitFile(java.nio.file.Path exitFile) {
        try {
            String[] f = java.nio.file.Files.readString(exitFile).trim().split("\\s+");
            long nanos = Long.parseLong(f[1]);
            return new ExitStatus(Integer.parseInt(f[0]), java.time.Instant.ofEpochSecond(0, nanos), true);
        } catch (java.io.IOException | RuntimeException e) {
            return null;
        }
    }

    /**
     * Kills a launched command and everything below it (SIGKILL), e.g. a runc call that timed out with `runc init`
     * and a monitor under it, and reaps what of it is re-parented to this daemon (a child subreaper): nothing keeps
     * running and no zombie is left behind. Returns once the tree is gone or after {@code max}.
     */
    public static void killTree(Process launched, java.time.Duration max) {
        java.util.List<ProcessHandle> tree = launched.descendants().toList();
        tree.forEach(ProcessHandle::destroyForcibly);
        launched.destroyForcibly();
        long deadline = System.nanoTime() + max.toNanos();
        try {
            launched.waitFor(max.toMillis(), java.util.concurrent.TimeUnit.MILLISECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        // When a parent dies its children become ours; reap each as it does, never touching other children.
        java.util.Set<Integer> left = new java.util.HashSet<>();
        tree.forEach(h -> left.add((int) h.pid()));
        int self = Linux.getpid();
        while (!left.isEmpty() && System.nanoTime() < deadline) {
            for (var it = left.iterator(); it.hasNext(); ) {
                int pid = it.next();
                int parent = Procfs.parent(pid);
                if (parent < 0) {
                    it.remove(); // gone (reaped by its own parent)
                } else if (parent == self) {
                    try {
                        int fd = Linux.pidfdOpen(pid);
                        try {
                            if (Linux.waitPidfd(fd, false) != null) {
                                it.remove();
                            }
                        } finally {
                            Linux.close(fd);
                        }
                    } catch (ErrnoException e) {
                        it.remove();
                    }
                }
            }
            if (!left.isEmpty()) {
                try {
                    Thread.sleep(5);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
            }
        }
        if (!left.isEmpty()) {
            LOG.warn("processes {} of a killed command are still there after {} ms", left, max.toMillis());
        }
    }

    public int watched() {
        return poller.size();
    }

    private final java.util.Set<Integer> adopted = java.util.concurrent.ConcurrentHashMap.newKeySet();

    /**
     * Watches (and so reaps) the children of this daemon that another program left to it, as a child subreaper,
     * and that nobody else watches: those whose {@code argv[0]} {@code orphan} accepts. An OCI runtime that
     * daemonizes helpers (gVisor's gofers and exec helpers) leaves them here; unreaped, they stay zombies, and the
     * runtime, polling for them to vanish, times out. Children this JVM started through {@link Process} are never
     * touched: their argv[0] is the binary's path, and only the JDK reaps them.
     */
    public void adoptOrphans(java.util.function.Predicate<String> orphan) {
        int self = Linux.getpid();
        java.nio.file.Path tasks = java.nio.file.Path.of("/proc/" + self + "/task");
        java.util.Set<Integer> children = new java.util.HashSet<>();
        try (var ts = java.nio.file.Files.list(tasks)) {
            for (java.nio.file.Path t : (Iterable<java.nio.file.Path>) ts::iterator) {
                try {
                    for (String c : java.nio.file.Files.readString(t.resolve("children")).trim().split("\\s+")) {
                        if (!c.isEmpty()) {
                            children.add(Integer.parseInt(c));
                        }
                    }
                } catch (java.io.IOException | NumberFormatException gone) {
                    // the thread ended meanwhile
                }
            }
        } catch (java.io.IOException e) {
            LOG.debug("cannot list the children of {}: {}", self, e.getMessage());
            return;
        }
        for (int pid : children) {
            if (adopted.contains(pid) || !orphan.test(argv0(pid))) {
                continue;
            }
            adopted.add(pid);
            watch(pid).whenComplete((st, t) -> adopted.remove(pid));
        }
    }

    private static String argv0(int pid) {
        try {
            byte[] cmdline = java.nio.file.Files.readAllBytes(java.nio.file.Path.of("/proc/" + pid + "/cmdline"));
            int end = 0;
            while (end < cmdline.length && cmdline[end] != 0) {
                end++;
            }
            return new String(cmdline, 0, end, java.nio.charset.StandardCharsets.UTF_8);
        } catch (java.io.IOException e) {
            return "";
        }
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
        handOff(exit, status);
    }

    /**
     * Completes an exit future off the poller thread. Whoever waits on it (a sandbox or container exit handler)
     * takes locks and writes state; on the one poller thread that would hold up every exit and OOM on the node.
     */
    private static void handOff(CompletableFuture<ExitStatus> exit, ExitStatus status) {
        Thread.ofVirtual().name("exit-delivery").start(() -> exit.complete(status));
    }

    @Override
    public void close() {
        if (ownsPoller) {
            poller.close();
        }
    }
}
