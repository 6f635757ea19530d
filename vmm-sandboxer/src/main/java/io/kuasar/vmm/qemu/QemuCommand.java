package io.kuasar.vmm.qemu;

import io.kuasar.vmm.config.QemuConfig;
import io.kuasar.vmm.hypervisor.VmSpec;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;

/**
 * QEMU's command line for one pod, after Kuasar's QEMU factory: machine, memory, kernel and initrd, a virtio-serial
 * bus carrying the agent port ({@value #AGENT_PORT}), virtio-rng, the shared directory as 9p or virtiofs tag
 * {@value #SHARE_TAG}, a virtio-net NIC per tap, a balloon that only reports free pages, and QMP. Differences, each for a reason: the accelerator is
 * configurable (TCG where /dev/kvm cannot run stock kernels), the console goes to a file in the sandbox directory
 * (diagnosis of a guest that never answers), the sockets live in the sandbox directory, and QEMU does not
 * daemonize (the sandboxer is its parent and learns its exit at once).
 */
public final class QemuCommand {
    public static final String AGENT_PORT = "agent.channel.0";
    public static final String SHARE_TAG = "kuasar";
    static final String AGENT_SOCKET = "agent.sock";
    /** The debug console's virtio-serial port (vmm-task's DebugConsole) and its chardev socket (kuasar-ctl exec). */
    public static final String DEBUG_PORT = "debug.console.0";
    public static final String DEBUG_SOCKET = "debug.sock";
    static final String QMP_SOCKET = "qmp.sock";
    static final String CONSOLE_LOG = "console.log";
    static final String VIRTIOFS_SOCKET = "virtiofs.sock";
    /** vhost-device-vsock's control socket (QEMU connects to it) and its hybrid vsock socket (ours). */
    static final String VHOST_VSOCK_SOCKET = "vhu-vsock.sock";
    static final String VSOCK_UDS = "vsock.uds";
    /** The guest's vsock CID and the agent's port: Kuasar's. */
    static final int GUEST_CID = 3;
    static final int AGENT_VSOCK_PORT = 1024;
    /** The guest kernel parameters every pod needs; the config's kernel_params come after them. */
    static final String BASE_PARAMS = "console=ttyS0 panic=-1 reboot=t tsc=reliable no_timer_check lpj=1000000 "
            + "net.ifnames=0";

    private QemuCommand() {
    }

    /** The MAC of a templated VM's one NIC: the guest agent gives it the pod's at SetupSandbox. */
    static final String TEMPLATE_MAC = "02:6b:75:61:73:01";
    static final String TEMPLATE_NIC = "intf-0";

    /**
     * A VM from a template (see {@link QemuTemplate}): its RAM is the template's memory file, {@code shared} for
     * the template's own VM (the saved image) and private copy-on-write for each pod's copy, which also waits for
     * the saved device state ({@code -incoming defer}). The device layout is the template's whatever the pod: the
     * same devices in the same order, one NIC (the pod's tap, or a placeholder), the template's MAC.
     */
    record Templated(Path memory, boolean copy) {
    }

    public static List<String> build(QemuConfig c, String accelerator, VmSpec spec) {
        return build(c, accelerator, spec, null);
    }

    static List<String> build(QemuConfig c, String accelerator, VmSpec spec, Templated t) {
        Path dir = spec.dir();
        List<String> a = new ArrayList<>(List.of(c.qemuPath(),
                "-name", "sandbox-" + spec.sandboxId(),
                "-uuid", UUID.nameUUIDFromBytes(spec.sandboxId().getBytes(java.nio.charset.StandardCharsets.UTF_8))
                        .toString(),
                "-machine", c.machineType() + (accelerator.equals("kvm") ? ",accel=kvm,kernel_irqchip=on" : "")
                        + (t != null ? ",memory-backend=mem0" : "")));
        if (accelerator.equals("kvm")) {
            a.addAll(List.of("-cpu", c.cpuModel() + (c.cpuFeatures().isEmpty() ? "" : "," + c.cpuFeatures())));
        } else {
            // "host" means nothing to TCG; multi-threaded TCG with a bounded translation cache (~30 MB less RSS)
            a.addAll(List.of("-accel", "tcg,thread=multi,tb-size=32"));
        }
        if (!c.firmwarePath().isEmpty()) {
            a.addAll(List.of("-bios", c.firmwarePath()));
        }
        a.addAll(List.of(
                "-qmp", "unix:" + dir.resolve(QMP_SOCKET) + ",server=on,wait=off",
                "-rtc", "base=utc,clock=host,driftfix=slew",
                "-vga", "none", "-nographic", "-nodefaults", "-no-user-config", "-no-reboot",
                "-serial", "file:" + dir.resolve(CONSOLE_LOG),
                "-kernel", c.kernelPath(),
                "-initrd", c.initrdPath(),
                "-append", kernelParams(c) + (t != null ? " task.template" : ""),
                "-smp", "cpus=" + spec.vcpus() + ",cores=" + spec.vcpus() + ",threads=1",
                "-m", spec.memoryInMb() + "M",
                "-object", "rng-random,id=rng0,filename=" + c.entropySource(),
                "-device", "virtio-rng-pci,rng=rng0"));
        if (c.useVsock()) {
            // the agent on vsock port 1024; vhost-device-vsock serves the device (and maps guest RAM)
            a.addAll(List.of(
                    "-chardev", "socket,id=vhuv,path=" + dir.resolve(VHOST_VSOCK_SOCKET),
                    "-device", "vhost-user-vsock-pci,chardev=vhuv"));
        } else {
            a.addAll(List.of(
                    "-device", "virtio-serial-pci,id=serial0",
                    "-chardev", "socket,id=agent,path=" + dir.resolve(AGENT_SOCKET) + ",server=on,wait=off",
                    "-device", "virtserialport,bus=serial0.0,chardev=agent,name=" + AGENT_PORT));
            if (c.debugConsole()) {
                // the guest's debug console (with use_vsock it is on vsock port 1025 instead)
                a.addAll(List.of(
                        "-chardev", "socket,id=debug,path=" + dir.resolve(DEBUG_SOCKET) + ",server=on,wait=off",
                        "-device", "virtserialport,bus=serial0.0,chardev=debug,name=" + DEBUG_PORT));
            }
        }
        if (t != null) {
            a.addAll(List.of("-object", "memory-backend-file,id=mem0,size=" + spec.memoryInMb() + "M,mem-path="
                    + t.memory() + ",share=" + (t.copy() ? "off" : "on")));
        } else if (c.virtiofs() || c.useVsock()) {
            // vhost-user devices map guest RAM, so the RAM is a shared memfd (one NUMA node holding it all)
            a.addAll(List.of(
                    "-object", "memory-backend-memfd,id=mem0,size=" + spec.memoryInMb() + "M,share=on",
                    "-numa", "node,memdev=mem0"));
        }
        if (c.virtiofs()) {
            a.addAll(List.of(
                    "-chardev", "socket,id=vfs0,path=" + dir.resolve(VIRTIOFS_SOCKET),
                    "-device", "vhost-user-fs-pci,chardev=vfs0,tag=" + SHARE_TAG));
        } else {
            a.addAll(List.of(
                    "-fsdev", "local,id=extra-9p-kuasar,path=" + spec.sharedDir() + ",security_model=none"
                            + (c.virtio9pMultidevs().isEmpty() ? "" : ",multidevs=" + c.virtio9pMultidevs()),
                    "-device", "virtio-9p-pci,fsdev=extra-9p-kuasar,mount_tag=" + SHARE_TAG));
        }
        if (c.freePageReporting()) {
            // The guest hands pages it frees back to the host (QEMU discards them): the initramfs image, the
            // unpacked root it leaves behind at switch_root, and memory the containers released. Without it a VM
            // keeps every page it ever touched.
            a.addAll(List.of("-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on"));
        }
        if (t != null) {
            // the template's one NIC: the pod's tap, or a port of an empty hub (a pod without a network)
            a.addAll(List.of("-netdev", spec.nics().isEmpty() ? "hubport,id=" + TEMPLATE_NIC + ",hubid=0"
                            : "tap,id=" + TEMPLATE_NIC + ",ifname=" + spec.nics().getFirst().tap()
                            + ",script=no,downscript=no,vhost=off",
                    "-device", "virtio-net-pci,netdev=" + TEMPLATE_NIC + ",mac=" + TEMPLATE_MAC));
            if (t.copy()) {
                a.addAll(List.of("-incoming", "defer"));
            }
            return a;
        }
        for (VmSpec.Nic n : spec.nics()) {
            a.addAll(List.of("-netdev", "tap,id=" + n.id() + ",ifname=" + n.tap() + ",script=no,downscript=no,vhost=off",
                    "-device", "virtio-net-pci,netdev=" + n.id() + ",mac=" + n.mac()));
        }
        return a;
    }

    static String kernelParams(QemuConfig c) {
        String p = BASE_PARAMS + " task.sharefs_type=" + (c.virtiofs() ? "virtiofs" : "9p")
                + (c.useVsock() ? " task.agent_vsock=" + AGENT_VSOCK_PORT : "")
                + (c.kernelParams().isBlank() ? "" : " " + c.kernelParams().trim())
                + (c.taskDebug() ? " task.debug" : "");
        return c.debug() ? p + " task.log_level=debug" : p + " quiet";
    }
}
