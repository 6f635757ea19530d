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
class ProcessReaperTest {
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

    /** Starts {@code script} as an orphan and returns its pid. */
    static int orphan(String script) throws Exception {
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
        Thread.sleep(600); // it is our zombie now, waiting for us
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
}
