package io.kuasar.sandbox.cgroup;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import io.kuasar.api.cgroups.v1.CPUStat;
import io.kuasar.api.cgroups.v1.CPUUsage;
import io.kuasar.api.cgroups.v1.MemoryEntry;
import io.kuasar.api.cgroups.v1.MemoryStat;
import io.kuasar.api.cgroups.v1.Metrics;
import io.kuasar.api.cgroups.v1.PidsStat;
import io.kuasar.api.cgroups.v1.Throttle;
import io.kuasar.api.cgroups.v2.HugeTlbStat;
import io.kuasar.api.cgroups.v2.IOEntry;
import io.kuasar.api.cgroups.v2.IOStat;
import io.kuasar.api.cgroups.v2.MemoryEvents;
import io.kuasar.api.cgroups.v2.PSIData;
import io.kuasar.api.cgroups.v2.PSIStats;
import io.kuasar.api.cgroups.v2.RdmaEntry;
import io.kuasar.api.cgroups.v2.RdmaStat;
import io.kuasar.sandbox.sys.Linux;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Reads a process's cgroup figures the way containerd's runc shim reports them in {@code Task.Stats}: cgroup v1
 * metrics ({@code io.containerd.cgroups.v1.Metrics}) unless the host's cgroup root is the unified (v2) hierarchy,
 * then {@code io.containerd.cgroups.v2.Metrics} as containerd's cgroups/v2 manager fills them. A hybrid host (v1
 * controllers, cgroup2 only at {@code unified/}) counts as v1, as in containerd.
 */
public final class CgroupStats {
    private static final Logger LOG = LoggerFactory.getLogger(CgroupStats.class);
    static final Path ROOT = Path.of("/sys/fs/cgroup");
    static final String V1_TYPE = "io.containerd.cgroups.v1.Metrics";
    static final String V2_TYPE = "io.containerd.cgroups.v2.Metrics";
    /** containerd reports "max" (no limit) as the largest uint64. */
    static final long MAX = -1L;

    private final Path root;
    private final boolean unified;

    public CgroupStats() {
        this(ROOT);
    }

    /** Reads the hierarchy mounted at {@code root}, v2 if it is a cgroup2 mount. */
    public CgroupStats(Path root) {
        this(root, isUnified(root));
    }

    /** For tests: a fake cgroupfs tree laid out as v1 or v2. */
    public CgroupStats(Path root, boolean unified) {
        this.root = root;
        this.unified = unified;
    }

    /** True if {@code root} is a cgroup2 mount (statfs magic), i.e. the host runs the unified hierarchy only. */
    public static boolean isUnified(Path root) {
        try {
            return Linux.statfsType(root.toString()) == Linux.CGROUP2_SUPER_MAGIC;
        } catch (RuntimeException e) {
            LOG.debug("cannot statfs {}: {}", root, e.getMessage());
            return false;
        }
    }

    public boolean unified() {
        return unified;
    }

    /** The hierarchy paths of a process: v1 controller name -> path; the v2 path under the key "". */
    public static Map<String, String> cgroupsOf(int pid) throws IOException {
        Map<String, String> out = new HashMap<>();
        for (String line : Files.readAllLines(Path.of("/proc/" + pid + "/cgroup"))) {
            String[] parts = line.split(":", 3);
            if (parts.length != 3) {
                continue;
            }
            if (parts[0].equals("0") && parts[1].isEmpty()) {
                out.put("", parts[2]); // the unified (v2) hierarchy: "0::/path"
            } else {
                for (String c : parts[1].split(",")) {
                    out.put(c, parts[2]);
                }
            }
        }
        return out;
    }

    /** The v2 cgroup directory of a process under this root; null if the process has no v2 path. */
    Path unifiedGroupOf(int pid) throws IOException {
        String rel = cgroupsOf(pid).get("");
        return rel == null ? null : root.resolve(strip(rel));
    }

    /** The v1 directory of one controller of a process; null if it has none there. */
    Path v1GroupOf(int pid, String controller) throws IOException {
        return controller(controller, cgroupsOf(pid));
    }

    /** Metrics of a process's cgroups, packed as containerd's typeurl names them. */
    public Any statsOf(int pid) throws IOException {
        if (!unified) {
            return pack(v1(cgroupsOf(pid)));
        }
        Path group = unifiedGroupOf(pid);
        if (group == null) {
            throw new IOException("process " + pid + " has no cgroup v2 path in /proc/" + pid + "/cgroup");
        }
        return pack(v2(group));
    }

    public Metrics v1(Map<String, String> groups) {
        Metrics.Builder m = Metrics.newBuilder();
        Path mem = controller("memory", groups);
        if (mem != null) {
            MemoryStat.Builder ms = MemoryStat.newBuilder();
            Map<String, Long> stat = keyValues(mem.resolve("memory.stat"));
            ms.setCache(stat.getOrDefault("cache", 0L)).setRss(stat.getOrDefault("rss", 0L))
                    .setRssHuge(stat.getOrDefault("rss_huge", 0L)).setMappedFile(stat.getOrDefault("mapped_file", 0L))
                    .setDirty(stat.getOrDefault("dirty", 0L)).setWriteback(stat.getOrDefault("writeback", 0L))
                    .setPgPgIn(stat.getOrDefault("pgpgin", 0L)).setPgPgOut(stat.getOrDefault("pgpgout", 0L))
                    .setPgFault(stat.getOrDefault("pgfault", 0L)).setPgMajFault(stat.getOrDefault("pgmajfault", 0L))
                    .setInactiveAnon(stat.getOrDefault("inactive_anon", 0L))
                    .setActiveAnon(stat.getOrDefault("active_anon", 0L))
                    .setInactiveFile(stat.getOrDefault("inactive_file", 0L))
                    .setActiveFile(stat.getOrDefault("active_file", 0L))
                    .setUnevictable(stat.getOrDefault("unevictable", 0L))
                    .setHierarchicalMemoryLimit(stat.getOrDefault("hierarchical_memory_limit", 0L))
                    .setTotalCache(stat.getOrDefault("total_cache", 0L)).setTotalRss(stat.getOrDefault("total_rss", 0L))
                    .setTotalInactiveFile(stat.getOrDefault("total_inactive_file", 0L))
                    .setTotalActiveFile(stat.getOrDefault("total_active_file", 0L))
                    .setTotalInactiveAnon(stat.getOrDefault("total_inactive_anon", 0L))
                    .setTotalActiveAnon(stat.getOrDefault("total_active_anon", 0L));
            ms.setUsage(entry(mem, "memory"));
            ms.setSwap(entry(mem, "memory.memsw"));
            ms.setKernel(entry(mem, "memory.kmem"));
            ms.setKernelTcp(entry(mem, "memory.kmem.tcp"));
            m.setMemory(ms);
        }
        Path cpuacct = controller("cpuacct", groups);
        Path cpu = controller("cpu", groups);
        if (cpuacct != null || cpu != null) {
            CPUStat.Builder cs = CPUStat.newBuilder();
            if (cpuacct != null) {
                CPUUsage.Builder u = CPUUsage.newBuilder().setTotal(number(cpuacct.resolve("cpuacct.usage")));
                Map<String, Long> st = keyValues(cpuacct.resolve("cpuacct.stat"));
                long tick = 10_000_000L; // USER_HZ is 100 on Linux: one tick is 10 ms
                u.setUser(st.getOrDefault("user", 0L) * tick).setKernel(st.getOrDefault("system", 0L) * tick);
                for (String v : words(cpuacct.resolve("cpuacct.usage_percpu"))) {
                    u.addPerCpu(Long.parseUnsignedLong(v));
                }
                cs.setUsage(u);
            }
            if (cpu != null) {
                Map<String, Long> st = keyValues(cpu.resolve("cpu.stat"));
                cs.setThrottling(Throttle.newBuilder().setPeriods(st.getOrDefault("nr_periods", 0L))
                        .setThrottledPeriods(st.getOrDefault("nr_throttled", 0L))
                        .setThrottledTime(st.getOrDefault("throttled_time", 0L)));
            }
            m.setCpu(cs);
        }
        Path pids = controller("pids", groups);
        if (pids != null) {
            String max = firstWord(pids.resolve("pids.max"));
            m.setPids(PidsStat.newBuilder().setCurrent(number(pids.resolve("pids.current")))
                    .setLimit(max == null || max.equals("max") ? 0 : Long.parseLong(max)));
        }
        return m.build();
    }

    /**
     * The figures of one v2 cgroup directory, field for field as containerd's cgroup2 Manager.Stat() fills them
     * (absent files read as 0, "max" as the largest uint64). One difference: cpu.stat is read whether or not the
     * cpu controller is enabled; its usage figures are core accounting the kernel keeps for every cgroup.
     */
    public io.kuasar.api.cgroups.v2.Metrics v2(Path group) {
        var m = io.kuasar.api.cgroups.v2.Metrics.newBuilder();
        m.setPids(io.kuasar.api.cgroups.v2.PidsStat.newBuilder().setCurrent(v2Number(group.resolve("pids.current")))
                .setLimit(v2Number(group.resolve("pids.max"))));

        Map<String, Long> cpu = keyValues(group.resolve("cpu.stat"));
        var cs = io.kuasar.api.cgroups.v2.CPUStat.newBuilder().setUsageUsec(cpu.getOrDefault("usage_usec", 0L))
                .setUserUsec(cpu.getOrDefault("user_usec", 0L)).setSystemUsec(cpu.getOrDefault("system_usec", 0L))
                .setNrPeriods(cpu.getOrDefault("nr_periods", 0L)).setNrThrottled(cpu.getOrDefault("nr_throttled", 0L))
                .setThrottledUsec(cpu.getOrDefault("throttled_usec", 0L))
                .setNrBursts(cpu.getOrDefault("nr_bursts", 0L)).setBurstUsec(cpu.getOrDefault("burst_usec", 0L));
        PSIStats cpuPsi = psi(group.resolve("cpu.pressure"));
        if (cpuPsi != null) {
            cs.setPsi(cpuPsi);
        }
        m.setCpu(cs);

        Map<String, Long> st = keyValues(group.resolve("memory.stat"));
        var ms = io.kuasar.api.cgroups.v2.MemoryStat.newBuilder()
                .setAnon(st.getOrDefault("anon", 0L)).setFile(st.getOrDefault("file", 0L))
                .setKernelStack(st.getOrDefault("kernel_stack", 0L)).setSlab(st.getOrDefault("slab", 0L))
                .setSock(st.getOrDefault("sock", 0L)).setShmem(st.getOrDefault("shmem", 0L))
                .setFileMapped(st.getOrDefault("file_mapped", 0L)).setFileDirty(st.getOrDefault("file_dirty", 0L))
                .setFileWriteback(st.getOrDefault("file_writeback", 0L)).setAnonThp(st.getOrDefault("anon_thp", 0L))
                .setInactiveAnon(st.getOrDefault("inactive_anon", 0L))
                .setActiveAnon(st.getOrDefault("active_anon", 0L))
                .setInactiveFile(st.getOrDefault("inactive_file", 0L))
                .setActiveFile(st.getOrDefault("active_file", 0L))
                .setUnevictable(st.getOrDefault("unevictable", 0L))
                .setSlabReclaimable(st.getOrDefault("slab_reclaimable", 0L))
                .setSlabUnreclaimable(st.getOrDefault("slab_unreclaimable", 0L))
                .setPgfault(st.getOrDefault("pgfault", 0L)).setPgmajfault(st.getOrDefault("pgmajfault", 0L))
                .setWorkingsetRefaultAnon(st.getOrDefault("workingset_refault_anon", 0L))
                .setWorkingsetRefaultFile(st.getOrDefault("workingset_refault_file", 0L))
                .setWorkingsetActivateAnon(st.getOrDefault("workingset_activate_anon", 0L))
                .setWorkingsetActivateFile(st.getOrDefault("workingset_activate_file", 0L))
                .setWorkingsetNodereclaim(st.getOrDefault("workingset_nodereclaim", 0L))
                .setPgrefill(st.getOrDefault("pgrefill", 0L)).setPgscan(st.getOrDefault("pgscan", 0L))
                .setPgsteal(st.getOrDefault("pgsteal", 0L)).setPgactivate(st.getOrDefault("pgactivate", 0L))
                .setPgdeactivate(st.getOrDefault("pgdeactivate", 0L))
                .setPglazyfree(st.getOrDefault("pglazyfree", 0L)).setPglazyfreed(st.getOrDefault("pglazyfreed", 0L))
                .setThpFaultAlloc(st.getOrDefault("thp_fault_alloc", 0L))
                .setThpCollapseAlloc(st.getOrDefault("thp_collapse_alloc", 0L))
                .setUsage(v2Number(group.resolve("memory.current")))
                .setUsageLimit(v2Number(group.resolve("memory.max")))
                .setMaxUsage(v2Number(group.resolve("memory.peak")))
                .setSwapUsage(v2Number(group.resolve("memory.swap.current")))
                .setSwapLimit(v2Number(group.resolve("memory.swap.max")))
                .setSwapMaxUsage(v2Number(group.resolve("memory.swap.peak")));
        setDeprecated(ms, st);
        PSIStats memPsi = psi(group.resolve("memory.pressure"));
        if (memPsi != null) {
            ms.setPsi(memPsi);
        }
        m.setMemory(ms);

        Map<String, Long> events = keyValues(group.resolve("memory.events"));
        if (!events.isEmpty()) {
            m.setMemoryEvents(MemoryEvents.newBuilder().setLow(events.getOrDefault("low", 0L))
                    .setHigh(events.getOrDefault("high", 0L)).setMax(events.getOrDefault("max", 0L))
                    .setOom(events.getOrDefault("oom", 0L)).setOomKill(events.getOrDefault("oom_kill", 0L))
                    .setOomGroupKill(events.getOrDefault("oom_group_kill", 0L)));
        }

        IOStat.Builder ios = IOStat.newBuilder().addAllUsage(ioStat(group.resolve("io.stat")));
        PSIStats ioPsi = psi(group.resolve("io.pressure"));
        if (ioPsi != null) {
            ios.setPsi(ioPsi);
        }
        m.setIo(ios);
        m.setRdma(RdmaStat.newBuilder().addAllCurrent(rdma(group.resolve("rdma.current")))
                .addAllLimit(rdma(group.resolve("rdma.max"))));
        m.addAllHugetlb(hugetlb(group));
        return m.build();
    }

    @SuppressWarnings("deprecation")
    private static void setDeprecated(io.kuasar.api.cgroups.v2.MemoryStat.Builder ms, Map<String, Long> st) {
        // kernels before 5.9 have these instead of the _anon/_file pairs; containerd still reports them
        ms.setWorkingsetRefault(st.getOrDefault("workingset_refault", 0L))
                .setWorkingsetActivate(st.getOrDefault("workingset_activate", 0L));
    }

    /**
     * Sums the metrics of a sandbox's containers into one metric of the same cgroup version: additive figures
     * (usage, counters, current pids, io bytes per device) are summed, limits are not. Entries of another type are
     * skipped. With no entries at all, an empty metric of the host's version.
     */
    public static Any sum(List<Any> metrics) {
        String type = null;
        for (Any a : metrics) {
            if (a != null && (a.getTypeUrl().endsWith(V1_TYPE) || a.getTypeUrl().endsWith(V2_TYPE))) {
                type = a.getTypeUrl().endsWith(V1_TYPE) ? V1_TYPE : V2_TYPE;
                break;
            }
        }
        if (type == null) {
            type = isUnified(ROOT) ? V2_TYPE : V1_TYPE;
        }
        List<Any> same = new ArrayList<>();
        for (Any a : metrics) {
            if (a != null && a.getTypeUrl().endsWith(type)) {
                same.add(a);
            } else if (a != null) {
                LOG.debug("not summing a {} metric with {} ones", a.getTypeUrl(), type);
            }
        }
        try {
            return type.equals(V1_TYPE) ? pack(sumV1(same)) : pack(sumV2(same));
        } catch (InvalidProtocolBufferException e) {
            throw new IllegalArgumentException("malformed " + type + ": " + e.getMessage(), e);
        }
    }

    private static Metrics sumV1(List<Any> all) throws InvalidProtocolBufferException {
        long total = 0, user = 0, kernel = 0, periods = 0, throttled = 0, throttledTime = 0;
        long usage = 0, rss = 0, cache = 0, swap = 0, kmem = 0, pgfault = 0, pgmajfault = 0, pids = 0;
        for (Any a : all) {
            Metrics m = Metrics.parseFrom(a.getValue());
            total += m.getCpu().getUsage().getTotal();
            user += m.getCpu().getUsage().getUser();
            kernel += m.getCpu().getUsage().getKernel();
            periods += m.getCpu().getThrottling().getPeriods();
            throttled += m.getCpu().getThrottling().getThrottledPeriods();
            throttledTime += m.getCpu().getThrottling().getThrottledTime();
            usage += m.getMemory().getUsage().getUsage();
            rss += m.getMemory().getRss();
            cache += m.getMemory().getCache();
            swap += m.getMemory().getSwap().getUsage();
            kmem += m.getMemory().getKernel().getUsage();
            pgfault += m.getMemory().getPgFault();
            pgmajfault += m.getMemory().getPgMajFault();
            pids += m.getPids().getCurrent();
        }
        return Metrics.newBuilder()
                .setCpu(CPUStat.newBuilder().setUsage(CPUUsage.newBuilder().setTotal(total).setUser(user)
                        .setKernel(kernel)).setThrottling(Throttle.newBuilder().setPeriods(periods)
                        .setThrottledPeriods(throttled).setThrottledTime(throttledTime)))
                .setMemory(MemoryStat.newBuilder().setUsage(MemoryEntry.newBuilder().setUsage(usage)).setRss(rss)
                        .setCache(cache).setSwap(MemoryEntry.newBuilder().setUsage(swap))
                        .setKernel(MemoryEntry.newBuilder().setUsage(kmem)).setPgFault(pgfault)
                        .setPgMajFault(pgmajfault))
                .setPids(PidsStat.newBuilder().setCurrent(pids)).build();
    }

    private static io.kuasar.api.cgroups.v2.Metrics sumV2(List<Any> all) throws InvalidProtocolBufferException {
        var cpu = io.kuasar.api.cgroups.v2.CPUStat.newBuilder();
        var mem = io.kuasar.api.cgroups.v2.MemoryStat.newBuilder();
        var ev = MemoryEvents.newBuilder();
        long pids = 0;
        Map<String, IOEntry.Builder> devices = new LinkedHashMap<>(); // in order of appearance
        for (Any a : all) {
            var m = io.kuasar.api.cgroups.v2.Metrics.parseFrom(a.getValue());
            var c = m.getCpu();
            cpu.setUsageUsec(cpu.getUsageUsec() + c.getUsageUsec()).setUserUsec(cpu.getUserUsec() + c.getUserUsec())
                    .setSystemUsec(cpu.getSystemUsec() + c.getSystemUsec())
                    .setNrPeriods(cpu.getNrPeriods() + c.getNrPeriods())
                    .setNrThrottled(cpu.getNrThrottled() + c.getNrThrottled())
                    .setThrottledUsec(cpu.getThrottledUsec() + c.getThrottledUsec());
            var s = m.getMemory();
            mem.setUsage(mem.getUsage() + s.getUsage()).setAnon(mem.getAnon() + s.getAnon())
                    .setFile(mem.getFile() + s.getFile()).setKernelStack(mem.getKernelStack() + s.getKernelStack())
                    .setSlab(mem.getSlab() + s.getSlab()).setSock(mem.getSock() + s.getSock())
                    .setShmem(mem.getShmem() + s.getShmem()).setSwapUsage(mem.getSwapUsage() + s.getSwapUsage())
                    .setInactiveFile(mem.getInactiveFile() + s.getInactiveFile())
                    .setActiveFile(mem.getActiveFile() + s.getActiveFile())
                    .setPgfault(mem.getPgfault() + s.getPgfault())
                    .setPgmajfault(mem.getPgmajfault() + s.getPgmajfault());
            var e = m.getMemoryEvents();
            ev.setLow(ev.getLow() + e.getLow()).setHigh(ev.getHigh() + e.getHigh()).setMax(ev.getMax() + e.getMax())
                    .setOom(ev.getOom() + e.getOom()).setOomKill(ev.getOomKill() + e.getOomKill())
                    .setOomGroupKill(ev.getOomGroupKill() + e.getOomGroupKill());
            pids += m.getPids().getCurrent();
            for (IOEntry d : m.getIo().getUsageList()) {
                IOEntry.Builder b = devices.computeIfAbsent(d.getMajor() + ":" + d.getMinor(),
                        k -> IOEntry.newBuilder().setMajor(d.getMajor()).setMinor(d.getMinor()));
                b.setRbytes(b.getRbytes() + d.getRbytes()).setWbytes(b.getWbytes() + d.getWbytes())
                        .setRios(b.getRios() + d.getRios()).setWios(b.getWios() + d.getWios());
            }
        }
        IOStat.Builder ios = IOStat.newBuilder();
        devices.values().forEach(ios::addUsage);
        return io.kuasar.api.cgroups.v2.Metrics.newBuilder().setCpu(cpu).setMemory(mem).setMemoryEvents(ev)
                .setPids(io.kuasar.api.cgroups.v2.PidsStat.newBuilder().setCurrent(pids)).setIo(ios).build();
    }

    public static Any pack(com.google.protobuf.Message m) {
        // containerd's typeurl uses the bare full name, e.g. io.containerd.cgroups.v1.Metrics
        return Any.newBuilder().setTypeUrl(m.getDescriptorForType().getFullName()).setValue(m.toByteString()).build();
    }

    private Path controller(String name, Map<String, String> groups) {
        String rel = groups.get(name);
        if (rel == null) {
            return null;
        }
        for (String mount : List.of(name, "cpu,cpuacct", "cpuacct,cpu")) {
            Path p = root.resolve(mount).resolve(strip(rel));
            if ((mount.equals(name) || mount.contains(name)) && Files.isDirectory(p)) {
                return p;
            }
        }
        return null;
    }

    private static MemoryEntry entry(Path dir, String prefix) {
        return MemoryEntry.newBuilder().setUsage(number(dir.resolve(prefix + ".usage_in_bytes")))
                .setLimit(number(dir.resolve(prefix + ".limit_in_bytes")))
                .setMax(number(dir.resolve(prefix + ".max_usage_in_bytes")))
                .setFailcnt(number(dir.resolve(prefix + ".failcnt"))).build();
    }

    /** io.stat lines: "MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. dbytes=.. dios=..". */
    private static List<IOEntry> ioStat(Path file) {
        List<IOEntry> out = new ArrayList<>();
        for (String line : lines(file)) {
            String[] parts = line.trim().split("\\s+");
            String[] majmin = parts[0].split(":");
            if (parts.length < 2 || majmin.length != 2) {
                continue;
            }
            try {
                IOEntry.Builder e = IOEntry.newBuilder().setMajor(Long.parseUnsignedLong(majmin[0]))
                        .setMinor(Long.parseUnsignedLong(majmin[1]));
                for (int i = 1; i < parts.length; i++) {
                    String[] kv = parts[i].split("=", 2);
                    if (kv.length != 2) {
                        continue;
                    }
                    long v = Long.parseUnsignedLong(kv[1]);
                    switch (kv[0]) {
                        case "rbytes" -> e.setRbytes(v);
                        case "wbytes" -> e.setWbytes(v);
                        case "rios" -> e.setRios(v);
                        case "wios" -> e.setWios(v);
                        default -> { }
                    }
                }
                out.add(e.build());
            } catch (NumberFormatException ignored) {
                // a line we cannot read carries nothing we report
            }
        }
        return out;
    }

    /** rdma.current / rdma.max lines: "DEVICE hca_handle=N hca_object=N" ("max" is the largest uint32). */
    private static List<RdmaEntry> rdma(Path file) {
        List<RdmaEntry> out = new ArrayList<>();
        for (String line : lines(file)) {
            String[] parts = line.trim().split("\\s+");
            if (parts.length != 3) {
                continue;
            }
            RdmaEntry.Builder e = RdmaEntry.newBuilder().setDevice(parts[0]);
            for (int i = 1; i < 3; i++) {
                String[] kv = parts[i].split("=", 2);
                if (kv.length != 2) {
                    continue;
                }
                int v;
                try {
                    v = kv[1].equals("max") ? -1 : Integer.parseUnsignedInt(kv[1]);
                } catch (NumberFormatException ignored) {
                    continue;
                }
                if (kv[0].equals("hca_handle")) {
                    e.setHcaHandles(v);
                } else if (kv[0].equals("hca_object")) {
                    e.setHcaObjects(v);
                }
            }
            out.add(e.build());
        }
        return out;
    }

    /**
     * One entry per huge page size the cgroup offers (hugetlb.SIZE.current present). Failcnt is the "max" count of
     * hugetlb.SIZE.events: allocations refused at the limit.
     */
    private static List<HugeTlbStat> hugetlb(Path group) {
        Map<String, HugeTlbStat> out = new TreeMap<>();
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(group, "hugetlb.*.current")) {
            for (Path p : ds) {
                String name = p.getFileName().toString();
                String size = name.substring("hugetlb.".length(), name.length() - ".current".length());
                if (size.contains(".")) {
                    continue; // hugetlb.SIZE.rsvd.current
                }
                out.put(size, HugeTlbStat.newBuilder().setPagesize(size).setCurrent(v2Number(p))
                        .setMax(v2Number(group.resolve("hugetlb." + size + ".max")))
                        .setFailcnt(keyValues(group.resolve("hugetlb." + size + ".events")).getOrDefault("max", 0L))
                        .build());
            }
        } catch (IOException e) {
            return List.of();
        }
        return new ArrayList<>(out.values());
    }

    /** A pressure file: "some avg10=0.00 avg60=0.00 avg300=0.00 total=0" and a "full" line; null if absent. */
    private static PSIStats psi(Path file) {
        List<String> lines = lines(file);
        if (lines.isEmpty()) {
            return null;
        }
        PSIStats.Builder out = PSIStats.newBuilder();
        for (String line : lines) {
            String[] parts = line.trim().split("\\s+");
            if (!parts[0].equals("some") && !parts[0].equals("full")) {
                continue;
            }
            PSIData.Builder d = PSIData.newBuilder();
            try {
                for (int i = 1; i < parts.length; i++) {
                    String[] kv = parts[i].split("=", 2);
                    if (kv.length != 2) {
                        return null;
                    }
                    switch (kv[0]) {
                        case "avg10" -> d.setAvg10(Double.parseDouble(kv[1]));
                        case "avg60" -> d.setAvg60(Double.parseDouble(kv[1]));
                        case "avg300" -> d.setAvg300(Double.parseDouble(kv[1]));
                        case "total" -> d.setTotal(Long.parseUnsignedLong(kv[1]));
                        default -> { }
                    }
                }
            } catch (NumberFormatException e) {
                LOG.debug("unreadable pressure file {}: {}", file, e.getMessage());
                return null;
            }
            if (parts[0].equals("some")) {
                out.setSome(d);
            } else {
                out.setFull(d);
            }
        }
        return out.build();
    }

    private static String strip(String rel) {
        return rel.startsWith("/") ? rel.substring(1) : rel;
    }

    /** A single-value v2 file: "max" is the largest uint64, absent or unreadable is 0. */
    static long v2Number(Path file) {
        String w = firstWord(file);
        return "max".equals(w) ? MAX : number(file);
    }

    static long number(Path file) {
        String w = firstWord(file);
        if (w == null) {
            return 0;
        }
        try {
            return Long.parseUnsignedLong(w);
        } catch (NumberFormatException e) {
            return 0;
        }
    }

    static String firstWord(Path file) {
        List<String> w = words(file);
        return w.isEmpty() ? null : w.getFirst();
    }

    static List<String> words(Path file) {
        try {
            String s = Files.readString(file).trim();
            return s.isEmpty() ? List.of() : List.of(s.split("\\s+"));
        } catch (IOException e) {
            return List.of();
        }
    }

    private static List<String> lines(Path file) {
        try {
            return Files.readAllLines(file).stream().filter(l -> !l.isBlank()).toList();
        } catch (IOException e) {
            return List.of();
        }
    }

    static Map<String, Long> keyValues(Path file) {
        try {
            return keyValuesOrFail(file);
        } catch (IOException e) {
            return new LinkedHashMap<>();
        }
    }

    /** "key value" lines; non-numeric lines are skipped, an unreadable file throws. */
    static Map<String, Long> keyValuesOrFail(Path file) throws IOException {
        Map<String, Long> out = new LinkedHashMap<>();
        for (String line : Files.readAllLines(file)) {
            String[] kv = line.trim().split("\\s+");
            if (kv.length == 2) {
                try {
                    out.put(kv[0], Long.parseUnsignedLong(kv[1]));
                } catch (NumberFormatException ignored) {
                    // a non-numeric line carries nothing we report
                }
            }
        }
        return out;
    }
}
