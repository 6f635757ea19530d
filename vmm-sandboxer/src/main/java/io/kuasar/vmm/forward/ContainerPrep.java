package io.kuasar.vmm.forward;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.grpc.Status;
import io.kuasar.api.types.Mount;
import io.kuasar.sandbox.mount.Mounts;
import io.kuasar.sandbox.state.AtomicFiles;
import io.kuasar.sandbox.task.OciSpec;
import io.kuasar.sandbox.sys.Linux;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

/**
 * Lays a container out in the pod's shared directory so the guest can run it, as Kuasar's append-container
 * handlers do: the bundle directory, the rootfs containerd's snapshotter prepared (mounted there, so it reaches the
 * guest through the shared filesystem), each host bind mount of the spec (a "storage"), and the spec rewritten for
 * the guest (namespaces, mount sources, the pod's files). Every step registers its undo with the caller's
 * {@link Rollback}.
 */
public final class ContainerPrep {
    /** Where the shared directory appears in the guest. */
    static final String GUEST_STATE = "/run/kuasar/state";
    /** Where the guest pins the pod's namespaces. */
    static final String GUEST_NS = "/run/sandbox-ns";
    private static final Set<String> DROPPED_NAMESPACES = Set.of("network", "cgroup");
    /** Marks a bundle that Update laid out (the Kuasar-fork and iSulad flow). */
    private static final String UPDATE_MARK = ".from-update";

    private final ObjectMapper json = new ObjectMapper();

    /**
     * Prepares container {@code id}; returns its bundle path in the guest. {@code hostBundle} is containerd's
     * bundle on the host (its config.json is the spec), {@code shared} the pod's shared directory.
     */
    String prepare(String id, Path hostBundle, List<Mount> rootfs, Path shared, Rollback undo) throws IOException {
        ObjectNode spec = OciSpec.read(id, hostBundle);
        return layOut(id, spec, hostBundle.resolve(spec.path("root").path("path").asText("rootfs")), rootfs, shared,
                undo);
    }

    /**
     * Kuasar's append_container from {@code Update(extensions.tasks)} (its containerd fork, iSulad): the same
     * layout, from the spec and rootfs mounts the task list carries, before any Task call arrives. A container
     * laid out already (a retried Update) is left as it is, and so is one whose entry has no rootfs to lay out
     * (no mounts, and a spec root that is not a host path): its Task Create, which carries them, does it then.
     * Undoes what it made if a step fails.
     */
    public void prepareForUpdate(io.kuasar.sandbox.controller.TaskResources.Task task, Path shared)
            throws IOException {
        String id = task.taskId();
        if (preparedByUpdate(shared, id)) {
            return;
        }
        if (task.spec() == null || !task.spec().isObject()) {
            throw Status.INVALID_ARGUMENT.withDescription("container " + id + ": extensions.tasks carries no spec")
                    .asRuntimeException();
        }
        ObjectNode spec = ((ObjectNode) task.spec()).deepCopy();
        Path root = Path.of(spec.path("root").path("path").asText(""));
        if (task.rootfs().isEmpty() && !root.isAbsolute()) {
            return;
        }
        Rollback undo = new Rollback();
        try {
            layOut(id, spec, root, task.rootfsMounts(), shared, undo);
            AtomicFiles.write(shared.resolve(id).resolve(UPDATE_MARK), new byte[0]);
            undo.commit();
        } catch (IOException | RuntimeException e) {
            undo.run();
            throw e;
        }
    }

    /** Whether Update laid the container out (its Task Create then has nothing to prepare). */
    static boolean preparedByUpdate(Path shared, String id) {
        return Files.exists(shared.resolve(id).resolve(UPDATE_MARK));
    }

    /** The guest bundle of a container. */
    static String guestBundle(String id) {
        return GUEST_STATE + "/" + id;
    }

    private String layOut(String id, ObjectNode spec, Path rootIfNoMounts, List<Mount> rootfs, Path shared,
                          Rollback undo) throws IOException {
        Path dir = shared.resolve(id);
        if (Files.exists(dir, LinkOption.NOFOLLOW_LINKS)) {
            throw Status.ALREADY_EXISTS.withDescription("container " + id + ": " + dir + " already exists")
                    .asRuntimeException();
        }
        Files.createDirectories(dir);
        undo.onFailure("bundle " + dir, () -> Bundles.remove(dir));
        Path rootTarget = dir.resolve("rootfs");
        Files.createDirectories(rootTarget);
        if (!rootfs.isEmpty()) {
            try {
                Mounts.mountAll(rootfs, rootTarget);
            } catch (IllegalArgumentException e) {
                throw Status.INVALID_ARGUMENT.withDescription("container " + id + ": cannot mount rootfs: "
                        + e.getMessage()).asRuntimeException();
            }
        } else {
            // containerd mounted the rootfs itself (no snapshotter mounts given): share what the spec names
            Linux.mount(rootIfNoMounts.toString(), rootTarget.toString(), "", Linux.MS_BIND | Linux.MS_REC, null);
        }
        spec.withObject("root").put("path", "rootfs");
        rewriteMounts(id, spec, dir);
        rewriteNamespaces(spec);
        addPodFiles(spec, shared);
        cleanForGuest(id, spec);
        AtomicFiles.write(dir.resolve("config.json"), json.writerWithDefaultPrettyPrinter().writeValueAsBytes(spec));
        return guestBundle(id);
    }

    /** Host bind mounts become storages under the bundle; /dev/shm becomes the guest's (shared by the pod). */
    private void rewriteMounts(String id, ObjectNode spec, Path dir) throws IOException {
        int n = 0;
        for (JsonNode m : spec.withArray("mounts")) {
            ObjectNode om = (ObjectNode) m;
            String dest = om.path("destination").asText();
            if (dest.equals("/dev/shm")) {
                om.put("type", "bind");
                om.put("source", "/dev/shm");
                om.set("options", om.arrayNode().add("rbind").add("nosuid").add("nodev").add("noexec"));
                continue;
            }
            if (!io.kuasar.sandbox.task.OciSpec.isBindMount(om)) {
                continue; // proc, sysfs, tmpfs, devpts, mqueue...: made by runc in the guest
            }
            Path source = Path.of(om.path("source").asText());
            if (!Files.exists(source)) {
                throw Status.INVALID_ARGUMENT.withDescription("container " + id + ": mount source " + source
                        + " for " + dest + " does not exist").asRuntimeException();
            }
            String name = "storage-" + (++n);
            Path target = dir.resolve(name);
            if (Files.isDirectory(source)) {
                Files.createDirectories(target);
            } else {
                Files.createFile(target);
            }
            Linux.mount(source.toString(), target.toString(), "", Linux.MS_BIND | Linux.MS_REC, null);
            om.put("source", GUEST_STATE + "/" + id + "/" + name);
        }
    }

    /**
     * The guest has no pod network namespace (its own is the pod's) and its own cgroups; IPC, UTS and a shared PID
     * namespace are the ones the guest agent pinned at SetupSandbox. The host paths containerd put there (the VMM's
     * /proc/pid/ns/...) mean nothing in the guest.
     */
    private static void rewriteNamespaces(ObjectNode spec) {
        JsonNode ns = spec.path("linux").path("namespaces");
        if (!ns.isArray()) {
            return;
        }
        ArrayNode kept = spec.arrayNode();
        for (JsonNode n : ns) {
            String type = n.path("type").asText();
            if (DROPPED_NAMESPACES.contains(type)) {
                continue;
            }
            ObjectNode on = ((ObjectNode) n).deepCopy();
            boolean joined = on.hasNonNull("path") && !on.path("path").asText().isEmpty();
            if (type.equals("ipc") || type.equals("uts") || (type.equals("pid") && joined)) {
                on.put("path", GUEST_NS + "/" + type);
            } else {
                on.remove("path");
            }
            kept.add(on);
        }
        spec.withObject("linux").set("namespaces", kept);
    }

    /** Kuasar's SpecHandler: /etc/hostname, hosts and resolv.conf from the shared directory, unless mounted. */
    private static void addPodFiles(ObjectNode spec, Path shared) {
        ArrayNode mounts = spec.withArray("mounts");
        Set<String> taken = new HashSet<>();
        mounts.forEach(m -> taken.add(Path.of(m.path("destination").asText("/")).normalize().toString()));
        boolean readOnly = spec.path("root").path("readonly").asBoolean(false);
        for (String f : List.of("hostname", "hosts", "resolv.conf")) {
            String dest = "/etc/" + f;
            if (taken.contains(dest) || !Files.exists(shared.resolve(f))) {
                continue;
            }
            ObjectNode m = mounts.addObject();
            m.put("destination", dest);
            m.put("type", "bind");
            m.put("source", GUEST_STATE + "/" + f);
            m.set("options", m.arrayNode().add("rbind").add("rprivate").add(readOnly ? "ro" : "rw"));
        }
    }

    /** What makes no sense in the guest: an AppArmor profile of the host, CPU pinning to host CPUs, systemd paths. */
    private static void cleanForGuest(String id, ObjectNode spec) {
        ((ObjectNode) spec.path("process")).remove("apparmorProfile");
        JsonNode cpu = spec.path("linux").path("resources").path("cpu");
        if (cpu instanceof ObjectNode c) {
            c.remove("cpus");
            c.remove("mems");
        }
        JsonNode linux = spec.path("linux");
        if (linux instanceof ObjectNode l && l.path("cgroupsPath").asText("").contains(":")) {
            l.put("cgroupsPath", "/kuasar/" + id); // systemd's slice:prefix:name form; the guest has no systemd
        }
    }
}
