package io.kuasar.runc;

import io.kuasar.sandbox.oci.OciRuntime;
import io.kuasar.api.types.Mount;
import io.kuasar.sandbox.sys.Linux;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Real mounts of what containerd's snapshotters hand over, onto {@code <bundle>/rootfs} (needs root). */
class RootfsMountTest {
    @TempDir
    Path dir;

    private final RuncRuntime runtime = new RuncRuntime(new OciRuntime("runc", Path.of("/tmp/unused")), null, null, null);

    private Path bundle() throws IOException {
        return Files.createDirectories(dir.resolve("bundle"));
    }

    @AfterEach
    void unmount() {
        // Several mounts may be stacked on rootfs; the TempDir must not be deleted through a mount.
        for (int i = 0; i < 10 && Linux.umount(dir.resolve("bundle/rootfs").toString(), Linux.MNT_DETACH); i++) {
            // next
        }
    }

    /** The fields of /proc/self/mountinfo's line for {@code target}: per-mount options at 5, optional fields next. */
    private static String[] mountinfo(Path target) throws IOException {
        String[] found = null;
        for (String line : Files.readAllLines(Path.of("/proc/self/mountinfo"))) {
            String[] f = line.split(" ");
            if (f[4].equals(target.toString())) {
                found = f; // the last one is the top of the stack
            }
        }
        assertThat(found).as("%s is mounted", target).isNotNull();
        return found;
    }

    @Test
    void overlayWithManyLongLowerdirsMounts() throws Exception {
        // containerd's overlayfs snapshotter layout, under a long root so the options exceed one page (4096 bytes).
        Path snapshots = Files.createDirectories(dir.resolve("var-lib-containerd-" + "x".repeat(60)
                + "/io.containerd.snapshotter.v1.overlayfs/snapshots"));
        List<String> lowers = new ArrayList<>();
        for (int i = 80; i >= 1; i--) {
            lowers.add(Files.createDirectories(snapshots.resolve(i + "/fs")).toString());
        }
        Files.writeString(Path.of(lowers.getFirst(), "top.txt"), "top");
        Files.writeString(Path.of(lowers.getFirst(), "which.txt"), "top");
        Files.writeString(Path.of(lowers.getLast(), "bottom.txt"), "bottom");
        Files.writeString(Path.of(lowers.getLast(), "which.txt"), "bottom");
        Path upper = Files.createDirectories(snapshots.resolve("81/fs"));
        Path work = Files.createDirectories(snapshots.resolve("81/work"));
        List<String> options = List.of("index=off", "workdir=" + work, "upperdir=" + upper,
                "lowerdir=" + String.join(":", lowers));
        assertThat(String.join(",", options).length()).isGreaterThan(4096);

        Path bundle = bundle();
        assertThat(io.kuasar.sandbox.mount.Mounts.mountRootfs("c1", bundle, List.of(Mount.newBuilder().setType("overlay").setSource("overlay")
                .addAllOptions(options).build()))).isTrue();

        Path rootfs = bundle.resolve("rootfs");
        assertThat(Files.readString(rootfs.resolve("top.txt"))).isEqualTo("top");
        assertThat(Files.readString(rootfs.resolve("bottom.txt"))).isEqualTo("bottom");
        assertThat(Files.readString(rootfs.resolve("which.txt"))).isEqualTo("top");
        Files.writeString(rootfs.resolve("new.txt"), "written");
        assertThat(upper.resolve("new.txt")).hasContent("written");
        // The compaction's chdir happened on a throwaway thread: this process's cwd is untouched.
        assertThat(Path.of("").toAbsolutePath().toString()).isEqualTo(System.getProperty("user.dir"));
        assertThat(Files.readSymbolicLink(Path.of("/proc/self/cwd")).toString()).isEqualTo(System.getProperty("user.dir"));
    }

    @Test
    void flagOptionsBecomeMountFlagsNotFilesystemData() throws Exception {
        Path bundle = bundle();
        io.kuasar.sandbox.mount.Mounts.mountRootfs("c1", bundle, List.of(Mount.newBuilder().setType("tmpfs").setSource("tmpfs")
                .addAllOptions(List.of("nosuid", "nodev", "noexec", "noatime", "size=1m", "mode=755")).build()));

        String[] info = mountinfo(bundle.resolve("rootfs"));
        assertThat(info[5].split(",")).contains("rw", "nosuid", "nodev", "noexec", "noatime");
        String superOptions = info[info.length - 1];
        assertThat(superOptions).contains("size=1024k").doesNotContain("noatime");
    }

    @Test
    void readOnlyBindIsReallyReadOnly() throws Exception {
        Path source = Files.createDirectories(dir.resolve("snapshot"));
        Files.writeString(source.resolve("f"), "x");
        Path bundle = bundle();
        io.kuasar.sandbox.mount.Mounts.mountRootfs("c1", bundle, List.of(Mount.newBuilder().setType("bind").setSource(source.toString())
                .addAllOptions(List.of("rbind", "ro", "nosuid", "runbindable")).build()));

        Path rootfs = bundle.resolve("rootfs");
        assertThat(rootfs.resolve("f")).hasContent("x");
        assertThatThrownBy(() -> Files.writeString(rootfs.resolve("g"), "y"))
                .isInstanceOf(IOException.class).hasMessageContaining("Read-only file system");
        String[] info = mountinfo(rootfs);
        assertThat(info[5].split(",")).contains("ro", "nosuid");
        assertThat(info[6]).isEqualTo("unbindable");
        // The source itself stays writable.
        Files.writeString(source.resolve("g"), "y");
    }
}
