package io.kuasar.vmm.clh;

import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.process.ProcessRef;
import io.kuasar.sandbox.ttrpc.TtrpcClient;
import io.kuasar.vmm.hypervisor.HybridVsock;
import io.kuasar.vmm.hypervisor.Vm;
import io.kuasar.vmm.hypervisor.VmSpec;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/** One Cloud Hypervisor process and its virtiofsd. The agent channel is hybrid vsock to guest port 1024. */
final class ClhVm implements Vm {
    private static final Logger LOG = LoggerFactory.getLogger(ClhVm.class);
    static final String FACT_PID = "vmmPid";
    static final String FACT_START_TIME = "vmmStartTime";
    static final String FACT_VIRTIOFSD_PID = "virtiofsdPid";
    static final String FACT_VIRTIOFSD_START_TIME = "virtiofsdStartTime";
    private final VmSpec spec;
    private final Process process;
    private final ProcessRef ref;
    private final CompletableFuture<ExitStatus> exit;
    private final Process virtiofsd;
    private final ClhApi api;

    ClhVm(VmSpec spec, Process process, ProcessRef ref, CompletableFuture<ExitStatus> exit, Process virtiofsd,
          ClhApi api) {
        this.spec = spec;
        this.process = process;
        this.ref = ref;
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

    @Override
    public Path consoleLog() {
        return spec.dir().resolve(ClhCommand.CONSOLE_LOG);
    }

    /** {@code vmm.shutdown} through the API, then SIGKILL after {@code grace}; virtiofsd follows its VM. */
    @Override
    public void stop(Duration grace) {
        if (!exit.isDone() && !grace.isZero()) {
            try {
                api.shutdownVmm();
            } catch (IOException e) {
                LOG.debug("sandbox {}: vmm.shutdown failed: {}", spec.sandboxId(), e.getMessage());
            }
            try {
                exit.get(grace.toMillis(), TimeUnit.MILLISECONDS);
            } catch (Exception e) {
                LOG.warn("sandbox {}: Cloud Hypervisor {} did not exit within {}; killing it", spec.sandboxId(),
                        ref.pid(), grace);
            }
        }
        if (!exit.isDone()) {
            process.destroyForcibly();
            try {
                exit.get(10, TimeUnit.SECONDS);
            } catch (Exception e) {
                LOG.error("sandbox {}: Cloud Hypervisor {} survived SIGKILL for 10 s", spec.sandboxId(), ref.pid());
            }
        }
        try {
            if (!virtiofsd.waitFor(2, TimeUnit.SECONDS)) {
                virtiofsd.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
            }
        } catch (InterruptedException e) {
            virtiofsd.destroyForcibly();
            Thread.currentThread().interrupt();
        }
    }

    @Override
    public List<Long> affiliatedPids() {
        return Stream.concat(Stream.of(virtiofsd.toHandle()), virtiofsd.descendants()).map(ProcessHandle::pid).toList();
    }

    @Override
    public Map<String, String> facts() {
        ProcessRef v = ProcessRef.of((int) virtiofsd.pid());
        return Map.of(FACT_PID, Integer.toString(ref.pid()), FACT_START_TIME, Long.toString(ref.startTime()),
                FACT_VIRTIOFSD_PID, Integer.toString(v.pid()), FACT_VIRTIOFSD_START_TIME, Long.toString(v.startTime()));
    }
}
