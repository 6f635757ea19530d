package io.kuasar.vmm;

import io.kuasar.sandbox.cgroup.SandboxCgroup;
import io.kuasar.sandbox.cli.SandboxerDaemon;
import io.kuasar.sandbox.events.TtrpcEventPublisher;
import io.kuasar.sandbox.task.TaskService;
import com.fasterxml.jackson.databind.JsonNode;
import io.kuasar.vmm.clh.ClhHypervisor;
import io.kuasar.vmm.config.ClhConfig;
import io.kuasar.vmm.config.QemuConfig;
import io.kuasar.vmm.hypervisor.Hypervisor;
import io.kuasar.vmm.hypervisor.VmSizing;
import io.kuasar.vmm.forward.GuestRuntime;
import io.kuasar.vmm.qemu.QemuHypervisor;
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
 * ({@code config_qemu_x86_64.toml}) or Cloud Hypervisor ({@code config_clh.toml}), told apart by their keys.
 */
@Command(name = "vmm-sandboxer", version = "vmm-sandboxer 0.1.0 (Kuasar Java, QEMU and Cloud Hypervisor)",
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

    @Override
    protected Parts assemble(Context ctx) {
        String source = sandboxerConfig.file() == null ? "the built-in defaults" : sandboxerConfig.file().toString();
        JsonNode h = sandboxerConfig.section("hypervisor");
        Hypervisor hypervisor;
        VmSizing sizing;
        if (ClhConfig.isClh(h)) {
            ClhConfig clh = ClhConfig.from(h, source);
            hypervisor = new ClhHypervisor(clh);
            sizing = new VmSizing(clh.vcpus(), clh.memoryInMb(), clh.agentTimeoutSecs());
        } else {
            QemuConfig qemu = QemuConfig.from(h, source);
            hypervisor = new QemuHypervisor(qemu);
            sizing = new VmSizing(qemu.vcpus(), qemu.memoryInMb(), qemu.agentTimeoutSecs());
        }
        try {
            hypervisor.check();
        } catch (RuntimeException e) {
            // Serve anyway: the error is repeated, with its remedy, on every RunPodSandbox until it is fixed.
            LOG.warn("pods cannot start yet: {}", e.getMessage());
        }
        TtrpcEventPublisher events = new TtrpcEventPublisher(ctx.eventsAddress());
        VmmSandboxer sandboxer = new VmmSandboxer(ctx.store(), hypervisor, sizing, ctx.taskAddress(),
                cgroupHierarchies());
        TaskService tasks = new TaskService(new GuestRuntime(sandboxer), events);
        sandboxer.tasks(tasks);
        return new Parts(sandboxer, tasks.services(), tasks, List.of(events));
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
