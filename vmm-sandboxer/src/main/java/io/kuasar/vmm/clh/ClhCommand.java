package io.kuasar.vmm.clh;

import io.kuasar.vmm.config.ClhConfig;
import io.kuasar.vmm.hypervisor.VmSpec;

import java.util.ArrayList;
import java.util.List;

/**
 * Cloud Hypervisor's command line as Kuasar's vmm-sandboxer builds it ({@code cloud_hypervisor/mod.rs}): the API
 * socket, CPUs and shared memory (virtio-fs needs it), the kernel and its command line, the rootfs image as pmem or an
 * initramfs, an entropy source, the agent's hybrid vsock (guest CID 3), the console to a file, the pod's share over
 * virtio-fs, and one virtio-net per tap. Two differences from Kuasar, both deliberate: the taps are named
 * ({@code tap=}; the VMM runs in the pod's netns, where they exist) instead of passed as inherited fds, and the
 * console goes to the sandbox directory instead of {@code /tmp/<id>-task.log}.
 */
public final class ClhCommand {
    public static final String API_SOCKET = "api.sock";
    public static final String VSOCK_SOCKET = "task.vsock";
    public static final String VIRTIOFS_SOCKET = "virtiofs.sock";
    public static final String CONSOLE_LOG = "console.log";
    /** The guest's vsock CID (Kuasar's) and the port vmm-task listens on. */
    public static final int GUEST_CID = 3;
    public static final int AGENT_PORT = 1024;
    public static final String SHARE_TAG = "kuasar";

    private ClhCommand() {
    }

    public static List<String> build(ClhConfig c, VmSpec spec) {
        List<String> cmd = new ArrayList<>(List.of(c.path(),
                "--api-socket", spec.dir().resolve(API_SOCKET).toString(),
                "--cpus", "boot=" + spec.vcpus() + ",affinity=,features=",
                "--memory", "size=" + (long) spec.memoryInMb() * 1024 * 1024 + ",shared=on,hugepages="
                        + (c.hugepages() ? "on" : "off"),
                "--kernel", c.kernelPath(),
                "--cmdline", kernelCmdline(c)));
        if (!c.initrdPath().isEmpty()) {
            cmd.addAll(List.of("--initramfs", c.initrdPath()));
        }
        if (!c.imagePath().isEmpty()) {
            cmd.addAll(List.of("--pmem", "id=rootfs,file=" + c.imagePath() + ",discard_writes=on"));
        }
        cmd.addAll(List.of("--rng", "src=" + c.entropySource(),
                "--vsock", "cid=" + GUEST_CID + ",socket=" + spec.dir().resolve(VSOCK_SOCKET) + ",id=vsock",
                "--console", "file=" + spec.dir().resolve(CONSOLE_LOG),
                "--fs", "tag=" + SHARE_TAG + ",socket=" + spec.dir().resolve(VIRTIOFS_SOCKET) + ",id=fs"));
        for (VmSpec.Nic n : spec.nics()) {
            cmd.addAll(List.of("--net", "id=" + n.id() + ",tap=" + n.tap() + ",mac=" + n.mac()));
        }
        if (c.debug()) {
            cmd.add("-vv");
        }
        return cmd;
    }

    /**
     * Kuasar's guest command line: the pmem rootfs (when there is an image), virtio-fs for the share and the agent on
     * vsock port 1024, then
     * {@code kernel_params}, {@code task.log_level=debug} with {@code [hypervisor.task].debug}, and
     * {@code task.enable_tracing=<bool>} (always appended, as Kuasar does).
     */
    static String kernelCmdline(ClhConfig c) {
        StringBuilder s = new StringBuilder("console=hvc0");
        if (!c.imagePath().isEmpty()) {
            s.append(" root=/dev/pmem0p1 rootflags=data=ordered,errors=remount-ro ro rootfstype=ext4");
        }
        // ours: this agent listens on virtio-serial unless told the vsock port (Kuasar's always uses vsock 1024)
        s.append(" task.sharefs_type=virtiofs task.agent_vsock=").append(AGENT_PORT);
        if (!c.kernelParams().isEmpty()) {
            s.append(' ').append(c.kernelParams());
        }
        if (c.taskDebug()) {
            s.append(" task.log_level=debug");
        }
        return s.append(" task.enable_tracing=").append(c.taskEnableTracing()).toString();
    }
}
