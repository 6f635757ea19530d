package io.kuasar.vmm.stratovirt;

import io.grpc.Status;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.vmm.config.QemuConfig;
import io.kuasar.vmm.config.StratoVirtConfig;
import io.kuasar.vmm.hypervisor.Hypervisor;
import io.kuasar.vmm.hypervisor.Prerequisites;
import io.kuasar.vmm.hypervisor.Qmp;
import io.kuasar.vmm.hypervisor.Vm;
import io.kuasar.vmm.hypervisor.VmSpec;
import io.kuasar.vmm.hypervisor.VmmProcesses;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;

/**
 * StratoVirt as the hypervisor, after Kuasar's {@code stratovirt/mod.rs}: the virtio-fs daemon first (StratoVirt's
 * {@code vhost_user_fs -D <dir>/virtiofs.log -socket-path <dir>/virtiofs.sock -source <shared>}, outside the netns as
 * in Kuasar; or virtiofsd), then {@code stratovirt} in the pod's network namespace with the command line of
 * {@link StratoVirtCommand}, ready once its QMP socket greets and negotiates. The guest agent is reached over a
 * virtio-serial port (Kuasar uses vsock through {@code /dev/vhost-vsock}, which StratoVirt needs and these machines
 * do not have; StratoVirt has no hybrid vsock as Cloud Hypervisor does). Stop: QMP {@code quit}, then SIGKILL.
 * <p>
 * StratoVirt runs guests on KVM only and is not packaged for Debian, so it has never booted a guest on the machines
 * this project is tested on; its command line and QMP client are tested against Kuasar's and StratoVirt's sources
 * (docs/vmm.md says what exactly).
 */
public final class StratoVirtHypervisor implements Hypervisor {
    private static final Logger LOG = LoggerFactory.getLogger(StratoVirtHypervisor.class);
    private final StratoVirtConfig config;

    public StratoVirtHypervisor(StratoVirtConfig config) {
        this.config = config;
    }

    @Override
    public String name() {
        return "stratovirt";
    }

    @Override
    public void check() {
        Prerequisites.file(config.path(), "path", "install StratoVirt: openEuler's stratovirt package, not packaged for "
                + "Debian; or use the QEMU config");
        Prerequisites.guestImage(config.kernelPath(), config.imagePath(), config.initrdPath());
        if (!config.firmware().isEmpty()) {
            Prerequisites.file(config.firmware(), "firmware", "openEuler's edk2-ovmf, or set firmware = \"\"");
        }
        if (!Files.isExecutable(Path.of(config.virtiofsdPath()))) {
            throw Status.FAILED_PRECONDITION.withDescription("[hypervisor.virtiofsd_conf].path "
                    + config.virtiofsdPath() + " is not executable (StratoVirt 2.3's vhost_user_fs, or virtiofsd: "
                    + "make vmm-image installs trixie's at /var/lib/kuasar/virtiofsd/virtiofsd)").asRuntimeException();
        }
        Prerequisites.kvm("StratoVirt");
        if (!StratoVirtConfig.hardwareVirtualisation()) {
            throw Status.FAILED_PRECONDITION.withDescription("StratoVirt needs hardware virtualisation (vmx or svm "
                    + "in /proc/cpuinfo), which this CPU does not have (its /dev/kvm cannot boot stock guest "
                    + "kernels): use QEMU (config_qemu_x86_64.toml, accelerator tcg)").asRuntimeException();
        }
    }


    @Override
    public Vm launch(VmSpec spec, Instant deadline) throws IOException {
        check();
        VmmProcesses.freshSockets(spec, List.of(StratoVirtCommand.QMP_SOCKET, StratoVirtCommand.AGENT_SOCKET,
                StratoVirtCommand.VIRTIOFS_SOCKET));
        Process fs = startFsDaemon(spec, deadline);
        Process p = null;
        try {
            List<String> cmd = new ArrayList<>();
            if (!spec.netnsPath().isEmpty()) {
                cmd.addAll(List.of("nsenter", "--net=" + spec.netnsPath(), "--"));
            }
            cmd.addAll(StratoVirtCommand.build(config, spec));
            Path log = spec.dir().resolve("stratovirt.log");
            Files.deleteIfExists(spec.dir().resolve(StratoVirtCommand.CONSOLE_LOG));
            LOG.debug("sandbox {}: {}", spec.sandboxId(), String.join(" ", cmd));
            p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile())
                    .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null"))).start();
            CompletableFuture<ExitStatus> exit = p.onExit().thenApply(x -> ExitStatus.of(x.exitValue()));
            Path qmpSocket = spec.dir().resolve(StratoVirtCommand.QMP_SOCKET);
            // StratoVirt makes its QMP socket before the guest runs: wait for it, or for a bad option's exit
            VmmProcesses.awaitSocket(spec.sandboxId(), "StratoVirt", p, qmpSocket, log, deadline);
            Qmp qmp = Qmp.connect(qmpSocket);
            LOG.info("sandbox {}: {} up, vCPU threads {}", spec.sandboxId(),
                    qmp.greeting().path("QMP").path("version").path("package").asText("StratoVirt"), qmp.queryCpus());
            return new StratoVirtVm(spec, p.toHandle(), exit, fs.toHandle(), qmp);
        } catch (IOException | RuntimeException e) {
            if (p != null) {
                p.destroyForcibly();
            }
            fs.destroyForcibly();
            throw e;
        }
    }

    /**
     * The VM an earlier run of the sandboxer launched, found by the pid and start time it recorded (Kuasar recovers
     * StratoVirt VMs too): StratoVirt and its virtio-fs daemon are not this daemon's children, so their exit is
     * watched through {@code watcher}; QMP is connected again on first use. Null if either is gone (the other is
     * stopped then).
     */
    @Override
    public Vm recover(VmSpec spec, Map<String, String> facts, ExitWatcher watcher) {
        ProcessHandle vmm = VmmProcesses.find(facts, StratoVirtVm.FACT_PID, StratoVirtVm.FACT_START_TIME);
        ProcessHandle fs = VmmProcesses.find(facts, StratoVirtVm.FACT_VIRTIOFSD_PID,
                StratoVirtVm.FACT_VIRTIOFSD_START_TIME);
        if (vmm == null || fs == null) {
            for (ProcessHandle h : new ProcessHandle[]{vmm, fs}) {
                if (h != null) {
                    h.destroyForcibly();
                }
            }
            return null;
        }
        return new StratoVirtVm(spec, vmm, watcher.watch((int) vmm.pid()), fs, null);
    }

    /**
     * The VM's virtio-fs daemon, serving the shared directory on {@code virtiofs.sock} (StratoVirt connects to it).
     * Kuasar's is StratoVirt's {@code vhost_user_fs}, which runs in the host's mount namespace and so sees what is
     * mounted into the shared directory later; virtiofsd is started as for QEMU and Cloud Hypervisor.
     */
    private Process startFsDaemon(VmSpec spec, Instant deadline) throws IOException {
        Path sock = spec.dir().resolve(StratoVirtCommand.VIRTIOFS_SOCKET);
        if (config.usesVirtiofsd()) {
            return VmmProcesses.startVirtiofsd(spec, new QemuConfig.Virtiofsd(config.virtiofsdPath(), "info", "never",
                    4), sock, deadline);
        }
        Path log = spec.dir().resolve(StratoVirtCommand.VIRTIOFS_LOG);
        List<String> cmd = List.of(config.virtiofsdPath(), "-D", log.toString(), "-socket-path", sock.toString(),
                "-source", spec.sharedDir().toString());
        LOG.debug("sandbox {}: {}", spec.sandboxId(), String.join(" ", cmd));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()))
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null"))).start();
        VmmProcesses.awaitSocket(spec.sandboxId(), "vhost_user_fs", p, sock, log, deadline);
        return p;
    }
}
