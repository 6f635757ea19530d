package io.kuasar.sandbox.mount;

import io.kuasar.api.types.Mount;
import io.kuasar.sandbox.sys.ErrnoException;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Lowerdir compaction as containerd does it, and real mounts under a temp dir (needs root). */
class MountsTest {
    @TempDir
    Path dir;

    @AfterEach
    void unmount() {
        Mounts.unmountAll(dir.resolve("root/sub"));
        Mounts.unmountAll(dir.resolve("root"));
    }

    private static boolean mounted(Path p) throws IOException {
        return Files.readAllLines(Path.of("/proc/self/mountinfo")).stream()
                .anyMatch(l -> l.split(" ")[4].equals(p.toString()));
    }

    @Test
    void lowerdirsBecomeRelativeToTheirCommonParent() {
        Mounts.Compacted c = Mounts.compactLowerdir(List.of("workdir=/s/snapshots/3/work", "upperdir=/s/snapshots/3/fs",
                "lowerdir=/s/snapshots/2/fs:/s/snapshots/10/fs:/s/snapshots/1/fs", "index=off"));
        assertThat(c.dir()).isEqualTo("/s/snapshots/");
        assertThat(c.options()).containsExactly("workdir=/s/snapshots/3/work", "upperdir=/s/snapshots/3/fs",
                "index=off", "lowerdir=2/fs:10/fs:1/fs");
        // A shared prefix that ends inside a snapshot id is cut back to the directory.
        assertThat(Mounts.compactLowerdir(List.of("lowerdir=/s/snapshots/12/fs:/s/snapshots/13/fs")).options())
                .containsExactly("lowerdir=12/fs:13/fs");
    }

    @Test
    void nothingToCompact() {
        assertThat(Mounts.compactLowerdir(List.of("lowerdir=/s/snapshots/1/fs"))).isNull();
        assertThat(Mounts.compactLowerdir(List.of("upperdir=/a"))).isNull();
        assertThat(Mounts.compactLowerdir(List.of("lowerdir=/a/1:/b/2"))).isNull();
        // One lowerdir is the common directory itself: it would become empty.
        assertThat(Mounts.compactLowerdir(List.of("lowerdir=/s/x:/s/x/y"))).isNotNull();
        assertThat(Mounts.compactLowerdir(List.of("lowerdir=/s/a:/s/"))).isNull();
    }

    @Test
    void severalMountsStackInOrderAndUnmountTogether() throws Exception {
        Path root = Files.createDirectories(dir.resolve("root"));
        Path snapshot = Files.createDirectories(dir.resolve("snapshot"));
        Files.writeString(snapshot.resolve("f"), "from the snapshot");
        Mounts.mountAll(List.of(
                Mount.newBuilder().setType("tmpfs").setSource("tmpfs").addOptions("size=1m").build(),
                Mount.newBuilder().setType("bind").setSource(snapshot.toString()).addAllOptions(List.of("rbind", "ro"))
                        .build()), root);
        assertThat(root.resolve("f")).hasContent("from the snapshot");
        assertThatThrownBy(() -> Files.writeString(root.resolve("g"), "x")).hasMessageContaining("Read-only");

        assertThat(Mounts.unmountAll(root)).isEqualTo(2);
        assertThat(mounted(root)).isFalse();
    }

    @Test
    void aMountWithATargetGoesInsideTheRootAndMayNotLeaveIt() throws Exception {
        Path root = Files.createDirectories(dir.resolve("root"));
        Files.createDirectories(root.resolve("sub"));
        Mounts.mountAll(List.of(Mount.newBuilder().setType("tmpfs").setSource("tmpfs").setTarget("/sub").build()), root);
        assertThat(mounted(root.resolve("sub"))).isTrue();
        assertThat(mounted(root)).isFalse();

        Files.createSymbolicLink(root.resolve("out"), dir);
        for (String escape : List.of("../snapshot", "out")) {
            assertThatThrownBy(() -> Mounts.mountAll(List.of(Mount.newBuilder().setType("tmpfs").setSource("tmpfs")
                    .setTarget(escape).build()), root)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("leaves");
        }
    }

    @Test
    void aFailedMountUndoesTheOnesBeforeIt() throws Exception {
        Path root = Files.createDirectories(dir.resolve("root"));
        assertThatThrownBy(() -> Mounts.mountAll(List.of(
                Mount.newBuilder().setType("tmpfs").setSource("tmpfs").build(),
                Mount.newBuilder().setType("bind").setSource(dir.resolve("missing").toString()).addOptions("rbind").build()),
                root)).isInstanceOf(ErrnoException.class).hasMessageContaining("no such file");
        assertThat(mounted(root)).isFalse();
    }

    @Test
    void optionsWeCannotTakeAreInvalidArguments() throws Exception {
        Path root = Files.createDirectories(dir.resolve("root"));
        assertThatThrownBy(() -> Mounts.mount("ext4", "/img", List.of("loop"), root))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("loop");
        assertThatThrownBy(() -> Mounts.mount("tmpfs", "tmpfs", List.of("x=" + "y".repeat(5000)), root))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("too long");
        assertThat(mounted(root)).isFalse();
    }
}
