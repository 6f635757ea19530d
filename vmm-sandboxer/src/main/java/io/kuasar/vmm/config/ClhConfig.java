package io.kuasar.vmm.config;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.MissingNode;

/**
 * The {@code [hypervisor]} table of Kuasar's {@code config_clh.toml} (Cloud Hypervisor), with Kuasar's keys and
 * meanings: {@code path}, {@code vcpus}, {@code memory_in_mb}, {@code kernel_path}, {@code image_path} (a rootfs
 * image exposed as pmem), {@code initrd_path}, {@code kernel_params}, {@code hugepages}, {@code entropy_source},
 * {@code debug}, {@code [hypervisor.task]} ({@code debug}, {@code enable_tracing}) and {@code [hypervisor.virtiofsd]}.
 * Added as for QEMU: {@code agent_timeout_secs}. Cloud Hypervisor always shares through virtio-fs.
 */
public record ClhConfig(String path, int vcpus, int memoryInMb, String kernelPath, String imagePath,
                        String initrdPath, String kernelParams, boolean hugepages, String entropySource,
                        boolean debug, boolean taskDebug, boolean taskEnableTracing, int agentTimeoutSecs,
                        QemuConfig.Virtiofsd virtiofsd) {

    /** Reads {@code [hypervisor]}; {@code source} names the file in error messages. */
    public static ClhConfig from(JsonNode h, String source) {
        if (h == null || h.isMissingNode()) {
            h = MissingNode.getInstance();
        }
        JsonNode task = h.path("task");
        ClhConfig c = new ClhConfig(
                QemuConfig.text(h, "path", "/usr/local/bin/cloud-hypervisor"),
                QemuConfig.integer(h, "vcpus", 1, source),
                QemuConfig.integer(h, "memory_in_mb", 1024, source),
                QemuConfig.text(h, "kernel_path", "/var/lib/kuasar/vmlinux.bin"),
                QemuConfig.text(h, "image_path", ""),
                QemuConfig.text(h, "initrd_path", ""),
                QemuConfig.text(h, "kernel_params", ""),
                QemuConfig.bool(h, "hugepages", false, source),
                QemuConfig.text(h, "entropy_source", "/dev/urandom"),
                QemuConfig.bool(h, "debug", false, source),
                QemuConfig.bool(task, "debug", false, source),
                QemuConfig.bool(task, "enable_tracing", false, source),
                QemuConfig.integer(h, "agent_timeout_secs", 45, source),
                QemuConfig.Virtiofsd.from(h.path("virtiofsd"), source));
        if (c.vcpus() < 1 || c.vcpus() > 255) {
            throw QemuConfig.bad(source, "vcpus", Integer.toString(c.vcpus()), "must be between 1 and 255");
        }
        if (c.memoryInMb() < 128) {
            throw QemuConfig.bad(source, "memory_in_mb", Integer.toString(c.memoryInMb()), "must be at least 128");
        }
        if (c.imagePath().isEmpty() && c.initrdPath().isEmpty()) {
            throw QemuConfig.bad(source, "image_path", "", "set image_path (a rootfs image) or initrd_path");
        }
        if (c.agentTimeoutSecs() < 1) {
            throw QemuConfig.bad(source, "agent_timeout_secs", Integer.toString(c.agentTimeoutSecs()),
                    "must be positive");
        }
        return c;
    }

    /** Whether a config file's {@code [hypervisor]} table is Cloud Hypervisor's (Kuasar's key {@code path}). */
    public static boolean isClh(JsonNode h) {
        return h != null && h.has("path") && !h.has("qemu_path")
                && h.path("path").asText().contains("cloud-hypervisor");
    }
}
