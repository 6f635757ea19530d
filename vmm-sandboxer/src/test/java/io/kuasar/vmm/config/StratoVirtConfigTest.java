package io.kuasar.vmm.config;

import com.fasterxml.jackson.dataformat.toml.TomlMapper;
import io.kuasar.sandbox.config.SandboxerConfig;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Kuasar's config_stratovirt_x86_64.toml, as shipped, and what is refused. */
class StratoVirtConfigTest {
    private static StratoVirtConfig parse(String toml) throws Exception {
        return StratoVirtConfig.from(new TomlMapper().readTree(toml), "test.toml");
    }

    @Test
    void theShippedFileHasKuasarsValues() throws Exception {
        Path shipped = Path.of("config_stratovirt_x86_64.toml");
        StratoVirtConfig c = StratoVirtConfig.from(SandboxerConfig.load(shipped).section("hypervisor"),
                shipped.toString());
        assertThat(c).isEqualTo(new StratoVirtConfig("/usr/bin/stratovirt", "q35,mem-share=on", "virtio-blk", 1, 1024,
                "/var/lib/kuasar/vmlinux.bin", "", "/var/lib/kuasar/kuasar.initrd",
                "task.log_level=debug task.sharefs_type=virtiofs", "/usr/share/edk2/ovmf/OVMF_CODE.fd", true, false,
                45, "/usr/bin/vhost_user_fs"));
        assertThat(c.machine()).isEqualTo("q35");
    }

    @Test
    void onlyStratoVirtsConfigIsTakenForStratoVirts() throws Exception {
        for (String other : new String[]{"config_clh.toml", "config_qemu_x86_64.toml"}) {
            assertThat(StratoVirtConfig.isStratoVirt(SandboxerConfig.load(Path.of(other)).section("hypervisor")))
                    .as(other).isFalse();
        }
        TomlMapper toml = new TomlMapper();
        assertThat(StratoVirtConfig.isStratoVirt(toml.readTree("path = \"/opt/stratovirt/bin/stratovirt\""))).isTrue();
        assertThat(StratoVirtConfig.isStratoVirt(toml.readTree("path = \"/x/vmm\"\n[virtiofsd_conf]\npath = \"/v\"")))
                .isTrue();
        assertThat(StratoVirtConfig.isStratoVirt(toml.readTree("qemu_path = \"/usr/bin/stratovirt\""))).isFalse();
        assertThat(ClhConfig.isClh(SandboxerConfig.load(Path.of("config_stratovirt_x86_64.toml"))
                .section("hypervisor"))).isFalse();
    }

    @Test
    void badValuesNameTheFileTheKeyAndTheReason() throws Exception {
        assertThatThrownBy(() -> parse("machine_type = \"microvm\"\ninitrd_path = \"/i\""))
                .hasMessageStartingWith("test.toml: [hypervisor].machine_type = \"microvm\": use q35");
        assertThatThrownBy(() -> parse("image_path = \"/r.img\"\ninitrd_path = \"/i\""))
                .hasMessageContaining("[hypervisor].image_path").hasMessageContaining("not both");
        assertThatThrownBy(() -> parse("image_path = \"\"\ninitrd_path = \"\""))
                .hasMessageContaining("[hypervisor].image_path").hasMessageContaining("or initrd_path");
        assertThatThrownBy(() -> parse("vcpus = \"two\"\ninitrd_path = \"/i\""))
                .hasMessageContaining("[hypervisor].vcpus").hasMessageContaining("integer");
        assertThatThrownBy(() -> parse("memory_in_mb = 256\ninitrd_path = \"/i\""))
                .hasMessageContaining("[hypervisor].memory_in_mb").hasMessageContaining("the initrd unpacks into RAM");
        assertThat(parse("memory_in_mb = 256\nimage_path = \"/r.img\"").memoryInMb()).isEqualTo(256);
        assertThatThrownBy(() -> parse("block_device_driver = \"nvme\"\ninitrd_path = \"/i\""))
                .hasMessageContaining("[hypervisor].block_device_driver = \"nvme\"");
        assertThatThrownBy(() -> parse("debug = \"yes\"\ninitrd_path = \"/i\""))
                .hasMessageContaining("[hypervisor].debug").hasMessageContaining("true or false");
    }
}
