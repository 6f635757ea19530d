package io.kuasar.vmm.clh;

import io.kuasar.sandbox.config.SandboxerConfig;
import io.kuasar.vmm.config.ClhConfig;
import io.kuasar.vmm.hypervisor.VmSpec;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Kuasar's config_clh.toml, as shipped, gives Kuasar's Cloud Hypervisor command line. */
class ClhCommandTest {
    static final Path SHIPPED = Path.of("config_clh.toml");

    @Test
    void theShippedConfigIsCloudHypervisorsAndGivesKuasarsCommandLine() throws Exception {
        SandboxerConfig file = SandboxerConfig.load(SHIPPED);
        assertThat(ClhConfig.isClh(file.section("hypervisor"))).isTrue();
        ClhConfig c = ClhConfig.from(file.section("hypervisor"), SHIPPED.toString());
        VmSpec spec = new VmSpec("sb1", Path.of("/run/kuasar-vmm/sandboxes/sb1"), Path.of("/run/kuasar-vmm/sb1/shared"),
                1, 1024, "/var/run/netns/cni-1", List.of(new VmSpec.Nic("intf-2", "tap_kua_1", "02:42:ac:11:00:02")));
        String dir = "/run/kuasar-vmm/sandboxes/sb1";
        assertThat(ClhCommand.build(c, spec)).containsExactly("/usr/local/bin/cloud-hypervisor",
                "--api-socket", dir + "/api.sock",
                "--cpus", "boot=1,affinity=,features=",
                "--memory", "size=1073741824,shared=on,hugepages=off",
                "--kernel", "/var/lib/kuasar/vmlinux.bin",
                "--cmdline", "console=hvc0 root=/dev/pmem0p1 rootflags=data=ordered,errors=remount-ro ro "
                        + "rootfstype=ext4 task.sharefs_type=virtiofs task.agent_vsock=1024 task.enable_tracing=false",
                "--pmem", "id=rootfs,file=/var/lib/kuasar/kuasar.img,discard_writes=on",
                "--rng", "src=/dev/urandom",
                "--vsock", "cid=3,socket=" + dir + "/task.vsock,id=vsock",
                "--console", "file=" + dir + "/console.log",
                "--fs", "tag=kuasar,socket=" + dir + "/virtiofs.sock,id=fs",
                "--net", "id=intf-2,tap=tap_kua_1,mac=02:42:ac:11:00:02");
    }

    @Test
    void anInitramfsGuestHasNoPmemRootAndTaskDebugAndParamsAreAppended() throws Exception {
        var toml = new com.fasterxml.jackson.dataformat.toml.TomlMapper().readTree("""
                path = "/opt/ch/cloud-hypervisor"
                initrd_path = "/var/lib/kuasar/kuasar.initrd"
                kernel_params = "quiet"
                debug = true
                hugepages = true
                [task]
                debug = true
                enable_tracing = true
                """);
        ClhConfig c = ClhConfig.from(toml, "test.toml");
        assertThat(ClhCommand.kernelCmdline(c))
                .isEqualTo("console=hvc0 task.sharefs_type=virtiofs task.agent_vsock=1024 quiet task.log_level=debug "
                        + "task.enable_tracing=true");
        List<String> cmd = ClhCommand.build(c, new VmSpec("sb2", Path.of("/d"), Path.of("/s"), 2, 512, "", List.of()));
        assertThat(cmd).contains("--initramfs", "/var/lib/kuasar/kuasar.initrd", "size=536870912,shared=on,hugepages=on",
                "boot=2,affinity=,features=").doesNotContain("--pmem", "--net");
        assertThat(cmd.getLast()).isEqualTo("-vv");
    }

    @Test
    void badValuesNameTheKey() {
        assertThatThrownBy(() -> ClhConfig.from(new com.fasterxml.jackson.dataformat.toml.TomlMapper()
                .readTree("path = \"/x/cloud-hypervisor\"\nimage_path = \"\"\ninitrd_path = \"\""), "c.toml"))
                .hasMessageContaining("c.toml: [hypervisor].image_path");
        assertThatThrownBy(() -> ClhConfig.from(new com.fasterxml.jackson.dataformat.toml.TomlMapper()
                .readTree("vcpus = 0\nimage_path = \"/i\""), "c.toml")).hasMessageContaining("[hypervisor].vcpus");
    }
}
