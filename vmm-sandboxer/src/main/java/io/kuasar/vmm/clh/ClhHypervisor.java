package io.kuasar.vmm.clh;

import io.grpc.Status;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.vmm.config.ClhConfig;
import io.kuasar.vmm.hypervisor.Hypervisor;
import io.kuasar.vmm.hypervisor.Prerequisites;
import io.kuasar.vmm.hypervisor.Vm;
import io.kuasar.vmm.hypervisor.VmSpec;
import io.kuasar.vmm.hypervisor.VmmProcesses;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;

/**
 * Cloud Hypervisor as the hypervisor (Kuasar's default): virtiofsd for the share, then {@code cloud-hypervisor} in
 * the pod's network namespace with the command line of {@link ClhCommand}, ready once its REST API answers
 * {@code vmm.ping}. The guest agent is reached through hybrid vsock on port 1024.
 * <p>
 * Cloud Hypervisor is not packaged for Debian and needs hardware KVM, so it has never booted a guest on the machines
 * this project is tested on; its API client and hybrid vsock are tested against Cloud Hypervisor's published API
 * (docs/vmm.md says what exactly).
 */
public final class ClhHypervisor implements Hypervisor {
    private static final Logger LOG = LoggerFactory.getLogger(ClhHypervisor.class);
    private static final Duration API_TIMEOUT = Duration.ofSeconds(10);
    private final ClhConfig config;

    public ClhHypervisor(ClhConfig config) {
        this.config = config;
    }

    @Override
    public String name() {
        return "cloud-hypervisor";
    }

    @Override
    public void check() {
        Prerequisites.file(config.path(), "path", "install Cloud Hypervisor (not packaged for Debian: its static release "
                + "binary), or use the QEMU config");
        Prerequisites.guestImage(config.kernelPath(), config.imagePath(), config.initrdPath());
        Prerequisites.file(config.virtiofsd().path(), "virtiofsd.path", "make vmm-image installs trixie's virtiofsd");
        Prerequisites.kvm("Cloud Hypervisor");
    }


    @Override
    public Vm launch(VmSpec spec, Instant deadline) throws IOException {
        check();
        VmmProcesses.freshSockets(spec, List.of(ClhCommand.API_SOCKET, ClhCommand.VSOCK_SOCKET,
                ClhCommand.VIRTIOFS_SOCKET));
        Process virtiofsd = VmmProcesses.startVirtiofsd(spec, config.virtiofsd(),
                spec.dir().resolve(ClhCommand.VIRTIOFS_SOCKET), deadline);
        try {
            List<String> cmd = new ArrayList<>();
            if (!spec.netnsPath().isEmpty()) {
                cmd.addAll(List.of("nsenter", "--net=" + spec.netnsPath(), "--"));
            }
            cmd.addAll(ClhCommand.build(config, spec));
            Path log = spec.dir().resolve("cloud-hypervisor.log");
            LOG.debug("sandbox {}: {}", spec.sandboxId(), String.join(" ", cmd));
            Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile())
                    .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null"))).start();
            CompletableFuture<ExitStatus> exit = p.onExit().thenApply(x -> ExitStatus.of(x.exitValue()));
            Path api = spec.dir().resolve(ClhCommand.API_SOCKET);
            VmmProcesses.awaitSocket(spec.sandboxId(), "cloud-hypervisor", p, api, log, deadline);
            ClhApi client = new ClhApi(api, API_TIMEOUT);
            LOG.info("sandbox {}: Cloud Hypervisor {} up", spec.sandboxId(), client.ping().path("version").asText());
            return new ClhVm(spec, p.toHandle(), exit, virtiofsd.toHandle(), client);
        } catch (IOException | RuntimeException e) {
            virtiofsd.destroyForcibly();
            throw e;
        }
    }

    /** Kuasar's recovery: the recorded VMM (pid and start time) and a new API client on its socket. */
    @Override
    public Vm recover(VmSpec spec, Map<String, String> facts, ExitWatcher watcher) {
        ProcessHandle vmm = VmmProcesses.find(facts, ClhVm.FACT_PID, ClhVm.FACT_START_TIME);
        ProcessHandle virtiofsd = VmmProcesses.find(facts, ClhVm.FACT_VIRTIOFSD_PID, ClhVm.FACT_VIRTIOFSD_START_TIME);
        if (vmm == null || virtiofsd == null) {
            for (ProcessHandle h : new ProcessHandle[]{vmm, virtiofsd}) {
                if (h != null) {
                    h.destroyForcibly();
                }
            }
            return null;
        }
        return new ClhVm(spec, vmm, watcher.watch((int) vmm.pid()), virtiofsd,
                new ClhApi(spec.dir().resolve(ClhCommand.API_SOCKET), API_TIMEOUT));
    }
}
