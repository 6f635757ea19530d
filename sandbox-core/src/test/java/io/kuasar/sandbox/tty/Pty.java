package io.kuasar.sandbox.tty;

import io.kuasar.sandbox.sys.ErrnoException;
import io.kuasar.sandbox.sys.Linux;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;
import java.nio.charset.StandardCharsets;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

/**
 * What runc does for a terminal, for tests: a real pty pair (posix_openpt) and sending its master through the
 * console socket with SCM_RIGHTS.
 */
final class Pty {
    private static final Linker LINKER = Linker.nativeLinker();
    private static final StructLayout STATE = Linker.Option.captureStateLayout();
    private static final VarHandle ERRNO = STATE.varHandle(MemoryLayout.PathElement.groupElement("errno"));
    private static final int O_RDWR = 2;
    private static final int O_NOCTTY = 0x100;
    private static final int O_CLOEXEC = 0x80000;
    private static final long TIOCGPTN = 0x80045430L;
    private static final long TIOCGWINSZ = 0x5413;

    private static final MethodHandle POSIX_OPENPT = bind("posix_openpt", FunctionDescriptor.of(JAVA_INT, JAVA_INT), -1);
    private static final MethodHandle UNLOCKPT = bind("unlockpt", FunctionDescriptor.of(JAVA_INT, JAVA_INT), -1);
    private static final MethodHandle PTSNAME_R = bind("ptsname_r", FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS, JAVA_LONG), -1);
    private static final MethodHandle OPEN = bind("open", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT), 1);
    private static final MethodHandle IOCTL = bind("ioctl", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_LONG, ADDRESS), 2);
    private static final MethodHandle SOCKET = bind("socket", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT), -1);
    private static final MethodHandle CONNECT = bind("connect", FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT), -1);
    private static final MethodHandle SENDMSG = bind("sendmsg", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_INT), -1);

    final int master;
    final int slave;

    private Pty(int master, int slave) {
        this.master = master;
        this.slave = slave;
    }

    /** A new pty pair, both ends open. */
    static Pty open() {
        int master = check("posix_openpt", call(POSIX_OPENPT, O_RDWR | O_NOCTTY | O_CLOEXEC));
        check("unlockpt", call(UNLOCKPT, master));
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment name = arena.allocate(128);
            check("ptsname_r", call(PTSNAME_R, master, name, 128L));
            int slave = check("open slave", call(OPEN, name, O_RDWR | O_NOCTTY | O_CLOEXEC));
            return new Pty(master, slave);
        }
    }

    /** A pty master only (another container's terminal, as far as the daemon is concerned). */
    static int openMaster() {
        return check("posix_openpt", call(POSIX_OPENPT, O_RDWR | O_NOCTTY | O_CLOEXEC));
    }

    /** The pty number of a master (TIOCGPTN), or -1 if {@code fd} is not a pty master. */
    static int number(int fd) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment n = arena.allocate(JAVA_INT);
            return call(IOCTL, fd, TIOCGPTN, n) < 0 ? -1 : n.get(JAVA_INT, 0);
        }
    }

    /** The window size of a terminal as {rows, cols}. */
    static int[] windowSize(int fd) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment ws = arena.allocate(8, 2);
            check("ioctl(TIOCGWINSZ)", call(IOCTL, fd, TIOCGWINSZ, ws));
            return new int[]{ws.get(JAVA_SHORT, 0), ws.get(JAVA_SHORT, 2)};
        }
    }

    /** Connects to a console socket and sends {@code fd} with SCM_RIGHTS, as runc's --console-socket does. */
    static void sendFd(String socketPath, int fd) {
        try (Arena arena = Arena.ofConfined()) {
            int sock = check("socket", call(SOCKET, 1, 1 | O_CLOEXEC, 0));
            try {
                byte[] p = socketPath.getBytes(StandardCharsets.UTF_8);
                MemorySegment addr = arena.allocate(110);
                addr.set(JAVA_SHORT, 0, (short) 1);
                MemorySegment.copy(p, 0, addr, JAVA_BYTE, 2, p.length);
                check("connect " + socketPath, call(CONNECT, sock, addr, 2 + p.length + 1));
                MemorySegment data = arena.allocateFrom("/dev/ptmx");
                MemorySegment iov = arena.allocate(16, 8);
                iov.set(ADDRESS, 0, data);
                iov.set(JAVA_LONG, 8, data.byteSize());
                MemorySegment control = arena.allocate(24, 8); // CMSG_SPACE(sizeof(int))
                control.set(JAVA_LONG, 0, 20L); // CMSG_LEN(sizeof(int))
                control.set(JAVA_INT, 8, 1); // SOL_SOCKET
                control.set(JAVA_INT, 12, 1); // SCM_RIGHTS
                control.set(JAVA_INT, 16, fd);
                MemorySegment msg = arena.allocate(56, 8);
                msg.set(ADDRESS, 16, iov);
                msg.set(JAVA_LONG, 24, 1L);
                msg.set(ADDRESS, 32, control);
                msg.set(JAVA_LONG, 40, control.byteSize());
                if (callLong(SENDMSG, sock, msg, 0) < 0) {
                    throw new ErrnoException("sendmsg", lastErrno);
                }
            } finally {
                Linux.close(sock);
            }
        }
    }

    private static int lastErrno;

    private static int check(String what, int rc) {
        if (rc < 0) {
            throw new ErrnoException(what, lastErrno);
        }
        return rc;
    }

    private static int call(MethodHandle mh, Object... args) {
        return (int) (long) callLong(mh, args);
    }

    private static long callLong(MethodHandle mh, Object... args) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(STATE);
            Object[] all = new Object[args.length + 1];
            all[0] = state;
            System.arraycopy(args, 0, all, 1, args.length);
            Object rc = mh.invokeWithArguments(all);
            lastErrno = (int) ERRNO.get(state, 0L);
            return rc instanceof Integer i ? i : (Long) rc;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    private static MethodHandle bind(String name, FunctionDescriptor fd, int firstVariadic) {
        MemorySegment sym = LINKER.defaultLookup().find(name).orElseThrow();
        Linker.Option errno = Linker.Option.captureCallState("errno");
        return firstVariadic < 0 ? LINKER.downcallHandle(sym, fd, errno)
                : LINKER.downcallHandle(sym, fd, errno, Linker.Option.firstVariadicArg(firstVariadic));
    }
}
