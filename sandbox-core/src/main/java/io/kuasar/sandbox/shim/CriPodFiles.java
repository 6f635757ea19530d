package io.kuasar.sandbox.shim;

import io.kuasar.api.cri.v1.PodSandboxConfig;
import io.kuasar.sandbox.pod.PodFiles;
import io.kuasar.sandbox.state.AtomicFiles;
import io.kuasar.sandbox.state.SandboxRecord;
import io.kuasar.sandbox.state.StateStore;
import io.kuasar.sandbox.sys.Linux;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

/**
 * The pod files containerd 1.7's CRI mounts into every container of a shim-mode pod but does not make itself (its
 * pause-container controller would): {@code <RootDir>/sandboxes/<id>/{hostname,hosts,resolv.conf}} and a tmpfs at
 * {@code <StateDir>/sandboxes/<id>/shm}, where RootDir and StateDir are the CRI plugin's directories under
 * containerd's root and state. A missing one would become an empty directory (CRI creates mount sources it does not
 * find), so they are made at CreateSandbox, made again before a container's Create when CRI removed them (it does on
 * every restart of containerd), and removed at ShutdownSandbox.
 */
final class CriPodFiles {
    private static final Logger LOG = LoggerFactory.getLogger(CriPodFiles.class);
    static final String CRI_PLUGIN = "io.containerd.grpc.v1.cri";
    static final String RUNTIME_PLUGIN = "io.containerd.runtime.v2.task";
    /** Where the record keeps them: containerd's paths differ per node (root, state), so they are derived once. */
    static final String ANNOTATION_ROOT = "io.kuasar.shim/cri-root-dir";
    static final String ANNOTATION_STATE = "io.kuasar.shim/cri-state-dir";

    private final String id;
    private final Path rootDir;
    private final Path stateDir;

    CriPodFiles(String id, Path rootDir, Path stateDir) {
        this.id = id;
        this.rootDir = rootDir;
        this.stateDir = stateDir;
    }

    /**
     * From the sandbox bundle containerd made, {@code <state>/io.containerd.runtime.v2.task/<ns>/<id>}, whose
     * {@code work} link points to {@code <root>/io.containerd.runtime.v2.task/<ns>/<id>}; null if the bundle does not
     * look like that (then containerd is not running the CRI plugin's layout, and nothing is made).
     */
    static CriPodFiles forBundle(String id, Path bundle) {
        Path ns = bundle.getParent();
        Path runtime = ns == null ? null : ns.getParent();
        if (!bundle.getFileName().toString().equals(id) || runtime == null || runtime.getParent() == null
                || !runtime.getFileName().toString().equals(RUNTIME_PLUGIN)) {
            return null;
        }
        Path state = runtime.getParent();
        Path root = Path.of("/var/lib/containerd"); // containerd's default, if the work link is missing
        try {
            Path work = Files.readSymbolicLink(bundle.resolve("work"));
            if (work.getNameCount() >= 3 && work.getParent().getParent().getFileName().toString().equals(RUNTIME_PLUGIN)) {
                root = work.getParent().getParent().getParent();
            }
        } catch (IOException | UnsupportedOperationException e) {
            LOG.debug("sandbox {}: no work link in {} ({}); CRI root assumed at {}", id, bundle, e.getMessage(), root);
        }
        return new CriPodFiles(id, root.resolve(CRI_PLUGIN), state.resolve(CRI_PLUGIN));
    }

    /** From what {@link #annotations()} put into the sandbox's record; null if the sandbox is not a shim-mode one. */
    static CriPodFiles of(SandboxRecord r) {
        String root = r.annotations().get(ANNOTATION_ROOT);
        String state = r.annotations().get(ANNOTATION_STATE);
        return root == null || state == null ? null : new CriPodFiles(r.id(), Path.of(root), Path.of(state));
    }

    Map<String, String> annotations() {
        return Map.of(ANNOTATION_ROOT, rootDir.toString(), ANNOTATION_STATE, stateDir.toString());
    }

    Path filesDir() {
        return rootDir.resolve("sandboxes").resolve(id);
    }

    Path shm() {
        return stateDir.resolve("sandboxes").resolve(id).resolve("shm");
    }

    /** Makes what is missing: the three files (replacing an empty directory CRI made in their place) and the shm. */
    void ensure(SandboxRecord r) throws IOException {
        PodSandboxConfig cfg = PodFiles.config(r);
        Path dir = filesDir();
        Files.createDirectories(dir);
        String hostname = cfg != null && !cfg.getHostname().isEmpty() ? cfg.getHostname() : PodFiles.hostHostname();
        writeIfMissing(dir.resolve(PodFiles.HOSTNAME), (hostname + "\n").getBytes(StandardCharsets.UTF_8));
        writeIfMissing(dir.resolve(PodFiles.HOSTS), PodFiles.hosts(hostname));
        writeIfMissing(dir.resolve(PodFiles.RESOLV), PodFiles.resolvConf(cfg == null ? null : cfg.getDnsConfig()));
        if (!PodFiles.hostIpc(cfg)) {
            PodFiles.mountShm(shm());
        }
    }

    private static void writeIfMissing(Path file, byte[] content) throws IOException {
        if (Files.isDirectory(file)) {
            Files.delete(file); // CRI's stand-in for a file it did not find: empty, else delete fails loudly
        }
        if (!Files.exists(file)) {
            AtomicFiles.write(file, content);
        }
    }

    /** Unmounts the shm and removes both directories; harmless if they are gone. */
    void remove() throws IOException {
        Linux.umount(shm().toString(), Linux.MNT_DETACH);
        StateStore.deleteTree(stateDir.resolve("sandboxes").resolve(id));
        StateStore.deleteTree(filesDir());
    }
}
