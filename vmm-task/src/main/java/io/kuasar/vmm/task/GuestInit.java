package io.kuasar.vmm.task;

import io.kuasar.sandbox.sys.ErrnoException;
import io.kuasar.sandbox.sys.Linux;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Kuasar's guest boot steps (vmm-task {@code early_init_call}, share fs, {@code late_init_call}). The initramfs's
 * /init has already switched into a tmpfs root (so runc can pivot_root) and mounted proc, sysfs and devtmpfs;
 * mounting them again is harmless (EBUSY is ignored, as Kuasar does).
 */
final class GuestInit {
    private static final Logger LOG = LoggerFactory.getLogger(GuestInit.class);
    /** Where the sandboxer's shared directory appears in the guest (Kuasar's KUASAR_STATE_DIR). */
    static final Path STATE_DIR = Path.of("/run/kuasar/state");
    static final String SHARE_TAG = "kuasar";
    private static final int EBUSY = 16;
    private static final long MS_NOSUID = 2;
    private static final long MS_NODEV = 4;
    private static final long MS_NOEXEC = 8;
    private static final long MS_RELATIME = 1L << 21;
    /** _IO('R', 0x07): reseed the CRNG from the input pool now. */
    private static final long RNDRESEEDCRNG = 0x5207;

    private GuestInit() {
    }

    static void early() throws IOException {
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, null);
        mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, null);
        mount("dev", "/dev", "devtmpfs", MS_NOSUID, null);
        mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, null);
        mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620");
        mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
        // One cgroup v2 hierarchy: runc, the stats and the OOM watch support it, and it needs one mount, not 13.
        mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, null);
        enableControllers(Path.of("/sys/fs/cgroup"));
        writeIfPresent("/proc/sys/vm/overcommit_memory", "1");
        Files.createDirectories(Path.of("/run/runc"));
        Path ptmx = Path.of("/dev/ptmx");
        if (!Files.exists(ptmx, java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
            Files.createSymbolicLink(ptmx, Path.of("pts/ptmx"));
        }
    }

    /** Mounts the sandboxer's shared directory at {@link #STATE_DIR}, as Kuasar's guest does. */
    static void mountShareFs(TaskConfig config) throws IOException {
        if (config.sharefsType().equals("9p")) {
            mount(SHARE_TAG, STATE_DIR.toString(), "9p", MS_NODEV,
                    "trans=virtio,version=9p2000.L,msize=512000,cache=mmap");
        } else {
            mount(SHARE_TAG, STATE_DIR.toString(), "virtiofs", MS_NODEV | MS_RELATIME, null);
        }
    }

    /**
     * A guest restored from a VM template meets its pod: the pod's share is mounted now (a template is saved
     * without one: 9p cannot migrate while mounted), and the kernel's random generator, which every copy of the
     * template would otherwise continue from the same state, is reseeded from the VM's own virtio-rng (the host's
     * /dev/urandom, read by this copy's QEMU).
     */
    static void restored(TaskConfig config) {
        try {
            mountShareFs(config);
            late();
        } catch (IOException e) {
            throw io.grpc.Status.INTERNAL.withDescription("restored from a template: cannot mount the pod's share: "
                    + e.getMessage()).asRuntimeException();
        }
        reseedRandom();
    }

    /** Mixes 64 bytes of the hardware RNG into the kernel's pool and forces a reseed (RNDRESEEDCRNG). */
    static void reseedRandom() {
        Path hwrng = Path.of("/dev/hwrng");
        try (var in = Files.newInputStream(hwrng)) {
            byte[] seed = in.readNBytes(64);
            Files.write(Path.of("/dev/urandom"), seed);
            int fd = Linux.open("/dev/urandom", Linux.O_RDONLY | Linux.O_CLOEXEC);
            try {
                Linux.ioctl(fd, RNDRESEEDCRNG);
            } finally {
                Linux.close(fd);
            }
            LOG.info("random generator reseeded with {} bytes of {}", seed.length, hwrng);
        } catch (IOException | RuntimeException e) {
            LOG.warn("cannot reseed the random generator from {}: {}", hwrng, e.getMessage());
        }
    }

    /** Kuasar's late init: the pod's resolv.conf, when the sandboxer wrote one, becomes the guest's. */
    static void late() {
        Path resolv = STATE_DIR.resolve("resolv.conf");
        if (Files.exists(resolv)) {
            try {
                Path etc = Path.of("/etc/resolv.conf");
                if (!Files.exists(etc)) {
                    Files.createDirectories(etc.getParent());
                    Files.createFile(etc);
                }
                Linux.mount(resolv.toString(), etc.toString(), "", Linux.MS_BIND, null);
            } catch (IOException | ErrnoException e) {
                LOG.warn("cannot bind {} onto /etc/resolv.conf: {}", resolv, e.getMessage());
            }
        }
    }

    private static void enableControllers(Path root) {
        try {
            String available = Files.readString(root.resolve("cgroup.controllers")).trim();
            StringBuilder enable = new StringBuilder();
            for (String c : available.split("\\s+")) {
                if (!c.isEmpty()) {
                    enable.append('+').append(c).append(' ');
                }
            }
            Files.writeString(root.resolve("cgroup.subtree_control"), enable.toString().trim());
        } catch (IOException e) {
            LOG.warn("cannot enable cgroup controllers: {}", e.getMessage());
        }
    }

    private static void mount(String source, String target, String type, long flags, String data) throws IOException {
        if (isMountPoint(target)) {
            return; // /init mounted it already
        }
        Files.createDirectories(Path.of(target));
        try {
            Linux.mount(source, target, type, flags, data);
        } catch (ErrnoException e) {
            if (e.errno() != EBUSY) {
                throw new IOException("cannot mount " + type + " on " + target + ": " + e.getMessage(), e);
            }
        }
    }

    private static boolean isMountPoint(String target) {
        Path mounts = Path.of("/proc/self/mounts");
        if (!Files.exists(mounts)) {
            return false;
        }
        try {
            for (String line : Files.readAllLines(mounts)) {
                String[] f = line.split(" ");
                if (f.length > 1 && f[1].equals(target)) {
                    return true;
                }
            }
        } catch (IOException e) {
            return false;
        }
        return false;
    }

    private static void writeIfPresent(String file, String value) {
        Path p = Path.of(file);
        if (Files.exists(p)) {
            try {
                Files.writeString(p, value);
            } catch (IOException e) {
                LOG.debug("cannot write {}: {}", file, e.getMessage());
            }
        }
    }
}
