package io.kuasar.sandbox.mount;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * fstab-style mount options split as containerd's parseMountOptions does: kernel mount flags (a flag option sets
 * its bit, its opposite such as {@code rw} or {@code atime} clears it, the last one wins), a propagation change
 * applied by a second mount(2) call, and everything else as the filesystem's data string.
 *
 * @param flags       mount(2) flags, without propagation
 * @param propagation MS_SHARED, MS_SLAVE, MS_PRIVATE or MS_UNBINDABLE, with MS_REC for the {@code r} forms; 0 if none
 * @param data        filesystem options, in their given order
 */
public record MountOptions(long flags, long propagation, List<String> data) {
    static final long MS_RDONLY = 1;
    static final long MS_NOSUID = 2;
    static final long MS_NODEV = 4;
    static final long MS_NOEXEC = 8;
    static final long MS_SYNCHRONOUS = 16;
    static final long MS_REMOUNT = 32;
    static final long MS_MANDLOCK = 64;
    static final long MS_DIRSYNC = 128;
    static final long MS_NOATIME = 1024;
    static final long MS_NODIRATIME = 2048;
    static final long MS_BIND = 4096;
    static final long MS_REC = 16384;
    static final long MS_UNBINDABLE = 1 << 17;
    static final long MS_PRIVATE = 1 << 18;
    static final long MS_SLAVE = 1 << 19;
    static final long MS_SHARED = 1 << 20;
    static final long MS_RELATIME = 1 << 21;
    static final long MS_STRICTATIME = 1 << 24;

    /** A flag option: sets {@code bits}, or clears them for the negative forms. */
    private record Flag(boolean clear, long bits) {
    }

    // containerd core/mount/mount_linux.go parseMountOptions ("loop" aside: no loop devices here).
    private static final Map<String, Flag> FLAGS = Map.ofEntries(
            Map.entry("async", new Flag(true, MS_SYNCHRONOUS)),
            Map.entry("atime", new Flag(true, MS_NOATIME)),
            Map.entry("bind", new Flag(false, MS_BIND)),
            Map.entry("defaults", new Flag(false, 0)),
            Map.entry("dev", new Flag(true, MS_NODEV)),
            Map.entry("diratime", new Flag(true, MS_NODIRATIME)),
            Map.entry("dirsync", new Flag(false, MS_DIRSYNC)),
            Map.entry("exec", new Flag(true, MS_NOEXEC)),
            Map.entry("mand", new Flag(false, MS_MANDLOCK)),
            Map.entry("noatime", new Flag(false, MS_NOATIME)),
            Map.entry("nodev", new Flag(false, MS_NODEV)),
            Map.entry("nodiratime", new Flag(false, MS_NODIRATIME)),
            Map.entry("noexec", new Flag(false, MS_NOEXEC)),
            Map.entry("nomand", new Flag(true, MS_MANDLOCK)),
            Map.entry("norelatime", new Flag(true, MS_RELATIME)),
            Map.entry("nostrictatime", new Flag(true, MS_STRICTATIME)),
            Map.entry("nosuid", new Flag(false, MS_NOSUID)),
            Map.entry("rbind", new Flag(false, MS_BIND | MS_REC)),
            Map.entry("relatime", new Flag(false, MS_RELATIME)),
            Map.entry("remount", new Flag(false, MS_REMOUNT)),
            Map.entry("ro", new Flag(false, MS_RDONLY)),
            Map.entry("rw", new Flag(true, MS_RDONLY)),
            Map.entry("strictatime", new Flag(false, MS_STRICTATIME)),
            Map.entry("suid", new Flag(true, MS_NOSUID)),
            Map.entry("sync", new Flag(false, MS_SYNCHRONOUS)));

    // Propagation names as runc and the OCI spec spell them; the kernel takes them in a call of their own.
    private static final Map<String, Long> PROPAGATION = Map.of(
            "private", MS_PRIVATE, "rprivate", MS_PRIVATE | MS_REC,
            "shared", MS_SHARED, "rshared", MS_SHARED | MS_REC,
            "slave", MS_SLAVE, "rslave", MS_SLAVE | MS_REC,
            "unbindable", MS_UNBINDABLE, "runbindable", MS_UNBINDABLE | MS_REC);

    public MountOptions {
        data = List.copyOf(data);
    }

    public static MountOptions parse(List<String> options) {
        long flags = 0;
        long propagation = 0;
        List<String> data = new ArrayList<>();
        for (String o : options) {
            Flag f = FLAGS.get(o);
            Long p = PROPAGATION.get(o);
            if (f != null) {
                flags = f.clear() ? flags & ~f.bits() : flags | f.bits();
            } else if (p != null) {
                propagation = p; // one propagation type per mount: the last one wins
            } else {
                data.add(o);
            }
        }
        return new MountOptions(flags, propagation, data);
    }

    /** The data argument of mount(2): the filesystem options joined by commas, or null if there are none. */
    public String dataString() {
        return data.isEmpty() ? null : String.join(",", data);
    }

    /** A read-only bind: the kernel ignores MS_RDONLY on the bind itself, so it takes a remount. */
    boolean isReadOnlyBind() {
        return (flags & (MS_BIND | MS_RDONLY)) == (MS_BIND | MS_RDONLY);
    }
}
