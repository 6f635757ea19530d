package io.kuasar.vmm.stratovirt;

import com.fasterxml.jackson.dataformat.toml.TomlMapper;
import io.grpc.StatusRuntimeException;
import io.kuasar.sandbox.config.SandboxerConfig;
import io.kuasar.vmm.config.StratoVirtConfig;
import io.kuasar.vmm.hypervisor.VmSpec;
import org.junit.jupiter.api.Test;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.stream.IntStream;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * Kuasar's StratoVirt command line: the argv its own tests expect ({@code vmm/sandbox/src/stratovirt/config.rs},
 * {@code test_stratovirt_params} and {@code test_stratovirt_params_with_image}), and the devices its factory lays out
 * ({@code factory.rs}, with the addresses of {@code devices/*.rs}'s tests), from the shipped config.
 */
class StratoVirtCommandTest {
    static final Path SHIPPED = Path.of("config_stratovirt_x86_64.toml");
    static final String DIR = "/run/kuasar-vmm/sandboxes/sb1";

    private static StratoVirtConfig config(String toml) throws Exception {
        return StratoVirtConfig.from(new TomlMapper().readTree(toml), "t.toml");
    }

    /** Kuasar's {@code StratoVirtVMConfig::default()}: path, machine "virt", the default kernel, 1 vCPU, 1024 MiB. */
    private static final String KUASAR_DEFAULT = "path = \"/usr/bin/stratovirt\"\nmachine_type = \"virt\"\n";

    @Test
    void kuasarsTestStratovirtParams() throws Exception {
        StratoVirtConfig c = config(KUASAR_DEFAULT + "initrd_path = \"/var/lib/kuasar/initrd\"\n"
                + "enable_mem_prealloc = true\n");
        assertThat(StratoVirtCommand.base(c, 1, 1024, "sandbox-1", "6e7b0e90-3b2e-4179-bc30-43d2b5b5964f",
                Path.of("/path/to/qmp.sock"), Path.of("/path/to/pid"), Path.of("/path/to/log"))).containsExactly(
                "-name", "sandbox-1",
                "-uuid", "6e7b0e90-3b2e-4179-bc30-43d2b5b5964f",
                "-machine", "virt",
                "-qmp", "unix:/path/to/qmp.sock,server,nowait",
                "-kernel", "/var/lib/kuasar/vmlinux.bin",
                "-initrd", "/var/lib/kuasar/initrd",
                "-append", "console=hvc0 console=hvc1 iommu=off panic=1 pcie_ports=native",
                "-smp", "cpus=1",
                "-m", "1024M",
                "-pidfile", "/path/to/pid",
                "-D", "/path/to/log",
                "-global", "pcie-root-port.fast-unplug=1",
                "-daemonize",
                "-disable-seccomp",
                "-mem-prealloc");
    }

    @Test
    void kuasarsTestStratovirtParamsWithImage() throws Exception {
        StratoVirtConfig c = config(KUASAR_DEFAULT + "image_path = \"/var/lib/kuasar/image\"\n");
        assertThat(StratoVirtCommand.base(c, 1, 1024, "sandbox-1", "6e7b0e90-3b2e-4179-bc30-43d2b5b5964f",
                Path.of("/path/to/qmp.sock"), Path.of("/path/to/pid"), Path.of("/path/to/log"))).containsExactly(
                "-name", "sandbox-1",
                "-uuid", "6e7b0e90-3b2e-4179-bc30-43d2b5b5964f",
                "-machine", "virt",
                "-qmp", "unix:/path/to/qmp.sock,server,nowait",
                "-kernel", "/var/lib/kuasar/vmlinux.bin",
                "-append", "console=hvc0 console=hvc1 iommu=off panic=1 pcie_ports=native root=/dev/vda ro "
                        + "rootfstype=ext4",
                "-smp", "cpus=1",
                "-m", "1024M",
                "-pidfile", "/path/to/pid",
                "-D", "/path/to/log",
                "-global", "pcie-root-port.fast-unplug=1",
                "-daemonize",
                "-disable-seccomp");
    }

    @Test
    void theShippedConfigGivesKuasarsCommandLineWithTheAgentOnVirtioSerial() throws Exception {
        SandboxerConfig file = SandboxerConfig.load(SHIPPED);
        assertThat(StratoVirtConfig.isStratoVirt(file.section("hypervisor"))).isTrue();
        StratoVirtConfig c = StratoVirtConfig.from(file.section("hypervisor"), SHIPPED.toString());
        VmSpec spec = new VmSpec("sb1", Path.of(DIR), Path.of(DIR + "/shared"), 1, 1024, "/var/run/netns/cni-1",
                List.of(new VmSpec.Nic("intf-2", "tap_kua_2", "02:42:ac:11:00:02")));
        List<String> expected = new ArrayList<>(List.of("/usr/bin/stratovirt",
                "-name", "sandbox-sb1",
                "-uuid", UUID.nameUUIDFromBytes("sb1".getBytes(StandardCharsets.UTF_8)).toString(),
                "-machine", "q35,mem-share=on",
                "-qmp", "unix:" + DIR + "/qmp.sock,server,nowait",
                "-kernel", "/var/lib/kuasar/vmlinux.bin",
                "-initrd", "/var/lib/kuasar/kuasar.initrd",
                "-append", "console=hvc0 console=hvc1 iommu=off panic=1 pcie_ports=native task.log_level=debug "
                        + "task.sharefs_type=virtiofs debug task.debug",
                "-smp", "cpus=1",
                "-m", "1024M",
                "-D", DIR + "/sandbox-sb1.log", // debug = true
                "-global", "pcie-root-port.fast-unplug=1",
                "-disable-seccomp",
                "-drive", "file=/usr/share/edk2/ovmf/OVMF_CODE.fd,if=pflash,format=raw,unit=0,readonly=on",
                "-object", "rng-random,id=rng0,filename=/dev/urandom",
                "-device", "virtio-rng-pci,rng=rng0,id=virtio-rng0,bus=pcie.0,addr=0x1",
                "-device", "virtio-serial-pci,id=virtio-serial0,bus=pcie.0,addr=0x2",
                "-chardev", "file,id=charconsole0,path=" + DIR + "/console.log",
                "-device", "virtconsole,id=virtio-console0,chardev=charconsole0",
                "-chardev", "socket,id=charagent0,path=" + DIR + "/agent.sock,server,nowait",
                "-device", "virtserialport,id=agent.channel.0,chardev=charagent0",
                // slot 3 is Kuasar's vhost-vsock-pci's, left empty
                "-chardev", "socket,id=virtio-fs-sb1,path=" + DIR + "/virtiofs.sock,server,nowait",
                "-device", "vhost-user-fs-pci,id=vhost-user-fs-sb1,chardev=virtio-fs-sb1,tag=kuasar,bus=pcie.0,"
                        + "addr=0x4"));
        IntStream.rangeClosed(1, 10).forEach(i -> expected.addAll(List.of("-device", "pcie-root-port,id=pcie." + i
                + ",port=0x" + Integer.toHexString(4 + i) + ",bus=pcie.0,addr=0x" + Integer.toHexString(4 + i))));
        expected.addAll(List.of(
                "-netdev", "tap,id=intf-2,ifname=tap_kua_2",
                "-device", "virtio-net-pci,netdev=intf-2,id=virtio-net-intf-2,bus=pcie.0,addr=0xf,"
                        + "mac=02:42:ac:11:00:02,mq=off"));
        assertThat(StratoVirtCommand.build(c, spec)).containsExactlyElementsOf(expected);
        // the first and last root ports as Kuasar's rootport.rs test writes them
        assertThat(expected).contains("pcie-root-port,id=pcie.1,port=0x5,bus=pcie.0,addr=0x5",
                "pcie-root-port,id=pcie.10,port=0xe,bus=pcie.0,addr=0xe");
    }

    @Test
    void anImageIsARootfsDiskAndShiftsTheLaterSlots() throws Exception {
        StratoVirtConfig c = config("image_path = \"/var/lib/kuasar/kuasar.img\"\nkernel_params = \"quiet\"\n");
        List<String> a = StratoVirtCommand.build(c, new VmSpec("sb2", Path.of("/d"), Path.of("/d/shared"), 2, 2048, "",
                List.of()));
        assertThat(a).doesNotContain("-initrd", "-D", "-mem-prealloc", "-daemonize", "-pidfile", "-netdev")
                .containsSubsequence("-drive", "id=rootfs,file=/var/lib/kuasar/kuasar.img,readonly=on",
                        "-device", "virtio-blk-pci,drive=rootfs,id=blk-0,bus=pcie.0,addr=0x3")
                .contains("vhost-user-fs-pci,id=vhost-user-fs-sb2,chardev=virtio-fs-sb2,tag=kuasar,bus=pcie.0,addr=0x5",
                        "pcie-root-port,id=pcie.1,port=0x6,bus=pcie.0,addr=0x6", "cpus=2", "2048M");
        assertThat(a.get(a.indexOf("-append") + 1)).isEqualTo("console=hvc0 console=hvc1 iommu=off panic=1 "
                + "pcie_ports=native quiet root=/dev/vda ro rootfstype=ext4");
    }

    @Test
    void kernelParamsThenTheRootThenDebug() throws Exception {
        assertThat(StratoVirtCommand.kernelParams(config("initrd_path = \"/i\"\n")))
                .isEqualTo("console=hvc0 console=hvc1 iommu=off panic=1 pcie_ports=native");
        assertThat(StratoVirtCommand.kernelParams(config("initrd_path = \"/i\"\ndebug = true\n"
                + "kernel_params = \"task.sharefs_type=virtiofs\"\n"))).isEqualTo("console=hvc0 console=hvc1 iommu=off "
                + "panic=1 pcie_ports=native task.sharefs_type=virtiofs debug task.debug");
        assertThat(StratoVirtCommand.kernelParams(config("image_path = \"/r.img\"\ndebug = true\n")))
                .endsWith("pcie_ports=native root=/dev/vda ro rootfstype=ext4 debug task.debug");
    }

    @Test
    void theShareIsVhostUserFsServedByVhostUserFsOrVirtiofsd() throws Exception {
        StratoVirtConfig kuasars = config("initrd_path = \"/i\"\n");
        assertThat(kuasars.virtiofsdPath()).isEqualTo("/usr/bin/vhost_user_fs");
        assertThat(kuasars.usesVirtiofsd()).isFalse();
        assertThat(config("initrd_path = \"/i\"\n[virtiofsd_conf]\npath = \"/var/lib/kuasar/virtiofsd/virtiofsd\"\n")
                .usesVirtiofsd()).isTrue();
        // StratoVirt connects to the daemon's socket whichever serves it
        assertThat(String.join(" ", StratoVirtCommand.build(kuasars, new VmSpec("s", Path.of("/d"), Path.of("/d/shared"),
                1, 1024, "", List.of())))).contains("-chardev socket,id=virtio-fs-s,path=/d/virtiofs.sock,server,nowait "
                + "-device vhost-user-fs-pci,id=vhost-user-fs-s,chardev=virtio-fs-s,tag=kuasar,bus=pcie.0,addr=0x4");
    }

    @Test
    void moreNicsThanPcieSlotsIsAnErrorNamingTheSandbox() throws Exception {
        List<VmSpec.Nic> nics = IntStream.range(0, 18).mapToObj(i -> new VmSpec.Nic("intf-" + i, "tap" + i,
                "02:00:00:00:00:" + String.format("%02x", i))).toList();
        StratoVirtConfig c = config("initrd_path = \"/i\"\n");
        assertThat(StratoVirtCommand.build(c, new VmSpec("ok", Path.of("/d"), Path.of("/s"), 1, 1024, "",
                nics.subList(0, 17)))).contains("virtio-net-pci,netdev=intf-16,id=virtio-net-intf-16,bus=pcie.0,"
                + "addr=0x1f,mac=02:00:00:00:00:10,mq=off");
        assertThatThrownBy(() -> StratoVirtCommand.build(c, new VmSpec("sb9", Path.of("/d"), Path.of("/s"), 1, 1024, "",
                nics))).isInstanceOf(StatusRuntimeException.class).hasMessageContaining("sandbox sb9")
                .hasMessageContaining("pcie.0 are full");
    }
}
