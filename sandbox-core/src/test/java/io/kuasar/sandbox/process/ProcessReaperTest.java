package io.kuasar.sandbox.process;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Real exit codes of orphans re-parented to this JVM (the situation of every runc container process): the test
 * JVM becomes a subreaper, a shell starts a background child and exits, and the reaper reports the child's status.
 */
public class ProcessReaperTest {
    static ProcessReaper reaper;

    @BeforeAll
    static void setUp() {
        ProcessReaper.becomeSubreaper();
        reaper = new ProcessReaper();
    }

    @AfterAll
    static void tearDown() {
        reaper.close();
    }

    /** Starts {@code script} as an orphan (re-parented to this JVM, a subreaper) and returns its pid. */
    public static int orphan(String script) throws Exception {
        Process sh = new ProcessBuilder("sh", "-c", "(" + script + ") </dev/null >/dev/null 2>&1 & echo $!").start();
        try (BufferedReader r = new BufferedReader(new InputStreamReader(sh.getInputStream()))) {
            int pid = Integer.parseInt(r.readLine().trim());
            assertThat(sh.waitFor(5, TimeUnit.SECONDS)).isTrue();
            return pid;
        }
    }

    @Test
    void reportsTheRealExitCode() throws Exception {
        int pid = orphan("sleep 0.3; exit 7");
        assertThat(reaper.watch(pid).get(10, TimeUnit.SECONDS).code()).isEqualTo(7);
    }

    @Test
    void aSignalDeathIs128PlusTheSignal() throws Exception {
        int pid = orphan("exec sleep 30");
        var exit = reaper.watch(pid);
        Thread.sleep(100);
        io.kuasar.sandbox.sys.Linux.kill(pid, 9);
        ExitStatus st = exit.get(10, TimeUnit.SECONDS);
        assertThat(st.code()).isEqualTo(137);
        assertThat(st.known()).isTrue();
    }

    @Test
    void aProcessThatExitedBeforeBeingWatchedStillReportsItsStatus() throws Exception {
        // It outlives the shell (which could otherwise reap it itself), then exits before we watch it.
        int pid = orphan("sleep 0.1; exit 3");
        org.awaitility.Awaitility.await().atMost(java.time.Duration.ofSeconds(10)).until(() -> isOurZombie(pid));
        assertThat(reaper.watch(pid).get(10, TimeUnit.SECONDS).code()).isEqualTo(3);
    }

    @Test
    void manyProcessesAtOnce() throws Exception {
        int[] pids = new int[40];
        for (int i = 0; i < pids.length; i++) {
            pids[i] = orphan("sleep 0.2; exit " + (i % 100));
        }
        for (int i = 0; i < pids.length; i++) {
            assertThat(reaper.watch(pids[i]).get(20, TimeUnit.SECONDS).code()).isEqualTo(i % 100);
        }
        assertThat(reaper.watched()).isZero();
    }

    @Test
    void anUnknownPidIsReportedAsUnknownNotHung() throws Exception {
        ExitStatus st = reaper.watch(Integer.MAX_VALUE - 1).get(5, TimeUnit.SECONDS);
        assertThat(st.known()).isFalse();
    }

    static boolean isOurZombie(int pid) {
        try {
            String stat = java.nio.file.Files.readString(java.nio.file.Path.of("/proc/" + pid + "/stat"));
            String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
            return f[0].equals("Z") && Integer.parseInt(f[1]) == io.kuasar.sandbox.sys.Linux.getpid();
        } catch (java.io.IOException e) {
            return false;
        }
    }

    @Test
    void aSlowExitHandlerDoesNotHoldUpOtherExits() throws Exception {
        // An exit handler that blocks (a sandbox lock held by a Stop, an fsync) must not stall the node's other exits.
        java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
        int slow = orphan("sleep 0.2; exit 1");
        var slowExit = reaper.watch(slow).thenAccept(st -> {
            try {
                release.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        });
        try {
            int other = orphan("sleep 0.3; exit 5");
            assertThat(reaper.watch(other).get(10, TimeUnit.SECONDS).code()).isEqualTo(5);
            assertThat(slowExit).isNotDone();
        } finally {
            release.countDown();
        }
        slowExit.get(10, TimeUnit.SECONDS);
    }

    @Test
    void killTreeKillsEveryDescendantAndLeavesNoZombie() throws Exception {
        // A launcher with a grandchild that would outlive it, like runc with `runc init` and a monitor below it.
        Process launcher = new ProcessBuilder("sh", "-c", "sh -c 'sleep 300 & sleep 300; wait' & sleep 300; wait")
                .start();
        org.awaitility.Awaitility.await().atMost(java.time.Duration.ofSeconds(10))
                .until(() -> launcher.descendants().count() >= 4);
        java.util.List<Long> tree = launcher.descendants().map(ProcessHandle::pid).toList();
        ProcessReaper.killTree(launcher, java.time.Duration.ofSeconds(5));
        assertThat(launcher.isAlive()).isFalse();
        for (long pid : tree) {
            assertThat(java.nio.file.Files.exists(java.nio.file.Path.of("/proc/" + pid))).as("process " + pid)
                    .isFalse();
        }
    }
}
