package io.kuasar.sandbox.cgroup;

import com.google.protobuf.Any;
import io.kuasar.api.cgroups.v2.HugeTlbStat;
import io.kuasar.api.cgroups.v2.IOEntry;
import io.kuasar.api.cgroups.v2.MemoryEvents;
import io.kuasar.api.cgroups.v2.Metrics;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * cgroup figures as containerd reports them: v2 parsing over a fake tree with every file containerd reads, v1 and v2
 * from real hierarchies (this host's v1 controllers; a private cgroup2 mount in {@link CgroupV2MountTest}), and the
 * sandbox-level sum of both.
 */
class CgroupStatsTest {
    @TempDir
    Path dir;

    static void write(Path group, String file, String content) throws Exception {
        Files.createDirectories(group);
        Files.writeString(group.resolve(file), content);
    }

    /** A v2 cgroup directory as a 6.x kernel lays it out (values made up, formats real). */
    static void v2Tree(Path g) throws Exception {
        write(g, "cpu.stat", "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\nnr_periods 10\nnr_throttled 2\n"
                + "throttled_usec 700\nnr_bursts 1\nburst_usec 50\n");
        write(g, "cpu.pressure", "some avg10=1.50 avg60=0.25 avg300=0.00 total=12345\n"
                + "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
        write(g, "memory.current", "8388608\n");
        write(g, "memory.max", "16777216\n");
        write(g, "memory.peak", "9000000\n");
        write(g, "memory.swap.current", "4096\n");
        write(g, "memory.swap.max", "max\n");
        write(g, "memory.swap.peak", "8192\n");
        write(g, "memory.stat", "anon 4096000\nfile 2048000\nkernel_stack 16384\nslab 65536\nsock 0\nshmem 4096\n"
                + "file_mapped 1024\nfile_dirty 512\nfile_writeback 0\nanon_thp 0\ninactive_anon 100\n"
                + "active_anon 200\ninactive_file 300\nactive_file 400\nunevictable 0\nslab_reclaimable 30000\n"
                + "slab_unreclaimable 35536\npgfault 777\npgmajfault 7\nworkingset_refault_anon 1\n"
                + "workingset_refault_file 2\nworkingset_activate_anon 3\nworkingset_activate_file 4\n"
                + "workingset_nodereclaim 5\npgrefill 6\npgscan 8\npgsteal 9\npgactivate 10\npgdeactivate 11\n"
                + "pglazyfree 12\npglazyfreed 13\nthp_fault_alloc 14\nthp_collapse_alloc 15\n");
        write(g, "memory.events", "low 0\nhigh 1\nmax 4\noom 2\noom_kill 1\noom_group_kill 0\n");
        write(g, "memory.pressure", "some avg10=0.00 avg60=0.00 avg300=0.00 total=99\n"
                + "full avg10=0.00 avg60=0.00 avg300=0.00 total=98\n");
        write(g, "pids.current", "3\n");
        write(g, "pids.max", "max\n");
        write(g, "io.stat", "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"
                + "254:1 rbytes=10 wbytes=20 rios=3 wios=4 dbytes=0 dios=0\n");
        write(g, "hugetlb.2MB.current", "2097152\n");
        write(g, "hugetlb.2MB.max", "max\n");
        write(g, "hugetlb.2MB.events", "max 3\n");
        write(g, "hugetlb.2MB.rsvd.current", "0\n");
        write(g, "rdma.current", "mlx4_0 hca_handle=2 hca_object=2000\n");
        write(g, "rdma.max", "mlx4_0 hca_handle=max hca_object=max\n");
    }

    @Test
    void v2ReadsEveryFileContainerdReads() throws Exception {
        Path g = dir.resolve("kubepods/pod1/c1");
        v2Tree(g);
        Metrics m = new CgroupStats(dir).v2(g);

        assertThat(m.getCpu().getUsageUsec()).isEqualTo(5000);
        assertThat(m.getCpu().getUserUsec()).isEqualTo(3000);
        assertThat(m.getCpu().getSystemUsec()).isEqualTo(2000);
        assertThat(m.getCpu().getNrPeriods()).isEqualTo(10);
        assertThat(m.getCpu().getNrThrottled()).isEqualTo(2);
        assertThat(m.getCpu().getThrottledUsec()).isEqualTo(700);
        assertThat(m.getCpu().getPsi().getSome().getAvg10()).isEqualTo(1.5);
        assertThat(m.getCpu().getPsi().getSome().getTotal()).isEqualTo(12345);

        var mem = m.getMemory();
        assertThat(mem.getUsage()).isEqualTo(8388608);
        assertThat(mem.getUsageLimit()).isEqualTo(16777216);
        assertThat(mem.getMaxUsage()).isEqualTo(9000000);
        assertThat(mem.getSwapUsage()).isEqualTo(4096);
        assertThat(Long.toUnsignedString(mem.getSwapLimit())).as("max is the largest uint64, as in containerd")
                .isEqualTo("18446744073709551615");
        assertThat(mem.getSwapMaxUsage()).isEqualTo(8192);
        assertThat(mem.getAnon()).isEqualTo(4096000);
        assertThat(mem.getFile()).isEqualTo(2048000);
        assertThat(mem.getKernelStack()).isEqualTo(16384);
        assertThat(mem.getSlab()).isEqualTo(65536);
        assertThat(mem.getShmem()).isEqualTo(4096);
        assertThat(mem.getFileMapped()).isEqualTo(1024);
        assertThat(mem.getFileDirty()).isEqualTo(512);
        assertThat(mem.getInactiveAnon()).isEqualTo(100);
        assertThat(mem.getActiveFile()).isEqualTo(400);
        assertThat(mem.getSlabUnreclaimable()).isEqualTo(35536);
        assertThat(mem.getPgfault()).isEqualTo(777);
        assertThat(mem.getPgmajfault()).isEqualTo(7);
        assertThat(mem.getWorkingsetRefaultFile()).isEqualTo(2);
        assertThat(mem.getWorkingsetNodereclaim()).isEqualTo(5);
        assertThat(mem.getPgscan()).isEqualTo(8);
        assertThat(mem.getThpCollapseAlloc()).isEqualTo(15);
        assertThat(mem.getPsi().getFull().getTotal()).isEqualTo(98);

        assertThat(m.getMemoryEvents()).isEqualTo(MemoryEvents.newBuilder().setHigh(1).setMax(4).setOom(2)
                .setOomKill(1).build());
        assertThat(m.getPids().getCurrent()).isEqualTo(3);
        assertThat(m.getPids().getLimit()).isEqualTo(-1L); // "max"
        assertThat(m.getIo().getUsageList()).containsExactly(
                IOEntry.newBuilder().setMajor(8).setMinor(0).setRbytes(4096).setWbytes(8192).setRios(1).setWios(2)
                        .build(),
                IOEntry.newBuilder().setMajor(254).setMinor(1).setRbytes(10).setWbytes(20).setRios(3).setWios(4)
                        .build());
        assertThat(m.getHugetlbList()).containsExactly(HugeTlbStat.newBuilder().setPagesize("2MB")
                .setCurrent(2097152).setMax(-1L).setFailcnt(3).build());
        assertThat(m.getRdma().getCurrent(0).getHcaObjects()).isEqualTo(2000);
        assertThat(m.getRdma().getLimit(0).getHcaHandles()).isEqualTo(-1); // "max": the largest uint32
    }

    @Test
    void aUnifiedRootPacksV2MetricsOfTheProcessCgroup() throws Exception {
        // the fake tree sits where /proc/self/cgroup's "0::" path points under the fake root
        String rel = CgroupStats.cgroupsOf((int) ProcessHandle.current().pid()).get("");
        Assumptions.assumeTrue(rel != null, "this process has no cgroup v2 path");
        Path g = dir.resolve(rel.substring(1));
        v2Tree(g);
        Any any = new CgroupStats(dir, true).statsOf((int) ProcessHandle.current().pid());
        assertThat(any.getTypeUrl()).isEqualTo("io.containerd.cgroups.v2.Metrics");
        assertThat(Metrics.parseFrom(any.getValue()).getMemory().getUsage()).isEqualTo(8388608);
    }

    @Test
    void aFakeTreeOrThisHybridHostIsNotUnified() {
        assertThat(CgroupStats.isUnified(dir)).isFalse();
        Path unified = Path.of("/sys/fs/cgroup/unified");
        Assumptions.assumeTrue(Files.exists(unified.resolve("cgroup.procs")), "no hybrid cgroup2 mount here");
        assertThat(CgroupStats.isUnified(unified)).as("a cgroup2 mount").isTrue();
        assertThat(CgroupStats.isUnified(Path.of("/sys/fs/cgroup"))).as("the hybrid root is tmpfs").isFalse();
    }

    @Test
    void v1FiguresOfThisProcessOnARealV1Hierarchy() throws Exception {
        CgroupStats host = new CgroupStats();
        Assumptions.assumeFalse(host.unified(), "this host runs cgroup v2 only");
        Assumptions.assumeTrue(Files.exists(Path.of("/sys/fs/cgroup/memory/cgroup.procs")), "no v1 memory controller");
        Any any = host.statsOf((int) ProcessHandle.current().pid());
        assertThat(any.getTypeUrl()).isEqualTo("io.containerd.cgroups.v1.Metrics");
        var m = io.kuasar.api.cgroups.v1.Metrics.parseFrom(any.getValue());
        assertThat(m.getMemory().getUsage().getUsage()).as("this JVM uses memory").isPositive();
        assertThat(m.getCpu().getUsage().getTotal()).as("this JVM used CPU").isPositive();
    }

    @Test
    void sumsV2MetricsIntoV2() throws Exception {
        Path a = dir.resolve("a");
        Path b = dir.resolve("b");
        v2Tree(a);
        v2Tree(b);
        write(b, "io.stat", "8:0 rbytes=1 wbytes=1 rios=1 wios=1\n");
        CgroupStats cg = new CgroupStats(dir, true);
        Any sum = CgroupStats.sum(List.of(CgroupStats.pack(cg.v2(a)), CgroupStats.pack(cg.v2(b))));
        assertThat(sum.getTypeUrl()).isEqualTo("io.containerd.cgroups.v2.Metrics");
        Metrics m = Metrics.parseFrom(sum.getValue());
        assertThat(m.getCpu().getUsageUsec()).isEqualTo(10000);
        assertThat(m.getCpu().getNrThrottled()).isEqualTo(4);
        assertThat(m.getMemory().getUsage()).isEqualTo(2 * 8388608L);
        assertThat(m.getMemory().getAnon()).isEqualTo(2 * 4096000L);
        assertThat(m.getMemory().getUsageLimit()).as("limits are not summed").isZero();
        assertThat(m.getMemoryEvents().getOomKill()).isEqualTo(2);
        assertThat(m.getPids().getCurrent()).isEqualTo(6);
        assertThat(m.getIo().getUsageList()).containsExactly(
                IOEntry.newBuilder().setMajor(8).setMinor(0).setRbytes(4097).setWbytes(8193).setRios(2).setWios(3)
                        .build(),
                IOEntry.newBuilder().setMajor(254).setMinor(1).setRbytes(10).setWbytes(20).setRios(3).setWios(4)
                        .build());
    }

    @Test
    void sumsV1MetricsIntoV1() throws Exception {
        var one = io.kuasar.api.cgroups.v1.Metrics.newBuilder()
                .setCpu(io.kuasar.api.cgroups.v1.CPUStat.newBuilder().setUsage(
                        io.kuasar.api.cgroups.v1.CPUUsage.newBuilder().setTotal(100).setUser(60).setKernel(40)))
                .setMemory(io.kuasar.api.cgroups.v1.MemoryStat.newBuilder().setRss(10).setUsage(
                        io.kuasar.api.cgroups.v1.MemoryEntry.newBuilder().setUsage(1000).setLimit(5000)))
                .setPids(io.kuasar.api.cgroups.v1.PidsStat.newBuilder().setCurrent(2).setLimit(10)).build();
        Any sum = CgroupStats.sum(List.of(CgroupStats.pack(one), CgroupStats.pack(one)));
        assertThat(sum.getTypeUrl()).isEqualTo("io.containerd.cgroups.v1.Metrics");
        var m = io.kuasar.api.cgroups.v1.Metrics.parseFrom(sum.getValue());
        assertThat(m.getCpu().getUsage().getTotal()).isEqualTo(200);
        assertThat(m.getCpu().getUsage().getUser()).isEqualTo(120);
        assertThat(m.getMemory().getUsage().getUsage()).isEqualTo(2000);
        assertThat(m.getMemory().getUsage().getLimit()).isZero();
        assertThat(m.getMemory().getRss()).isEqualTo(20);
        assertThat(m.getPids().getCurrent()).isEqualTo(4);
    }

    @Test
    void anEmptySumHasTheHostsVersion() {
        Any sum = CgroupStats.sum(List.of());
        assertThat(sum.getTypeUrl()).isEqualTo(new CgroupStats().unified()
                ? "io.containerd.cgroups.v2.Metrics" : "io.containerd.cgroups.v1.Metrics");
    }
}
