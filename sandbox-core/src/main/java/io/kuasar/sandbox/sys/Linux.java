package io.kuasar.sandbox.sys;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

/**
 * The few Linux system calls the JVM does not offer, bound through the FFM API (no JNI, no JNA).
 * Every call returns its result or throws {@link ErrnoException} carrying errno, so callers never see -1.
 * Blocking calls (poll, waitid, read) must run on platform threads: FFM calls pin a virtual thread's carrier.
 */
public final class Linux {
    public static final int PR_SET_NAME = 15;
    public static final int PR_SET_CHILD_SUBREAPER = 36;
    public static final int P_PIDFD = 3;
    public static final int WEXITED = 4;
    public static final int WNOHANG = 1;
    public static final int CLD_EXITED = 1;
    public static final int CLD_KILLED = 2;
    public static final int CLD_DUMPED = 3;
    public static final short POLLIN = 0x1;
    public static final int EFD_CLOEXEC = 0x80000;
    public static final int EFD_NONBLOCK = 0x800;
    public static final int MNT_DETACH = 2;
    public static final int UMOUNT_NOFOLLOW = 8;
    public static final int EINTR = 4;
    public static final int ESRCH = 3;
    public static final int ENOENT = 2;
    public static final int EINVAL = 22;
    public static final int ECHILD = 10;
    public static final int EAGAIN = 11;
    public static final long MS_RDONLY = 1;
    public static final long MS_BIND = 4096;
    public static final long MS_REC = 16384;
    public static final long MS_SHARED = 1L << 20;
    private static final long SYS_PIDFD_OPEN = 434;
    private static final long SYS_PIDFD_SEND_SIGNAL = 424;
    public static final int IN_CLOEXEC = 0x80000;
    public static final int IN_NONBLOCK = 0x800;
    public static final int IN_MODIFY = 0x2;
    public static final int IN_DELETE_SELF = 0x400;
    public static final int IN_IGNORED = 0x8000;
    public static final long CGROUP2_SUPER_MAGIC = 0x63677270L;
    /** struct winsize ioctl. */
    public static final long TIOCSWINSZ = 0x5414;

    private static final Linker LINKER = Linker.nativeLinker();
    private static final SymbolLookup LIBC = LINKER.defaultLookup();
    private static final StructLayout CALL_STATE = Linker.Option.captureStateLayout();
    private static final VarHandle ERRNO = CALL_STATE.varHandle(MemoryLayout.PathElement.groupElement("errno"));

    private static final Downcall PRCTL = new Downcall("prctl", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_LONG), 1);
    private static final Downcall SYSCALL2 = new Downcall("syscall", FunctionDescriptor.of(JAVA_LONG, JAVA_LONG, JAVA_INT, JAVA_INT), 1);
    private static final Downcall SYSCALL4 = new Downcall("syscall",
            FunctionDescriptor.of(JAVA_LONG, JAVA_LONG, JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT), 1);
    private static final Downcall WAITID = new Downcall("waitid", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT), -1);
    private static final Downcall POLL = new Downcall("poll", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT), -1);
    private static final Downcall EVENTFD = new Downcall("eventfd", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT), -1);
    private static final Downcall READ = new Downcall("read", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG), -1);
    private static final Downcall WRITE = new Downcall("write", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG), -1);
    private static final Downcall OPEN = new Downcall("open", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT), 1);
    private static final Downcall CLOSE = new Downcall("close", FunctionDescriptor.of(JAVA_INT, JAVA_INT), -1);
    private static final Downcall KILL = new Downcall("kill", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT), -1);
    private static final Downcall MOUNT = new Downcall("mount",
            FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS, JAVA_LONG, ADDRESS), -1);
    private static final Downcall UMOUNT2 = new Downcall("umount2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT), -1);
    private static final Downcall INOTIFY_INIT1 = new Downcall("inotify_init1", FunctionDescriptor.of(JAVA_INT, JAVA_INT), -1);
    private static final Downcall INOTIFY_ADD_WATCH = new Downcall("inotify_add_watch",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT), -1);
    private static final Downcall INOTIFY_RM_WATCH = new Downcall("inotify_rm_watch",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT), -1);
    private static final Downcall STATFS = new Downcall("statfs", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS), -1);
    private static final Downcall IOCTL_PTR = new Downcall("ioctl", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_LONG, ADDRESS), 2);
    private static final Downcall UNSHARE = new Downcall("unshare", FunctionDescriptor.of(JAVA_INT, JAVA_INT), -1);
    private static final Downcall CHDIR = new Downcall("chdir", FunctionDescriptor.of(JAVA_INT, ADDRESS), -1);
    private static final Downcall MKFIFO = new Downcall("mkfifo", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT), -1);
    private static final Downcall CLOCK_SETTIME = new Downcall("clock_settime",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS), -1);
    private static final Downcall SOCKET = new Downcall("socket",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT), -1);
    private static final Downcall BIND = new Downcall("bind", FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT), -1);
    private static final Downcall LISTEN = new Downcall("listen", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT), -1);
    private static final Downcall ACCEPT4 = new Downcall("accept4",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS, ADDRESS, JAVA_INT), -1);
    public static final int AF_VSOCK = 40;
    private static final int SOCK_STREAM = 1;
    private static final int SOCK_CLOEXEC = 0x80000;
    /** VMADDR_CID_ANY: listen on the guest's own CID, whatever it is. */
    private static final int VMADDR_CID_ANY = -1;

    private Linux() {
    }

    /**
     * A vsock socket listening on {@code port} of this machine (a VM guest's agent: the JDK has no AF_VSOCK). The
     * descriptor is closed on exec; accept connections with {@link #accept}.
     */
    public static int vsockListen(int port) {
        int fd = (int) invoke("socket(AF_VSOCK)", SOCKET.mh(), AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
        try (Arena arena = Arena.ofConfined()) {
            // struct sockaddr_vm { sa_family_t family; unsigned short reserved1; unsigned int port; unsigned int cid;
            //                      unsigned char zero[4]; }
            MemorySegment addr = arena.allocate(16);
            addr.set(java.lang.foreign.ValueLayout.JAVA_SHORT, 0, (short) AF_VSOCK);
            addr.set(JAVA_INT, 4, port);
            addr.set(JAVA_INT, 8, VMADDR_CID_ANY);
            invoke("bind(vsock port " + port + ")", BIND.mh(), fd, addr, 16);
            invoke("listen(vsock port " + port + ")", LISTEN.mh(), fd, 16);
            return fd;
        } catch (RuntimeException e) {
            close(fd);
            throw e;
        }
    }

    /** accept4(2) of a listening socket; the connection's descriptor is closed on exec. */
    public static int accept(int listening) {
        return (int) invoke("accept", ACCEPT4.mh(), listening, MemorySegment.NULL, MemorySegment.NULL, SOCK_CLOEXEC);
    }

    /** Exit status of a reaped child, in the shell's convention: a signal death is 128 + signal. */
    public record WaitStatus(int pid, int code, boolean signaled) {
        public int exitStatus() {
            return code;
        }
    }

    public static void setChildSubreaper() {
        invoke("prctl(PR_SET_CHILD_SUBREAPER)", PRCTL.mh(), PR_SET_CHILD_SUBREAPER, 1L);
    }

    public static int getpid() {
        return (int) ProcessHandle.current().pid();
    }

    /** Opens a pidfd; works on a zombie too, so a fast-exiting child is never missed. */
    public static int pidfdOpen(int pid) {
        return (int) (long) invoke("pidfd_open(" + pid + ")", SYSCALL2.mh(), SYS_PIDFD_OPEN, pid, 0);
    }

    public static void pidfdSendSignal(int pidfd, int signal) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CALL_STATE);
            long rc = (long) SYSCALL4.mh().invokeExact(state, SYS_PIDFD_SEND_SIGNAL, pidfd, signal, MemorySegment.NULL, 0);
            if (rc < 0) {
                throw new ErrnoException("pidfd_send_signal", errno(state));
            }
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /** Reaps the process behind a pidfd if it has exited; returns null if it is still running (WNOHANG). */
    public static WaitStatus waitPidfd(int pidfd, boolean block) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment info = arena.allocate(128);
            MemorySegment state = arena.allocate(CALL_STATE);
            int rc;
            do {
                rc = (int) WAITID.mh().invokeExact(state, P_PIDFD, pidfd, info, WEXITED | (block ? 0 : WNOHANG));
            } while (rc < 0 && errno(state) == EINTR);
            if (rc < 0) {
                throw new ErrnoException("waitid(P_PIDFD)", errno(state));
            }
            int pid = info.get(JAVA_INT, 16);
            if (pid == 0) {
                return null;
            }
            int code = info.get(JAVA_INT, 8);
            int status = info.get(JAVA_INT, 24);
            boolean signaled = code == CLD_KILLED || code == CLD_DUMPED;
            return new WaitStatus(pid, signaled ? 128 + status : status, signaled);
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /** poll(2) for readability on the given fds; returns the indexes that are readable (or hung up). */
    public static boolean[] pollIn(int[] fds, int timeoutMillis) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment pfds = arena.allocate(8L * fds.length, 4);
            for (int i = 0; i < fds.length; i++) {
                pfds.set(JAVA_INT, 8L * i, fds[i]);
                pfds.set(JAVA_SHORT, 8L * i + 4, POLLIN);
                pfds.set(JAVA_SHORT, 8L * i + 6, (short) 0);
            }
            MemorySegment state = arena.allocate(CALL_STATE);
            int rc = (int) POLL.mh().invokeExact(state, pfds, (long) fds.length, timeoutMillis);
            boolean[] ready = new boolean[fds.length];
            if (rc < 0) {
                int err = errno(state);
                if (err == EINTR) {
                    return ready;
                }
                throw new ErrnoException("poll", err);
            }
            for (int i = 0; i < fds.length; i++) {
                ready[i] = pfds.get(JAVA_SHORT, 8L * i + 6) != 0;
            }
            return ready;
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    public static int eventfd() {
        return (int) invoke("eventfd", EVENTFD.mh(), 0, EFD_CLOEXEC | EFD_NONBLOCK);
    }

    /** Adds one to an eventfd counter (wakes a poller). */
    public static void eventfdSignal(int fd) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment one = arena.allocate(JAVA_LONG);
            one.set(JAVA_LONG, 0, 1L);
            write(fd, one, 8);
        }
    }

    /** Drains an eventfd counter; ignores EAGAIN. */
    public static void eventfdDrain(int fd) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment buf = arena.allocate(JAVA_LONG);
            read(fd, buf, 8);
        } catch (ErrnoException e) {
            if (e.errno() != EAGAIN) {
                throw e;
            }
        }
    }

    public static long read(int fd, MemorySegment buf, long len) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CALL_STATE);
            long rc;
            do {
                rc = (long) READ.mh().invokeExact(state, fd, buf, len);
            } while (rc < 0 && errno(state) == EINTR);
            if (rc < 0) {
                throw new ErrnoException("read", errno(state));
            }
            return rc;
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    public static long write(int fd, MemorySegment buf, long len) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CALL_STATE);
            long rc;
            do {
                rc = (long) WRITE.mh().invokeExact(state, fd, buf, len);
            } while (rc < 0 && errno(state) == EINTR);
            if (rc < 0) {
                throw new ErrnoException("write", errno(state));
            }
            return rc;
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    public static final int O_RDONLY = 0;
    public static final int O_CLOEXEC = 0x80000;

    /** open(2) for the rare file whose raw descriptor the kernel wants from us (cgroup event registration). */
    public static int open(String path, int flags) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CALL_STATE);
            int fd = (int) OPEN.mh().invokeExact(state, arena.allocateFrom(path), flags);
            if (fd < 0) {
                throw new ErrnoException("open " + path, errno(state));
            }
            return fd;
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    public static void close(int fd) {
        if (fd >= 0) {
            try {
                invoke("close", CLOSE.mh(), fd);
            } catch (ErrnoException ignored) {
                // close errors carry no actionable information for us
            }
        }
    }

    /** kill(2); returns false if the process no longer exists (ESRCH). */
    public static boolean kill(int pid, int signal) {
        if (pid <= 0) {
            throw new IllegalArgumentException("refusing to signal pid " + pid);
        }
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CALL_STATE);
            int rc = (int) KILL.mh().invokeExact(state, pid, signal);
            if (rc < 0) {
                int err = errno(state);
                if (err == ESRCH) {
                    return false;
                }
                throw new ErrnoException("kill(" + pid + ", " + signal + ")", err);
            }
            return true;
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    public static void mount(String source, String target, String fstype, long flags, String data) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CALL_STATE);
            int rc = (int) MOUNT.mh().invokeExact(state, cstr(arena, source), cstr(arena, target), cstr(arena, fstype), flags,
                    cstr(arena, data));
            if (rc < 0) {
                throw new ErrnoException("mount " + fstype + " " + source + " on " + target, errno(state));
            }
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /** umount2(2); returns false if the target was not mounted (EINVAL) or is gone (ENOENT). */
    public static boolean umount(String target, int flags) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CALL_STATE);
            int rc = (int) UMOUNT2.mh().invokeExact(state, cstr(arena, target), flags);
            if (rc < 0) {
                int err = errno(state);
                if (err == EINVAL || err == ENOENT) {
                    return false;
                }
                throw new ErrnoException("umount " + target, err);
            }
            return true;
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /** Sets a terminal's window size (TIOCSWINSZ). */
    public static void setWindowSize(int fd, int rows, int cols) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment ws = arena.allocate(8, 2);
            ws.set(JAVA_SHORT, 0, (short) rows);
            ws.set(JAVA_SHORT, 2, (short) cols);
            MemorySegment state = arena.allocate(CALL_STATE);
            int rc = (int) IOCTL_PTR.mh().invokeExact(state, fd, TIOCSWINSZ, ws);
            if (rc < 0) {
                throw new ErrnoException("ioctl(TIOCSWINSZ)", errno(state));
            }
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /** An ioctl without an argument (e.g. RNDRESEEDCRNG). */
    public static void ioctl(int fd, long request) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CALL_STATE);
            int rc = (int) IOCTL_PTR.mh().invokeExact(state, fd, request, MemorySegment.NULL);
            if (rc < 0) {
                throw new ErrnoException("ioctl(0x" + Long.toHexString(request) + ")", errno(state));
            }
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /** A non-blocking, close-on-exec inotify descriptor (poll it, then {@link #inotifyDrain}). */
    public static int inotifyInit() {
        return (int) invoke("inotify_init1", INOTIFY_INIT1.mh(), IN_CLOEXEC | IN_NONBLOCK);
    }

    /** Adds a watch for {@code mask} on {@code path}; returns the watch descriptor. */
    public static int inotifyAddWatch(int fd, String path, int mask) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CALL_STATE);
            int wd = (int) INOTIFY_ADD_WATCH.mh().invokeExact(state, fd, arena.allocateFrom(path), mask);
            if (wd < 0) {
                throw new ErrnoException("inotify_add_watch " + path, errno(state));
            }
            return wd;
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /** Removes a watch; false if the kernel already dropped it (EINVAL: its file is gone). */
    public static boolean inotifyRmWatch(int fd, int wd) {
        try {
            invoke("inotify_rm_watch", INOTIFY_RM_WATCH.mh(), fd, wd);
            return true;
        } catch (ErrnoException e) {
            if (e.errno() == EINVAL) {
                return false;
            }
            throw e;
        }
    }

    /** Reads every pending event of a non-blocking inotify descriptor; returns the union of their masks (0: none). */
    public static int inotifyDrain(int fd) {
        int masks = 0;
        try (Arena arena = Arena.ofConfined()) {
            // struct inotify_event: int wd; uint32 mask, cookie, len; char name[len]
            MemorySegment buf = arena.allocate(4096, 8);
            while (true) {
                long n;
                try {
                    n = read(fd, buf, buf.byteSize());
                } catch (ErrnoException e) {
                    if (e.errno() == EAGAIN) {
                        return masks;
                    }
                    throw e;
                }
                if (n <= 0) {
                    return masks;
                }
                for (long off = 0; off + 16 <= n; off += 16 + Integer.toUnsignedLong(buf.get(JAVA_INT, off + 12))) {
                    masks |= buf.get(JAVA_INT, off + 4);
                }
            }
        }
    }

    /** The filesystem magic of the filesystem holding {@code path} (statfs f_type), e.g. CGROUP2_SUPER_MAGIC. */
    public static long statfsType(String path) {
        try (Arena arena = Arena.ofConfined()) {
            // struct statfs is 120 bytes on 64-bit Linux; f_type (a long) comes first
            MemorySegment buf = arena.allocate(256, 8);
            MemorySegment state = arena.allocate(CALL_STATE);
            int rc = (int) STATFS.mh().invokeExact(state, arena.allocateFrom(path), buf);
            if (rc < 0) {
                throw new ErrnoException("statfs " + path, errno(state));
            }
            return buf.get(JAVA_LONG, 0);
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    static MemorySegment cstr(Arena arena, String s) {
        return s == null ? MemorySegment.NULL : arena.allocateFrom(s);
    }

    static MethodHandle bind(String name, FunctionDescriptor fd, int firstVariadic) {
        MemorySegment sym = LIBC.find(name).orElseThrow(() -> new IllegalStateException("libc has no " + name));
        Linker.Option errno = Linker.Option.captureCallState("errno");
        return firstVariadic < 0 ? LINKER.downcallHandle(sym, fd, errno)
                : LINKER.downcallHandle(sym, fd, errno, Linker.Option.firstVariadicArg(firstVariadic));
    }

    static StructLayout callState() {
        return CALL_STATE;
    }

    static int errno(MemorySegment state) {
        return (int) ERRNO.get(state, 0L);
    }

    /** Invokes a handle that captures errno; a negative result becomes an ErrnoException via check(). */
    private static Object invoke(String what, MethodHandle mh, Object... args) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CALL_STATE);
            Object[] all = new Object[args.length + 1];
            all[0] = state;
            System.arraycopy(args, 0, all, 1, args.length);
            Object rc = mh.invokeWithArguments(all);
            long value = rc instanceof Integer i ? i : (Long) rc;
            if (value < 0) {
                throw new ErrnoException(what, errno(state));
            }
            return rc;
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    private static final Downcall GETUID = new Downcall("getuid", FunctionDescriptor.of(JAVA_INT), -1);
    private static final Downcall GETGID = new Downcall("getgid", FunctionDescriptor.of(JAVA_INT), -1);

    /** The real uid of this process (getuid cannot fail). */
    public static int getuid() {
        return (int) invoke("getuid", GETUID.mh());
    }

    /** The real gid of this process (getgid cannot fail). */
    public static int getgid() {
        return (int) invoke("getgid", GETGID.mh());
    }

    /** unshare(2) flag: this thread gets its own cwd, root and umask. */
    public static final int CLONE_FS = 0x200;

    /**
     * unshare(2) for the calling thread only. With {@link #CLONE_FS} a following {@link #chdir} moves this thread
     * alone; such a thread must end afterwards rather than run other work.
     */
    public static void unshare(int flags) {
        invoke("unshare(" + flags + ")", UNSHARE.mh(), flags);
    }

    /** chdir(2); process-wide unless the thread has unshared {@link #CLONE_FS}. */
    public static void chdir(String dir) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CALL_STATE);
            int rc = (int) CHDIR.mh().invokeExact(state, arena.allocateFrom(dir));
            if (rc < 0) {
                throw new ErrnoException("chdir " + dir, errno(state));
            }
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    public static final int P_ALL = 0;
    public static final int P_PID = 1;
    public static final int WNOWAIT = 0x01000000;
    public static final int EEXIST = 17;

    /** mkfifo(3); an existing FIFO at the path is fine. */
    public static void mkfifo(String path, int mode) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CALL_STATE);
            int rc = (int) MKFIFO.mh().invokeExact(state, arena.allocateFrom(path), mode);
            if (rc < 0 && errno(state) != EEXIST) {
                throw new ErrnoException("mkfifo " + path, errno(state));
            }
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /** Sets CLOCK_REALTIME (a guest agent keeping its clock with the host's). */
    public static void setRealtimeClock(long epochNanos) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment ts = arena.allocate(16);
            ts.set(JAVA_LONG, 0, Math.floorDiv(epochNanos, 1_000_000_000L));
            ts.set(JAVA_LONG, 8, Math.floorMod(epochNanos, 1_000_000_000L));
            MemorySegment state = arena.allocate(CALL_STATE);
            int rc = (int) CLOCK_SETTIME.mh().invokeExact(state, 0, ts);
            if (rc < 0) {
                throw new ErrnoException("clock_settime(CLOCK_REALTIME)", errno(state));
            }
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /**
     * The pid of one exited child, left unreaped (waitid with WNOWAIT), or 0 if none has exited. Lets PID 1 find
     * orphans without taking the exit status of a child the JDK waits for.
     */
    public static int peekExitedChild() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment info = arena.allocate(128);
            MemorySegment state = arena.allocate(CALL_STATE);
            int rc = (int) WAITID.mh().invokeExact(state, P_ALL, 0, info, WEXITED | WNOHANG | WNOWAIT);
            if (rc < 0) {
                int err = errno(state);
                if (err == ECHILD || err == EINTR) {
                    return 0;
                }
                throw new ErrnoException("waitid(P_ALL, WNOWAIT)", err);
            }
            return info.get(JAVA_INT, 16);
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /** Reaps one exited child by pid (WNOHANG); null if it has not exited or is not our child. */
    public static WaitStatus reap(int pid) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment info = arena.allocate(128);
            MemorySegment state = arena.allocate(CALL_STATE);
            int rc = (int) WAITID.mh().invokeExact(state, P_PID, pid, info, WEXITED | WNOHANG);
            if (rc < 0 || info.get(JAVA_INT, 16) == 0) {
                return null;
            }
            int code = info.get(JAVA_INT, 8);
            int status = info.get(JAVA_INT, 24);
            boolean signaled = code == CLD_KILLED || code == CLD_DUMPED;
            return new WaitStatus(pid, signaled ? 128 + status : status, signaled);
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }
}
