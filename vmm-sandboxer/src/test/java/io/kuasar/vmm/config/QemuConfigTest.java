package io.kuasar.vmm.config;

import com.fasterxml.jackson.dataformat.toml.TomlMapper;
import org.junit.jupiter.api.Test;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class QemuConfigTest {
    private static QemuConfig parse(String toml) throws Exception {
        return QemuConfig.from(new TomlMapper().readTree(toml).path("hypervisor"), "test.toml");
    }

    @Test
    void theShippedFileParsesWithKuasarsKeys() throws Exception {
        QemuConfig c = parse(Files.readString(Path.of("config_qemu_x86_64.toml")));
        assertThat(c.machineType()).isEqualTo("pc");
        assertThat(c.kernelPath()).isEqualTo("/var/lib/kuasar/vmlinux.bin");
        assertThat(c.initrdPath()).isEqualTo("/var/lib/kuasar/kuasar.initrd");
        assertThat(c.accelerator()).isEqualTo("auto");
        assertThat(c.shareFs()).isEqualTo(QemuConfig.SHARE_9P);
    }

    @Test
    void unknownKeysAreIgnoredAsKuasarDoes() throws Exception {
        QemuConfig c = parse("[hypervisor]\nvcpus = 2\nmemory_in_mb = 1024\nvirtiofs_cache = \"auto\"\n"
                + "block_device_driver = \"VirtioBlk\"\n");
        assertThat(c.vcpus()).isEqualTo(2);
        assertThat(c.memoryInMb()).isEqualTo(1024);
    }

    @Test
    void badValuesNameTheFileTheKeyAndTheReason() throws Exception {
        assertThatThrownBy(() -> parse("[hypervisor]\naccelerator = \"hvf\"\n"))
                .hasMessageContaining("test.toml").hasMessageContaining("[hypervisor].accelerator")
                .hasMessageContaining("kvm, tcg or auto");
        assertThatThrownBy(() -> parse("[hypervisor]\nvcpus = \"two\"\n"))
                .hasMessageContaining("[hypervisor].vcpus").hasMessageContaining("integer");
        assertThatThrownBy(() -> parse("[hypervisor]\nmemory_in_mb = 64\n")).hasMessageContaining("at least 384");
        assertThat(parse("[hypervisor]\nuse_vsock = true\n").useVsock()).isTrue(); // vhost-user-vsock here
        assertThatThrownBy(() -> parse("[hypervisor]\nmachine_type = \"virt\"\n")).hasMessageContaining("machine_type");
    }

    @Test
    void autoPicksTcgWithoutHardwareVirtualisation() throws Exception {
        QemuConfig c = parse("[hypervisor]\n");
        String expected = QemuConfig.hasHardwareVirtualisation() && Files.exists(Path.of("/dev/kvm")) ? "kvm" : "tcg";
        assertThat(c.effectiveAccelerator()).isEqualTo(expected);
        assertThat(parse("[hypervisor]\naccelerator = \"tcg\"\n").effectiveAccelerator()).isEqualTo("tcg");
    }
}
