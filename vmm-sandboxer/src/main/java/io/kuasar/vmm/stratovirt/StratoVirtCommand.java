package io.kuasar.vmm.stratovirt;

import io.grpc.Status;
import io.kuasar.vmm.config.StratoVirtConfig;
import io.kuasar.vmm.hypervisor.VmSpec;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;

/**
 * StratoVirt's command line as Kuasar's vmm-sandboxer builds it ({@code stratovirt/config.rs}, {@code factory.rs},
 * {@code devices/*.rs}): name, uuid, machine, QMP, kernel, initrd or rootfs disk, vCPUs and memory, fast PCIe
 * unplug, no seccomp; then on {@code pcie.0} the rng (slot 1), a virtio-serial device with the console (2), the
 * rootfs disk when there is an image, the pod's share as vhost-user-fs tag {@value #SHARE_TAG}, ten
 * {@code pcie-root-port}s for hot-plug, and one virtio-net per tap. Differences from Kuasar, each for a reason:
 * <ul>
 * <li>No vhost-vsock: Kuasar hands StratoVirt a {@code /dev/vhost-vsock} fd for the agent's vsock, and StratoVirt
 * has no other vsock (no hybrid vsock, no vhost-user-vsock). The agent is on a virtio-serial port named
 * {@value #AGENT_PORT} on the console's virtio-serial device instead, as QEMU's without {@code use_vsock}; the
 * slot Kuasar's vsock takes stays empty, so every other device keeps Kuasar's address.</li>
 * <li>The console goes to a file in the sandbox directory (a {@code file} chardev) instead of a socket the
 * sandboxer reads; the QMP socket is in the sandbox directory instead of {@code /run/<id>-qmp.sock}, which Kuasar
 * never removes.</li>
 * <li>No {@code -daemonize}: the sandboxer is StratoVirt's parent and learns its exit at once, as with QEMU; and
 * StratoVirt refuses {@code -pidfile} without {@code -daemonize}, so there is no pid file either.</li>
 * <li>The taps are named ({@code ifname=}; the VMM runs in the pod's netns, where they exist) instead of passed as
 * inherited fds, as with Cloud Hypervisor; and the uuid derives from the sandbox id instead of being random.</li>
 * </ul>
 */
public final class StratoVirtCommand {
    public static final String QMP_SOCKET = "qmp.sock";
    public static final String AGENT_SOCKET = "agent.sock";
    public static final String VIRTIOFS_SOCKET = "virtiofs.sock";
    public static final String VIRTIOFS_LOG = "virtiofs.log";
    public static final String CONSOLE_LOG = "console.log";
    /** The agent's virtio-serial port: StratoVirt names a port after its id. */
    public static final String AGENT_PORT = "agent.channel.0";
    public static final String SHARE_TAG = "kuasar";
    /** Kuasar's root ports for hot-plug, {@code pcie.1} to {@code pcie.10}. */
    public static final int ROOT_PORTS = 10;
    static final String DEFAULT_KERNEL_PARAMS = "console=hvc0 console=hvc1 iommu=off panic=1 pcie_ports=native";
    static final String ROOTFS_KERNEL_PARAMS = " root=/dev/vda ro rootfstype=ext4";
    private static final String ROOT_BUS = "pcie.0";
    /** The slots of pcie.0; slot 0 is reserved. */
    private static final int ROOT_BUS_SLOTS = 32;

    private StratoVirtCommand() {
    }

    public static List<String> build(StratoVirtConfig c, VmSpec spec) {
        Path dir = spec.dir();
        String id = spec.sandboxId();
        List<String> a = new ArrayList<>(List.of(c.path()));
        a.addAll(base(c, spec.vcpus(), spec.memoryInMb(), "sandbox-" + id, uuid(id), dir.resolve(QMP_SOCKET), null,
                c.debug() ? dir.resolve("sandbox-" + id + ".log") : null));
        a.addAll(devices(c, spec));
        return a;
    }

    /**
     * Kuasar's {@code StratoVirtConfig::to_cmdline_params}, the VM itself. A {@code pidFile} comes with
     * {@code -daemonize}, as Kuasar always runs it (StratoVirt refuses {@code -pidfile} alone); {@code logFile} is
     * {@code -D}, StratoVirt's own log.
     */
    static List<String> base(StratoVirtConfig c, int vcpus, int memoryInMb, String name, String uuid, Path qmp,
                             Path pidFile, Path logFile) {
        List<String> a = new ArrayList<>(List.of("-name", name, "-uuid", uuid, "-machine", c.machineType(),
                "-qmp", "unix:" + qmp + ",server,nowait",
                "-kernel", c.kernelPath()));
        if (!c.initrdPath().isEmpty()) {
            a.addAll(List.of("-initrd", c.initrdPath()));
        }
        a.addAll(List.of("-append", kernelParams(c), "-smp", "cpus=" + vcpus, "-m", memoryInMb + "M"));
        if (pidFile != null) {
            a.addAll(List.of("-pidfile", pidFile.toString()));
        }
        if (logFile != null) {
            a.addAll(List.of("-D", logFile.toString()));
        }
        a.addAll(List.of("-global", "pcie-root-port.fast-unplug=1"));
        if (pidFile != null) {
            a.add("-daemonize");
        }
        a.add("-disable-seccomp");
        if (c.enableMemPrealloc()) {
            a.add("-mem-prealloc");
        }
        if (!c.firmware().isEmpty()) {
            a.addAll(List.of("-drive", "file=" + c.firmware() + ",if=pflash,format=raw,unit=0,readonly=on"));
        }
        return a;
    }

    /** Kuasar's devices, in its factory's order, each at the next free slot of pcie.0. */
    static List<String> devices(StratoVirtConfig c, VmSpec spec) {
        Path dir = spec.dir();
        String id = spec.sandboxId();
        Slots slots = new Slots(id);
        List<String> a = new ArrayList<>(List.of(
                "-object", "rng-random,id=rng0,filename=/dev/urandom",
                "-device", "virtio-rng-pci,rng=rng0,id=virtio-rng0,bus=" + ROOT_BUS + ",addr=" + slots.next(),
                "-device", "virtio-serial-pci,id=virtio-serial0,bus=" + ROOT_BUS + ",addr=" + slots.next(),
                "-chardev", "file,id=charconsole0,path=" + dir.resolve(CONSOLE_LOG),
                "-device", "virtconsole,id=virtio-console0,chardev=charconsole0",
                // ours: the agent's port, where Kuasar has vhost-vsock
                "-chardev", "socket,id=charagent0,path=" + dir.resolve(AGENT_SOCKET) + ",server,nowait",
                "-device", "virtserialport,id=" + AGENT_PORT + ",chardev=charagent0"));
        if (!c.imagePath().isEmpty()) {
            a.addAll(List.of("-drive", "id=rootfs,file=" + c.imagePath() + ",readonly=on",
                    "-device", "virtio-blk-pci,drive=rootfs,id=blk-0,bus=" + ROOT_BUS + ",addr=" + slots.next()));
        }
        slots.next(); // Kuasar's vhost-vsock-pci
        a.addAll(List.of(
                "-chardev", "socket,id=virtio-fs-" + id + ",path=" + dir.resolve(VIRTIOFS_SOCKET) + ",server,nowait",
                "-device", "vhost-user-fs-pci,id=vhost-user-fs-" + id + ",chardev=virtio-fs-" + id + ",tag="
                        + SHARE_TAG + ",bus=" + ROOT_BUS + ",addr=" + slots.next()));
        for (int i = 1; i <= ROOT_PORTS; i++) {
            String slot = slots.next();
            a.addAll(List.of("-device", "pcie-root-port,id=pcie." + i + ",port=" + slot + ",bus=" + ROOT_BUS
                    + ",addr=" + slot));
        }
        for (VmSpec.Nic n : spec.nics()) {
            a.addAll(List.of("-netdev", "tap,id=" + n.id() + ",ifname=" + n.tap(),
                    "-device", "virtio-net-pci,netdev=" + n.id() + ",id=virtio-net-" + n.id() + ",bus=" + ROOT_BUS
                            + ",addr=" + slots.next() + ",mac=" + n.mac() + ",mq=off"));
        }
        return a;
    }

    /**
     * Kuasar's guest command line: its defaults, then {@code kernel_params}, the rootfs disk's root when there is an
     * image, and {@code debug task.debug} with {@code debug}.
     */
    static String kernelParams(StratoVirtConfig c) {
        String p = c.kernelParams().isEmpty() ? DEFAULT_KERNEL_PARAMS : DEFAULT_KERNEL_PARAMS + " " + c.kernelParams();
        if (!c.imagePath().isEmpty()) {
            p += ROOTFS_KERNEL_PARAMS;
        }
        return c.debug() ? p + " debug task.debug" : p;
    }

    static String uuid(String sandboxId) {
        return UUID.nameUUIDFromBytes(sandboxId.getBytes(StandardCharsets.UTF_8)).toString();
    }

    /** The slots of pcie.0, handed out in order as Kuasar's {@code attach_to_bus} does. */
    private static final class Slots {
        private final String sandboxId;
        private int next = 1;

        Slots(String sandboxId) {
            this.sandboxId = sandboxId;
        }

        /** The next slot as Kuasar writes it ({@code {:#02x}}: 0x5, 0x1f). */
        String next() {
            if (next >= ROOT_BUS_SLOTS) {
                throw Status.RESOURCE_EXHAUSTED.withDescription("sandbox " + sandboxId + ": the " + ROOT_BUS_SLOTS
                        + " slots of StratoVirt's pcie.0 are full (too many network interfaces)").asRuntimeException();
            }
            return "0x" + Integer.toHexString(next++);
        }
    }
}
