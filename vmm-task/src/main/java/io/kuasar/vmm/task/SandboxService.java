package io.kuasar.vmm.task;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.google.protobuf.Empty;
import io.grpc.Status;
import io.kuasar.api.types.Envelope;
import io.kuasar.api.vmm.CheckRequest;
import io.kuasar.api.vmm.ExecVMProcessRequest;
import io.kuasar.api.vmm.ExecVMProcessResponse;
import io.kuasar.api.vmm.SetupSandboxRequest;
import io.kuasar.api.vmm.SyncClockPacket;
import io.kuasar.api.vmm.UpdateInterfacesRequest;
import io.kuasar.api.vmm.UpdateRoutesRequest;
import io.kuasar.runc.HolderLauncher;
import io.kuasar.runc.Sysctls;
import io.kuasar.sandbox.sys.Linux;
import io.kuasar.sandbox.ttrpc.TtrpcService;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * Kuasar's {@code grpc.SandboxService}, what the sandboxer asks of the guest besides the Task API: set up the pod
 * (its persistent IPC/UTS/PID namespaces, sysctls, network), health checks, commands in the VM, clock sync, and
 * the events (OOM) that only the guest sees.
 */
final class SandboxService {
    private static final Logger LOG = LoggerFactory.getLogger(SandboxService.class);
    static final String NAME = "grpc.SandboxService";
    /** Where the pod's namespaces are pinned; the sandboxer points container specs here (Kuasar's paths). */
    static final Path NS_DIR = Path.of("/run/sandbox-ns");
    private static final int POD_PID_NAMESPACE = 0; // runtime.v1.NamespaceMode.POD

    private final HolderLauncher holders;
    private final GuestNetwork network;
    private final BlockingQueue<Envelope> events;
    private final ObjectMapper json = new ObjectMapper();
    private final Runnable beforeSetup;
    private volatile int holderPid;

    /** {@code beforeSetup} runs when the pod's SetupSandbox arrives, first (a template's copy meets its pod). */
    SandboxService(HolderLauncher holders, GuestNetwork network, BlockingQueue<Envelope> events,
                   Runnable beforeSetup) {
        this.holders = holders;
        this.network = network;
        this.events = events;
        this.beforeSetup = beforeSetup;
    }

    TtrpcService service() {
        return TtrpcService.builder(NAME)
                .waiting("Check", CheckRequest.parser(), (ctx, r) -> Empty.getDefaultInstance())
                .unary("SetupSandbox", SetupSandboxRequest.parser(), (ctx, r) -> setup(r))
                .unary("UpdateInterfaces", UpdateInterfacesRequest.parser(), (ctx, r) -> {
                    network.updateInterfaces(r.getInterfacesList());
                    return Empty.getDefaultInstance();
                })
                .unary("UpdateRoutes", UpdateRoutesRequest.parser(), (ctx, r) -> {
                    network.updateRoutes(r.getRoutesList());
                    return Empty.getDefaultInstance();
                })
                .unary("ExecVMProcess", ExecVMProcessRequest.parser(), (ctx, r) -> exec(r))
                .unary("SyncClock", SyncClockPacket.parser(), (ctx, r) -> syncClock(r))
                .waiting("GetEvents", Empty.parser(), (ctx, r) -> events.take())
                .build();
    }

    int holderPid() {
        return holderPid;
    }

    private synchronized Empty setup(SetupSandboxRequest r) throws Exception {
        if (holderPid > 0) {
            throw Status.ALREADY_EXISTS.withDescription("the sandbox in this VM is already set up").asRuntimeException();
        }
        long t0 = System.nanoTime();
        beforeSetup.run();
        long restored = System.nanoTime();
        Pod pod = parse(r.getConfig().getTypeUrl(), r.getConfig().getValue().toByteArray());
        String sandboxId = pod.sandboxId();
        String hostname = pod.hostname();
        boolean podPid = pod.podPid();
        List<List<Sysctls.Setting>> settings = pod.sysctls();
        for (Sysctls.Setting s : settings.get(1)) {
            Path file = Path.of("/proc/sys").resolve(s.procPath());
            try {
                Files.writeString(file, s.value());
            } catch (IOException e) {
                throw Status.INVALID_ARGUMENT.withDescription("sysctl " + s.key() + "=" + s.value() + ": "
                        + e.getMessage()).asRuntimeException();
            }
        }
        long configured = System.nanoTime();
        int pid = holders.launch(sandboxId, null, hostname, podPid, true, settings.get(0), null);
        long held = System.nanoTime();
        Files.createDirectories(NS_DIR);
        List<String> types = new ArrayList<>(List.of("ipc", "uts"));
        if (podPid) {
            types.add("pid");
        }
        for (String t : types) {
            Path pin = NS_DIR.resolve(t);
            if (!Files.exists(pin)) {
                Files.createFile(pin);
            }
            Linux.mount("/proc/" + pid + "/ns/" + t, pin.toString(), "", Linux.MS_BIND, null);
        }
        holderPid = pid;
        long pinned = System.nanoTime();
        network.setup(r.getInterfacesList(), r.getRoutesList());
        long done = System.nanoTime();
        LOG.info("sandbox set up in {} ms (restore {}, config {}, holder {}, pins {}, network {}): hostname {}, "
                        + "namespaces {} pinned by holder {}", ms(t0, done), ms(t0, restored), ms(restored, configured),
                ms(configured, held), ms(held, pinned), ms(pinned, done), hostname, types, pid);
        return Empty.getDefaultInstance();
    }

    /** What SetupSandbox's PodSandboxConfig asks of the guest. */
    record Pod(String sandboxId, String hostname, boolean podPid, List<List<Sysctls.Setting>> sysctls) {
    }

    /** Reads SetupSandbox's config (Kuasar's: the PodSandboxConfig as JSON). Has no effect on the guest. */
    Pod parse(String type, byte[] value) throws IOException {
        if (!type.equals("PodSandboxConfig") && !type.endsWith("runtime.v1.PodSandboxConfig")) {
            throw Status.NOT_FOUND.withDescription("SetUpSandbox/config/" + type + " is not supported")
                    .asRuntimeException();
        }
        JsonNode config;
        try {
            config = json.readTree(value);
        } catch (IOException e) {
            throw Status.INVALID_ARGUMENT.withDescription("SetupSandbox: the PodSandboxConfig is not valid JSON: "
                    + e.getMessage()).asRuntimeException();
        }
        String id = config.path("metadata").path("uid").asText("");
        String sandboxId = id.isEmpty() ? "pod" : "pod-" + id.replaceAll("[^A-Za-z0-9_.-]", "");
        JsonNode pidMode = config.path("linux").path("security_context").path("namespace_options").path("pid");
        boolean podPid = pidMode.isMissingNode() || pidMode.isNull()
                || pidMode.asInt(-1) == POD_PID_NAMESPACE || pidMode.asText().equals("POD");
        Map<String, String> sysctls = new LinkedHashMap<>();
        config.path("linux").path("sysctls").properties().forEach(e -> sysctls.put(e.getKey(), e.getValue().asText()));
        return new Pod(sandboxId, hostname(config), podPid, Sysctls.forGuest(sandboxId, sysctls));
    }

    private static long ms(long from, long to) {
        return (to - from) / 1_000_000;
    }

    /** The pod's hostname: the config's, else the file the sandboxer shared (Kuasar's order is the file's). */
    private static String hostname(JsonNode config) throws IOException {
        Path file = GuestInit.STATE_DIR.resolve("hostname");
        if (Files.exists(file)) {
            String h = Files.readString(file).trim();
            if (!h.isEmpty()) {
                return h;
            }
        }
        String h = config.path("hostname").asText("");
        return h.isEmpty() ? "localhost" : h;
    }

    private ExecVMProcessResponse exec(ExecVMProcessRequest r) throws Exception {
        Process p = new ProcessBuilder("/bin/sh", "-c", r.getCommand()).start();
        try (var in = p.getOutputStream()) {
            in.write(r.getStdin().toByteArray());
        }
        java.util.concurrent.CompletableFuture<byte[]> err = new java.util.concurrent.CompletableFuture<>();
        Thread.ofVirtual().start(() -> {
            try {
                err.complete(p.getErrorStream().readAllBytes());
            } catch (IOException e) {
                err.complete(new byte[0]);
            }
        });
        byte[] stdout = p.getInputStream().readAllBytes();
        byte[] stderr = err.get();
        if (!p.waitFor(60, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw Status.DEADLINE_EXCEEDED.withDescription("ExecVMProcess: " + r.getCommand() + " still runs after 60 s")
                    .asRuntimeException();
        }
        if (p.exitValue() != 0) {
            throw Status.UNKNOWN.withDescription("ExecVMProcess: " + r.getCommand() + " exited with "
                    + p.exitValue() + ": " + new String(stderr, StandardCharsets.UTF_8).trim()).asRuntimeException();
        }
        return ExecVMProcessResponse.newBuilder().setOut(new String(stdout, StandardCharsets.UTF_8)).build();
    }

    /** Kuasar's two-step clock sync: the first call timestamps, the second (Delta set) corrects the clock. */
    static SyncClockPacket syncClock(SyncClockPacket r) {
        long now = nowNanos();
        if (r.getDelta() == 0) {
            return r.toBuilder().setClientArriveTime(now).setServerSendTime(nowNanos()).build();
        }
        Linux.setRealtimeClock(now + r.getDelta());
        LOG.info("clock corrected by {} ms", r.getDelta() / 1_000_000);
        return r;
    }

    private static long nowNanos() {
        Instant t = Instant.now();
        return t.getEpochSecond() * 1_000_000_000L + t.getNano();
    }
}
