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
        try {
            String stat = Files.readString(Path.of("/proc/" + pid + "/stat"));
            // The command name (field 2) may contain spaces and parentheses: count fields after the last ')'.
            String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
            return Long.parseLong(f[19]);
        } catch (IOException | RuntimeException e) {
            return -1;
        }
    }

    /** True if {@code pid} is alive and is the process that started at {@code startTime}. */
    public static boolean isSameProcess(int pid, long startTime) {
        return pid > 0 && startTime > 0 && startTime(pid) == startTime;
    }
}
