package io.kuasar.vmm.forward;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** The host half of container creation in a microVM pod: real bind mounts, so it runs as root only. */
class ContainerPrepTest {
    @TempDir
    Path tmp;
    private Path bundle;
    private Path shared;
    private final ObjectMapper json = new ObjectMapper();

    @BeforeEach
    void layout() throws Exception {
        assumeTrue(io.kuasar.sandbox.sys.Linux.getuid() == 0, "needs root (bind mounts)");
        bundle = Files.createDirectories(tmp.resolve("bundle"));
        Files.createDirectories(bundle.resolve("rootfs/bin"));
        Files.writeString(bundle.resolve("rootfs/bin/marker"), "rootfs");
        shared = Files.createDirectories(tmp.resolve("shared"));
        Files.writeString(shared.resolve("hosts"), "127.0.0.1 localhost\n");
        Files.writeString(shared.resolve("hostname"), "pod\n");
        Files.writeString(shared.resolve("resolv.conf"), "nameserver 10.0.0.1\n");
        Files.createDirectories(tmp.resolve("volume"));
        Files.writeString(tmp.resolve("volume/data"), "volume");
        Files.writeString(tmp.resolve("termination-log"), "");
    }

    private void spec(String extraMount) throws Exception {
        Files.writeString(bundle.resolve("config.json"), """
                {"ociVersion":"1.1.0","process":{"args":["sh"],"cwd":"/","apparmorProfile":"cri-containerd.apparmor.d"},
                 "root":{"path":"rootfs"},
                 "annotations":{"io.kubernetes.cri.sandbox-id":"pod1"},
                 "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
                           {"destination":"/dev/shm","type":"tmpfs","source":"shm","options":["nosuid"]},
                           {"destination":"/data","type":"bind","source":"%s","options":["rbind","ro"]},
                           {"destination":"/dev/termination-log","type":"bind","source":"%s","options":["rbind"]}%s],
                 "linux":{"cgroupsPath":"kubepods-besteffort.slice:cri-containerd:c1",
                          "resources":{"cpu":{"shares":2,"cpus":"0-1"}},
                          "namespaces":[{"type":"pid","path":"/proc/77/ns/pid"},{"type":"ipc","path":"/proc/77/ns/ipc"},
                                        {"type":"uts","path":"/proc/77/ns/uts"},{"type":"mount"},
                                        {"type":"network","path":"/proc/77/ns/net"},{"type":"cgroup"}]}}
                """.formatted(tmp.resolve("volume"), tmp.resolve("termination-log"), extraMount));
    }

    @Test
    void theContainerIsLaidOutForTheGuestAndRemovedWithoutTrace() throws Exception {
        spec("");
        Rollback undo = new Rollback();
        String guestBundle = new ContainerPrep().prepare("c1", bundle, List.of(), shared, undo);
        assertThat(guestBundle).isEqualTo("/run/kuasar/state/c1");
        Path dir = shared.resolve("c1");
        assertThat(dir.resolve("rootfs/bin/marker")).hasContent("rootfs");
        JsonNode s = json.readTree(dir.resolve("config.json").toFile());
        assertThat(s.path("root").path("path").asText()).isEqualTo("rootfs");
        List<String> ns = new ArrayList<>();
        s.path("linux").path("namespaces").forEach(n -> ns.add(n.path("type").asText() + "=" + n.path("path").asText("")));
        assertThat(ns).containsExactly("pid=/run/sandbox-ns/pid", "ipc=/run/sandbox-ns/ipc", "uts=/run/sandbox-ns/uts",
                "mount=");
        List<String> mounts = new ArrayList<>();
        s.path("mounts").forEach(m -> mounts.add(m.path("destination").asText() + "<-" + m.path("source").asText()));
        assertThat(mounts).containsExactly("/proc<-proc", "/dev/shm<-/dev/shm", "/data<-/run/kuasar/state/c1/storage-1",
                "/dev/termination-log<-/run/kuasar/state/c1/storage-2", "/etc/hostname<-/run/kuasar/state/hostname",
                "/etc/hosts<-/run/kuasar/state/hosts", "/etc/resolv.conf<-/run/kuasar/state/resolv.conf");
        assertThat(dir.resolve("storage-1/data")).hasContent("volume");
        assertThat(s.path("process").has("apparmorProfile")).isFalse();
        assertThat(s.path("linux").path("resources").path("cpu").has("cpus")).isFalse();
        assertThat(s.path("linux").path("cgroupsPath").asText()).isEqualTo("/kuasar/c1");
        undo.commit();

        Bundles.remove(dir);
        assertThat(dir).doesNotExist();
        assertThat(Files.readString(Path.of("/proc/self/mounts"))).doesNotContain(shared.toString());
        assertThat(tmp.resolve("volume/data")).hasContent("volume"); // the volume itself is untouched
        assertThat(bundle.resolve("rootfs/bin/marker")).exists();
    }

    @Test
    void aMissingMountSourceFailsAndUndoesEverything() throws Exception {
        spec(",{\"destination\":\"/gone\",\"type\":\"bind\",\"source\":\"" + tmp.resolve("gone") + "\"}");
        Rollback undo = new Rollback();
        assertThatThrownBy(() -> new ContainerPrep().prepare("c2", bundle, List.of(), shared, undo))
                .hasMessageContaining("INVALID_ARGUMENT").hasMessageContaining("container c2")
                .hasMessageContaining(tmp.resolve("gone").toString());
        undo.run();
        assertThat(shared.resolve("c2")).doesNotExist();
        assertThat(Files.readString(Path.of("/proc/self/mounts"))).doesNotContain(shared.toString());
        assertThat(tmp.resolve("volume/data")).hasContent("volume");
    }
}
