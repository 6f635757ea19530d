package io.kuasar.sandbox.sys;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

/**
 * The part of AF_UNIX the JDK lacks: receiving a file descriptor (SCM_RIGHTS). runc sends a container's pty master
 * this way through {@code --console-socket}.
 */
public final class UnixSockets {
    private static final int AF_UNIX = 1;
    private static final int SOCK_STREAM = 1;
    private static final int SOCK_DGRAM = 2;
    private static final int SOCK_CLOEXEC = 0x80000;
    private static final int SOL_SOCKET = 1;
    private static final int SCM_RIGHTS = 1;
    private static final int MSG_CMSG_CLOEXEC = 0x40000000;
    private static final int SUN_PATH_MAX = 108;

    private static final Downcall SOCKET = new Downcall("socket", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT), -1);
    private static final Downcall BIND = new Downcall("bind", FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT), -1);
    private static final Downcall LISTEN = new Downcall("listen", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT), -1);
    private static final Downcall ACCEPT4 = new Downcall("accept4",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS, ADDRESS, JAVA_INT), -1);
    private static final Downcall SENDTO = new Downcall("sendto",
            FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT, ADDRESS, JAVA_INT), -1);
    private static final Downcall RECVMSG = new Downcall("recvmsg", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_INT), -1);

    private UnixSockets() {
    }

    /** Binds a listening socket to the path it is given. */
    @FunctionalInterface
    public interface Binder {
        void bind(java.nio.file.Path path) throws java.io.IOException;
    }

    /**
     * Binds a server socket so that it is never reachable with looser permissions than 0600: {@code binder} binds it
     * inside a fresh 0700 directory, the socket is chmod-ed there, then renamed onto {@code target} (replacing a
     * stale socket of a previous run). Binding in place and chmod-ing after leaves a window in which anyone the
     * umask lets in can connect.
     */
    public static void bindPrivately(java.nio.file.Path target, Binder binder) throws java.io.IOException {
        java.nio.file.Path dir = target.toAbsolutePath().getParent();
        java.nio.file.Files.createDirectories(dir);
        java.nio.file.Path tmpDir = java.nio.file.Files.createTempDirectory(dir, ".sock"); // created 0700
        java.nio.file.Path tmp = tmpDir.resolve("s");
        try {
            binder.bind(tmp);
            java.nio.file.Files.setPosixFilePermissions(tmp,
                    java.nio.file.attribute.PosixFilePermissions.fromString("rw-------"));
            java.nio.file.Files.move(tmp, target, java.nio.file.StandardCopyOption.ATOMIC_MOVE,
                    java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        } finally {
            java.nio.file.Files.deleteIfExists(tmp);
            java.nio.file.Files.deleteIfExists(tmpDir);
        }
    }

    /** A listening AF_UNIX stream socket bound to {@code path}; returns its fd. */
    public static int listen(String path) {
        byte[] p = path.getBytes(StandardCharsets.UTF_8);
        if (p.length >= SUN_PATH_MAX) {
            throw new IllegalArgumentException("socket path is too long (" + p.length + " bytes, max 107): " + path);
        }
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(Linux.callState());
            int fd = (int) SOCKET.mh().invokeExact(state, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0) {
                throw new ErrnoException("socket(AF_UNIX)", Linux.errno(state));
            }
            MemorySegment addr = arena.allocate(2 + SUN_PATH_MAX);
            addr.set(JAVA_SHORT, 0, (short) AF_UNIX);
            MemorySegment.copy(p, 0, addr, JAVA_BYTE, 2, p.length);
            if ((int) BIND.mh().invokeExact(state, fd, addr, 2 + p.length + 1) < 0) {
                int err = Linux.errno(state);
                Linux.close(fd);
                throw new ErrnoException("bind(" + path + ")", err);
            }
            if ((int) LISTEN.mh().invokeExact(state, fd, 1) < 0) {
                int err = Linux.errno(state);
                Linux.close(fd);
                throw new ErrnoException("listen(" + path + ")", err);
            }
            return fd;
        } catch (ErrnoException | IllegalArgumentException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /**
     * Sends one datagram to an AF_UNIX datagram socket; a path starting with '@' names an abstract socket
     * (systemd's NOTIFY_SOCKET may be either).
     */
    public static void sendDatagram(String path, byte[] message) {
        byte[] p = path.getBytes(StandardCharsets.UTF_8);
        if (p.length >= SUN_PATH_MAX) {
            throw new IllegalArgumentException("socket path is too long: " + path);
        }
        boolean isAbstract = p.length > 0 && p[0] == '@';
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(Linux.callState());
            int fd = (int) SOCKET.mh().invokeExact(state, AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
            if (fd < 0) {
                throw new ErrnoException("socket(AF_UNIX, SOCK_DGRAM)", Linux.errno(state));
            }
            try {
                MemorySegment addr = arena.allocate(2 + SUN_PATH_MAX);
                addr.set(JAVA_SHORT, 0, (short) AF_UNIX);
                MemorySegment.copy(p, 0, addr, JAVA_BYTE, 2, p.length);
                if (isAbstract) {
                    addr.set(JAVA_BYTE, 2, (byte) 0);
                }
                int len = 2 + p.length + (isAbstract ? 0 : 1);
                MemorySegment msg = arena.allocate(Math.max(1, message.length));
                MemorySegment.copy(message, 0, msg, JAVA_BYTE, 0, message.length);
                long n = (long) SENDTO.mh().invokeExact(state, fd, msg, (long) message.length, 0, addr, len);
                if (n < 0) {
                    throw new ErrnoException("sendto(" + path + ")", Linux.errno(state));
                }
            } finally {
                Linux.close(fd);
            }
        } catch (ErrnoException | IllegalArgumentException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /** Accepts one connection (blocking; call from a platform thread). */
    public static int accept(int listenFd) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(Linux.callState());
            int fd;
            do {
                fd = (int) ACCEPT4.mh().invokeExact(state, listenFd, MemorySegment.NULL, MemorySegment.NULL, SOCK_CLOEXEC);
            } while (fd < 0 && Linux.errno(state) == Linux.EINTR);
            if (fd < 0) {
                throw new ErrnoException("accept", Linux.errno(state));
            }
            return fd;
        } catch (ErrnoException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /** Receives one message carrying a file descriptor; returns that fd. */
    public static int receiveFd(int connFd) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(Linux.callState());
            MemorySegment data = arena.allocate(4096);
            MemorySegment iov = arena.allocate(16, 8);
            iov.set(ADDRESS, 0, data);
            iov.set(JAVA_LONG, 8, data.byteSize());
            MemorySegment control = arena.allocate(64, 8);
            MemorySegment msg = arena.allocate(56, 8);
            msg.set(ADDRESS, 16, iov);
            msg.set(JAVA_LONG, 24, 1L);
            msg.set(ADDRESS, 32, control);
            msg.set(JAVA_LONG, 40, control.byteSize());
            long n;
            do {
                n = (long) RECVMSG.mh().invokeExact(state, connFd, msg, MSG_CMSG_CLOEXEC);
            } while (n < 0 && Linux.errno(state) == Linux.EINTR);
            if (n < 0) {
                throw new ErrnoException("recvmsg", Linux.errno(state));
            }
            long controlLen = msg.get(JAVA_LONG, 40);
            if (controlLen < 20 || control.get(JAVA_INT, 8) != SOL_SOCKET || control.get(JAVA_INT, 12) != SCM_RIGHTS) {
                throw new IllegalStateException("the console socket peer sent no file descriptor");
            }
            return control.get(JAVA_INT, 16);
        } catch (ErrnoException | IllegalStateException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }
}
