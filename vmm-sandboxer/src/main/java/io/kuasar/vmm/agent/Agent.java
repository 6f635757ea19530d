package io.kuasar.vmm.agent;

import com.google.protobuf.Empty;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.kuasar.api.events.TaskOOM;
import io.kuasar.api.types.Envelope;
import io.kuasar.api.vmm.CheckRequest;
import io.kuasar.api.vmm.SetupSandboxRequest;
import io.kuasar.api.vmm.SyncClockPacket;
import io.kuasar.sandbox.ttrpc.TtrpcClient;
import io.kuasar.vmm.hypervisor.Vm;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.time.Duration;
import java.time.Instant;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The sandboxer's side of one guest agent: one ttrpc connection over the VM's agent channel carrying Kuasar's
 * {@code grpc.SandboxService}, the Task API and the Streaming service. Connects while the guest boots (Kuasar's
 * Check loop), then keeps the clock in step and collects the guest's events (OOM).
 */
public final class Agent implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(Agent.class);
    public static final String SANDBOX_SERVICE = "grpc.SandboxService";
    private static final Duration CHECK_TIMEOUT = Duration.ofSeconds(1);
    private static final Duration CLOCK_SYNC_PERIOD = Duration.ofSeconds(60);
    private static final long MAX_CLOCK_SKEW_NANOS = 10_000_000L;

    private final String sandboxId;
    private final TtrpcClient client;
    private final Map<String, Runnable> oomWatchers = new ConcurrentHashMap<>();
    private volatile boolean closed;

    private Agent(String sandboxId, TtrpcClient client) {
        this.sandboxId = sandboxId;
        this.client = client;
    }

    /**
     * Waits for the guest agent to answer Check, until {@code deadline}. The error names the console log, where a
     * guest that never came up says why.
     */
    public static Agent connect(String sandboxId, Vm vm, Instant deadline) throws InterruptedException {
        String lastError = "no answer";
        while (Instant.now().isBefore(deadline)) {
            if (vm.exit().isDone()) {
                throw Status.INTERNAL.withDescription("sandbox " + sandboxId + ": the VM exited while booting (status "
                        + vm.exit().join().code() + "); see " + vm.consoleLog()).asRuntimeException();
            }
            TtrpcClient c;
            try {
                c = vm.connectAgent();
            } catch (IOException e) {
                lastError = e.getMessage();
                Thread.sleep(10);
                continue;
            }
            // Calls sent before the guest opens its port wait in the channel; the guest answers them in order.
            while (Instant.now().isBefore(deadline) && !c.isClosed() && !vm.exit().isDone()) {
                try {
                    c.call(SANDBOX_SERVICE, "Check", CheckRequest.getDefaultInstance(), Empty.parser(), CHECK_TIMEOUT);
                    return new Agent(sandboxId, c);
                } catch (StatusRuntimeException e) {
                    lastError = e.getStatus().getCode() + ": " + e.getStatus().getDescription();
                    if (e.getStatus().getCode() == Status.Code.CANCELLED) {
                        c.close();
                        throw e;
                    }
                }
                if (Thread.interrupted()) {
                    c.close();
                    throw new InterruptedException();
                }
            }
            c.close();
        }
        throw Status.DEADLINE_EXCEEDED.withDescription("sandbox " + sandboxId + ": the guest agent did not answer "
                + "before the deadline (" + lastError + "); see the guest console in " + vm.consoleLog())
                .asRuntimeException();
    }

    /**
     * The agent of a pod whose VM was found gone after a restart of the sandboxer: closed, and every call through it
     * fails UNAVAILABLE naming the sandbox, as calls to a VM that died do.
     */
    public static Agent gone(String sandboxId) {
        Agent a = new Agent(sandboxId, null);
        a.closed = true;
        return a;
    }

    public TtrpcClient client() {
        if (client == null) {
            throw Status.UNAVAILABLE.withDescription("sandbox " + sandboxId + ": its VM is gone")
                    .asRuntimeException();
        }
        return client;
    }

    public void setup(SetupSandboxRequest request) {
        client.call(SANDBOX_SERVICE, "SetupSandbox", request, Empty.parser(), Duration.ofSeconds(30));
    }

    /** Starts the background loops: clock sync every minute, and the guest's events. */
    public void startLoops() {
        Thread.ofVirtual().name("agent-events-" + sandboxId).start(this::eventLoop);
        Thread.ofVirtual().name("agent-clock-" + sandboxId).start(this::clockLoop);
    }

    /** Calls {@code onOom} when the guest reports an OOM kill in the container. */
    public void watchOom(String containerId, Runnable onOom) {
        oomWatchers.put(containerId, onOom);
    }

    public void unwatch(String containerId) {
        oomWatchers.remove(containerId);
    }

    private void eventLoop() {
        while (!closed && !client.isClosed()) {
            try {
                Envelope e = client.call(SANDBOX_SERVICE, "GetEvents", Empty.getDefaultInstance(), Envelope.parser(),
                        null);
                if (e.getTopic().equals("/tasks/oom")) {
                    String id = TaskOOM.parseFrom(e.getEvent().getValue()).getContainerId();
                    Runnable r = oomWatchers.get(id);
                    if (r != null) {
                        r.run();
                    }
                }
            } catch (StatusRuntimeException | com.google.protobuf.InvalidProtocolBufferException e) {
                if (!closed && !client.isClosed()) {
                    LOG.debug("sandbox {}: GetEvents: {}", sandboxId, e.getMessage());
                    sleep(Duration.ofSeconds(1));
                }
            }
        }
    }

    private void clockLoop() {
        while (!closed && !client.isClosed()) {
            try {
                syncClock();
            } catch (StatusRuntimeException e) {
                LOG.debug("sandbox {}: clock sync: {}", sandboxId, e.getMessage());
            }
            sleep(CLOCK_SYNC_PERIOD);
        }
    }

    /** Kuasar's two-step sync; corrects the guest clock when it is off by more than 10 ms. */
    public void syncClock() {
        SyncClockPacket p = client.call(SANDBOX_SERVICE, "SyncClock",
                SyncClockPacket.newBuilder().setClientSendTime(now()).build(), SyncClockPacket.parser(),
                Duration.ofSeconds(1));
        long serverArrive = now();
        long delta = ((p.getClientSendTime() - p.getClientArriveTime()) + (serverArrive - p.getServerSendTime())) / 2;
        if (Math.abs(delta) > MAX_CLOCK_SKEW_NANOS) {
            client.call(SANDBOX_SERVICE, "SyncClock", p.toBuilder().setServerArriveTime(serverArrive).setDelta(delta)
                    .build(), SyncClockPacket.parser(), Duration.ofSeconds(1));
        }
    }

    private static long now() {
        Instant t = Instant.now();
        return t.getEpochSecond() * 1_000_000_000L + t.getNano();
    }

    private void sleep(Duration d) {
        try {
            Thread.sleep(d);
        } catch (InterruptedException e) {
            closed = true;
        }
    }

    public boolean isClosed() {
        return closed || client == null || client.isClosed();
    }

    @Override
    public void close() {
        closed = true;
        if (client != null) {
            client.close();
        }
    }
}
