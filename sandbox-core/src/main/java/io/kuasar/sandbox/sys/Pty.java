package io.kuasar.sandbox.sys;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.MemorySegment;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * A new pseudo-terminal pair, for a program of our own to run on (runc makes the containers' terminals itself): the
 * master's descriptor, to read and write with {@link Linux#read}/{@link Linux#write}, and the slave's path, for the
 * program to open as its controlling terminal. Close the master with {@link Linux#close}: the program's session
 * gets SIGHUP.
 */
public record Pty(int master, String slave) {
    private static final int O_RDWR = 2;
    private static final int O_NOCTTY = 0x100;
    private static final long TCGETS = 0x5401;
    private static final long TCSETS = 0x5402;
    /** The kernel's struct termios (c_iflag, c_oflag, c_cflag, c_lflag, c_line, c_cc[19]) fits in this. */
    private static final long TERMIOS_SIZE = 64;
    private static final long OFLAG = 4;
    private static final long LFLAG = 12;
    private static final int OPOST = 0x1;
    private static final int ECHO = 0x8;

    private static final Downcall POSIX_OPENPT = new Downcall("posix_openpt", FunctionDescriptor.of(JAVA_INT, JAVA_INT), -1);
    private static final Downcall GRANTPT = new Downcall("grantpt", FunctionDescriptor.of(JAVA_INT, JAVA_INT), -1);
    private static final Downcall UNLOCKPT = new Downcall("unlockpt", FunctionDescriptor.of(JAVA_INT, JAVA_INT), -1);
    private static final Downcall PTSNAME_R = new Downcall("ptsname_r",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS, JAVA_LONG), -1);
    private static final Downcall IOCTL = new Downcall("ioctl", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_LONG,
            ADDRESS), 2);

    /** Opens a new pair (close-on-exec master). */
    public static Pty open() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(Linux.callState());
            int fd = (int) POSIX_OPENPT.mh().invokeExact(state, O_RDWR | O_NOCTTY | Linux.O_CLOEXEC);
            if (fd < 0) {
                throw new ErrnoException("posix_openpt", Linux.errno(state));
            }
            try {
                if ((int) GRANTPT.mh().invokeExact(state, fd) != 0) {
                    throw new ErrnoException("grantpt", Linux.errno(state));
                }
                if ((int) UNLOCKPT.mh().invokeExact(state, fd) != 0) {
                    throw new ErrnoException("unlockpt", Linux.errno(state));
                }
                MemorySegment name = arena.allocate(128);
                int rc = (int) PTSNAME_R.mh().invokeExact(state, fd, name, 128L);
                if (rc != 0) {
                    throw new ErrnoException("ptsname_r", rc);
                }
                return new Pty(fd, name.getString(0));
            } catch (RuntimeException e) {
                Linux.close(fd);
                throw e;
            }
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /**
     * Turns the terminal's echo off, and its output processing ("\n" to "\r\n"): what the program writes arrives as
     * it was written. Set on the master, it applies to the pair.
     */
    public void rawOutputWithoutEcho() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(Linux.callState());
            MemorySegment t = arena.allocate(TERMIOS_SIZE, 4);
            if ((int) IOCTL.mh().invokeExact(state, master, TCGETS, t) < 0) {
                throw new ErrnoException("ioctl(TCGETS)", Linux.errno(state));
            }
            t.set(JAVA_INT, OFLAG, t.get(JAVA_INT, OFLAG) & ~OPOST);
            t.set(JAVA_INT, LFLAG, t.get(JAVA_INT, LFLAG) & ~ECHO);
            if ((int) IOCTL.mh().invokeExact(state, master, TCSETS, t) < 0) {
                throw new ErrnoException("ioctl(TCSETS)", Linux.errno(state));
            }
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /** Whether echo is on (for tests and diagnostics). */
    public boolean echoes() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(Linux.callState());
            MemorySegment t = arena.allocate(TERMIOS_SIZE, 4);
            if ((int) IOCTL.mh().invokeExact(state, master, TCGETS, t) < 0) {
                throw new ErrnoException("ioctl(TCGETS)", Linux.errno(state));
            }
            return (t.get(JAVA_INT, LFLAG) & ECHO) != 0;
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }
}
