package io.kuasar.vmm.stratovirt;

import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.process.ProcessRef;
import io.kuasar.sandbox.ttrpc.TtrpcClient;
import io.kuasar.vmm.hypervisor.Qmp;
import io.kuasar.vmm.hypervisor.Vm;
import io.kuasar.vmm.hypervisor.VmSpec;
import io.kuasar.vmm.hypervisor.VmmProcesses;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.stream.Stream;

/**
 * One StratoVirt process and its virtio-fs daemon. The agent channel is the virtio-serial port's chardev socket.
 * QMP is one connection held for the VM's life, as Kuasar's: StratoVirt serves one QMP client at a time.
 */
final class StratoVirtVm implements Vm {
    static final String FACT_PID = "vmmPid";
    static final String FACT_START_TIME = "vmmStartTime";
    static final String FACT_VIRTIOFSD_PID = "virtiofsdPid";
    static final String FACT_VIRTIOFSD_START_TIME = "virtiofsdStartTime";
    private final VmSpec spec;
    private final ProcessHandle process;
    private final ProcessRef ref;
    private final CompletableFuture<ExitStatus> exit;
    private final ProcessHandle fsDaemon;
    private Qmp qmp; // guarded by this; null until connected, or after a failure: the next call connects

    /**
     * Handles rather than children: a VM recovered after a restart of the sandboxer was launched by its last run
     * (and has no QMP connection yet).
     */
    StratoVirtVm(VmSpec spec, ProcessHandle process, CompletableFuture<ExitStatus> exit, ProcessHandle fsDaemon,
                 Qmp qmp) {
        this.spec = spec;
        this.process = process;
        this.ref = ProcessRef.of((int) process.pid());
        this.exit = exit;
        this.fsDaemon = fsDaemon;
        this.qmp = qmp;
        exit.whenComplete((s, t) -> closeQmp());
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
        return TtrpcClient.connect(spec.dir().resolve(StratoVirtCommand.AGENT_SOCKET));
    }

    @Override
    public Path consoleLog() {
        return spec.dir().resolve(StratoVirtCommand.CONSOLE_LOG);
    }

    /** QMP {@code quit}, then SIGKILL after {@code grace}; then the virtio-fs daemon. */
    @Override
    public void stop(Duration grace) {
        VmmProcesses.stop(spec.sandboxId(), "StratoVirt", process, exit, grace, () -> qmp(Qmp::quit),
                List.of(fsDaemon));
        closeQmp();
    }

    @FunctionalInterface
    private interface QmpCall {
        void on(Qmp qmp) throws IOException;
    }

    /** Runs a call on the VM's QMP connection; a broken connection is dropped, and the next call makes a new one. */
    private synchronized void qmp(QmpCall call) throws IOException {
        if (qmp == null) {
            qmp = Qmp.connect(spec.dir().resolve(StratoVirtCommand.QMP_SOCKET));
        }
        try {
            call.on(qmp);
        } catch (Qmp.QmpError e) {
            throw e; // StratoVirt refused the command; the connection is fine
        } catch (IOException e) {
            closeQmp();
            throw e;
        }
    }

    private synchronized void closeQmp() {
        if (qmp != null) {
            qmp.close();
            qmp = null;
        }
    }

    @Override
    public List<Long> affiliatedPids() {
        // virtiofsd forks its sandboxed worker at start: both go into the pod's cgroup
        return Stream.concat(Stream.of(fsDaemon), fsDaemon.descendants()).map(ProcessHandle::pid).toList();
    }

    @Override
    public Map<String, String> facts() {
        ProcessRef v = ProcessRef.of((int) fsDaemon.pid());
        return Map.of(FACT_PID, Integer.toString(ref.pid()), FACT_START_TIME, Long.toString(ref.startTime()),
                FACT_VIRTIOFSD_PID, Integer.toString(v.pid()), FACT_VIRTIOFSD_START_TIME, Long.toString(v.startTime()));
    }
}
