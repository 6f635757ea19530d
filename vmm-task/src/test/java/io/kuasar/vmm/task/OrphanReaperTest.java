package io.kuasar.vmm.task;

import io.kuasar.sandbox.process.ProcessReaper;
import io.kuasar.sandbox.sys.Linux;
import org.junit.jupiter.api.Test;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The orphan reaper takes a zombie only after the grace period, so the JDK's own waiter gets its child's real
 * exit status first. Needs this JVM to be a subreaper (any user may set that on itself).
 */
class OrphanReaperTest {
    @Test
    void aJdkChildKeepsItsExitStatusAndAnOrphanIsReapedAfterTheGrace() throws Exception {
        ProcessReaper.becomeSubreaper();
        // An orphan: sh starts a background sleep that outlives it, so it is re-parented to us.
        Process p = new ProcessBuilder("sh", "-c", "sleep 0.3 & echo $!").start();
        int orphan = Integer.parseInt(new String(p.getInputStream().readAllBytes()).trim());
        assertThat(p.waitFor(5, TimeUnit.SECONDS)).isTrue();
        Process jdkChild = new ProcessBuilder("sh", "-c", "exit 7").start();
        OrphanReaper reaper = new OrphanReaper();
        long t0 = System.nanoTime();
        long deadline = t0 + TimeUnit.SECONDS.toNanos(10);
        // scans as the reaper's thread would, pretending time passes quickly: the JDK child still wins
        while (Files.exists(Path.of("/proc/" + orphan)) && System.nanoTime() < deadline) {
            reaper.scan(System.nanoTime());
            Thread.sleep(50);
        }
        assertThat(jdkChild.waitFor(5, TimeUnit.SECONDS)).isTrue();
        assertThat(jdkChild.exitValue()).isEqualTo(7);
        assertThat(Path.of("/proc/" + orphan)).doesNotExist();
        assertThat(Linux.peekExitedChild()).isNotEqualTo(orphan);
    }
}
