package io.kuasar.sandbox.process;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** Facts about a process from /proc. */
public final class Procfs {
    private Procfs() {
    }

    /**
     * The process's start time in clock ticks since boot (/proc/PID/stat field 22), or -1 if it does not exist.
     * A pid plus its start time names one process for good; a pid alone may be reused.
     */
    public static long startTime(int pid) {
        String[] f = statFields(pid);
        return f == null ? -1 : Long.parseLong(f[19]);
    }

    /**
     * The fields of /proc/PID/stat after the command name, from field 3 (state) on; null if there is no such
     * process. The command name (field 2) may contain spaces and parentheses: fields are counted after the last ')'.
     */
    private static String[] statFields(int pid) {
        try {
            String stat = Files.readString(Path.of("/proc/" + pid + "/stat"));
            return stat.substring(stat.lastIndexOf(')') + 2).split(" ");
        } catch (IOException | RuntimeException e) {
            return null;
        }
    }

    /** True if {@code pid} is alive and is the process that started at {@code startTime}. */
    public static boolean isSameProcess(int pid, long startTime) {
        return pid > 0 && startTime > 0 && startTime(pid) == startTime;
    }

    /** Clock ticks per second of /proc/PID/stat's times: USER_HZ, 100 on every Linux ABI in use. */
    private static final long TICKS_PER_SECOND = 100;

    /** A start time in clock ticks since boot, as Unix epoch nanoseconds (boot time from /proc/stat's btime). */
    public static long startEpochNanos(long startTicks) {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/stat"))) {
                if (line.startsWith("btime ")) {
                    long boot = Long.parseLong(line.substring(6).trim());
                    return boot * 1_000_000_000L + startTicks * (1_000_000_000L / TICKS_PER_SECOND);
                }
            }
        } catch (IOException | RuntimeException e) {
            return -1;
        }
        return -1;
    }

    /** The parent pid of a process, or -1 if it does not exist. */
    public static int parent(int pid) {
        String[] f = statFields(pid);
        return f == null ? -1 : Integer.parseInt(f[1]);
    }
}
