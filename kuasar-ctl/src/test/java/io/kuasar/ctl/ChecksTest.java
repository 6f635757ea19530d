package io.kuasar.ctl;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/** The checks against a fake root: files, mounts and /proc entries written by the test, daemons stubbed. */
class ChecksTest {
    @TempDir
    Path root;

    private final Sandboxers.Sandboxer runc = new Sandboxers.Sandboxer("runc", "runc", Path.of("/run/r.sock"),
            Path.of("/run/kuasar-runc"));
    private final Sandboxers.Sandboxer vmm = new Sandboxers.Sandboxer("vmm", "vmm", Path.of("/run/v.sock"),
            Path.of("/run/kuasar-vmm"));

    private void write(String path, String content) throws Exception {
        Path p = root.resolve(path.substring(1));
        Files.createDirectories(p.getParent());
        Files.writeString(p, content);
    }

    private void executable(String path) throws Exception {
        write(path, "#!/bin/sh\n");
        Files.setPosixFilePermissions(root.resolve(path.substring(1)), PosixFilePermissions.fromString("rwxr-xr-x"));
    }

    private List<Checks.Result> run(String... down) {
        return new Checks(root, List.of(runc, vmm), Path.of("/etc/containerd/config.toml"),
                Path.of("/var/lib/kuasar/config.toml"),
                s -> List.of(down).contains(s.name()) ? "does not answer" : null).run();
    }

    private static Checks.Result find(List<Checks.Result> results, String name) {
        return results.stream().filter(r -> r.name().equals(name)).findFirst()
                .orElseThrow(() -> new AssertionError(name + " not in " + results));
    }

    @Test
    void aHealthyRuncNode() throws Exception {
        write("/run/r.sock", "");
        Files.setPosixFilePermissions(root.resolve("run/r.sock"), PosixFilePermissions.fromString("rw-------"));
        executable("/usr/sbin/runc");
        write("/etc/containerd/config.toml", """
                version = 3
                [proxy_plugins.runc]
                  type = "sandbox"
                  address = "/run/r.sock"
                [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kuasar-runc]
                  runtime_type = "io.containerd.kuasar-runc.v1"
                  sandboxer = "runc"
                """);
        write("/proc/self/status", "Name:\tx\nCapEff:\t000001ffffffffff\n");
        write("/proc/self/mounts", "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n");
        List<Checks.Result> r = run();
        assertThat(find(r, "runc: socket").level()).isEqualTo(Checks.Level.OK);
        assertThat(find(r, "vmm: socket").level()).isEqualTo(Checks.Level.WARN);
        assertThat(find(r, "containerd: runc").message()).contains("runtime kuasar-runc");
        assertThat(find(r, "containerd: oom_score_adj").level()).isEqualTo(Checks.Level.OK);
        assertThat(find(r, "cgroups").message()).startsWith("v2");
        assertThat(find(r, "runc: runc").message()).isEqualTo("/usr/sbin/runc");
        // vmm is not running here: what it would miss is only a warning
        assertThat(find(r, "vmm: kernel_path").level()).isEqualTo(Checks.Level.WARN);
        assertThat(find(r, "vmm: kernel_path").fix()).isEqualTo("make vmm-image");
        assertThat(r).noneMatch(x -> x.level() == Checks.Level.FAIL);
    }

    @Test
    void whatIsWrongFailsWithItsFix() throws Exception {
        write("/run/r.sock", "");
        Files.setPosixFilePermissions(root.resolve("run/r.sock"), PosixFilePermissions.fromString("rw-rw-rw-"));
        write("/run/v.sock", "");
        write("/etc/containerd/config.toml", """
                version = 3
                [proxy_plugins.vmm]
                  type = "sandbox"
                  address = "/run/v.sock"
                """);
        write("/proc/self/status", "CapEff:\t0000000000000000\n");
        write("/proc/self/mounts", "tmpfs /sys/fs/cgroup tmpfs ro 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n");
        write("/var/lib/kuasar/config.toml", "[hypervisor]\nkernel_path = \"/k\"\ninitrd_path = \"/i\"\n"
                + "accelerator = \"kvm\"\nuse_vsock = true\nvhost_user_vsock_path = \"/nope\"\n");
        write("/k", "kernel");
        List<Checks.Result> r = run();
        assertThat(find(r, "runc: socket").level()).isEqualTo(Checks.Level.FAIL);
        assertThat(find(r, "runc: socket").message()).contains("world-writable");
        Checks.Result plugin = find(r, "containerd: vmm");
        assertThat(plugin.level()).isEqualTo(Checks.Level.FAIL);
        assertThat(plugin.message()).contains("no runtime has sandboxer = \"vmm\"");
        assertThat(find(r, "containerd: oom_score_adj").fix()).contains("restrict_oom_score_adj = true");
        assertThat(find(r, "cgroups").message()).startsWith("hybrid");
        assertThat(find(r, "vmm: kernel_path").level()).isEqualTo(Checks.Level.OK);
        assertThat(find(r, "vmm: initrd_path").level()).isEqualTo(Checks.Level.FAIL);
        assertThat(find(r, "vmm: accelerator").level()).isEqualTo(Checks.Level.FAIL);
        assertThat(find(r, "vmm: agent channel").level()).isEqualTo(Checks.Level.FAIL);
        assertThat(find(r, "vmm: tun").level()).isEqualTo(Checks.Level.FAIL);
        assertThat(find(r, "vmm: debug console").message()).startsWith("off");
        assertThat(find(r, "vmm: tun").toString()).startsWith("FAIL vmm: tun: ").contains("(fix: modprobe tun)");
    }

    @Test
    void aDaemonThatDoesNotAnswerFails() throws Exception {
        write("/run/r.sock", "");
        Files.setPosixFilePermissions(root.resolve("run/r.sock"), PosixFilePermissions.fromString("rw-------"));
        List<Checks.Result> r = run("runc");
        assertThat(find(r, "runc: socket").level()).isEqualTo(Checks.Level.FAIL);
        assertThat(find(r, "containerd").level()).isEqualTo(Checks.Level.WARN); // no config at all
    }
}
