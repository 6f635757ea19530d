package io.kuasar.sandbox.cgroup;

import com.google.protobuf.Any;
import io.kuasar.api.cgroups.v1.CPUStat;
import io.kuasar.api.cgroups.v1.CPUUsage;
import io.kuasar.api.cgroups.v1.MemoryEntry;
import io.kuasar.api.cgroups.v1.MemoryStat;
import io.kuasar.api.cgroups.v1.Metrics;
import io.kuasar.api.cgroups.v1.PidsStat;
import io.kuasar.api.cgroups.v1.Throttle;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Reads a process's cgroup figures the way containerd's runc shim reports them in {@code Task.Stats}: cgroup v1
 * metrics ({@code io.containerd.cgroups.v1.Metrics}) where the v1 memory controller is mounted, otherwise cgroup v2
 * ({@code io.containerd.cgroups.v2.Metrics}).
 */
public final class CgroupStats {
    private final Path root;

    public CgroupStats() {
        this(Path.of("/sys/fs/cgroup"));
    }

    /** For tests: a fake cgroupfs tree. */
    public CgroupStats(Path root) {
        this.root = root;
    }

    /** The v1 hierarchy paths of a process: controller name -> path relative to that hierarchy. */
    public static Map<String, String> cgroupsOf(int pid) throws IOException {
        Map<String, String> out = new HashMap<>();
        for (String line : Files.readAllLines(Path.of("/proc/" + pid + "/cgroup"))) {
            String[] parts = line.split(":", 3);
            if (parts.length != 3) {
                continue;
            }
            if (parts[1].isEmpty()) {
                out.put("", parts[2]); // the unified (v2) hierarchy
            } else {
                for (String c : parts[1].split(",")) {
                    out.put(c, parts[2]);
                }
            }
        }
        return out;
    }

    public boolean isV1() {
        return Files.isDirectory(root.resolve("memory"));
    }

    /** Metrics of a process's cgroups, packed as containerd's typeurl names them. */
    public Any statsOf(int pid) throws IOException {
        Map<String, String> groups = cgroupsOf(pid);
        if (isV1()) {
            return pack(v1(groups));
        }
        return pack(v2(root.resolve(strip(groups.getOrDefault("", "/")))));
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

    public io.kuasar.api.cgroups.v2.Metrics v2(Path group) {
        var m = io.kuasar.api.cgroups.v2.Metrics.newBuilder();
        Map<String, Long> cpu = keyValues(group.resolve("cpu.stat"));
        m.setCpu(io.kuasar.api.cgroups.v2.CPUStat.newBuilder().setUsageUsec(cpu.getOrDefault("usage_usec", 0L))
                .setUserUsec(cpu.getOrDefault("user_usec", 0L)).setSystemUsec(cpu.getOrDefault("system_usec", 0L))
                .setNrPeriods(cpu.getOrDefault("nr_periods", 0L)).setNrThrottled(cpu.getOrDefault("nr_throttled", 0L))
                .setThrottledUsec(cpu.getOrDefault("throttled_usec", 0L)));
        Map<String, Long> mem = keyValues(group.resolve("memory.stat"));
        String max = firstWord(group.resolve("memory.max"));
        m.setMemory(io.kuasar.api.cgroups.v2.MemoryStat.newBuilder().setAnon(mem.getOrDefault("anon", 0L))
                .setFile(mem.getOrDefault("file", 0L)).setUsage(number(group.resolve("memory.current")))
                .setUsageLimit(max == null || max.equals("max") ? Long.MAX_VALUE : Long.parseLong(max)));
        String pmax = firstWord(group.resolve("pids.max"));
        m.setPids(io.kuasar.api.cgroups.v2.PidsStat.newBuilder().setCurrent(number(group.resolve("pids.current")))
                .setLimit(pmax == null || pmax.equals("max") ? 0 : Long.parseLong(pmax)));
        return m.build();
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

    private static String strip(String rel) {
        return rel.startsWith("/") ? rel.substring(1) : rel;
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

    static Map<String, Long> keyValues(Path file) {
        Map<String, Long> out = new HashMap<>();
        try {
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
        } catch (IOException e) {
            return out;
        }
        return out;
    }
}
