package io.kuasar.vmm.task;

import java.util.Arrays;

/**
 * The guest agent's settings, read from the kernel command line as Kuasar's vmm-task reads them:
 * {@code task.sharefs_type=<9p|virtiofs>} (default 9p), {@code task.log_level=<level>} (default info),
 * {@code task.debug} (flag), {@code task.debug_shell=<path>} (default /bin/sh here; Kuasar's is /bin/bash, which
 * the image does not carry), {@code task.enable_tracing} (flag), and ours: {@code task.agent_port=<name>} (the
 * virtio-serial port's name, default {@value #DEFAULT_AGENT_PORT}), {@code task.agent_vsock=<port>} (serve on that
 * vsock port instead, as Kuasar's agent does on 1024) and {@code task.template} (flag: this boot makes a VM template,
 * saved once and restored for each pod, so the share is mounted only when a pod's SetupSandbox arrives).
 */
public record TaskConfig(String sharefsType, String logLevel, boolean debug, String debugShell, boolean tracing,
                         String agentPort, int agentVsockPort, boolean template) {
    public static final String DEFAULT_AGENT_PORT = "agent.channel.0";

    public static TaskConfig parse(String cmdline) {
        String sharefs = "9p";
        String level = "info";
        boolean debug = false;
        String shell = "/bin/sh";
        boolean tracing = false;
        String port = DEFAULT_AGENT_PORT;
        int vsock = 0;
        boolean template = false;
        for (String token : Arrays.stream(cmdline.trim().split("\\s+")).filter(t -> t.startsWith("task.")).toList()) {
            int eq = token.indexOf('=');
            String key = eq < 0 ? token : token.substring(0, eq);
            String value = eq < 0 ? "" : token.substring(eq + 1);
            switch (key) {
                case "task.sharefs_type" -> sharefs = value;
                case "task.log_level" -> level = value;
                case "task.debug" -> debug = eq < 0 || Boolean.parseBoolean(value);
                case "task.debug_shell" -> shell = value;
                case "task.enable_tracing" -> tracing = eq < 0 || Boolean.parseBoolean(value);
                case "task.agent_port" -> port = value;
                case "task.agent_vsock" -> vsock = Integer.parseInt(value);
                case "task.template" -> template = eq < 0 || Boolean.parseBoolean(value);
                default -> {
                    // unknown task.* keys are ignored, as Kuasar does
                }
            }
        }
        if (!sharefs.equals("9p") && !sharefs.equals("virtiofs")) {
            throw new IllegalArgumentException("task.sharefs_type=" + sharefs + " is not supported (9p or virtiofs)");
        }
        return new TaskConfig(sharefs, level, debug, shell, tracing, port, vsock, template);
    }
}
