package io.kuasar.quark.gvisor;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.grpc.Status;
import io.kuasar.api.task.v3.CreateTaskRequest;
import io.kuasar.sandbox.mount.Mounts;
import io.kuasar.sandbox.oci.OciRuntime;
import io.kuasar.sandbox.oci.ProcessIo;
import io.kuasar.sandbox.pod.PodFiles;
import io.kuasar.sandbox.process.ProcessReaper;
import io.kuasar.sandbox.state.AtomicFiles;
import io.kuasar.sandbox.state.Ids;
import io.kuasar.sandbox.state.StateStore;
import io.kuasar.sandbox.sys.Linux;
import io.kuasar.sandbox.task.Container;
import io.kuasar.sandbox.task.ContainerRuntime;
import io.kuasar.sandbox.task.OciSpec;
import io.kuasar.sandbox.task.TaskRecord;
import io.kuasar.sandbox.ttrpc.CallContext;
import io.kuasar.sandbox.tty.Console;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * Containers of gVisor pods, through runsc: a container joins its pod's sandbox by gVisor's CRI annotations
 * ({@code io.kubernetes.cri.container-type=container}, {@code io.kubernetes.cri.sandbox-id}), which containerd's CRI
 * writes into every container spec. Its stdio are containerd's FIFOs themselves, handed to {@code runsc start}: the
 * sandbox holds them, no byte passes through this daemon, and output keeps flowing across a restart of it.
 */
public final class GvisorRuntime implements ContainerRuntime {
    static final String CONTAINER_TYPE = "io.kubernetes.cri.container-type";
    static final String SANDBOX_ID = "io.kubernetes.cri.sandbox-id";
    private final ObjectMapper json = new ObjectMapper();
    private final Runsc runsc;
    private final ProcessReaper reaper;
    private final StateStore store;

    public GvisorRuntime(Runsc runsc, ProcessReaper reaper, StateStore store) {
        this.runsc = runsc;
        this.reaper = reaper;
        this.store = store;
    }

    /** runsc's helper processes (sandbox, gofers, exec helpers) name themselves so in argv[0]. */
    public static boolean isRunscHelper(String argv0) {
        return argv0.startsWith("runsc-");
    }

    @Override
    public Container create(CallContext ctx, CreateTaskRequest req) throws Exception {
        String id = req.getId();
        Path bundle = Path.of(req.getBundle());
        ObjectNode spec = OciSpec.read(id, bundle, true);
        JsonNode annotations = spec.path("annotations");
        String sandboxId = annotations.path(SANDBOX_ID).asText("");
        if (sandboxId.isEmpty() || !Ids.isValid(sandboxId)) {
            throw Status.INVALID_ARGUMENT.withDescription("container " + id + ": the spec has no valid " + SANDBOX_ID
                    + " annotation; a gVisor container joins its pod's sandbox (containerd's CRI sets it)")
                    .asRuntimeException();
        }
        if (sandboxId.equals(id)) {
            throw Status.INVALID_ARGUMENT.withDescription("container " + id + " has the id of its sandbox")
                    .asRuntimeException();
        }
        ObjectNode a = spec.with("annotations");
        boolean changed = !"container".equals(a.path(CONTAINER_TYPE).asText());
        a.put(CONTAINER_TYPE, "container");
        changed |= PodFiles.inject(spec, store.sandboxDir(sandboxId));
        if (changed) {
            AtomicFiles.write(bundle.resolve("config.json"), json.writeValueAsBytes(spec));
        }
        boolean mounted = Mounts.mountRootfs(id, bundle, req.getRootfsList());
        ProcessIo io = new ProcessIo("container " + id, req.getStdin(), req.getStdout(), req.getStderr());
        Console console = null;
        try {
            console = req.getTerminal() ? Console.listenIn(store.consoleDir()) : null;
            Path pidFile = bundle.resolve("init.pid");
            List<String> args = new java.util.ArrayList<>(List.of("create", "--bundle", bundle.toString(),
                    "--pid-file", pidFile.toString()));
            if (console != null) {
                args.add("--console-socket");
                args.add(console.socketPath().toString());
            }
            args.add(id);
            runsc.cli().run("runsc create of container " + id, GvisorContainer.log(bundle), args,
                    OciRuntime.Stdio.none(), null);
            int pid = Integer.parseInt(Files.readString(pidFile).trim());
            return new GvisorContainer(id, sandboxId, bundle, runsc, reaper, mounted, io, console, pid, json,
                    store.consoleDir());
        } catch (IOException | RuntimeException e) {
            GvisorContainer.deleteQuietly(runsc, id, bundle);
            io.close();
            if (console != null) {
                console.close();
            }
            if (mounted) {
                Linux.umount(bundle.resolve("rootfs").toString(), Linux.MNT_DETACH);
            }
            throw e;
        }
    }

    /** A container of the previous daemon: the sandbox kept it running; a new {@code runsc wait} learns its end. */
    @Override
    public Container recover(TaskRecord r) throws IOException {
        Path bundle = Path.of(r.bundle());
        JsonNode state = runsc.state(r.id(), GvisorContainer.log(bundle));
        return GvisorContainer.recovered(r, bundle, runsc, reaper, json, state, store.consoleDir());
    }
}
