package io.kuasar.tests.benchmark;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.kuasar.sandbox.state.StateStore;
import io.kuasar.tests.image.OciImageTar;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * The floor under every handler: a container started straight with the OCI runtime ({@code create} then
 * {@code start} of a prepared bundle), with no containerd, CRI, shim or sandboxer in between. Each bundle is the
 * benchmark container (busybox {@code /bin/sleep}) on one shared read-only rootfs, with its own PID, IPC, UTS, mount
 * and network namespaces (no network set up) and a cgroup below {@code kuasar-floor/}: what any handler pays the OCI
 * runtime per container, and nothing else.
 */
final class OciFloor implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();

    private final Path work;
    private final Path rootfs;
    private final Path state;
    private final List<String[]> made = java.util.Collections.synchronizedList(new ArrayList<>());

    /** Unpacks the image's layers once into {@code work/rootfs}. */
    OciFloor(Path work, Path imageTar) throws IOException, InterruptedException {
        this.work = Files.createDirectories(work);
        this.rootfs = Files.createDirectories(work.resolve("rootfs"));
        this.state = Files.createDirectories(work.resolve("state"));
        OciImageTar.unpack(imageTar, work.resolve("image"), rootfs);
    }

    /** A bundle for container {@code id}: the runtime's default spec, made to run {@code cmd} on the shared rootfs. */
    Path bundle(String runtime, String id, List<String> cmd) throws IOException, InterruptedException {
        Path b = Files.createDirectories(work.resolve("bundles").resolve(id));
        check(b, runtime, "spec");
        ObjectNode spec = (ObjectNode) JSON.readTree(b.resolve("config.json").toFile());
        ObjectNode process = spec.with("process").put("terminal", false);
        ArrayNode args = process.putArray("args");
        cmd.forEach(args::add);
        spec.with("root").put("path", rootfs.toString()).put("readonly", true);
        spec.with("linux").put("cgroupsPath", "/kuasar-floor/" + id);
        ArrayNode ns = spec.with("linux").withArray("namespaces");
        boolean net = false;
        for (JsonNode n : ns) {
            net |= n.path("type").asText().equals("network");
        }
        if (!net) {
            ns.addObject().put("type", "network");
        }
        Files.writeString(b.resolve("config.json"), JSON.writeValueAsString(spec));
        return b;
    }

    /** {@code runtime create}: returns once the container exists (its process waits for start). */
    void create(String runtime, String id, Path bundle) throws IOException, InterruptedException {
        made.add(new String[]{runtime, id});
        run(runtime, id, "create", "--bundle", bundle.toString(), id);
    }

    void start(String runtime, String id) throws IOException, InterruptedException {
        run(runtime, id, "start", id);
    }

    /** Kills and deletes every container made so far and their bundles. */
    void removeAll() throws IOException, InterruptedException {
        for (String[] c : List.copyOf(made)) {
            run(c[0], c[1], "delete", "--force", c[1]);
        }
        made.clear();
        StateStore.deleteTree(work.resolve("bundles"));
    }

    @Override
    public void close() throws Exception {
        removeAll();
        StateStore.deleteTree(work);
        // runc removes each container's cgroup, not the kuasar-floor parent it made in every hierarchy
        List<Path> hierarchies = new ArrayList<>(List.of(Path.of("/sys/fs/cgroup")));
        try (var dirs = Files.list(Path.of("/sys/fs/cgroup"))) {
            dirs.filter(Files::isDirectory).forEach(hierarchies::add);
        }
        for (Path h : hierarchies) {
            Path parent = h.resolve("kuasar-floor");
            if (Files.isDirectory(parent)) {
                Files.delete(parent); // rmdir of an empty cgroup
            }
        }
    }

    private void run(String runtime, String id, String... args) throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>(List.of(runtime, "--root", state.resolve(Path.of(runtime).getFileName())
                .toString()));
        cmd.addAll(List.of(args));
        // The container inherits the runtime's stdio: no pipe of ours, or reading it would never end
        Path log = Files.createDirectories(work.resolve("logs")).resolve(id + "-" + args[0] + ".log");
        Process p = new ProcessBuilder(cmd).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                .redirectOutput(ProcessBuilder.Redirect.DISCARD).redirectError(log.toFile()).start();
        if (!p.waitFor(60, TimeUnit.SECONDS) || p.exitValue() != 0) {
            p.destroyForcibly();
            throw new IOException(String.join(" ", cmd) + " failed: " + Files.readString(log));
        }
    }

    private static void check(Path dir, String... cmd) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(cmd).directory(dir.toFile()).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        if (p.waitFor() != 0) {
            throw new IOException(String.join(" ", cmd) + " in " + dir + " failed: " + out);
        }
    }
}
