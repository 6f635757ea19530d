package io.kuasar.runc;

import io.kuasar.sandbox.oci.ProcessIo;
import io.kuasar.sandbox.oci.OciRuntime;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.grpc.Status;
import io.kuasar.api.runc.options.Options;
import io.kuasar.api.task.v3.CreateTaskRequest;
import io.kuasar.sandbox.pod.PodFiles;
import io.kuasar.sandbox.cgroup.CgroupStats;
import io.kuasar.sandbox.cgroup.OomMonitor;
import io.kuasar.sandbox.mount.Mounts;
import io.kuasar.sandbox.process.ProcessReaper;
import io.kuasar.sandbox.state.AtomicFiles;
import io.kuasar.sandbox.state.Ids;
import io.kuasar.sandbox.state.StateStore;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.kuasar.sandbox.sys.Linux;
import io.kuasar.sandbox.task.Container;
import io.kuasar.sandbox.task.ContainerRuntime;
import io.kuasar.sandbox.task.OciSpec;
import io.kuasar.sandbox.task.TaskRecord;
import io.kuasar.sandbox.ttrpc.CallContext;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Path;

/**
 * Creates runc containers in containerd's own bundle: checks the OCI spec, mounts the rootfs containerd prepared,
 * then {@code runc create}. The spec's namespace paths already point at the pod's holder ({@code /proc/<pid>/ns/*}),
 * because Start returned the holder's real pid.
 */
public final class RuncRuntime implements ContainerRuntime {
    /** CRI's annotation naming a container's pod. */
    public static final String SANDBOX_ID_ANNOTATION = "io.kubernetes.cri.sandbox-id";

    private final OciRuntime runc;
    private final ProcessReaper reaper;
    private static final Logger LOG = LoggerFactory.getLogger(RuncRuntime.class);
    private final ObjectMapper json = new ObjectMapper();
    private final CgroupStats cgroups = new CgroupStats();

    private final StateStore store;
    private final OomMonitor oom;
    private final Path consoleDir;
    private final Path monitor;

    /**
     * {@code store} is the daemon's --dir: pod files live in its sandbox directories, consoles in its console
     * directory. {@code monitor} is the kuasar-monitor helper (null: exit statuses come from this process, as its
     * children).
     */
    public RuncRuntime(OciRuntime runc, ProcessReaper reaper, StateStore store, Path monitor) {
        this(runc, reaper, store, monitor, null);
    }

    /** {@code oom}: where containers' OOM kills are watched (their memory cgroups); null reports none. */
    public RuncRuntime(OciRuntime runc, ProcessReaper reaper, StateStore store, Path monitor, OomMonitor oom) {
        this.oom = oom;
        this.runc = runc;
        this.reaper = reaper;
        this.store = store;
        this.consoleDir = store == null ? null : store.consoleDir();
        this.monitor = monitor;
    }

    @Override
    public Container recover(TaskRecord r) throws IOException {
        OciRuntime rr = runc.withBinary(r.facts().getOrDefault(RuncContainer.FACT_RUNC, runc.binary()))
                .withRoot(Path.of(r.facts().getOrDefault(RuncContainer.FACT_ROOT, runc.root().toString())));
        return RuncContainer.recovered(r, rr, reaper, json, cgroups, consoleDir, monitor).withOom(oom);
    }

    @Override
    public Container create(CallContext ctx, CreateTaskRequest req) throws Exception {
        String id = req.getId();
        long t0 = System.nanoTime();
        Path bundle = Path.of(req.getBundle());
        JsonNode spec = OciSpec.read(id, bundle, true);
        String sandboxId = spec.path("annotations").path(SANDBOX_ID_ANNOTATION).asText("");
        if (!sandboxId.isEmpty() && Ids.isValid(sandboxId)
                && PodFiles.inject((ObjectNode) spec, store.sandboxDir(sandboxId))) {
            AtomicFiles.write(bundle.resolve("config.json"), json.writeValueAsBytes(spec));
        }
        OciRuntime r = runcFor(id, req);
        long t1 = System.nanoTime();
        boolean mounted = Mounts.mountRootfs(id, bundle, req.getRootfsList());
        long t2 = System.nanoTime();
        RuncContainer c = new RuncContainer(id, sandboxId, bundle, r, reaper, json, cgroups, mounted,
                new ProcessIo("container " + id, req.getStdin(), req.getStdout(), req.getStderr()), consoleDir,
                req.getTerminal(), monitor).withOom(oom);
        try {
            c.create();
            LOG.debug("container {}: spec {} ms, rootfs {} ms, runc create {} ms", id, (t1 - t0) / 1_000_000,
                    (t2 - t1) / 1_000_000, (System.nanoTime() - t2) / 1_000_000);
        } catch (Exception e) {
            // Whatever runc got as far as making goes (its state, `runc init`, the monitor), else the next Create
            // of this id fails and the rootfs stays mounted.
            c.discardFailedCreate();
            if (mounted) {
                Linux.umount(bundle.resolve("rootfs").toString(), Linux.MNT_DETACH);
            }
            throw e;
        }
        return c;
    }

    /** containerd passes runc options (binary name, state root) when the runtime has them. */
    private OciRuntime runcFor(String id, CreateTaskRequest req) {
        OciRuntime r = runc;
        if (req.hasOptions() && req.getOptions().getTypeUrl().endsWith("containerd.runc.v1.Options")) {
            try {
                Options o = Options.parseFrom(req.getOptions().getValue());
                if (!o.getBinaryName().isEmpty()) {
                    r = r.withBinary(o.getBinaryName());
                }
                if (!o.getRoot().isEmpty()) {
                    r = r.withRoot(Path.of(o.getRoot()));
                }
            } catch (com.google.protobuf.InvalidProtocolBufferException e) {
                throw Status.INVALID_ARGUMENT.withDescription("container " + id + ": options are not valid runc options: "
                        + e.getMessage()).asRuntimeException();
            }
        }
        return r;
    }

}
