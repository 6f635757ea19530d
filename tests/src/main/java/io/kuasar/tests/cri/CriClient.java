package io.kuasar.tests.cri;

import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.NettyChannelBuilder;
import io.kuasar.api.cri.v1.AttachRequest;
import io.kuasar.api.cri.v1.Container;
import io.kuasar.api.cri.v1.ContainerConfig;
import io.kuasar.api.cri.v1.ContainerFilter;
import io.kuasar.api.cri.v1.ContainerMetadata;
import io.kuasar.api.cri.v1.ContainerStats;
import io.kuasar.api.cri.v1.ContainerStatsRequest;
import io.kuasar.api.cri.v1.ContainerStatus;
import io.kuasar.api.cri.v1.ContainerStatusRequest;
import io.kuasar.api.cri.v1.CreateContainerRequest;
import io.kuasar.api.cri.v1.ExecRequest;
import io.kuasar.api.cri.v1.ExecSyncRequest;
import io.kuasar.api.cri.v1.ExecSyncResponse;
import io.kuasar.api.cri.v1.ImageServiceGrpc;
import io.kuasar.api.cri.v1.ImageSpec;
import io.kuasar.api.cri.v1.KeyValue;
import io.kuasar.api.cri.v1.LinuxContainerConfig;
import io.kuasar.api.cri.v1.LinuxContainerResources;
import io.kuasar.api.cri.v1.LinuxContainerSecurityContext;
import io.kuasar.api.cri.v1.LinuxPodSandboxConfig;
import io.kuasar.api.cri.v1.LinuxSandboxSecurityContext;
import io.kuasar.api.cri.v1.ListContainersRequest;
import io.kuasar.api.cri.v1.ListPodSandboxRequest;
import io.kuasar.api.cri.v1.NamespaceMode;
import io.kuasar.api.cri.v1.NamespaceOption;
import io.kuasar.api.cri.v1.PodSandbox;
import io.kuasar.api.cri.v1.PodSandboxConfig;
import io.kuasar.api.cri.v1.PodSandboxFilter;
import io.kuasar.api.cri.v1.PodSandboxMetadata;
import io.kuasar.api.cri.v1.PodSandboxStatusRequest;
import io.kuasar.api.cri.v1.PodSandboxStatusResponse;
import io.kuasar.api.cri.v1.RemoveContainerRequest;
import io.kuasar.api.cri.v1.RemovePodSandboxRequest;
import io.kuasar.api.cri.v1.RunPodSandboxRequest;
import io.kuasar.api.cri.v1.RuntimeServiceGrpc;
import io.kuasar.api.cri.v1.StartContainerRequest;
import io.kuasar.api.cri.v1.StopContainerRequest;
import io.kuasar.api.cri.v1.StopPodSandboxRequest;
import io.kuasar.api.cri.v1.UpdateContainerResourcesRequest;
import io.kuasar.api.cri.v1.VersionRequest;
import io.kuasar.api.cri.v1.VersionResponse;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollDomainSocketChannel;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.unix.DomainSocketAddress;

import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Supplier;

/**
 * A small CRI v1 client (what kubelet or crictl would send) over containerd's Unix socket, for end-to-end tests.
 *
 * <p>Every call has its own deadline. The first call made through a client, and every {@link #runPod}, is retried for
 * up to {@link #CONNECT_RETRY} while containerd cannot reach its socket or the sandboxer's: after a refused connection
 * containerd's gRPC client to a proxy plugin backs off for up to 3 s.
 *
 * <p>Pods and containers are described the way kubelet does it: a pod on the host network gets no hostname, a
 * container repeats the pod's namespace options, logs go below the pod's {@code log_directory}.
 */
public final class CriClient implements AutoCloseable {
    public static final String DEFAULT_IMAGE = "docker.io/library/busybox:kuasar-e2e";
    public static final Duration DEFAULT_DEADLINE = Duration.ofSeconds(30);
    public static final Duration CONNECT_RETRY = Duration.ofSeconds(5);

    private final Path socket;
    private final EventLoopGroup loop;
    private final ManagedChannel channel;
    private final String runtimeHandler;
    private final Path logRoot;
    private final Duration deadline;
    private final AtomicBoolean connected = new AtomicBoolean();
    private final Set<String> podsCreated = ConcurrentHashMap.newKeySet();

    /**
     * @param socket         containerd's gRPC socket
     * @param runtimeHandler the CRI runtime handler for pods, e.g. {@code kuasar-runc}
     * @param logRoot        directory below which each pod gets its own {@code log_directory}
     */
    public CriClient(Path socket, String runtimeHandler, Path logRoot) {
        this(socket, runtimeHandler, logRoot, DEFAULT_DEADLINE);
    }

    public CriClient(Path socket, String runtimeHandler, Path logRoot, Duration deadline) {
        this.socket = socket;
        this.runtimeHandler = runtimeHandler;
        this.logRoot = logRoot;
        this.deadline = deadline;
        this.loop = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
        this.channel = NettyChannelBuilder.forAddress(new DomainSocketAddress(socket.toString()))
                .channelType(EpollDomainSocketChannel.class)
                .eventLoopGroup(loop)
                .usePlaintext()
                .maxInboundMessageSize(64 << 20)
                .build();
    }

    public Path socket() {
        return socket;
    }

    public String runtimeHandler() {
        return runtimeHandler;
    }

    /** The runtime service stub with the default per-call deadline (take a fresh stub for each call). */
    public RuntimeServiceGrpc.RuntimeServiceBlockingStub runtime() {
        return runtime(deadline);
    }

    /** The deadline of the calls that start or stop something: at least a minute, longer if this client's is. */
    private Duration slowCall() {
        return deadline.compareTo(Duration.ofSeconds(60)) > 0 ? deadline : Duration.ofSeconds(60);
    }

    public RuntimeServiceGrpc.RuntimeServiceBlockingStub runtime(Duration callDeadline) {
        return RuntimeServiceGrpc.newBlockingStub(channel).withDeadlineAfter(callDeadline.toMillis(), TimeUnit.MILLISECONDS);
    }

    public ImageServiceGrpc.ImageServiceBlockingStub images() {
        return ImageServiceGrpc.newBlockingStub(channel).withDeadlineAfter(deadline.toMillis(), TimeUnit.MILLISECONDS);
    }

    // ---------------------------------------------------------------------------------------------------------
    // Retries

    /** True for errors that mean "nothing was reached yet": containerd's socket, or the sandboxer's behind it. */
    static boolean isConnectError(StatusRuntimeException e) {
        Status.Code code = e.getStatus().getCode();
        String msg = String.valueOf(e.getStatus().getDescription());
        if (code == Status.Code.UNAVAILABLE) {
            return true;
        }
        return msg.contains("connection refused") || msg.contains("Error while dialing")
                || msg.contains("connect: no such file or directory");
    }

    private <T> T retryConnect(Supplier<T> call) {
        long end = System.nanoTime() + CONNECT_RETRY.toNanos();
        while (true) {
            try {
                T result = call.get();
                connected.set(true);
                return result;
            } catch (StatusRuntimeException e) {
                if (!isConnectError(e) || System.nanoTime() > end) {
                    throw e;
                }
                sleep(250);
            }
        }
    }

    private <T> T call(Supplier<T> call) {
        return connected.get() ? call.get() : retryConnect(call);
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted", e);
        }
    }

    // ---------------------------------------------------------------------------------------------------------
    // Runtime

    public VersionResponse version() {
        return call(() -> runtime().version(VersionRequest.getDefaultInstance()));
    }

    // ---------------------------------------------------------------------------------------------------------
    // Pods

    /** A pod as created: its id and the config it was created with (CreateContainer needs it again). */
    public record Pod(String id, PodSandboxConfig config) {
        public Path logDirectory() {
            return Path.of(config.getLogDirectory());
        }
    }

    /** The config kubelet would send for a pod; {@code hostNetwork} pods get no hostname (runc refuses one). */
    public PodSandboxConfig podConfig(String name, boolean hostNetwork, NamespaceMode pidMode) {
        String uid = UUID.randomUUID().toString();
        PodSandboxConfig.Builder b = PodSandboxConfig.newBuilder()
                .setMetadata(PodSandboxMetadata.newBuilder().setName(name).setUid(uid).setNamespace("default"))
                .setLogDirectory(logRoot.resolve(name + "-" + uid.substring(0, 8)).toString())
                .putLabels("io.kuasar.e2e", "true")
                .setLinux(LinuxPodSandboxConfig.newBuilder().setSecurityContext(LinuxSandboxSecurityContext.newBuilder()
                        .setNamespaceOptions(NamespaceOption.newBuilder()
                                .setNetwork(hostNetwork ? NamespaceMode.NODE : NamespaceMode.POD)
                                .setPid(pidMode)
                                .setIpc(NamespaceMode.POD))));
        if (!hostNetwork) {
            b.setHostname(name);
        }
        return b.build();
    }

    public Pod runPod(String name, boolean hostNetwork, NamespaceMode pidMode) {
        return runPod(podConfig(name, hostNetwork, pidMode));
    }

    public Pod runPod(String name, boolean hostNetwork) {
        return runPod(name, hostNetwork, NamespaceMode.CONTAINER);
    }

    public Pod runPod(PodSandboxConfig config) {
        return runPod(config, runtimeHandler);
    }

    public Pod runPod(PodSandboxConfig config, String handler) {
        return runPod(config, handler, slowCall());
    }

    /** RunPodSandbox with a deadline of its own (many microVMs booting at once under TCG take minutes). */
    public Pod runPod(PodSandboxConfig config, String handler, Duration deadline) {
        RunPodSandboxRequest req = RunPodSandboxRequest.newBuilder().setConfig(config).setRuntimeHandler(handler).build();
        String id = retryConnect(() -> runtime(deadline).runPodSandbox(req)).getPodSandboxId();
        podsCreated.add(id);
        return new Pod(id, config);
    }

    /** Ids of every pod this client created (removed or not). */
    public List<String> podsCreated() {
        return List.copyOf(podsCreated);
    }

    public PodSandboxStatusResponse podStatus(String podId, boolean verbose) {
        return call(() -> runtime().podSandboxStatus(PodSandboxStatusRequest.newBuilder()
                .setPodSandboxId(podId).setVerbose(verbose).build()));
    }

    public List<PodSandbox> listPods() {
        return call(() -> runtime().listPodSandbox(ListPodSandboxRequest.getDefaultInstance())).getItemsList();
    }

    public List<PodSandbox> listPods(PodSandboxFilter filter) {
        return call(() -> runtime().listPodSandbox(ListPodSandboxRequest.newBuilder().setFilter(filter).build()))
                .getItemsList();
    }

    public void stopPod(String podId) {
        call(() -> runtime(slowCall()).stopPodSandbox(
                StopPodSandboxRequest.newBuilder().setPodSandboxId(podId).build()));
    }

    public void removePod(String podId) {
        call(() -> runtime(slowCall()).removePodSandbox(
                RemovePodSandboxRequest.newBuilder().setPodSandboxId(podId).build()));
    }

    /** StopPodSandbox then RemovePodSandbox, as kubelet does. */
    public void stopAndRemovePod(String podId) {
        stopPod(podId);
        removePod(podId);
    }

    // ---------------------------------------------------------------------------------------------------------
    // Containers

    /** Options of a container beyond its command; kubelet's defaults otherwise. */
    public static final class ContainerOptions {
        String image = DEFAULT_IMAGE;
        boolean tty;
        boolean stdin;
        boolean stdinOnce;
        NamespaceMode pidMode;
        final Map<String, String> env = new LinkedHashMap<>();
        LinuxContainerResources resources;
        String logPath;
        final Map<String, String> annotations = new LinkedHashMap<>();
        final java.util.List<io.kuasar.api.cri.v1.Mount> mounts = new java.util.ArrayList<>();

        public static ContainerOptions defaults() {
            return new ContainerOptions();
        }

        public ContainerOptions image(String v) {
            image = v;
            return this;
        }

        public ContainerOptions tty(boolean v) {
            tty = v;
            return this;
        }

        public ContainerOptions stdin(boolean v) {
            stdin = v;
            return this;
        }

        public ContainerOptions stdinOnce(boolean v) {
            stdinOnce = v;
            return this;
        }

        /** The container's PID namespace mode; default: the pod's. */
        public ContainerOptions pidMode(NamespaceMode v) {
            pidMode = v;
            return this;
        }

        public ContainerOptions env(String key, String value) {
            env.put(key, value);
            return this;
        }

        public ContainerOptions resources(LinuxContainerResources v) {
            resources = v;
            return this;
        }

        public ContainerOptions memoryLimit(long bytes) {
            resources = (resources == null ? LinuxContainerResources.newBuilder() : resources.toBuilder())
                    .setMemoryLimitInBytes(bytes).build();
            return this;
        }

        public ContainerOptions annotation(String key, String value) {
            annotations.put(key, value);
            return this;
        }

        /** A bind mount of a host directory or file. */
        public ContainerOptions mount(String hostPath, String containerPath, boolean readOnly) {
            mounts.add(io.kuasar.api.cri.v1.Mount.newBuilder().setHostPath(hostPath).setContainerPath(containerPath)
                    .setReadonly(readOnly).build());
            return this;
        }

        /** Log file path relative to the pod's log directory; default {@code <name>.log}. */
        public ContainerOptions logPath(String v) {
            logPath = v;
            return this;
        }
    }

    public ContainerConfig containerConfig(Pod pod, String name, ContainerOptions o, String... cmd) {
        NamespaceOption podNs = pod.config().getLinux().getSecurityContext().getNamespaceOptions();
        NamespaceOption ns = podNs.toBuilder().setPid(o.pidMode != null ? o.pidMode : podNs.getPid()).build();
        LinuxContainerConfig.Builder linux = LinuxContainerConfig.newBuilder()
                .setSecurityContext(LinuxContainerSecurityContext.newBuilder().setNamespaceOptions(ns));
        if (o.resources != null) {
            linux.setResources(o.resources);
        }
        ContainerConfig.Builder b = ContainerConfig.newBuilder()
                .setMetadata(ContainerMetadata.newBuilder().setName(name))
                .setImage(ImageSpec.newBuilder().setImage(o.image))
                .addAllCommand(Arrays.asList(cmd))
                .setLogPath(o.logPath != null ? o.logPath : name + ".log")
                .setStdin(o.stdin).setStdinOnce(o.stdinOnce).setTty(o.tty)
                .putLabels("io.kuasar.e2e", "true")
                .setLinux(linux)
                .putAllAnnotations(o.annotations)
                .addAllMounts(o.mounts);
        o.env.forEach((k, v) -> b.addEnvs(KeyValue.newBuilder().setKey(k).setValue(com.google.protobuf.ByteString.copyFromUtf8(v))));
        return b.build();
    }

    public String createContainer(Pod pod, String name, ContainerOptions o, String... cmd) {
        return createContainer(pod, containerConfig(pod, name, o, cmd));
    }

    /** CreateContainer with a config the caller built (mounts, a security context, ...). */
    public String createContainer(Pod pod, ContainerConfig cfg) {
        return call(() -> runtime(slowCall()).createContainer(CreateContainerRequest.newBuilder()
                .setPodSandboxId(pod.id()).setConfig(cfg).setSandboxConfig(pod.config()).build())).getContainerId();
    }

    public String createContainer(Pod pod, String name, String... cmd) {
        return createContainer(pod, name, ContainerOptions.defaults(), cmd);
    }

    public void startContainer(String id) {
        call(() -> runtime(slowCall()).startContainer(
                StartContainerRequest.newBuilder().setContainerId(id).build()));
    }

    /** CreateContainer + StartContainer. */
    public String runContainer(Pod pod, String name, ContainerOptions o, String... cmd) {
        String id = createContainer(pod, name, o, cmd);
        startContainer(id);
        return id;
    }

    public String runContainer(Pod pod, String name, String... cmd) {
        return runContainer(pod, name, ContainerOptions.defaults(), cmd);
    }

    /** CreateContainer + StartContainer with a config the caller built. */
    public String runContainer(Pod pod, ContainerConfig cfg) {
        String id = createContainer(pod, cfg);
        startContainer(id);
        return id;
    }

    /** StopContainer: SIGTERM (or the image's stop signal), SIGKILL after {@code timeoutSeconds}. */
    public void stopContainer(String id, long timeoutSeconds) {
        Duration d = Duration.ofSeconds(timeoutSeconds).plus(deadline);
        call(() -> runtime(d).stopContainer(
                StopContainerRequest.newBuilder().setContainerId(id).setTimeout(timeoutSeconds).build()));
    }

    public void removeContainer(String id) {
        call(() -> runtime(slowCall()).removeContainer(
                RemoveContainerRequest.newBuilder().setContainerId(id).build()));
    }

    public ContainerStatus containerStatus(String id) {
        return call(() -> runtime().containerStatus(ContainerStatusRequest.newBuilder().setContainerId(id).build()))
                .getStatus();
    }

    public Map<String, String> containerInfo(String id) {
        return call(() -> runtime().containerStatus(ContainerStatusRequest.newBuilder().setContainerId(id)
                .setVerbose(true).build())).getInfoMap();
    }

    public List<Container> listContainers() {
        return call(() -> runtime().listContainers(ListContainersRequest.getDefaultInstance())).getContainersList();
    }

    public List<Container> listContainers(String podId) {
        return call(() -> runtime().listContainers(ListContainersRequest.newBuilder()
                .setFilter(ContainerFilter.newBuilder().setPodSandboxId(podId)).build())).getContainersList();
    }

    public ContainerStats containerStats(String id) {
        return call(() -> runtime().containerStats(ContainerStatsRequest.newBuilder().setContainerId(id).build()))
                .getStats();
    }

    public void updateResources(String id, LinuxContainerResources resources) {
        call(() -> runtime().updateContainerResources(UpdateContainerResourcesRequest.newBuilder()
                .setContainerId(id).setLinux(resources).build()));
    }

    // ---------------------------------------------------------------------------------------------------------
    // Exec and attach

    /** The result of ExecSync, with stdout and stderr decoded as UTF-8. */
    public record ExecResult(int exitCode, String stdout, String stderr) {
    }

    /** ExecSync; {@code timeoutSeconds} is CRI's own timeout (0 = none); the gRPC deadline is a bit longer. */
    public ExecResult execSync(String id, long timeoutSeconds, String... cmd) {
        Duration d = Duration.ofSeconds(timeoutSeconds).plus(deadline);
        ExecSyncResponse r = call(() -> runtime(d).execSync(ExecSyncRequest.newBuilder().setContainerId(id)
                .addAllCmd(Arrays.asList(cmd)).setTimeout(timeoutSeconds).build()));
        return new ExecResult(r.getExitCode(), r.getStdout().toString(StandardCharsets.UTF_8),
                r.getStderr().toString(StandardCharsets.UTF_8));
    }

    public ExecResult execSync(String id, String... cmd) {
        return execSync(id, 10, cmd);
    }

    /** The streaming-server URL for an exec; open it with {@link StreamClient}. */
    public URI execUrl(String id, boolean tty, boolean stdin, String... cmd) {
        ExecRequest req = ExecRequest.newBuilder().setContainerId(id).addAllCmd(Arrays.asList(cmd))
                .setTty(tty).setStdin(stdin).setStdout(true).setStderr(!tty).build();
        return URI.create(call(() -> runtime().exec(req)).getUrl());
    }

    /** The streaming-server URL for a port-forward to {@code port} in the pod's network namespace. */
    public URI portForwardUrl(String podId, int port) {
        return URI.create(call(() -> runtime().portForward(io.kuasar.api.cri.v1.PortForwardRequest.newBuilder()
                .setPodSandboxId(podId).addPort(port).build())).getUrl());
    }

    /** The streaming-server URL for an attach to the container's own stdio. */
    public URI attachUrl(String id, boolean tty, boolean stdin) {
        AttachRequest req = AttachRequest.newBuilder().setContainerId(id).setTty(tty).setStdin(stdin)
                .setStdout(true).setStderr(!tty).build();
        return URI.create(call(() -> runtime().attach(req)).getUrl());
    }

    // ---------------------------------------------------------------------------------------------------------
    // Cleanup

    /**
     * Stops and removes every container and pod this containerd knows (kubelet's order: containers first).
     * Best effort: keeps going after an error and returns the errors it saw.
     */
    public List<String> cleanupAll() {
        List<String> errors = new ArrayList<>();
        List<Container> containers;
        try {
            containers = listContainers();
        } catch (RuntimeException e) {
            errors.add("ListContainers: " + e.getMessage());
            containers = List.of();
        }
        for (Container c : containers) {
            try {
                stopContainer(c.getId(), 0);
            } catch (RuntimeException e) {
                errors.add("StopContainer " + c.getId() + ": " + e.getMessage());
            }
            try {
                removeContainer(c.getId());
            } catch (RuntimeException e) {
                errors.add("RemoveContainer " + c.getId() + ": " + e.getMessage());
            }
        }
        List<PodSandbox> pods;
        try {
            pods = listPods();
        } catch (RuntimeException e) {
            errors.add("ListPodSandbox: " + e.getMessage());
            pods = List.of();
        }
        for (PodSandbox p : pods) {
            try {
                stopPod(p.getId());
            } catch (RuntimeException e) {
                errors.add("StopPodSandbox " + p.getId() + ": " + e.getMessage());
            }
            try {
                removePod(p.getId());
            } catch (RuntimeException e) {
                errors.add("RemovePodSandbox " + p.getId() + ": " + e.getMessage());
            }
        }
        return errors;
    }

    @Override
    public void close() {
        channel.shutdownNow();
        try {
            channel.awaitTermination(5, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        loop.shutdownGracefully(0, 1, TimeUnit.SECONDS);
    }
}
