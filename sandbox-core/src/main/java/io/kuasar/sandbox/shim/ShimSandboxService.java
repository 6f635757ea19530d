package io.kuasar.sandbox.shim;

import io.grpc.Status;
import io.grpc.stub.StreamObserver;
import io.kuasar.api.runtime.sandbox.v1.CreateSandboxRequest;
import io.kuasar.api.runtime.sandbox.v1.CreateSandboxResponse;
import io.kuasar.api.runtime.sandbox.v1.PingRequest;
import io.kuasar.api.runtime.sandbox.v1.PingResponse;
import io.kuasar.api.runtime.sandbox.v1.PlatformRequest;
import io.kuasar.api.runtime.sandbox.v1.PlatformResponse;
import io.kuasar.api.runtime.sandbox.v1.SandboxStatusRequest;
import io.kuasar.api.runtime.sandbox.v1.SandboxStatusResponse;
import io.kuasar.api.runtime.sandbox.v1.ShutdownSandboxRequest;
import io.kuasar.api.runtime.sandbox.v1.ShutdownSandboxResponse;
import io.kuasar.api.runtime.sandbox.v1.StartSandboxRequest;
import io.kuasar.api.runtime.sandbox.v1.StartSandboxResponse;
import io.kuasar.api.runtime.sandbox.v1.StopSandboxRequest;
import io.kuasar.api.runtime.sandbox.v1.StopSandboxResponse;
import io.kuasar.api.runtime.sandbox.v1.WaitSandboxRequest;
import io.kuasar.api.runtime.sandbox.v1.WaitSandboxResponse;
import io.kuasar.api.sandbox.v1.ControllerCreateRequest;
import io.kuasar.api.sandbox.v1.ControllerPlatformRequest;
import io.kuasar.api.sandbox.v1.ControllerShutdownRequest;
import io.kuasar.api.sandbox.v1.ControllerStartRequest;
import io.kuasar.api.sandbox.v1.ControllerStartResponse;
import io.kuasar.api.sandbox.v1.ControllerStatusRequest;
import io.kuasar.api.sandbox.v1.ControllerStatusResponse;
import io.kuasar.api.sandbox.v1.ControllerStopRequest;
import io.kuasar.sandbox.controller.ControllerService;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.state.Ids;
import io.kuasar.sandbox.state.SandboxRecord;
import io.kuasar.sandbox.state.Times;
import io.kuasar.sandbox.ttrpc.TtrpcService;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.ExecutionException;
import java.util.function.BiConsumer;

/**
 * containerd 1.7's shim Sandbox API ({@code containerd.runtime.sandbox.v1.Sandbox}), served beside the Task API on
 * the daemon's task socket, for runtimes with {@code sandbox_mode = "shim"}. containerd 1.7 cannot talk to a
 * sandboxer: it runs {@code containerd-shim-kuasar-<kind>-v2 start}, a launcher that answers with this socket, and
 * then drives each pod here as it would drive a shim of its own; every call is answered by the same controller that
 * serves containerd 2.x's Sandbox API, so both see the same sandboxes and there is still one daemon for every pod.
 * The containers of such a pod reach the Task API on the same socket.
 *
 * <p>What 1.7 needs beyond the controller: the CRI pod files ({@link CriPodFiles}), a WaitSandbox that blocks until
 * the sandbox exits (it is the only way CRI learns of a pod's end), and a ShutdownSandbox that never answers
 * NOT_FOUND (containerd would then leave the pod's bundle behind).
 */
public final class ShimSandboxService {
    private static final Logger LOG = LoggerFactory.getLogger(ShimSandboxService.class);
    public static final String SERVICE = "containerd.runtime.sandbox.v1.Sandbox";

    private final ControllerService controller;
    private final String sandboxer;

    /** {@code sandboxer}: this daemon's name, recorded as the sandboxer of the pods made here. */
    public ShimSandboxService(ControllerService controller, String sandboxer) {
        this.controller = controller;
        this.sandboxer = sandboxer;
    }

    public TtrpcService service() {
        return TtrpcService.builder(SERVICE)
                .unary("CreateSandbox", CreateSandboxRequest.parser(), (ctx, r) -> create(r))
                .unary("StartSandbox", StartSandboxRequest.parser(), (ctx, r) -> start(r))
                .waiting("Platform", PlatformRequest.parser(), (ctx, r) -> PlatformResponse.newBuilder()
                        .setPlatform(call(controller::platform, ControllerPlatformRequest.newBuilder()
                                .setSandboxId(r.getSandboxId()).build()).getPlatform()).build())
                .unary("StopSandbox", StopSandboxRequest.parser(), (ctx, r) -> {
                    call(controller::stop, ControllerStopRequest.newBuilder().setSandboxId(r.getSandboxId())
                            .setTimeoutSecs(r.getTimeoutSecs()).build());
                    return StopSandboxResponse.getDefaultInstance();
                })
                .waiting("WaitSandbox", WaitSandboxRequest.parser(), (ctx, r) -> waitFor(r))
                .waiting("SandboxStatus", SandboxStatusRequest.parser(), (ctx, r) -> status(r))
                .waiting("PingSandbox", PingRequest.parser(), (ctx, r) -> {
                    if (controller.record(Ids.require("sandbox", r.getSandboxId())) == null) {
                        throw notFound(r.getSandboxId());
                    }
                    return PingResponse.getDefaultInstance();
                })
                .unary("ShutdownSandbox", ShutdownSandboxRequest.parser(), (ctx, r) -> shutdown(r))
                .build();
    }

    private CreateSandboxResponse create(CreateSandboxRequest r) throws Exception {
        String id = Ids.require("sandbox", r.getSandboxId());
        Path bundle = r.getBundlePath().isEmpty() ? null : Path.of(r.getBundlePath());
        if (bundle != null && !bundle.isAbsolute()) {
            throw Status.INVALID_ARGUMENT.withDescription("sandbox " + id + ": bundle_path "
                    + Ids.printable(r.getBundlePath()) + " is not absolute").asRuntimeException();
        }
        CriPodFiles files = bundle == null ? null : CriPodFiles.forBundle(id, bundle);
        ControllerCreateRequest.Builder b = ControllerCreateRequest.newBuilder().setSandboxId(id)
                .addAllRootfs(r.getRootfsList()).setNetnsPath(r.getNetnsPath()).setSandboxer(sandboxer);
        if (r.hasOptions()) {
            b.setOptions(r.getOptions());
        }
        if (files != null) {
            b.putAllAnnotations(files.annotations());
        }
        call(controller::create, b.build());
        if (files != null) {
            try {
                files.ensure(controller.record(id));
            } catch (Exception e) {
                LOG.warn("sandbox {}: cannot make CRI's pod files ({}); removing the sandbox", id, e.getMessage());
                shutdownQuietly(id, files);
                throw Status.INTERNAL.withDescription("sandbox " + id + ": cannot make the pod files CRI mounts ("
                        + files.filesDir() + ", " + files.shm() + "): " + e.getMessage()).asRuntimeException();
            }
        }
        return CreateSandboxResponse.getDefaultInstance();
    }

    private StartSandboxResponse start(StartSandboxRequest r) {
        ControllerStartResponse s = call(controller::start, ControllerStartRequest.newBuilder()
                .setSandboxId(r.getSandboxId()).build());
        return StartSandboxResponse.newBuilder().setPid(s.getPid()).setCreatedAt(s.getCreatedAt()).build();
    }

    /** Blocks until the sandbox exits: CRI marks a pod NOTREADY only when this returns. */
    private WaitSandboxResponse waitFor(WaitSandboxRequest r) throws Exception {
        ExitStatus st;
        try {
            st = controller.exitOf(Ids.require("sandbox", r.getSandboxId())).get();
        } catch (ExecutionException e) {
            throw e.getCause() instanceof Exception c ? c : e;
        }
        return WaitSandboxResponse.newBuilder().setExitStatus(st.code())
                .setExitedAt(Times.timestamp(Times.nanos(st.exitedAt()))).build();
    }

    private SandboxStatusResponse status(SandboxStatusRequest r) {
        ControllerStatusResponse s = call(controller::status, ControllerStatusRequest.newBuilder()
                .setSandboxId(r.getSandboxId()).setVerbose(r.getVerbose()).build());
        SandboxStatusResponse.Builder b = SandboxStatusResponse.newBuilder().setSandboxId(s.getSandboxId())
                .setPid(s.getPid()).setState(s.getState()).putAllInfo(s.getInfoMap()).setCreatedAt(s.getCreatedAt());
        if (s.hasExitedAt()) {
            b.setExitedAt(s.getExitedAt());
        }
        if (s.hasExtra()) {
            b.setExtra(s.getExtra());
        }
        return b.build();
    }

    /** Never NOT_FOUND: containerd would keep the pod's bundle; a pod already gone is simply shut down. */
    private ShutdownSandboxResponse shutdown(ShutdownSandboxRequest r) throws Exception {
        String id = Ids.require("sandbox", r.getSandboxId());
        SandboxRecord rec = controller.record(id);
        CriPodFiles files = rec == null ? null : CriPodFiles.of(rec);
        call(controller::shutdown, ControllerShutdownRequest.newBuilder().setSandboxId(id).build());
        if (files != null) {
            files.remove();
        }
        return ShutdownSandboxResponse.getDefaultInstance();
    }

    private void shutdownQuietly(String id, CriPodFiles files) {
        try {
            call(controller::shutdown, ControllerShutdownRequest.newBuilder().setSandboxId(id).build());
            files.remove();
        } catch (Exception e) {
            LOG.warn("sandbox {}: cleanup after a failed CreateSandbox failed: {}", id, e.getMessage());
        }
    }

    /**
     * Before a container of a shim-mode pod is created: CRI's pod files are back if containerd removed them (it
     * does on every restart) or made empty directories in their place. containerd 1.7 names the pod of a task in its
     * bundle's {@code sandbox} file; other tasks are not touched.
     */
    public void beforeCreate(String containerId, Path bundle) throws Exception {
        Path sandboxFile = bundle.resolve("sandbox");
        if (!Files.isRegularFile(sandboxFile)) {
            return;
        }
        String sid = Files.readString(sandboxFile).trim();
        SandboxRecord rec = Ids.isValid(sid) ? controller.record(sid) : null;
        CriPodFiles files = rec == null ? null : CriPodFiles.of(rec);
        if (files != null) {
            files.ensure(rec);
        }
    }

    private static io.grpc.StatusRuntimeException notFound(String id) {
        return Status.NOT_FOUND.withDescription("sandbox " + id + " not found").asRuntimeException();
    }

    /** Runs one controller RPC in this thread; its error is thrown as the controller gave it. */
    private static <Q, R> R call(BiConsumer<Q, StreamObserver<R>> rpc, Q request) {
        Capture<R> out = new Capture<>();
        rpc.accept(request, out);
        return out.get();
    }

    /** The controller's RPCs (but Wait) answer before they return: this keeps what they answered. */
    private static final class Capture<R> implements StreamObserver<R> {
        private R value;
        private Throwable error;

        @Override
        public void onNext(R v) {
            value = v;
        }

        @Override
        public void onError(Throwable t) {
            error = t;
        }

        @Override
        public void onCompleted() {
        }

        R get() {
            if (error instanceof RuntimeException re) {
                throw re;
            }
            if (error != null) {
                throw Status.INTERNAL.withCause(error).withDescription(error.getMessage()).asRuntimeException();
            }
            if (value == null) {
                throw Status.INTERNAL.withDescription("the controller gave no answer").asRuntimeException();
            }
            return value;
        }
    }
}
