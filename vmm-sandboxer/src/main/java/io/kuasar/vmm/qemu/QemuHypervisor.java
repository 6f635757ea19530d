package io.kuasar.vmm.qemu;

import io.grpc.Status;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.vmm.config.QemuConfig;
import io.kuasar.vmm.hypervisor.Hypervisor;
import io.kuasar.vmm.hypervisor.Prerequisites;
import io.kuasar.vmm.hypervisor.VmmProcesses;
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
import java.util.Map;
import java.util.concurrent.CompletableFuture;

/** QEMU as the hypervisor. The VMM runs inside the pod's network namespace (as Kuasar's), so its taps are local. */
public final class QemuHypervisor implements Hypervisor {
    private static final Logger LOG = LoggerFactory.getLogger(QemuHypervisor.class);
    private final QemuConfig config;
    private final String accelerator;
    private final QemuTemplate template; // null unless enable_template

    /** {@code stateRoot}: the daemon's --dir, where the VM template lives unless template_path says otherwise. */
    public QemuHypervisor(QemuConfig config, Path stateRoot) {
        this.config = config;
        this.accelerator = config.effectiveAccelerator();
        this.template = config.enableTemplate() ? new QemuTemplate(config, accelerator,
                config.templatePath().isEmpty() ? stateRoot.resolve("template") : Path.of(config.templatePath()))
                : null;
        LOG.info("QEMU {} with accelerator {} (configured: {}){}", config.qemuPath(), accelerator,
                config.accelerator(), template != null ? ", pods start from a VM template" : "");
    }

    /** Makes the VM template (enable_template) in the background. */
    @Override
    public void warmUp() {
        if (template != null) {
            template.prepareInBackground();
        }
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
        Prerequisites.file(config.qemuPath(), "qemu_path", "apt-get install qemu-system-x86");
        Prerequisites.file(config.kernelPath(), "kernel_path", "make vmm-image");
        Prerequisites.file(config.initrdPath(), "initrd_path", "make vmm-image");
        if (config.virtiofs() && !Files.isExecutable(Path.of(config.virtiofsd().path()))) {
            throw Status.FAILED_PRECONDITION.withDescription("[hypervisor.virtiofsd].path " + config.virtiofsd().path()
                    + " is not executable (make vmm-image installs trixie's virtiofsd; or use share_fs = \"Virtio9P\")")
                    .asRuntimeException();
        }
        if (config.useVsock() && !Files.isExecutable(Path.of(config.vhostUserVsockPath()))) {
            throw Status.FAILED_PRECONDITION.withDescription("[hypervisor].vhost_user_vsock_path "
                    + config.vhostUserVsockPath() + " is not executable (use_vsock = true needs sid's "
                    + "vhost-device-vsock: make vmm-image fetches it; or set use_vsock = false)").asRuntimeException();
        }
        if (!config.firmwarePath().isEmpty()) {
            Prerequisites.file(config.firmwarePath(), "firmware_path", "apt-get install qemu-system-x86 (qboot.rom)");
        }
        if (accelerator.equals("kvm") && !Files.isWritable(Path.of("/dev/kvm"))) {
            throw Status.FAILED_PRECONDITION.withDescription("accelerator kvm: /dev/kvm is missing or not writable; "
                    + "set [hypervisor].accelerator = \"tcg\"").asRuntimeException();
        }
    }


    @Override
    public Vm launch(VmSpec spec, Instant deadline) throws IOException {
        check();
        // only the sockets this VM has: a longer name unused must not fail a --dir that fits
        List<String> sockets = new ArrayList<>(List.of(QemuCommand.QMP_SOCKET));
        sockets.addAll(config.useVsock() ? List.of(QemuCommand.VHOST_VSOCK_SOCKET, QemuCommand.VSOCK_UDS)
                : List.of(QemuCommand.AGENT_SOCKET));
        if (config.debugConsole() && !config.useVsock()) {
            sockets.add(QemuCommand.DEBUG_SOCKET);
        }
        if (config.virtiofs()) {
            sockets.add(QemuCommand.VIRTIOFS_SOCKET);
        }
        VmmProcesses.freshSockets(spec, sockets);
        List<String> cmd = new ArrayList<>();
        if (!spec.netnsPath().isEmpty()) {
            cmd.addAll(List.of("nsenter", "--net=" + spec.netnsPath(), "--"));
        }
        Path fromTemplate = template != null && template.fits(spec) ? template.ready() : null;
        cmd.addAll(QemuCommand.build(config, accelerator, spec, fromTemplate == null ? null
                : new QemuCommand.Templated(fromTemplate.resolve(QemuTemplate.MEMORY), true)));
        ProcessHandle virtiofsd = null;
        ProcessHandle vsock = null;
        try {
            virtiofsd = config.virtiofs() ? VmmProcesses.startVirtiofsd(spec, config.virtiofsd(),
                    spec.dir().resolve(QemuCommand.VIRTIOFS_SOCKET), deadline).toHandle() : null;
            vsock = config.useVsock() ? startVhostVsock(spec, deadline).toHandle() : null;
            Vm vm = startQemu(spec, cmd, deadline, virtiofsd, vsock);
            if (fromTemplate != null) {
                try {
                    template.load(fromTemplate, spec.dir().resolve(QemuCommand.QMP_SOCKET), spec.sandboxId(),
                            deadline);
                } catch (IOException | RuntimeException e) {
                    vm.stop(java.time.Duration.ZERO);
                    throw e;
                }
                LOG.info("sandbox {}: VM started from the template {}", spec.sandboxId(), fromTemplate);
            }
            return vm;
        } catch (RuntimeException | IOException e) {
            for (ProcessHandle p : new ProcessHandle[]{virtiofsd, vsock}) {
                if (p != null) {
                    p.destroyForcibly();
                }
            }
            throw e;
        }
    }

    /**
     * The VM's vhost-user-vsock device, served by vhost-device-vsock: QEMU connects to its control socket; the
     * sandboxer reaches guest ports through its hybrid vsock socket. It outlives QEMU, so the VM stops it.
     */
    private Process startVhostVsock(VmSpec spec, Instant deadline) throws IOException {
        Path control = spec.dir().resolve(QemuCommand.VHOST_VSOCK_SOCKET);
        List<String> cmd = List.of(config.vhostUserVsockPath(), "--guest-cid", Integer.toString(QemuCommand.GUEST_CID),
                "--socket", control.toString(), "--uds-path", spec.dir().resolve(QemuCommand.VSOCK_UDS).toString());
        Path log = spec.dir().resolve("vhost-device-vsock.log");
        LOG.debug("sandbox {}: {}", spec.sandboxId(), String.join(" ", cmd));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile())
                .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null"))).start();
        VmmProcesses.awaitSocket(spec.sandboxId(), "vhost-device-vsock", p, control, log, deadline);
        return p;
    }

    private Vm startQemu(VmSpec spec, List<String> cmd, Instant deadline, ProcessHandle virtiofsd,
                         ProcessHandle vsock) throws IOException {
        Path log = spec.dir().resolve("qemu.log");
        Files.deleteIfExists(spec.dir().resolve(QemuCommand.CONSOLE_LOG));
        LOG.debug("sandbox {}: {}", spec.sandboxId(), String.join(" ", cmd));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile())
                .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null"))).start();
        CompletableFuture<ExitStatus> exit = p.onExit().thenApply(x -> ExitStatus.of(x.exitValue()));
        // QEMU creates its sockets before the guest runs: wait for them, or for QEMU to fail (a bad option).
        VmmProcesses.awaitSocket(spec.sandboxId(), "QEMU", p, spec.dir().resolve(QemuCommand.QMP_SOCKET), log,
                deadline);
        if (config.debugConsole() && !config.useVsock()) {
            // a root shell in the guest: for root only, whatever the umask made of it
            Path debug = spec.dir().resolve(QemuCommand.DEBUG_SOCKET);
            VmmProcesses.awaitSocket(spec.sandboxId(), "QEMU", p, debug, log, deadline);
            Files.setPosixFilePermissions(debug, java.nio.file.attribute.PosixFilePermissions.fromString("rw-------"));
        }
        return new QemuVm(spec, p.toHandle(), exit, virtiofsd, vsock, config.useVsock());
    }

    /**
     * The VM an earlier run of the sandboxer launched, found by the pid and start time it recorded: QEMU and its
     * helpers are not this daemon's children, so their exit is watched through a pidfd ({@code watcher}). Null if
     * QEMU is gone (its helpers are stopped then), or a helper the VM cannot work without is.
     */
    @Override
    public Vm recover(VmSpec spec, Map<String, String> facts, ExitWatcher watcher) {
        ProcessHandle qemu = VmmProcesses.find(facts, QemuVm.FACT_PID, QemuVm.FACT_START_TIME);
        ProcessHandle virtiofsd = VmmProcesses.find(facts, QemuVm.FACT_VIRTIOFSD_PID,
                QemuVm.FACT_VIRTIOFSD_START_TIME);
        ProcessHandle vsock = VmmProcesses.find(facts, QemuVm.FACT_VSOCK_PID, QemuVm.FACT_VSOCK_START_TIME);
        boolean helpersUp = (virtiofsd != null || !facts.containsKey(QemuVm.FACT_VIRTIOFSD_PID))
                && (vsock != null || !facts.containsKey(QemuVm.FACT_VSOCK_PID));
        if (qemu == null || !helpersUp) {
            for (ProcessHandle h : new ProcessHandle[]{qemu, virtiofsd, vsock}) {
                if (h != null) {
                    h.destroyForcibly();
                }
            }
            return null;
        }
        return new QemuVm(spec, qemu, watcher.watch((int) qemu.pid()), virtiofsd, vsock,
                facts.containsKey(QemuVm.FACT_VSOCK_PID));
    }
}
