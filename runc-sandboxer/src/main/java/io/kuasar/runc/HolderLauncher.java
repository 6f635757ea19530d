package io.kuasar.runc;

import io.grpc.Status;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Starts a pod's namespace holder through the {@code kuasar-holder} helper, which prints the holder's pid and
 * exits; the holder is then re-parented to this daemon (a child subreaper).
 */
public final class HolderLauncher {
    private static final java.time.Duration LAUNCH_TIMEOUT = java.time.Duration.ofSeconds(10);
    private final Path helper;

    public HolderLauncher(Path helper) {
        this.helper = helper;
    }

    public Path helper() {
        return helper;
    }

    /** A pod with its own IPC namespace and no sysctls (tests and callers that need nothing else). */
    public int launch(String sandboxId, String netnsPath, String hostname, boolean newPidNamespace)
            throws IOException {
        return launch(sandboxId, netnsPath, hostname, newPidNamespace, true, List.of(), null);
    }

    /**
     * {@code hostname} null keeps the host's UTS namespace (host-network pods, as containerd's pause container
     * does); otherwise the pod gets its own, named so. {@code newIpcNamespace} false keeps the host's (HostIpc
     * pods). {@code sysctls} are written inside the pod's namespaces before the holder's pid is returned. The
     * helper gets 10 s, or less if the caller's {@code deadline} (null: none) comes first.
     */
    public int launch(String sandboxId, String netnsPath, String hostname, boolean newPidNamespace,
               boolean newIpcNamespace, List<Sysctls.Setting> sysctls, java.time.Instant deadline)
            throws IOException {
        long waitMillis = LAUNCH_TIMEOUT.toMillis();
        if (deadline != null) {
            waitMillis = Math.min(waitMillis, java.time.Duration.between(java.time.Instant.now(), deadline).toMillis());
            if (waitMillis <= 0) {
                throw Status.DEADLINE_EXCEEDED.withDescription("sandbox " + sandboxId
                        + ": the Start call's deadline passed before the namespace holder was started")
                        .asRuntimeException();
            }
        }
        if (!Files.isExecutable(helper)) {
            throw Status.FAILED_PRECONDITION.withDescription("namespace holder helper " + helper
                    + " is missing or not executable; reinstall runc-sandboxer (make install)").asRuntimeException();
        }
        List<String> cmd = new ArrayList<>(List.of(helper.toString()));
        if (netnsPath != null && !netnsPath.isEmpty()) {
            cmd.add("--netns");
            cmd.add(netnsPath);
        }
        if (hostname != null) {
            cmd.add("--hostname");
            cmd.add(hostname);
        }
        if (newPidNamespace) {
            cmd.add("--pid");
        }
        if (!newIpcNamespace) {
            cmd.add("--host-ipc");
        }
        for (Sysctls.Setting s : sysctls) {
            cmd.add("--sysctl");
            cmd.add(s.argument());
        }
        cmd.add(sandboxId);
        Process p = new ProcessBuilder(cmd).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                .start();
        try {
            if (!p.waitFor(waitMillis, TimeUnit.MILLISECONDS)) {
                io.kuasar.sandbox.process.ProcessReaper.killTree(p, java.time.Duration.ofSeconds(5));
                throw Status.DEADLINE_EXCEEDED.withDescription("sandbox " + sandboxId
                        + ": namespace holder did not start within " + waitMillis + " ms").asRuntimeException();
            }
        } catch (InterruptedException e) {
            // cancelled (the sandbox is being shut down): the holder may already be forked below the launcher
            io.kuasar.sandbox.process.ProcessReaper.killTree(p, java.time.Duration.ofSeconds(5));
            throw Status.CANCELLED.withDescription("sandbox " + sandboxId + ": start cancelled").asRuntimeException();
        }
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
        String err = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8).trim();
        if (p.exitValue() != 0 || out.isEmpty()) {
            throw Status.INTERNAL.withDescription("sandbox " + sandboxId + ": namespace holder failed: "
                    + (err.isEmpty() ? "exit status " + p.exitValue() : err)).asRuntimeException();
        }
        return Integer.parseInt(out);
    }
}
