package io.kuasar.sandbox.cgroup;

import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class SandboxCgroupTest {
    @TempDir
    Path dir;

    private static final List<String> HYBRID = List.of(
            "25 20 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755",
            "26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw",
            "28 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpu,cpuacct",
            "29 25 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,memory",
            "30 25 0:27 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpuset,clone_children",
            "31 25 0:28 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd,release_agent=/x",
            // the memory hierarchy again (a bind mount elsewhere) and a sub-tree mount: neither is a second hierarchy
            "40 20 0:26 / /mnt/memory rw - cgroup cgroup rw,memory",
            "41 20 0:25 /kubepods /mnt/kube rw - cgroup cgroup rw,cpu,cpuacct");

    @Test
    void aHybridHostIsDrivenThroughItsV1HierarchiesEachOnce() {
        SandboxCgroup.Hierarchies h = SandboxCgroup.Hierarchies.parse(HYBRID);
        assertThat(h.unified()).isNull();
        assertThat(h.v1()).extracting(SandboxCgroup.Hierarchies.V1::mount).containsExactly(
                Path.of("/sys/fs/cgroup/cpu,cpuacct"), Path.of("/sys/fs/cgroup/memory"),
                Path.of("/sys/fs/cgroup/cpuset"), Path.of("/sys/fs/cgroup/systemd"));
        assertThat(h.v1().get(0).controllers()).containsExactly("cpu", "cpuacct");
        assertThat(h.v1().get(2).controllers()).containsExactly("cpuset");
        assertThat(h.v1().get(3).controllers()).containsExactly("name=systemd");
    }

    @Test
    void aUnifiedHostIsDrivenThroughTheV2Hierarchy() {
        SandboxCgroup.Hierarchies h = SandboxCgroup.Hierarchies.parse(List.of(
                "25 20 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate"));
        assertThat(h.unified()).isEqualTo(Path.of("/sys/fs/cgroup"));
        assertThat(h.v1()).isEmpty();
    }

    @Test
    void pathsAreRelativeAndCannotEscapeTheHierarchy() {
        assertThat(SandboxCgroup.pathOf("/kubepods/burstable/pod1/", "abc")).isEqualTo("kubepods/burstable/pod1/abc");
        assertThat(SandboxCgroup.pathOf("", "abc")).isEqualTo("abc");
        assertThatThrownBy(() -> SandboxCgroup.pathOf("a/../..", "x")).hasMessageContaining("'..'");
        assertThatThrownBy(() -> SandboxCgroup.pathOf("a//b", "x")).hasMessageContaining("invalid segment");
        assertThatThrownBy(() -> SandboxCgroup.pathOf("kuasar", "..")).hasMessageContaining("'..'");
    }

    @Test
    void sharesBecomeWeightsAsRuncConvertsThem() {
        assertThat(SandboxCgroup.weightOf(2)).isEqualTo(1);
        assertThat(SandboxCgroup.weightOf(1024)).isEqualTo(39);
        assertThat(SandboxCgroup.weightOf(262_144)).isEqualTo(10_000);
    }

    @Test
    void v1CgroupsHoldTheProcessWithTheLimitsAndAreRemovedWithoutKillingIt() throws Exception {
        SandboxCgroup.Hierarchies host = SandboxCgroup.Hierarchies.host();
        Assumptions.assumeTrue(host.unified() == null && !host.v1().isEmpty(), "not a cgroup v1 host");
        Assumptions.assumeTrue(Files.isWritable(Path.of("/sys/fs/cgroup/memory")), "needs root");
        String path = SandboxCgroup.pathOf("kuasar-test", "sb-" + ProcessHandle.current().pid());
        Process p = new ProcessBuilder("sleep", "60").start();
        try {
            SandboxCgroup cg = SandboxCgroup.create(host, path,
                    new SandboxCgroup.Limits(100_000, 50_000, 512, 64L << 20, "", ""));
            cg.add(p.pid());
            assertThat(cg.pids()).containsExactly(p.pid());
            String membership = Files.readString(Path.of("/proc/" + p.pid() + "/cgroup"));
            assertThat(membership).contains(":memory:/" + path + "\n").contains(":cpuset:/" + path + "\n");
            Path cpu = host.v1().stream().filter(h -> h.controllers().contains("cpu")).findFirst().orElseThrow()
                    .mount().resolve(path);
            assertThat(Files.readString(cpu.resolve("cpu.cfs_quota_us")).strip()).isEqualTo("50000");
            assertThat(Files.readString(cpu.resolve("cpu.shares")).strip()).isEqualTo("512");
            assertThat(Files.readString(Path.of("/sys/fs/cgroup/memory", path, "memory.limit_in_bytes")).strip())
                    .isEqualTo(Long.toString(64L << 20));

            cg.remove();
            cg.remove(); // idempotent
            for (SandboxCgroup.Hierarchies.V1 h : host.v1()) {
                assertThat(h.mount().resolve(path)).doesNotExist();
            }
            assertThat(p.isAlive()).as("a process left in the cgroup is moved out, not killed").isTrue();
            assertThat(Files.readString(Path.of("/proc/" + p.pid() + "/cgroup"))).contains(":memory:/kuasar-test\n");
        } finally {
            p.destroyForcibly().waitFor();
            SandboxCgroup.remove(host, path);
            SandboxCgroup.remove(host, "kuasar-test");
        }
    }

    @Test
    void v2CgroupsAreCreatedJoinedAndRemovedInTheUnifiedHierarchy() throws Exception {
        try (PrivateCgroup2 mount = PrivateCgroup2.mount(dir.resolve("cg2"), "kuasar-test-" + ProcessHandle.current().pid())) {
            SandboxCgroup.Hierarchies v2 = new SandboxCgroup.Hierarchies(List.of(), mount.mount);
            String path = SandboxCgroup.pathOf(mount.child.getFileName().toString(), "sb");
            Process p = new ProcessBuilder("sleep", "60").start();
            try {
                // Limits whose controllers the hierarchy lacks (on a hybrid host: most) are skipped, not fatal.
                SandboxCgroup cg = SandboxCgroup.create(v2, path,
                        new SandboxCgroup.Limits(100_000, 50_000, 512, 64L << 20, "", ""));
                cg.add(p.pid());
                assertThat(Files.readString(mount.mount.resolve(path).resolve("cgroup.procs")).strip())
                        .isEqualTo(Long.toString(p.pid()));
                if (mount.controllers().contains("memory")) {
                    assertThat(Files.readString(mount.mount.resolve(path).resolve("memory.max")).strip())
                            .isEqualTo(Long.toString(64L << 20));
                }
                cg.remove();
                assertThat(mount.mount.resolve(path)).doesNotExist();
                assertThat(Files.readString(mount.child.resolve("cgroup.procs")).strip())
                        .isEqualTo(Long.toString(p.pid()));
            } finally {
                p.destroyForcibly().waitFor();
            }
        }
    }
}
