package io.kuasar.sandbox.ttrpc;

import io.kuasar.sandbox.process.ProcessReaper;
import io.kuasar.sandbox.sys.Linux;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * The kuasar-ttrpc-proxy in front of a daemon's Task API (set up by {@code SandboxerDaemon} for every sandboxer that
 * serves one, so each gets kill -9 survival by construction). containerd keeps one ttrpc connection per container and never
 * re-dials it; the proxy owns those connections, outlives this daemon, and replays the idempotent calls that were in
 * flight when the daemon died (Wait, State, Stats, Pids, Connect: every running container has a Wait pending), so
 * containerd sees nothing of a restart. Any other call in flight then (Create, Kill, ...; or one whose deadline
 * passed) is answered UNAVAILABLE by the proxy: it may or may not have run here. See docs/architecture.md.
 */
public final class TaskProxy {
    private static final Logger LOG = LoggerFactory.getLogger(TaskProxy.class);
    static final String COMM = "kuasar-ttrpc-px";

    private final Path binary;
    private final Path front;
    private final Path backend;
    private final Path pidFile;
    private final Path log;

    public TaskProxy(Path binary, Path stateRoot) {
        Path root = stateRoot.toAbsolutePath(); // the daemonised proxy works from /
        this.binary = binary;
        this.front = root.resolve("task.sock");
        this.backend = root.resolve("task-backend.sock");
        this.pidFile = root.resolve("task-proxy.pid");
        this.log = root.resolve("task-proxy.log");
    }

    public boolean available() {
        return Files.isExecutable(binary);
    }

    public Path front() {
        return front;
    }

    public Path backend() {
        return backend;
    }

    /**
     * Starts the proxy unless one from a previous run still serves (it keeps containerd's connections). A proxy we
     * start is re-parented to this daemon (a child subreaper), so it is watched to be reaped if it ever exits.
     */
    public void ensureRunning(ProcessReaper reaper) throws IOException, InterruptedException {
        int pid = runningPid();
        if (pid > 0 && Files.exists(front)) {
            LOG.info("task proxy {} from a previous run keeps serving {}", pid, front);
            return;
        }
        Process p = new ProcessBuilder(List.of(binary.toString(), "--listen", front.toString(), "--backend",
                backend.toString(), "--pid-file", pidFile.toString(), "--log", log.toString(), "--daemon"))
                .redirectErrorStream(true).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                .start();
        String out = new String(p.getInputStream().readAllBytes()).trim();
        if (!p.waitFor(10, TimeUnit.SECONDS) || p.exitValue() != 0) {
            throw new IOException("kuasar-ttrpc-proxy failed to start: " + out);
        }
        for (int i = 0; i < 100 && !Files.exists(front); i++) {
            Thread.sleep(20);
        }
        if (!Files.exists(front)) {
            throw new IOException("kuasar-ttrpc-proxy did not create " + front);
        }
        int started = runningPid();
        if (started > 0) {
            reaper.watch(started).thenAccept(st -> LOG.warn("task proxy {} exited with {}", started, st.code()));
        }
        LOG.info("task proxy {} serves {} in front of {}", started, front, backend);
    }

    /** On a clean shutdown with no containers left, the proxy has nothing to keep: stop it. */
    public void stopIfIdle(int containers) {
        int pid = runningPid();
        if (containers == 0 && pid > 0) {
            Linux.kill(pid, 15);
            // Wait for it, so that a daemon started right after us does not find it on its way out.
            for (int i = 0; i < 100 && runningPid() == pid; i++) {
                try {
                    Thread.sleep(20);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
            }
            LOG.info("no containers left: stopped task proxy {}", pid);
        }
    }

    public int runningPid() {
        try {
            int pid = Integer.parseInt(Files.readString(pidFile).trim());
            String comm = Files.readString(Path.of("/proc/" + pid + "/comm")).trim();
            return comm.equals(COMM) ? pid : -1;
        } catch (IOException | RuntimeException e) {
            return -1;
        }
    }
}
