package io.kuasar.sandbox.cgroup;

import io.kuasar.sandbox.sys.FdPoller;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BooleanSupplier;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * OOM kills as containerd's TaskOOM reports them. cgroup v1: a real OOM kill in a real v1 memory cgroup. cgroup v2:
 * the inotify + oom_kill logic against a real file the test rewrites (memory.events laid out where the process's v2
 * path points under a fake root), and a real v2 OOM kill in a private cgroup2 mount where the v2 hierarchy offers the
 * memory controller. On this project's hybrid hosts the memory controller is bound to v1, so that test can only check
 * that a v2 cgroup without it is not watched, and then skips. Tests needing root skip without it.
 */
class OomMonitorTest {
    @TempDir
    Path dir;

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

    /** The v2 directory of this process under a fake root, as the monitor resolves it from /proc/self/cgroup. */
    private Path fakeV2Group() throws Exception {
        String rel = CgroupStats.cgroupsOf((int) ProcessHandle.current().pid()).get("");
        Assumptions.assumeTrue(rel != null, "this process has no cgroup v2 path");
        Path g = dir.resolve(rel.substring(1));
        Files.createDirectories(g);
        return g;
    }

    private static String events(int max, int oom, int oomKill) {
        return "low 0\nhigh 0\nmax " + max + "\noom " + oom + "\noom_kill " + oomKill + "\noom_group_kill 0\n";
    }

    /** Waits for a condition the poller thread brings about (no event tells the test when it is done). */
    private static void await(BooleanSupplier condition, String what) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (!condition.getAsBoolean()) {
            assertThat(System.nanoTime()).as(what).isLessThan(deadline);
            Thread.sleep(5);
        }
    }

    @Test
    void v2ReportsEachRiseOfOomKillInMemoryEvents() throws Exception {
        // A real file and real inotify; only the cgroup is fake (the kernel raises IN_MODIFY on memory.events too).
        Path g = fakeV2Group();
        Path events = g.resolve("memory.events");
        Files.writeString(events, events(0, 0, 0));
        try (FdPoller poller = new FdPoller("oom-v2-test")) {
            OomMonitor oom = new OomMonitor(dir, true, poller);
            Semaphore fired = new Semaphore(0);
            AtomicInteger count = new AtomicInteger();
            assertThat(oom.watch("c1", (int) ProcessHandle.current().pid(), () -> {
                count.incrementAndGet();
                fired.release();
            })).isTrue();
            assertThat(oom.watched()).isEqualTo(1);

            Files.writeString(events, events(1, 1, 0)); // at the limit, reclaim failed, nothing killed yet
            Files.writeString(events, events(1, 1, 1)); // the kill
            assertThat(fired.tryAcquire(10, TimeUnit.SECONDS)).as("TaskOOM for the first kill").isTrue();

            Files.writeString(events, events(2, 1, 1)); // other counters move: no new kill
            Files.writeString(events, events(3, 2, 3)); // two more kills
            assertThat(fired.tryAcquire(10, TimeUnit.SECONDS)).as("TaskOOM for the later kills").isTrue();

            Files.delete(events); // the cgroup goes: the watch ends by itself
            await(() -> oom.watched() == 0, "watch ended after memory.events vanished");
            assertThat(count.get()).as("one TaskOOM per rise of oom_kill, none for other changes").isEqualTo(2);
            assertThat(poller.size()).isZero();
        }
    }

    @Test
    void v2WatchEndsWhenTheLastProcessLeaves() throws Exception {
        Path g = fakeV2Group();
        Files.writeString(g.resolve("memory.events"), events(0, 0, 0));
        Files.writeString(g.resolve("cgroup.events"), "populated 1\nfrozen 0\n");
        try (FdPoller poller = new FdPoller("oom-v2-test")) {
            OomMonitor oom = new OomMonitor(dir, true, poller);
            CountDownLatch fired = new CountDownLatch(1);
            assertThat(oom.watch("c1", (int) ProcessHandle.current().pid(), fired::countDown)).isTrue();
            // the container is killed for memory and exits: kernel order is memory.events, then cgroup.events
            Files.writeString(g.resolve("memory.events"), events(1, 1, 1));
            Files.writeString(g.resolve("cgroup.events"), "populated 0\nfrozen 0\n");
            assertThat(fired.await(10, TimeUnit.SECONDS)).as("TaskOOM").isTrue();
            await(() -> oom.watched() == 0, "watch ended when the cgroup emptied");
            assertThat(poller.size()).isZero();
        }
    }

    @Test
    void v2WatchNeedsMemoryEvents() throws Exception {
        fakeV2Group();
        try (FdPoller poller = new FdPoller("oom-v2-test")) {
            OomMonitor oom = new OomMonitor(dir, true, poller);
            assertThat(oom.watch("c1", (int) ProcessHandle.current().pid(), () -> { })).isFalse();
            assertThat(oom.watched()).isZero();
        }
    }

    @Test
    void reportsARealV2OomKill() throws Exception {
        try (PrivateCgroup2 cg = PrivateCgroup2.mount(dir.resolve("cg2"), "kuasar-oom-test-" + ProcessHandle.current().pid());
             FdPoller poller = new FdPoller("oom-v2-real-test")) {
            boolean memory = cg.enable("memory");
            Process p = new ProcessBuilder("sh", "-c", "echo ready; read go; dd if=/dev/zero of=/dev/null bs=64M count=1;"
                    + " read end").start();
            try {
                BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream()));
                assertThat(out.readLine()).isEqualTo("ready");
                cg.move(p.pid());
                OomMonitor oom = new OomMonitor(cg.mount, true, poller);
                CountDownLatch fired = new CountDownLatch(1);
                boolean watching = oom.watch("c1", (int) p.pid(), fired::countDown);
                if (!memory) {
                    assertThat(watching).as("a v2 cgroup without the memory controller has nothing to watch").isFalse();
                    Assumptions.abort("the memory controller is bound to cgroup v1 on this host ("
                            + "v2 offers: " + cg.controllers() + "): no real v2 OOM kill possible here");
                }
                assertThat(watching).isTrue();
                Files.writeString(cg.child.resolve("memory.max"), "8388608");
                if (Files.exists(cg.child.resolve("memory.swap.max"))) {
                    Files.writeString(cg.child.resolve("memory.swap.max"), "0");
                }
                p.getOutputStream().write("go\n".getBytes());
                p.getOutputStream().flush();
                assertThat(fired.await(20, TimeUnit.SECONDS)).as("TaskOOM callback").isTrue();
                assertThat(CgroupStats.keyValues(cg.child.resolve("memory.events")).get("oom_kill")).isPositive();
                oom.unwatch("c1");
                assertThat(oom.watched()).isZero();
            } finally {
                p.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
            }
        }
    }
}
