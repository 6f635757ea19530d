package io.kuasar.vmm.config;

import com.fasterxml.jackson.databind.JsonNode;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;

/**
 * The {@code [hypervisor]} table of Kuasar's {@code config_qemu_x86_64.toml}, with Kuasar's keys and meanings
 * (unknown keys are ignored, as Kuasar does), plus what this implementation adds:
 * {@code accelerator} ({@code kvm}, {@code tcg} or {@code auto}: TCG when the CPU has no vmx/svm, as on machines
 * whose /dev/kvm is PVM), {@code agent_timeout_secs} (how long a booting guest has to answer),
 * {@code console_log} (keep the guest console in the sandbox directory) and {@code vhost_user_vsock_path}: with
 * {@code use_vsock = true} the guest's vsock is a vhost-user-vsock device served by that daemon (sid's
 * vhost-device-vsock, one per VM), since these machines have no vhost-vsock; the agent is on vsock port 1024, as
 * Kuasar's; {@code enable_template} and {@code template_path} (Kata's names): pods start from a saved VM template
 * (see {@code io.kuasar.vmm.qemu.QemuTemplate}), kept under {@code template_path} (default
 * {@code <--dir>/template}); {@code [hypervisor.task] debug} (Kuasar's key) enables the guest's debug console. A bad value is rejected at start with the key and the reason.
 */
public record QemuConfig(String qemuPath, String machineType, String accelerator, String cpuModel,
                         String cpuFeatures, String firmwarePath, String kernelPath, String initrdPath,
                         String kernelParams, int vcpus, int memoryInMb, String shareFs, String entropySource,
                         String virtio9pMultidevs, boolean useVsock, String vhostUserVsockPath,
                         int agentTimeoutSecs, boolean debug, boolean freePageReporting, Virtiofsd virtiofsd,
                         boolean enableTemplate, String templatePath, boolean taskDebug) {
    public static final String SHARE_9P = "Virtio9P";
    public static final String SHARE_VIRTIOFS = "VirtioFS";

    /** Reads {@code [hypervisor]}; {@code source} names the file in error messages. */
    public static QemuConfig from(JsonNode h, String source) {
        if (h == null || h.isMissingNode()) {
            h = com.fasterxml.jackson.databind.node.MissingNode.getInstance();
        }
        QemuConfig c = new QemuConfig(
                text(h, "qemu_path", "/usr/bin/qemu-system-x86_64"),
                text(h, "machine_type", "pc"),
                text(h, "accelerator", "auto").toLowerCase(Locale.ROOT),
                text(h, "cpu_model", "host"),
                text(h, "cpu_features", ""),
                text(h, "firmware_path", ""),
                text(h, "kernel_path", "/var/lib/kuasar/vmlinux.bin"),
                text(h, "initrd_path", "/var/lib/kuasar/kuasar.initrd"),
                text(h, "kernel_params", ""),
                integer(h, "vcpus", 1, source),
                integer(h, "memory_in_mb", 512, source),
                text(h, "share_fs", SHARE_9P),
                text(h, "entropy_source", "/dev/urandom"),
                text(h, "virtio_9p_multidevs", "remap"),
                bool(h, "use_vsock", false, source),
                text(h, "vhost_user_vsock_path", "/var/lib/kuasar/vhost-device-vsock/vhost-device-vsock"),
                integer(h, "agent_timeout_secs", 45, source),
                bool(h, "debug", false, source),
                bool(h, "free_page_reporting", true, source),
                Virtiofsd.from(h.path("virtiofsd"), source),
                bool(h, "enable_template", false, source),
                text(h, "template_path", ""),
                bool(h.path("task"), "debug", false, source));
        c.validate(source);
        return c;
    }

    private void validate(String source) {
        if (!machineType.equals("pc") && !machineType.equals("q35")) {
            throw bad(source, "machine_type", machineType, "only \"pc\" and \"q35\" are supported on x86_64");
        }
        if (!accelerator.equals("kvm") && !accelerator.equals("tcg") && !accelerator.equals("auto")) {
            throw bad(source, "accelerator", accelerator, "use kvm, tcg or auto");
        }
        if (vcpus < 1 || vcpus > 255) {
            throw bad(source, "vcpus", Integer.toString(vcpus), "must be between 1 and 255");
        }
        if (memoryInMb < 384) {
            // the kernel unpacks the initramfs (JRE, agent) into at most half of the guest's RAM
            throw bad(source, "memory_in_mb", Integer.toString(memoryInMb), "must be at least 384 (the guest "
                    + "image unpacks into RAM)");
        }
        if (!shareFs.equals(SHARE_9P) && !shareFs.equals(SHARE_VIRTIOFS)) {
            throw bad(source, "share_fs", shareFs, "use Virtio9P or VirtioFS");
        }
        if (agentTimeoutSecs < 1) {
            throw bad(source, "agent_timeout_secs", Integer.toString(agentTimeoutSecs), "must be positive");
        }
        if (enableTemplate && (virtiofs() || useVsock)) {
            throw bad(source, "enable_template", "true", "a VM template needs share_fs = \"Virtio9P\" and use_vsock = "
                    + "false: QEMU cannot migrate vhost-user devices (virtiofs, vhost-user-vsock)");
        }
        if (cpuModel.isEmpty()) {
            throw bad(source, "cpu_model", "", "must not be empty (Kuasar's default is \"host\")");
        }
    }

    /**
     * Kuasar's debug console in the guest ({@code task.debug}): {@code [hypervisor.task] debug = true} (Kuasar's key),
     * or {@code task.debug} in {@code kernel_params}. The guest then serves a root shell to kuasar-ctl exec: on vsock
     * port 1025 with {@code use_vsock}, else on a second virtio-serial port whose host end is the sandbox's
     * {@code debug.sock} (mode 0600).
     */
    public boolean debugConsole() {
        return taskDebug || java.util.Arrays.asList(kernelParams.trim().split("\\s+")).contains("task.debug");
    }

    public boolean virtiofs() {
        return shareFs.equals(SHARE_VIRTIOFS);
    }

    /**
     * Kuasar's {@code [hypervisor.virtiofsd]}: the daemon that serves the shared directory to a VirtioFS guest, one
     * per VM. The default path is what {@code make vmm-image} installs (trixie's virtiofsd, run through trixie's
     * loader); {@code syslog} is accepted and ignored: its log goes to the sandbox's {@code virtiofsd.log}.
     */
    public record Virtiofsd(String path, String logLevel, String cache, int threadPoolSize) {
        static Virtiofsd from(JsonNode v, String source) {
            Virtiofsd d = new Virtiofsd(text(v, "path", "/var/lib/kuasar/virtiofsd/virtiofsd"),
                    text(v, "log_level", "info"), text(v, "cache", "never"), integer(v, "thread_pool_size", 4, source));
            if (!List.of("never", "metadata", "auto", "always").contains(d.cache())) {
                throw bad(source, "virtiofsd.cache", d.cache(), "use never, metadata, auto or always");
            }
            if (d.threadPoolSize() < 0) {
                throw bad(source, "virtiofsd.thread_pool_size", Integer.toString(d.threadPoolSize()),
                        "must not be negative");
            }
            return d;
        }
    }

    /** The accelerator to use: {@code auto} means KVM only when the CPU has hardware virtualisation. */
    public String effectiveAccelerator() {
        if (!accelerator.equals("auto")) {
            return accelerator;
        }
        return hasHardwareVirtualisation() && Files.exists(Path.of("/dev/kvm")) ? "kvm" : "tcg";
    }

    static boolean hasHardwareVirtualisation() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/cpuinfo"))) {
                if (line.startsWith("flags")) {
                    return line.contains(" vmx") || line.contains(" svm");
                }
            }
        } catch (java.io.IOException e) {
            return false;
        }
        return false;
    }

    static String text(JsonNode h, String key, String dflt) {
        JsonNode v = h.path(key);
        return v.isMissingNode() || v.isNull() ? dflt : v.asText();
    }

    static int integer(JsonNode h, String key, int dflt, String source) {
        JsonNode v = h.path(key);
        if (v.isMissingNode() || v.isNull()) {
            return dflt;
        }
        if (!v.isIntegralNumber()) {
            throw bad(source, key, v.asText(), "must be an integer");
        }
        return v.asInt();
    }

    static boolean bool(JsonNode h, String key, boolean dflt, String source) {
        JsonNode v = h.path(key);
        if (v.isMissingNode() || v.isNull()) {
            return dflt;
        }
        if (!v.isBoolean()) {
            throw bad(source, key, v.asText(), "must be true or false");
        }
        return v.asBoolean();
    }

    static IllegalArgumentException bad(String source, String key, String value, String why) {
        return new IllegalArgumentException(source + ": [hypervisor]." + key + " = \"" + value + "\": " + why);
    }
}
