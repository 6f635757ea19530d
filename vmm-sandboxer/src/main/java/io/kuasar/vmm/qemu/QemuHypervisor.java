package io.kuasar.vmm.qemu;

import io.grpc.Status;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.process.ProcessRef;
import io.kuasar.sandbox.sys.Linux;
import io.kuasar.vmm.config.QemuConfig;
import io.kuasar.vmm.hypervisor.Hypervisor;
import io.kuasar.vmm.hypervisor.Vm;
import io.kuasar.vmm.hypervisor.VmSpec;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;

/** QEMU as the hypervisor. The VMM runs inside the pod's network namespace (as Kuasar's), so its taps are local. */
public final class QemuHypervisor implements Hypervisor {
    private static final Logger LOG = LoggerFactory.getLogger(QemuHypervisor.class);
    /** The longest a Unix socket path can be (sun_path). */
    private static final int MAX_SOCKET_PATH = 107;
    private final QemuConfig config;
    private final String accelerator;

    public QemuHypervisor(QemuConfig config) {
        this.config = config;
        this.accelerator = config.effectiveAccelerator();
        LOG.info("QEMU {} with accelerator {} (configured: {})", config.qemuPath(), accelerator, config.accelerator());
    }

    @Override
    public String name() {
        return "qemu";
    }

    public String accelerator() {
        return accelerator;
    }

    @Override
    public void check() {
        require(config.qemuPath(), "qemu_path", "apt-get install qemu-system-x86");
        require(config.kernelPath(), "kernel_path", "make vmm-image");
        require(config.initrdPath(), "initrd_path", "make vmm-image");
        if (config.virtiofs() && !Files.isExecutable(Path.of(config.virtiofsd().path()))) {
            throw Status.FAILED_PRECONDITION.withDescription("[hypervisor.virtiofsd].path " + config.virtiofsd().path()
                    + " is not executable (make vmm-image installs trixie's virtiofsd; or use share_fs = \"Virtio9P\")")
                    .asRuntimeException();
        }
        if (!config.firmwarePath().isEmpty()) {
            require(config.firmwarePath(), "firmware_path", "apt-get install qemu-system-x86 (qboot.rom)");
        }
        if (accelerator.equals("kvm") && !Files.isWritable(Path.of("/dev/kvm"))) {
            throw Status.FAILED_PRECONDITION.withDescription("accelerator kvm: /dev/kvm is missing or not writable; "
                    + "set [hypervisor].accelerator = \"tcg\"").asRuntimeException();
        }
    }

    private static void require(String path, String key, String remedy) {
        if (path.isEmpty() || !Files.exists(Path.of(path))) {
            throw Status.FAILED_PRECONDITION.withDescription("[hypervisor]." + key + " " + path
                    + " does not exist (" + remedy + ")").asRuntimeException();
        }
    }

    @Override
    public Vm launch(VmSpec spec, Instant deadline) throws IOException {
        check();
        for (String s : List.of(QemuCommand.AGENT_SOCKET, QemuCommand.QMP_SOCKET)) {
            Path p = spec.dir().resolve(s);
            if (p.toString().length() > MAX_SOCKET_PATH) {
                throw Status.FAILED_PRECONDITION.withDescription("sandbox " + spec.sandboxId() + ": socket path " + p
                        + " is longer than " + MAX_SOCKET_PATH + " bytes; use a shorter --dir").asRuntimeException();
            }
            Files.deleteIfExists(p);
        }
        List<String> cmd = new ArrayList<>();
        if (!spec.netnsPath().isEmpty()) {
            cmd.addAll(List.of("nsenter", "--net=" + spec.netnsPath(), "--"));
        }
        cmd.addAll(QemuCommand.build(config, accelerator, spec));
        Process virtiofsd = config.virtiofs() ? startVirtiofsd(spec, deadline) : null;
        try {
            return startQemu(spec, cmd, deadline, virtiofsd);
        } catch (RuntimeException | IOException e) {
            if (virtiofsd != null) {
                virtiofsd.destroyForcibly();
            }
            throw e;
        }
    }

    private Vm startQemu(VmSpec spec, List<String> cmd, Instant deadline, Process virtiofsd) throws IOException {
        Path log = spec.dir().resolve("qemu.log");
        Files.deleteIfExists(spec.dir().resolve(QemuCommand.CONSOLE_LOG));
        LOG.debug("sandbox {}: {}", spec.sandboxId(), String.join(" ", cmd));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile())
                .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null"))).start();
        CompletableFuture<ExitStatus> exit = p.onExit().thenApply(x -> ExitStatus.of(x.exitValue()));
        ProcessRef ref = ProcessRef.of((int) p.pid());
        // QEMU creates its sockets before the guest runs: wait for them, or for QEMU to fail (a bad option).
        awaitSocket(spec.sandboxId(), "QEMU", p, spec.dir().resolve(QemuCommand.QMP_SOCKET), log, deadline);
        return new QemuVm(spec, p, ref, exit, virtiofsd);
    }

    /**
     * One virtiofsd per VM, serving the shared directory (it exits when its VM disconnects). It runs in a mount
     * namespace of its own made at start, so the shared directory is first made a shared mount: the containers'
     * rootfs and volumes, bind-mounted there later, then propagate into virtiofsd's view.
     */
    private Process startVirtiofsd(VmSpec spec, Instant deadline) throws IOException {
        QemuConfig.Virtiofsd v = config.virtiofsd(); // its path was checked by check(), as every launch does
        Path shared = spec.sharedDir();
        if (!isMountPoint(shared)) {
            Linux.mount(shared.toString(), shared.toString(), null, Linux.MS_BIND, null);
        }
        Linux.mount(null, shared.toString(), null, Linux.MS_SHARED, null);
        Path sock = spec.dir().resolve(QemuCommand.VIRTIOFS_SOCKET);
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
    private static void awaitSocket(String sandboxId, String what, Process p, Path sock, Path log, Instant deadline) {
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

    static boolean isMountPoint(Path dir) throws IOException {
        String target = dir.toAbsolutePath().normalize().toString();
        for (String line : Files.readAllLines(Path.of("/proc/self/mountinfo"))) {
            String[] f = line.split(" ");
            if (f.length > 4 && f[4].replace("\\040", " ").equals(target)) {
                return true;
            }
        }
        return false;
    }

    static String tail(Path log) {
        try {
            List<String> lines = Files.readAllLines(log);
            return String.join(" | ", lines.subList(Math.max(0, lines.size() - 5), lines.size()));
        } catch (IOException e) {
            return "(no output: " + e.getMessage() + ")";
        }
    }
}
