package io.kuasar.sandbox.cgroup;

import com.google.protobuf.Any;
import io.kuasar.api.cgroups.v2.Metrics;
import io.kuasar.sandbox.sys.Linux;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * cgroup v2 on a real kernel: a private cgroup2 mount, a child cgroup and a real process moved into it (root; skipped
 * otherwise). On a hybrid host most controllers are bound to v1 and the v2 hierarchy offers only what is left (here:
 * hugetlb), so cpu.stat's core accounting, PSI and hugetlb are real, and memory/pids figures are real where the
 * hierarchy offers those controllers (a v2-only host) and zero otherwise, as containerd reports missing files.
 */
class CgroupV2MountTest {
    @TempDir
    Path dir;

    /** A shell that waits for "go", spins a little in its new cgroup, says "done" and waits for stdin to close. */
    static Process worker() throws Exception {
        return new ProcessBuilder("sh", "-c", "echo ready; read go; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done;"
                + " echo done; read end").start();
    }

    @Test
    void readsRealV2FiguresOfAProcessInAPrivateCgroup2Hierarchy() throws Exception {
        try (PrivateCgroup2 cg = PrivateCgroup2.mount(dir.resolve("cg2"), "kuasar-stats-test-" + ProcessHandle.current().pid())) {
            boolean pids = cg.enable("pids");
            boolean memory = cg.enable("memory");
            boolean hugetlb = cg.enable("hugetlb");
            Process p = worker();
            try {
                BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream()));
                assertThat(out.readLine()).isEqualTo("ready");
                cg.move(p.pid());
                p.getOutputStream().write("go\n".getBytes());
                p.getOutputStream().flush();
                assertThat(out.readLine()).isEqualTo("done");

                CgroupStats stats = new CgroupStats(cg.mount);
                assertThat(stats.unified()).as("statfs sees a cgroup2 mount").isTrue();
                Any any = stats.statsOf((int) p.pid());
                assertThat(any.getTypeUrl()).isEqualTo("io.containerd.cgroups.v2.Metrics");
                Metrics m = Metrics.parseFrom(any.getValue());
                assertThat(m.getCpu().getUsageUsec()).as("the shell spun in the cgroup").isPositive();
                assertThat(m.getCpu().hasPsi()).as("cpu.pressure").isTrue();
                if (pids) {
                    assertThat(m.getPids().getCurrent()).isEqualTo(1);
                    assertThat(m.getPids().getLimit()).as("pids.max is max").isEqualTo(-1L);
                } else {
                    assertThat(m.getPids().getCurrent()).as("no pids controller in v2 here").isZero();
                }
                if (memory) {
                    assertThat(m.getMemory().getUsage()).isPositive();
                    assertThat(m.getMemory().getUsageLimit()).as("memory.max is max").isEqualTo(-1L);
                    assertThat(m.hasMemoryEvents()).isTrue();
                }
                if (hugetlb) {
                    // hugetlb.SIZE.max defaults to the largest page-aligned long, not "max"
                    assertThat(m.getHugetlbList()).as("one entry per huge page size").isNotEmpty()
                            .allSatisfy(h -> {
                                assertThat(h.getPagesize()).endsWith("B");
                                assertThat(h.getCurrent()).as("the shell uses no huge pages").isZero();
                                assertThat(h.getMax()).isNotZero();
                            });
                }
            } finally {
                p.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
            }
        }
    }

    @Test
    void kernfsRaisesInModifyOnCgroupEventsWhenTheLastProcessLeaves() throws Exception {
        try (PrivateCgroup2 cg = PrivateCgroup2.mount(dir.resolve("cg2"), "kuasar-inotify-test-" + ProcessHandle.current().pid())) {
            Process p = worker();
            int fd = Linux.inotifyInit();
            try {
                assertThat(new BufferedReader(new InputStreamReader(p.getInputStream())).readLine()).isEqualTo("ready");
                cg.move(p.pid());
                assertThat(Files.readString(cg.child.resolve("cgroup.events"))).contains("populated 1");
                Linux.inotifyAddWatch(fd, cg.child.resolve("cgroup.events").toString(), Linux.IN_MODIFY);
                assertThat(Linux.inotifyDrain(fd)).as("nothing happened yet").isZero();
                p.destroyForcibly();
                assertThat(Linux.pollIn(new int[] {fd}, 10_000)[0]).as("an inotify event within 10 s").isTrue();
                assertThat(Linux.inotifyDrain(fd) & Linux.IN_MODIFY).isEqualTo(Linux.IN_MODIFY);
                assertThat(cg.awaitEmpty(10_000)).isTrue();
                assertThat(Files.readString(cg.child.resolve("cgroup.events"))).contains("populated 0");
            } finally {
                Linux.close(fd);
                p.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
            }
        }
    }
}
