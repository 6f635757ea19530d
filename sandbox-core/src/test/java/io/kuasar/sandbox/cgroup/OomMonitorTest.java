package io.kuasar.sandbox.cgroup;

import io.kuasar.sandbox.sys.FdPoller;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/** A real OOM kill in a real cgroup v1 memory cgroup (root; skipped where there is no v1 memory controller). */
class OomMonitorTest {
    @Test
    void reportsAnOomKillOnce() throws Exception {
        Path memRoot = Path.of("/sys/fs/cgroup/memory");
        Assumptions.assumeTrue(Files.exists(memRoot.resolve("cgroup.procs")), "no cgroup v1 memory controller");
        Path cg = memRoot.resolve("kuasar-oom-test-" + ProcessHandle.current().pid());
        Files.createDirectories(cg);
        try (FdPoller poller = new FdPoller("oom-test")) {
            Files.writeString(cg.resolve("memory.limit_in_bytes"), "8388608");
            // A shell that parks itself in the cgroup, waits for us to watch, then allocates far past the limit.
            Process p = new ProcessBuilder("sh", "-c", "echo $$ > " + cg.resolve("cgroup.procs")
                    + "; echo ready; read go; dd if=/dev/zero of=/dev/null bs=64M count=1; sleep 30").start();
            BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream()));
            assertThat(out.readLine()).isEqualTo("ready");
            OomMonitor oom = new OomMonitor(poller);
            CountDownLatch fired = new CountDownLatch(1);
            assertThat(oom.watch("c1", (int) p.pid(), fired::countDown)).isTrue();
            p.getOutputStream().write("go\n".getBytes());
            p.getOutputStream().flush();
            assertThat(fired.await(20, TimeUnit.SECONDS)).as("TaskOOM callback").isTrue();
            oom.unwatch("c1");
            assertThat(oom.watched()).isZero();
            p.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
        } finally {
            for (int i = 0; i < 50 && Files.exists(cg); i++) {
                try {
                    Files.delete(cg);
                } catch (java.io.IOException busy) {
                    Thread.sleep(100);
                }
            }
        }
    }
}
