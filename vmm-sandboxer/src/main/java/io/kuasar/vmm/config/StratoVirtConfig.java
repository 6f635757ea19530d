package io.kuasar.vmm.config;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.MissingNode;

import java.nio.file.Path;
import java.util.List;

/**
 * The {@code [hypervisor]} table of Kuasar's {@code config_stratovirt_x86_64.toml}, with Kuasar's keys and meanings
 * ({@code stratovirt/config.rs}): {@code path}, {@code machine_type} (e.g. {@code q35,mem-share=on}: StratoVirt's
 * {@code -machine}), {@code block_device_driver}, the common keys {@code vcpus}, {@code memory_in_mb},
 * {@code kernel_path}, {@code image_path} or {@code initrd_path} (exactly one), {@code kernel_params},
 * {@code firmware} (a pflash drive), {@code debug}, {@code enable_mem_prealloc}, and
 * {@code [hypervisor.virtiofsd_conf]}.{@code path}: StratoVirt's own {@code vhost_user_fs} daemon, or (ours)
 * virtiofsd, which replaced it in StratoVirt 2.4. Added as for QEMU: {@code agent_timeout_secs}.
 */
public record StratoVirtConfig(String path, String machineType, String blockDeviceDriver, int vcpus,
                               int memoryInMb, String kernelPath, String imagePath, String initrdPath,
                               String kernelParams, String firmware, boolean debug, boolean enableMemPrealloc,
                               int agentTimeoutSecs, String virtiofsdPath) {
    /** Machine types with a PCIe root bus: the devices and hot-plug root ports Kuasar lays out need one. */
    static final List<String> MACHINES = List.of("q35", "virt");
    static final List<String> BLOCK_DRIVERS = List.of("virtio-blk", "virtio-scsi", "virtio-mmio");

    /** Reads {@code [hypervisor]}; {@code source} names the file in error messages. */
    public static StratoVirtConfig from(JsonNode h, String source) {
        if (h == null || h.isMissingNode()) {
            h = MissingNode.getInstance();
        }
        StratoVirtConfig c = new StratoVirtConfig(
                QemuConfig.text(h, "path", "/usr/bin/stratovirt"),
                QemuConfig.text(h, "machine_type", "q35,mem-share=on"),
                QemuConfig.text(h, "block_device_driver", "virtio-blk"),
                QemuConfig.integer(h, "vcpus", 1, source),
                QemuConfig.integer(h, "memory_in_mb", 1024, source),
                QemuConfig.text(h, "kernel_path", "/var/lib/kuasar/vmlinux.bin"),
                QemuConfig.text(h, "image_path", ""),
                QemuConfig.text(h, "initrd_path", ""),
                QemuConfig.text(h, "kernel_params", ""),
                QemuConfig.text(h, "firmware", ""),
                QemuConfig.bool(h, "debug", false, source),
                QemuConfig.bool(h, "enable_mem_prealloc", false, source),
                QemuConfig.integer(h, "agent_timeout_secs", 45, source),
                QemuConfig.text(h.path("virtiofsd_conf"), "path", "/usr/bin/vhost_user_fs"));
        c.validate(source);
        return c;
    }

    private void validate(String source) {
        if (path.isEmpty()) {
            throw QemuConfig.bad(source, "path", "", "must name the stratovirt binary");
        }
        if (!MACHINES.contains(machine())) {
            throw QemuConfig.bad(source, "machine_type", machineType, "use q35 (x86_64) or virt (aarch64), with "
                    + "options after a comma (Kuasar's: \"q35,mem-share=on\"); microvm has no PCIe bus for the "
                    + "agent's port and the hot-plug root ports");
        }
        if (!BLOCK_DRIVERS.contains(blockDeviceDriver)) {
            throw QemuConfig.bad(source, "block_device_driver", blockDeviceDriver,
                    "use virtio-blk, virtio-scsi or virtio-mmio");
        }
        if (vcpus < 1 || vcpus > 255) {
            throw QemuConfig.bad(source, "vcpus", Integer.toString(vcpus), "must be between 1 and 255");
        }
        // an initramfs guest unpacks into RAM: the image make vmm-image builds needs this much (as with QEMU)
        int minMemory = initrdPath.isEmpty() ? 128 : 384;
        if (memoryInMb < minMemory) {
            throw QemuConfig.bad(source, "memory_in_mb", Integer.toString(memoryInMb), "must be at least "
                    + minMemory + (initrdPath.isEmpty() ? "" : " (the initrd unpacks into RAM)"));
        }
        if (!imagePath.isEmpty() && !initrdPath.isEmpty()) {
            throw QemuConfig.bad(source, "image_path", imagePath, "set image_path or initrd_path, not both "
                    + "(initrd_path = \"" + initrdPath + "\")");
        }
        if (imagePath.isEmpty() && initrdPath.isEmpty()) {
            throw QemuConfig.bad(source, "image_path", "", "set image_path (a rootfs image) or initrd_path");
        }
        if (agentTimeoutSecs < 1) {
            throw QemuConfig.bad(source, "agent_timeout_secs", Integer.toString(agentTimeoutSecs), "must be positive");
        }
        if (virtiofsdPath.isEmpty()) {
            throw QemuConfig.bad(source, "virtiofsd_conf.path", "", "must name vhost_user_fs or virtiofsd");
        }
    }

    /** The machine type without its options: {@code q35} of {@code q35,mem-share=on}. */
    public String machine() {
        return machineType.split(",", 2)[0];
    }

    /** Whether the virtio-fs daemon is virtiofsd (its own flags) rather than StratoVirt's vhost_user_fs. */
    public boolean usesVirtiofsd() {
        return String.valueOf(Path.of(virtiofsdPath).getFileName()).equals("virtiofsd");
    }

    /** Whether this CPU has hardware virtualisation, which StratoVirt (KVM only, no TCG) needs. */
    public static boolean hardwareVirtualisation() {
        return QemuConfig.hasHardwareVirtualisation();
    }

    /**
     * Whether a config file's {@code [hypervisor]} table is StratoVirt's: its {@code path} names {@code stratovirt},
     * or it has {@code virtiofsd_conf} (a table only StratoVirt's config has), and no {@code qemu_path}.
     */
    public static boolean isStratoVirt(JsonNode h) {
        return h != null && !h.has("qemu_path") && (h.has("virtiofsd_conf")
                || h.path("path").asText().contains("stratovirt"));
    }
}
