package io.kuasar.tests.benchmark;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Stream;

/**
 * Memory of processes from {@code /proc}: PSS, RSS and USS (private pages) from {@code /proc/PID/smaps_rollup}, and
 * the process-table queries the benchmark needs to find management processes.
 */
final class ProcMemory {
    private static final java.util.regex.Pattern MAPPING = java.util.regex.Pattern.compile("[0-9a-f]+-[0-9a-f]+ ");

    private ProcMemory() {
    }

    /** Memory of one process in KiB. */
    record Usage(long pssKb, long rssKb, long ussKb) {
        static final Usage ZERO = new Usage(0, 0, 0);

        Usage plus(Usage o) {
            return new Usage(pssKb + o.pssKb, rssKb + o.rssKb, ussKb + o.ussKb);
        }
    }

    /** A process as seen in /proc at one moment. */
    record Proc(long pid, long ppid, String comm, String exe, List<String> cmdline) {
    }

    /** smaps_rollup of one process, or null when it is gone. */
    static Usage usage(long pid) {
        String text;
        try {
            text = Files.readString(Path.of("/proc/" + pid + "/smaps_rollup"), StandardCharsets.US_ASCII);
        } catch (IOException e) {
            return null;
        }
        long pss = 0;
        long rss = 0;
        long priv = 0;
        for (String line : text.split("\n")) {
            if (line.startsWith("Pss:")) {
                pss = kb(line);
            } else if (line.startsWith("Rss:")) {
                rss = kb(line);
            } else if (line.startsWith("Private_Clean:") || line.startsWith("Private_Dirty:")) {
                priv += kb(line);
            }
        }
        return new Usage(pss, rss, priv);
    }

    private static long kb(String line) {
        String[] f = line.trim().split("\\s+");
        return Long.parseLong(f[1]);
    }

    /** Sum over processes; processes that vanished in between count as zero. */
    static Usage sum(List<Long> pids) {
        Usage total = Usage.ZERO;
        for (long pid : pids) {
            Usage u = usage(pid);
            if (u != null) {
                total = total.plus(u);
            }
        }
        return total;
    }

    /** Every live (non-zombie) process. */
    static List<Proc> all() {
        List<Proc> out = new ArrayList<>();
        try (Stream<Path> s = Files.list(Path.of("/proc"))) {
            for (Path p : s.toList()) {
                String name = p.getFileName().toString();
                if (name.isEmpty() || !name.chars().allMatch(Character::isDigit)) {
                    continue;
                }
                Proc proc = read(Long.parseLong(name));
                if (proc != null) {
                    out.add(proc);
                }
            }
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
        return out;
    }

    static Proc read(long pid) {
        Path dir = Path.of("/proc/" + pid);
        try {
            String stat = Files.readString(dir.resolve("stat"), StandardCharsets.UTF_8);
            int open = stat.indexOf('(');
            int close = stat.lastIndexOf(')');
            String comm = stat.substring(open + 1, close);
            String[] rest = stat.substring(close + 2).split(" ");
            if (rest[0].equals("Z") || rest[0].equals("X")) {
                return null;
            }
            long ppid = Long.parseLong(rest[1]);
            String exe;
            try {
                exe = Files.readSymbolicLink(dir.resolve("exe")).toString();
            } catch (IOException e) {
                exe = ""; // kernel thread
            }
            byte[] raw = Files.readAllBytes(dir.resolve("cmdline"));
            List<String> args = new ArrayList<>();
            int start = 0;
            for (int i = 0; i < raw.length; i++) {
                if (raw[i] == 0) {
                    args.add(new String(raw, start, i - start, StandardCharsets.UTF_8));
                    start = i + 1;
                }
            }
            if (start < raw.length) {
                args.add(new String(raw, start, raw.length - start, StandardCharsets.UTF_8));
            }
            return new Proc(pid, ppid, comm, exe, args);
        } catch (IOException | RuntimeException e) {
            return null; // gone in between
        }
    }

    /** {@code /proc/PID/status} fields such as Threads or VmHWM (value without unit), or -1. */
    static long status(long pid, String field) {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/" + pid + "/status"))) {
                if (line.startsWith(field + ":")) {
                    return Long.parseLong(line.substring(field.length() + 1).trim().split("\\s+")[0]);
                }
            }
        } catch (IOException | RuntimeException e) {
            return -1;
        }
        return -1;
    }

    /** Open file descriptors of a process, or -1. */
    static long fds(long pid) {
        try (Stream<Path> s = Files.list(Path.of("/proc/" + pid + "/fd"))) {
            return s.count();
        } catch (IOException e) {
            return -1;
        }
    }

    /** PSS per mapping name (file path or [heap]/[anon]...) in KiB, from /proc/PID/smaps, largest first. */
    static Map<String, Long> pssByMapping(long pid) {
        Map<String, Long> out = new TreeMap<>();
        List<String> lines;
        try {
            lines = Files.readAllLines(Path.of("/proc/" + pid + "/smaps"));
        } catch (IOException e) {
            return out;
        }
        String current = "[anon]";
        for (String line : lines) {
            if (MAPPING.matcher(line).lookingAt()) {
                String[] f = line.trim().split("\\s+", 6);
                current = f.length == 6 && !f[5].isBlank() ? f[5].trim() : "[anon]";
            } else if (line.startsWith("Pss:")) {
                out.merge(current, kb(line), Long::sum);
            }
        }
        return out;
    }
}
