package io.kuasar.vmm.qemu;

import com.fasterxml.jackson.dataformat.toml.TomlMapper;
import io.kuasar.vmm.config.QemuConfig;
import io.kuasar.vmm.hypervisor.VmSpec;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class QemuCommandTest {
    private final VmSpec spec = new VmSpec("s1", Path.of("/run/kuasar-vmm/sandboxes/s1"),
            Path.of("/run/kuasar-vmm/sandboxes/s1/shared"), 2, 640, "/run/netns/x",
            List.of(new VmSpec.Nic("intf-3", "tap_kua_3", "0a:58:0a:58:4d:05")));

    private static QemuConfig config(String extra) throws Exception {
        return QemuConfig.from(new TomlMapper().readTree("[hypervisor]\n" + extra).path("hypervisor"), "t");
    }

    @Test
    void tcgHasNoKvmMachineOptionsAndNoHostCpu() throws Exception {
        String cmd = String.join(" ", QemuCommand.build(config("firmware_path = \"/usr/share/qemu/qboot.rom\"\n"),
                "tcg", spec));
        assertThat(cmd).contains("-machine pc ").contains("-accel tcg,thread=multi,tb-size=32")
                .contains("-bios /usr/share/qemu/qboot.rom").doesNotContain("-cpu host").doesNotContain("accel=kvm");
    }

    @Test
    void kvmUsesKuasarsMachineAndCpu() throws Exception {
        String cmd = String.join(" ", QemuCommand.build(config(""), "kvm", spec));
        assertThat(cmd).contains("-machine pc,accel=kvm,kernel_irqchip=on").contains("-cpu host");
    }

    @Test
    void devicesCarryTheAgentPortTheShareAndTheNic() throws Exception {
        List<String> a = QemuCommand.build(config(""), "tcg", spec);
        String cmd = String.join(" ", a);
        assertThat(cmd).contains("virtserialport,bus=serial0.0,chardev=agent,name=agent.channel.0")
                .contains("socket,id=agent,path=/run/kuasar-vmm/sandboxes/s1/agent.sock,server=on,wait=off")
                .contains("local,id=extra-9p-kuasar,path=/run/kuasar-vmm/sandboxes/s1/shared,security_model=none,"
                        + "multidevs=remap")
                .contains("virtio-9p-pci,fsdev=extra-9p-kuasar,mount_tag=kuasar")
                .contains("tap,id=intf-3,ifname=tap_kua_3,script=no,downscript=no,vhost=off")
                .contains("virtio-net-pci,netdev=intf-3,mac=0a:58:0a:58:4d:05")
                .contains("-smp cpus=2").contains("-m 640M").contains("-no-reboot");
        assertThat(a.get(a.indexOf("-append") + 1)).startsWith("console=ttyS0").contains("task.sharefs_type=9p")
                .endsWith("quiet");
    }

    /**
     * A template and its copies have one device layout: RAM from the template's file (shared for the template,
     * private copy-on-write for a copy), the template's one NIC and MAC whatever the pod's, {@code task.template};
     * a copy waits for the saved state.
     */
    @Test
    void aTemplatesCopyHasTheTemplatesLayoutWithThePodsBackends() throws Exception {
        QemuConfig c = config("enable_template = true\n");
        Path memory = Path.of("/run/kuasar-vmm/template/k/memory");
        VmSpec template = new VmSpec("template", Path.of("/t"), Path.of("/t/share"), 2, 640, "", List.of());
        String t = String.join(" ", QemuCommand.build(c, "tcg", template, new QemuCommand.Templated(memory, false)));
        String copy = String.join(" ", QemuCommand.build(c, "tcg", spec, new QemuCommand.Templated(memory, true)));
        assertThat(t).contains("-machine pc,memory-backend=mem0")
                .contains("memory-backend-file,id=mem0,size=640M,mem-path=" + memory + ",share=on")
                .contains("hubport,id=intf-0,hubid=0").contains("virtio-net-pci,netdev=intf-0,mac="
                        + QemuCommand.TEMPLATE_MAC).contains(" task.template").doesNotContain("-incoming");
        assertThat(copy).contains("memory-backend-file,id=mem0,size=640M,mem-path=" + memory + ",share=off")
                .contains("tap,id=intf-0,ifname=tap_kua_3,").contains("virtio-net-pci,netdev=intf-0,mac="
                        + QemuCommand.TEMPLATE_MAC).contains("path=/run/kuasar-vmm/sandboxes/s1/shared")
                .endsWith("-incoming defer");
        // the same devices in the same order: only the backends differ
        assertThat(devices(t)).isEqualTo(devices(copy));
    }

    private static List<String> devices(String cmd) {
        List<String> d = new java.util.ArrayList<>();
        String[] a = cmd.split(" ");
        for (int i = 0; i + 1 < a.length; i++) {
            if (a[i].equals("-device")) {
                d.add(a[i + 1].replaceAll("mac=[^,]*", ""));
            }
        }
        return d;
    }

    @Test
    void aTemplateNeedsNinePAndTheSerialChannel() {
        assertThatThrownBy(() -> config("enable_template = true\nshare_fs = \"VirtioFS\"\n"))
                .hasMessageContaining("enable_template").hasMessageContaining("vhost-user");
    }

    @Test
    void debugAsksTheGuestAgentForDebugLogs() throws Exception {
        assertThat(QemuCommand.kernelParams(config("debug = true\nkernel_params = \"foo=1\"\n")))
                .contains(" foo=1").endsWith("task.log_level=debug");
    }

    @Test
    void taskDebugAddsKuasarsDebugConsoleOnASecondPortOrOnVsock() throws Exception {
        String off = String.join(" ", QemuCommand.build(config(""), "tcg", spec));
        assertThat(off).doesNotContain("task.debug").doesNotContain("debug.sock").doesNotContain("debug.console.0");
        List<String> a = QemuCommand.build(config("[hypervisor.task]\ndebug = true\n"), "tcg", spec);
        String on = String.join(" ", a);
        assertThat(a.get(a.indexOf("-append") + 1)).contains(" task.debug");
        assertThat(on).contains("-chardev socket,id=debug,path=/run/kuasar-vmm/sandboxes/s1/debug.sock,server=on,"
                + "wait=off -device virtserialport,bus=serial0.0,chardev=debug,name=debug.console.0");
        // the agent's port stays the first one
        assertThat(on.indexOf("name=agent.channel.0")).isLessThan(on.indexOf("name=debug.console.0"));
        // task.debug in kernel_params (Kuasar's QEMU way) gets the port too
        assertThat(String.join(" ", QemuCommand.build(config("kernel_params = \"task.debug\"\n"), "tcg", spec)))
                .contains("name=debug.console.0");
        // with vsock the guest serves vsock port 1025: no extra port
        List<String> v = QemuCommand.build(config("use_vsock = true\n[hypervisor.task]\ndebug = true\n"), "tcg",
                spec);
        assertThat(v.get(v.indexOf("-append") + 1)).contains(" task.debug").contains("task.agent_vsock=1024");
        assertThat(String.join(" ", v)).doesNotContain("debug.sock");
    }

    @Test
    void virtiofsSharesThroughVhostUserWithGuestRamInASharedMemfd() throws Exception {
        List<String> a = QemuCommand.build(config("share_fs = \"VirtioFS\"\n[hypervisor.virtiofsd]\ncache = \"auto\"\n"),
                "tcg", spec);
        String cmd = String.join(" ", a);
        assertThat(cmd).contains("-object memory-backend-memfd,id=mem0,size=640M,share=on")
                .contains("-numa node,memdev=mem0")
                .contains("socket,id=vfs0,path=/run/kuasar-vmm/sandboxes/s1/virtiofs.sock")
                .contains("vhost-user-fs-pci,chardev=vfs0,tag=kuasar")
                .doesNotContain("9p");
        assertThat(a.get(a.indexOf("-append") + 1)).contains("task.sharefs_type=virtiofs");
        assertThatThrownBy(() -> config("share_fs = \"VirtioFS\"\n[hypervisor.virtiofsd]\ncache = \"sometimes\"\n"))
                .hasMessageContaining("virtiofsd.cache");
    }
}
