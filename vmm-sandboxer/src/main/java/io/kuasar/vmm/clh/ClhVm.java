package io.kuasar.vmm.clh;

import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.process.ProcessRef;
import io.kuasar.sandbox.ttrpc.TtrpcClient;
import io.kuasar.vmm.hypervisor.HybridVsock;
import io.kuasar.vmm.hypervisor.Vm;
import io.kuasar.vmm.hypervisor.VmmProcesses;
import io.kuasar.vmm.hypervisor.VmSpec;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.stream.Stream;

/** One Cloud Hypervisor process and its virtiofsd. The agent channel is hybrid vsock to guest port 1024. */
final class ClhVm implements Vm {
    static final String FACT_PID = "vmmPid";
    static final String FACT_START_TIME = "vmmStartTime";
    static final String FACT_VIRTIOFSD_PID = "virtiofsdPid";
    static final String FACT_VIRTIOFSD_START_TIME = "virtiofsdStartTime";
    private final VmSpec spec;
    private final ProcessHandle process;
    private final ProcessRef ref;
    private final CompletableFuture<ExitStatus> exit;
    private final ProcessHandle virtiofsd;
    private final ClhApi api;

    /** Handles rather than children: a VM recovered after a restart of the sandboxer was launched by its last run. */
    ClhVm(VmSpec spec, ProcessHandle process, CompletableFuture<ExitStatus> exit, ProcessHandle virtiofsd,
          ClhApi api) {
        this.spec = spec;
        this.process = process;
        this.ref = ProcessRef.of((int) process.pid());
        this.exit = exit;
        this.virtiofsd = virtiofsd;
        this.api = api;
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
        return TtrpcClient.over(HybridVsock.connect(spec.dir().resolve(ClhCommand.VSOCK_SOCKET),
                ClhCommand.AGENT_PORT));
    }

    /** Kuasar's Cloud Hypervisor address: {@code ttrpc+hvsock://<dir>/task.vsock:1024}. */
    @Override
    public String guestTaskAddress() {
        return "ttrpc+hvsock://" + spec.dir().resolve(ClhCommand.VSOCK_SOCKET) + ":" + ClhCommand.AGENT_PORT;
    }

    @Override
    public Path consoleLog() {
        return spec.dir().resolve(ClhCommand.CONSOLE_LOG);
    }

    /** {@code vmm.shutdown} through the API, then SIGKILL after {@code grace}; then its virtiofsd. */
    @Override
    public void stop(Duration grace) {
        VmmProcesses.stop(spec.sandboxId(), "Cloud Hypervisor", process, exit, grace, api::shutdownVmm,
                List.of(virtiofsd));
    }

    @Override
    public List<Long> affiliatedPids() {
        return Stream.concat(Stream.of(virtiofsd), virtiofsd.descendants()).map(ProcessHandle::pid).toList();
    }

    @Override
    public Map<String, String> facts() {
        ProcessRef v = ProcessRef.of((int) virtiofsd.pid());
        return Map.of(FACT_PID, Integer.toString(ref.pid()), FACT_START_TIME, Long.toString(ref.startTime()),
                FACT_VIRTIOFSD_PID, Integer.toString(v.pid()), FACT_VIRTIOFSD_START_TIME, Long.toString(v.startTime()));
    }
}
