package io.kuasar.sandbox.sys;

/** A failed system call: the call that failed and the errno it set. */
public final class ErrnoException extends RuntimeException {
    private final int errno;

    public ErrnoException(String call, int errno) {
        super(call + " failed: " + describe(errno) + " (errno " + errno + ")");
        this.errno = errno;
    }

    public int errno() {
        return errno;
    }

    private static String describe(int errno) {
        return switch (errno) {
            case 1 -> "operation not permitted";
            case 2 -> "no such file or directory";
            case 3 -> "no such process";
            case 4 -> "interrupted";
            case 9 -> "bad file descriptor";
            case 10 -> "no child processes";
            case 11 -> "resource temporarily unavailable";
            case 13 -> "permission denied";
            case 16 -> "device or resource busy";
            case 17 -> "file exists";
            case 22 -> "invalid argument";
            case 38 -> "function not implemented";
            default -> "error";
        };
    }
}
