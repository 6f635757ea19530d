package io.kuasar.vmm.hypervisor;

import io.grpc.Status;
import io.kuasar.sandbox.sys.Linux;
import io.kuasar.vmm.config.QemuConfig;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;

/** What launching a VM takes whatever the hypervisor: its sockets, its virtiofsd, waiting for a socket to appear. */
public final class VmmProcesses {
    private static final Logger LOG = LoggerFactory.getLogger(VmmProcesses.class);
    /** The longest a Unix socket path can be (sun_path). */
    public static final int MAX_SOCKET_PATH = 107;

    private VmmProcesses() {
    }

    /** Removes stale sockets of an earlier run; a path too long for sun_path is an error naming the fix. */
    public static void freshSockets(VmSpec spec, List<String> names) throws IOException {
        for (String s : names) {
            Path p = spec.dir().resolve(s);
            if (p.toString().length() > MAX_SOCKET_PATH) {
                throw Status.FAILED_PRECONDITION.withDescription("sandbox " + spec.sandboxId() + ": socket path " + p
                        + " is longer than " + MAX_SOCKET_PATH + " bytes; use a shorter --dir").asRuntimeException();
            }
            Files.deleteIfExists(p);
        }
    }

    /**
     * One virtiofsd per VM, serving the shared directory (it exits when its VM disconnects). It runs in a mount
     * namespace of its own made at start, so the shared directory is first made a shared mount: the containers'
     * rootfs and volumes, bind-mounted there later, then propagate into virtiofsd's view.
     */
    public static Process startVirtiofsd(VmSpec spec, QemuConfig.Virtiofsd v, Path sock, Instant deadline)
            throws IOException {
        Path shared = spec.sharedDir();
        if (!isMountPoint(shared)) {
            Linux.mount(shared.toString(), shared.toString(), null, Linux.MS_BIND, null);
        }
        Linux.mount(null, shared.toString(), null, Linux.MS_SHARED, null);
        Files.deleteIfExists(sock);
        List<String> cmd = new ArrayList<>(List.of(v.path(), "--socket-path=" + sock, "--shared-dir=" + shared,
                "--cache=" + v.cache(), "--log-level=" + v.logLevel(), "--announce-submounts"));
        if (v.threadPoolSize() > 0) {
            cmd.add("--thread-pool-size=" + v.threadPoolSize());
        }
        Path log = spec.dir().resolve("virtiofsd.log");
        LOG.debug("sandbox {}: {}", spec.sandboxId(), String.join(" ", cmd));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile())
                .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null"))).start();
        awaitSocket(spec.sandboxId(), "virtiofsd", p, sock, log, deadline);
        return p;
    }

    /** Waits until a starting process has made its socket; kills it if it exits first or the deadline passes. */
    public static void awaitSocket(String sandboxId, String what, Process p, Path sock, Path log, Instant deadline) {
        while (!Files.exists(sock)) {
            boolean alive = p.isAlive();
            if (!alive || Instant.now().isAfter(deadline)) {
                p.destroyForcibly();
                throw Status.INTERNAL.withDescription("sandbox " + sandboxId + ": " + what + " "
                        + (alive ? "did not listen before the deadline" : "exited at start") + ": " + tail(log))
                        .asRuntimeException();
            }
            try {
                Thread.sleep(5);
            } catch (InterruptedException e) {
                p.destroyForcibly();
                Thread.currentThread().interrupt();
                throw Status.CANCELLED.withDescription("sandbox " + sandboxId + ": start cancelled")
                        .asRuntimeException();
            }
        }
    }

    public static boolean isMountPoint(Path dir) throws IOException {
        String target = dir.toAbsolutePath().normalize().toString();
        for (String line : Files.readAllLines(Path.of("/proc/self/mountinfo"))) {
            String[] f = line.split(" ");
            if (f.length > 4 && f[4].replace("\\040", " ").equals(target)) {
                return true;
            }
        }
        return false;
    }

    public static String tail(Path log) {
        try {
            List<String> lines = Files.readAllLines(log);
            return String.join(" | ", lines.subList(Math.max(0, lines.size() - 5), lines.size()));
        } catch (IOException e) {
            return "(no output: " + e.getMessage() + ")";
        }
    }

    /** What asks a VMM to quit (QMP {@code quit}, Cloud Hypervisor's {@code vmm.shutdown}). */
    @FunctionalInterface
    public interface Quit {
        void quit() throws IOException;
    }

    /**
     * A process recorded in a sandbox's facts by an earlier run of the sandboxer, if it still runs (same pid and
     * start time); null if it is gone or was never recorded.
     */
    public static ProcessHandle find(java.util.Map<String, String> facts, String pidFact, String startFact) {
        String pid = facts.get(pidFact);
        String start = facts.get(startFact);
        if (pid == null || start == null) {
            return null;
        }
        try {
            io.kuasar.sandbox.process.ProcessRef ref = io.kuasar.sandbox.process.ProcessRef.parse(pid, start);
            return ref.isAlive() ? ProcessHandle.of(ref.pid()).orElse(null) : null;
        } catch (RuntimeException e) {
            LOG.warn("unreadable process facts {}={} {}={}", pidFact, pid, startFact, start);
            return null;
        }
    }

    /**
     * Stops a VMM: asks it to quit and waits up to {@code grace} (none: at once), then SIGKILL; then its helpers
     * (virtiofsd ends with its VM by itself, vhost-device-vsock does not): SIGTERM, and SIGKILL after 2 s.
     */
    public static void stop(String sandboxId, String what, ProcessHandle vmm,
                            java.util.concurrent.CompletableFuture<io.kuasar.sandbox.process.ExitStatus> exit,
                            java.time.Duration grace, Quit quit, List<ProcessHandle> helpers) {
        if (!exit.isDone() && !grace.isZero()) {
            try {
                quit.quit();
            } catch (IOException e) {
                LOG.debug("sandbox {}: asking {} to quit failed: {}", sandboxId, what, e.getMessage());
            }
            try {
                exit.get(grace.toMillis(), java.util.concurrent.TimeUnit.MILLISECONDS);
            } catch (Exception e) {
                LOG.warn("sandbox {}: {} {} did not quit within {}; killing it", sandboxId, what, vmm.pid(), grace);
            }
        }
        if (!exit.isDone()) {
            vmm.destroyForcibly();
            try {
                exit.get(10, java.util.concurrent.TimeUnit.SECONDS);
            } catch (Exception e) {
                LOG.error("sandbox {}: {} {} survived SIGKILL for 10 s", sandboxId, what, vmm.pid());
            }
        }
        for (ProcessHandle h : helpers) {
            if (h == null) {
                continue;
            }
            h.destroy();
            try {
                h.onExit().get(2, java.util.concurrent.TimeUnit.SECONDS);
            } catch (java.util.concurrent.TimeoutException e) {
                h.destroyForcibly();
                h.onExit().completeOnTimeout(h, 5, java.util.concurrent.TimeUnit.SECONDS).join();
            } catch (java.util.concurrent.ExecutionException e) {
                LOG.debug("sandbox {}: waiting for helper {}: {}", sandboxId, h.pid(), e.getMessage());
            } catch (InterruptedException e) {
                h.destroyForcibly();
                Thread.currentThread().interrupt();
            }
        }
    }
}
