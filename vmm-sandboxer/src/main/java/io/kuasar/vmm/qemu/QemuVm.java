package io.kuasar.vmm.qemu;

import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.process.ProcessRef;
import io.kuasar.sandbox.ttrpc.TtrpcClient;
import io.kuasar.vmm.hypervisor.Qmp;
import io.kuasar.vmm.hypervisor.Vm;
import io.kuasar.vmm.hypervisor.VmmProcesses;
import io.kuasar.vmm.hypervisor.VmSpec;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CompletableFuture;

/**
 * One QEMU process. Its agent channel is the virtio-serial port's chardev socket, or with {@code use_vsock} the
 * guest's vsock port 1024 through vhost-device-vsock's hybrid vsock socket.
 */
final class QemuVm implements Vm {
    static final String FACT_PID = "qemuPid";
    static final String FACT_START_TIME = "qemuStartTime";
    static final String FACT_VIRTIOFSD_PID = "virtiofsdPid";
    static final String FACT_VIRTIOFSD_START_TIME = "virtiofsdStartTime";
    static final String FACT_VSOCK_PID = "vsockPid";
    static final String FACT_VSOCK_START_TIME = "vsockStartTime";
    private final VmSpec spec;
    private final ProcessHandle process;
    private final ProcessRef ref;
    private final CompletableFuture<ExitStatus> exit;
    private final ProcessHandle virtiofsd; // null with 9p
    private final ProcessHandle vsock; // null with virtio-serial
    private final boolean useVsock;

    /**
     * The processes are handles rather than children: a VM recovered after a restart of the sandboxer was launched
     * by the previous run.
     */
    QemuVm(VmSpec spec, ProcessHandle process, CompletableFuture<ExitStatus> exit, ProcessHandle virtiofsd,
           ProcessHandle vsock, boolean useVsock) {
        this.spec = spec;
        this.process = process;
        this.ref = ProcessRef.of((int) process.pid());
        this.exit = exit;
        this.virtiofsd = virtiofsd;
        this.vsock = vsock;
        this.useVsock = useVsock;
    }

    @Override
    public java.util.List<Long> affiliatedPids() {
        // virtiofsd forks its sandboxed worker at start: both go into the pod's cgroup, with vhost-device-vsock
        java.util.List<Long> pids = new java.util.ArrayList<>();
        if (virtiofsd != null) {
            java.util.stream.Stream.concat(java.util.stream.Stream.of(virtiofsd), virtiofsd.descendants())
                    .forEach(h -> pids.add(h.pid()));
        }
        if (vsock != null) {
            pids.add(vsock.pid());
        }
        return pids;
    }

    @Override
    public int pid() {
        return ref.pid();
    }

    @Override
    public CompletableFuture<ExitStatus> exit() {
        return exit;
    }

    @Override
    public TtrpcClient connectAgent() throws IOException {
        if (useVsock) {
            return TtrpcClient.over(io.kuasar.vmm.hypervisor.HybridVsock.connect(
                    spec.dir().resolve(QemuCommand.VSOCK_UDS), QemuCommand.AGENT_VSOCK_PORT));
        }
        return TtrpcClient.connect(spec.dir().resolve(QemuCommand.AGENT_SOCKET));
    }

    @Override
    public String guestTaskAddress() {
        return useVsock ? "ttrpc+hvsock://" + spec.dir().resolve(QemuCommand.VSOCK_UDS) + ":"
                + QemuCommand.AGENT_VSOCK_PORT : null;
    }

    @Override
    public Path consoleLog() {
        return spec.dir().resolve(QemuCommand.CONSOLE_LOG);
    }

    @Override
    public void stop(Duration grace) {
        java.util.List<ProcessHandle> helpers = new java.util.ArrayList<>();
        if (vsock != null) {
            helpers.add(vsock);
        }
        if (virtiofsd != null) {
            helpers.add(virtiofsd);
        }
        VmmProcesses.stop(spec.sandboxId(), "QEMU", process, exit, grace, () -> {
            try (Qmp qmp = Qmp.connect(spec.dir().resolve(QemuCommand.QMP_SOCKET))) {
                qmp.execute("quit");
            }
        }, helpers);
    }

    @Override
    public Map<String, String> facts() {
        Map<String, String> f = new java.util.HashMap<>(Map.of(FACT_PID, Integer.toString(ref.pid()),
                FACT_START_TIME, Long.toString(ref.startTime())));
        if (virtiofsd != null) {
            ProcessRef v = ProcessRef.of((int) virtiofsd.pid());
            f.put(FACT_VIRTIOFSD_PID, Integer.toString(v.pid()));
            f.put(FACT_VIRTIOFSD_START_TIME, Long.toString(v.startTime()));
        }
        if (vsock != null) {
            ProcessRef v = ProcessRef.of((int) vsock.pid());
            f.put(FACT_VSOCK_PID, Integer.toString(v.pid()));
            f.put(FACT_VSOCK_START_TIME, Long.toString(v.startTime()));
        }
        return f;
    }
}
