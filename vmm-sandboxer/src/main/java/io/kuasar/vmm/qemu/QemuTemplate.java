package io.kuasar.vmm.qemu;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.grpc.Status;
import io.kuasar.sandbox.logging.Progress;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.state.AtomicFiles;
import io.kuasar.sandbox.state.StateStore;
import io.kuasar.vmm.agent.Agent;
import io.kuasar.vmm.config.QemuConfig;
import io.kuasar.vmm.hypervisor.Qmp;
import io.kuasar.vmm.hypervisor.VmSpec;
import io.kuasar.vmm.hypervisor.VmmProcesses;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Duration;
import java.time.Instant;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.stream.Stream;

/**
 * VM templates (beyond Kuasar; Kata's "VM templating"): one guest is booted once, with its agent up, and saved; each
 * pod's VM then starts from it instead of booting. The template's RAM is a file mapped shared by the template's own
 * QEMU; its device state is saved by QEMU's migration with {@code x-ignore-shared} (the RAM is the file, not part of
 * the stream). A pod's QEMU maps that file private (copy-on-write: every copy shares the pages it only reads) and
 * loads the device state ({@code -incoming defer}, {@code migrate-incoming}); the guest carries on where the template
 * stopped, and its agent gets the pod's share, MAC, fresh randomness and the time when the pod's SetupSandbox
 * arrives ({@code task.template} on the template's kernel command line).
 *
 * <p>What a template depends on (QEMU, kernel, initrd and firmware files, the VM's size and the config keys that
 * shape the guest) is hashed into its key: a template made from anything else is never used, and a new one is made
 * (in its own directory: copies still running keep the old files mapped). Only 9p and the virtio-serial channel can
 * be saved (QEMU does not migrate vhost-user devices), and only pods of the configured size with at most one NIC fit
 * it; any other pod boots as usual.
 */
final class QemuTemplate {
    private static final Logger LOG = LoggerFactory.getLogger(QemuTemplate.class);
    /** Raise when the templated device layout or the guest's restore steps change: older templates are remade. */
    private static final int LAYOUT = 1;
    static final String MEMORY = "memory";
    static final String STATE = "state";
    private static final String KEY = "key";
    private static final Duration BUILD_TIMEOUT = Duration.ofMinutes(5);
    private static final int ATTEMPTS = 3;
    private static final ObjectMapper JSON = new ObjectMapper();

    private final QemuConfig config;
    private final String accelerator;
    private final Path root;
    private volatile Path ready;

    QemuTemplate(QemuConfig config, String accelerator, Path root) {
        this.config = config;
        this.accelerator = accelerator;
        this.root = root;
    }

    /** Whether a pod's VM can be a copy of the template: allowed, the configured size, at most one NIC. */
    boolean fits(VmSpec spec) {
        return spec.templateAllowed() && spec.vcpus() == config.vcpus() && spec.memoryInMb() == config.memoryInMb() && spec.nics().size() <= 1;
    }

    /** The directory of a usable template, or null while there is none. */
    Path ready() {
        Path d = ready;
        return d != null && Files.exists(d.resolve(STATE)) && Files.exists(d.resolve(MEMORY)) ? d : null;
    }

    /**
     * Makes the template on a thread of its own, unless a matching one exists; pods boot as usual meanwhile. A failed
     * attempt (a guest that did not come up in time on a busy host) is retried a few times.
     */
    void prepareInBackground() {
        Thread.ofPlatform().name("vm-template").daemon().start(() -> {
            for (int attempt = 1; ; attempt++) {
                try {
                    ensure();
                    return;
                } catch (Exception e) {
                    if (attempt == ATTEMPTS) {
                        LOG.warn("no VM template ({}); pods boot without one", e.getMessage(), e);
                        return;
                    }
                    LOG.warn("making the VM template failed ({}); trying again", e.getMessage(), e);
                    try {
                        Thread.sleep(5_000);
                    } catch (InterruptedException stop) {
                        return;
                    }
                }
            }
        });
    }

    void ensure() throws Exception {
        String key = key();
        Path dir = root.resolve(key.substring(0, 16));
        if (Files.exists(dir.resolve(STATE)) && key.equals(readKey(dir))) {
            LOG.info("VM template {} matches this QEMU, kernel, initrd and config", dir);
        } else {
            build(dir, key);
        }
        ready = dir;
        removeOthers(dir);
    }

    /** Boots the template's guest, waits for its agent, and saves it. */
    private void build(Path dir, String key) throws Exception {
        StateStore.deleteTree(dir);
        Files.createDirectories(dir.resolve("share"));
        VmSpec spec = new VmSpec("template", dir, dir.resolve("share"), config.vcpus(), config.memoryInMb(), "",
                List.of());
        List<String> cmd = QemuCommand.build(config, accelerator, spec,
                new QemuCommand.Templated(dir.resolve(MEMORY), false));
        long t0 = System.nanoTime();
        Instant deadline = Instant.now().plus(BUILD_TIMEOUT);
        // minutes under TCG: say so while it runs (pods boot cold until it is ready)
        Progress progress = Progress.start(LOG, "making the VM template in " + dir, Duration.ZERO);
        LOG.debug("template: {}", String.join(" ", cmd));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(dir.resolve("qemu.log").toFile())
                .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null"))).start();
        // the daemon may be stopped while the template boots: its QEMU must not outlive it
        Thread reaper = new Thread(p::destroyForcibly, "vm-template-stop");
        Runtime.getRuntime().addShutdownHook(reaper);
        try {
            VmmProcesses.awaitSocket("template", "QEMU", p, dir.resolve(QemuCommand.QMP_SOCKET),
                    dir.resolve("qemu.log"), deadline);
            CompletableFuture<ExitStatus> exit = p.onExit().thenApply(x -> ExitStatus.of(x.exitValue()));
            QemuVm vm = new QemuVm(spec, p.toHandle(), exit, null, null, false);
            Agent.connect("template", vm, deadline).close(); // the agent is up: its JVM has started and served
            long booted = System.nanoTime();
            Path partial = dir.resolve(STATE + ".partial");
            try (Qmp qmp = Qmp.connect(dir.resolve(QemuCommand.QMP_SOCKET))) {
                ignoreShared(qmp);
                ObjectNode args = JSON.createObjectNode().put("uri", "exec:cat > " + partial);
                qmp.execute("migrate", args);
                awaitMigration(qmp, deadline);
                qmp.quit();
            }
            p.waitFor();
            Files.move(partial, dir.resolve(STATE), StandardCopyOption.ATOMIC_MOVE);
            AtomicFiles.write(dir.resolve(KEY), key.getBytes(StandardCharsets.UTF_8));
            LOG.info("VM template made in {} ms (guest up in {} ms), device state {} KiB",
                    (System.nanoTime() - t0) / 1_000_000, (booted - t0) / 1_000_000,
                    Files.size(dir.resolve(STATE)) / 1024);
        } catch (Exception e) {
            progress.failed();
            throw e;
        } finally {
            progress.close();
            if (p.isAlive()) {
                p.destroyForcibly();
            }
            try {
                Runtime.getRuntime().removeShutdownHook(reaper);
            } catch (IllegalStateException shuttingDown) {
                // the hook runs (or ran) anyway
            }
        }
    }

    /**
     * Loads the template's device state into a pod's QEMU started with {@link QemuCommand.Templated#copy()}; the
     * guest runs once it returns.
     */
    void load(Path template, Path qmpSocket, String sandboxId, Instant deadline) throws IOException {
        try (Qmp qmp = Qmp.connect(qmpSocket)) {
            ignoreShared(qmp);
            qmp.execute("migrate-incoming", JSON.createObjectNode().put("uri", "exec:cat " + template.resolve(STATE)));
            while (true) {
                JsonNode st = qmp.queryStatus();
                if (st.path("running").asBoolean(false)) {
                    return;
                }
                if (Instant.now().isAfter(deadline)) {
                    throw Status.DEADLINE_EXCEEDED.withDescription("sandbox " + sandboxId + ": the VM template "
                            + template + " did not load before the deadline (status " + st.path("status").asText()
                            + ")").asRuntimeException();
                }
                sleep(5);
            }
        }
    }

    private static void ignoreShared(Qmp qmp) throws IOException {
        ObjectNode args = JSON.createObjectNode();
        args.putArray("capabilities").addObject().put("capability", "x-ignore-shared").put("state", true);
        qmp.execute("migrate-set-capabilities", args);
    }

    private static void awaitMigration(Qmp qmp, Instant deadline) throws IOException {
        while (true) {
            JsonNode m = qmp.execute("query-migrate");
            String status = m.path("status").asText("");
            switch (status) {
                case "completed" -> {
                    return;
                }
                case "failed", "cancelled" -> throw new IOException("saving the template failed: "
                        + m.path("error-desc").asText(status));
                default -> {
                    if (Instant.now().isAfter(deadline)) {
                        throw new IOException("saving the template did not finish (" + status + ")");
                    }
                    sleep(20);
                }
            }
        }
    }

    /** Everything the saved guest depends on; a change in any of it makes a new template. */
    String key() throws IOException {
        StringBuilder s = new StringBuilder("layout=" + LAYOUT);
        for (String f : List.of(config.qemuPath(), config.kernelPath(), config.initrdPath(), config.firmwarePath())) {
            Path p = Path.of(f);
            s.append('|').append(f);
            if (!f.isEmpty() && Files.exists(p)) {
                s.append(':').append(Files.size(p)).append(':').append(Files.getLastModifiedTime(p).toMillis());
            }
        }
        s.append("|machine=").append(config.machineType()).append("|accel=").append(accelerator)
                .append("|vcpus=").append(config.vcpus()).append("|mem=").append(config.memoryInMb())
                .append("|params=").append(config.kernelParams()).append("|debug=").append(config.debug())
                .append("|console=").append(config.debugConsole())
                .append("|fpr=").append(config.freePageReporting()).append("|rng=").append(config.entropySource())
                .append("|9p=").append(config.virtio9pMultidevs());
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256")
                    .digest(s.toString().getBytes(StandardCharsets.UTF_8)));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    private static String readKey(Path dir) {
        try {
            return Files.readString(dir.resolve(KEY)).trim();
        } catch (IOException e) {
            return "";
        }
    }

    /** Older templates go; copies still running keep their (unlinked) memory file mapped. */
    private void removeOthers(Path keep) {
        try (Stream<Path> s = Files.list(root)) {
            for (Path d : s.filter(d -> !d.equals(keep) && Files.isDirectory(d)).toList()) {
                StateStore.deleteTree(d);
                LOG.info("removed the outdated VM template {}", d);
            }
        } catch (IOException e) {
            LOG.debug("cannot list {}: {}", root, e.getMessage());
        }
    }


    private static void sleep(long ms) throws IOException {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted");
        }
    }
}
