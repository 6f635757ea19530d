package io.kuasar.vmm;

import io.kuasar.sandbox.cgroup.SandboxCgroup;
import io.kuasar.sandbox.cli.SandboxerDaemon;
import io.kuasar.sandbox.events.TtrpcEventPublisher;
import io.kuasar.sandbox.task.FifoKeeper;
import io.kuasar.sandbox.task.TaskService;
import io.kuasar.sandbox.task.TaskStore;
import com.fasterxml.jackson.databind.JsonNode;
import io.kuasar.vmm.clh.ClhHypervisor;
import io.kuasar.vmm.config.ClhConfig;
import io.kuasar.vmm.config.QemuConfig;
import io.kuasar.vmm.config.StratoVirtConfig;
import io.kuasar.vmm.hypervisor.Hypervisor;
import io.kuasar.vmm.hypervisor.VmSizing;
import io.kuasar.vmm.forward.GuestRuntime;
import io.kuasar.vmm.qemu.QemuHypervisor;
import io.kuasar.vmm.stratovirt.StratoVirtHypervisor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import picocli.CommandLine;
import picocli.CommandLine.Command;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.List;

/**
 * {@code vmm-sandboxer}: Kuasar's microVM sandboxer, with Kuasar's flags, defaults and config files: QEMU
 * ({@code config_qemu_x86_64.toml}), Cloud Hypervisor ({@code config_clh.toml}) or StratoVirt
 * ({@code config_stratovirt_x86_64.toml}), told apart by their keys.
 */
@Command(name = "vmm-sandboxer", version = "vmm-sandboxer 0.1.0 (Kuasar Java, QEMU, Cloud Hypervisor and StratoVirt)",
        description = "Serves containerd's Sandbox API for pods that are microVMs, and their Task API over ttrpc.")
public final class VmmSandboxerMain extends SandboxerDaemon {
    private static final Logger LOG = LoggerFactory.getLogger(VmmSandboxerMain.class);

    public VmmSandboxerMain() {
        listen = Path.of("/run/vmm-sandboxer.sock");
        dir = Path.of("/run/kuasar-vmm");
    }

    @Override
    protected Path defaultConfig() {
        return Path.of("/var/lib/kuasar/config.toml");
    }

    private String hypervisorKind = "qemu";

    /** Kuasar's: {@code kuasar-vmm-sandboxer-{clh,qemu,stratovirt}-service}. */
    @Override
    protected String tracingServiceName(Parts parts) {
        return "kuasar-vmm-sandboxer-" + hypervisorKind + "-service";
    }

    @Override
    protected Parts assemble(Context ctx) throws Exception {
        String source = sandboxerConfig.file() == null ? "the built-in defaults" : sandboxerConfig.file().toString();
        JsonNode h = sandboxerConfig.section("hypervisor");
        Hypervisor hypervisor;
        VmSizing sizing;
        if (StratoVirtConfig.isStratoVirt(h)) {
            StratoVirtConfig sv = StratoVirtConfig.from(h, source);
            hypervisor = new StratoVirtHypervisor(sv);
            hypervisorKind = "stratovirt";
            sizing = new VmSizing(sv.vcpus(), sv.memoryInMb(), sv.agentTimeoutSecs());
        } else if (ClhConfig.isClh(h)) {
            ClhConfig clh = ClhConfig.from(h, source);
            hypervisor = new ClhHypervisor(clh);
            hypervisorKind = "clh";
            sizing = new VmSizing(clh.vcpus(), clh.memoryInMb(), clh.agentTimeoutSecs());
        } else {
            QemuConfig qemu = QemuConfig.from(h, source);
            hypervisor = new QemuHypervisor(qemu, ctx.store().root());
            sizing = new VmSizing(qemu.vcpus(), qemu.memoryInMb(), qemu.agentTimeoutSecs());
        }
        try {
            hypervisor.check();
        } catch (RuntimeException e) {
            // Serve anyway: the error is repeated, with its remedy, on every RunPodSandbox until it is fixed.
            LOG.warn("pods cannot start yet: {}", e.getMessage());
        }
        hypervisor.warmUp();
        TtrpcEventPublisher events = new TtrpcEventPublisher(ctx.eventsAddress());
        VmmSandboxer sandboxer = new VmmSandboxer(ctx.store(), hypervisor, sizing, ctx.taskAddress(),
                guestTaskAddress(source), cgroupHierarchies(), ctx.reaper()::watch);
        // The guest's output reaches containerd through this daemon: the keeper holds containerd's FIFOs open
        // while it restarts, and the containers' records let the next run re-attach (after the VMs: recovered()).
        FifoKeeper keeper = FifoKeeper.start(libexec().resolve("kuasar-fifo-keeper"), ctx.store().root());
        GuestRuntime runtime = new GuestRuntime(sandboxer, keeper);
        TaskService tasks = new TaskService(runtime, events, new TaskStore(ctx.store()));
        sandboxer.tasks(tasks, runtime);
        return new Parts(sandboxer, tasks.services(), tasks, List.of(events, keeper));
    }

    /**
     * {@code [sandbox].task_address}: {@code "host"} (default: containerd dials this daemon's Task API, which
     * forwards into each VM; stock containerd 2.x) or {@code "guest"} (Start returns the guest agent's own address,
     * as Kuasar does for its containerd fork and iSulad; needs use_vsock or Cloud Hypervisor).
     */
    private boolean guestTaskAddress(String source) {
        String v = sandboxerConfig.section("sandbox").path("task_address").asText("host");
        return switch (v) {
            case "host" -> false;
            case "guest" -> true;
            default -> throw new IllegalArgumentException(source + ": [sandbox].task_address = \"" + v
                    + "\": use \"host\" or \"guest\"");
        };
    }

    private static SandboxCgroup.Hierarchies cgroupHierarchies() {
        try {
            return SandboxCgroup.Hierarchies.host();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read the cgroup hierarchies from /proc/self/mountinfo", e);
        }
    }

    public static void main(String[] args) {
        System.exit(new CommandLine(new VmmSandboxerMain()).execute(args));
    }
}
