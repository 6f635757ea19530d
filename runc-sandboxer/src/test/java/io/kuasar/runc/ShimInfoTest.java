package io.kuasar.runc;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.google.protobuf.Any;
import io.kuasar.api.runc.options.Options;
import io.kuasar.api.types.RuntimeInfo;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * containerd asks the runtime's features through {@code <shim> -info} (CRI enables recursive read-only mounts only
 * if they list "rro"); the answer must be a containerd.types.RuntimeInfo as containerd's runc shim prints it.
 */
class ShimInfoTest {
    static final Path SHIM = RuncSandboxerMain.libexec().resolve("containerd-shim-kuasar-runc-v1");

    @Test
    void infoAnswersWithRuncsFeatures() throws Exception {
        Any options = Any.pack(Options.newBuilder().setRoot("/run/containerd/runc").build(), "containerd.runc.v1");
        Process p = new ProcessBuilder(SHIM.toString(), "-info").start();
        try (var in = p.getOutputStream()) {
            in.write(options.toByteArray());
        }
        byte[] out = p.getInputStream().readAllBytes();
        String err = new String(p.getErrorStream().readAllBytes());
        assertThat(p.waitFor()).as(err).isZero();
        assertThat(err).isEmpty(); // containerd may read stderr with stdout: nothing may spoil the protobuf
        RuntimeInfo info = RuntimeInfo.parseFrom(out);
        assertThat(info.getName()).isEqualTo("io.containerd.kuasar-runc.v1");
        assertThat(info.getVersion().getVersion()).isNotEmpty();
        assertThat(info.getOptions()).isEqualTo(options);
        assertThat(info.getFeatures().getTypeUrl())
                .isEqualTo("types.containerd.io/opencontainers/runtime-spec/1/features/Features");
        JsonNode features = new ObjectMapper().readTree(info.getFeatures().getValue().toByteArray());
        assertThat(features.path("ociVersionMin").asText()).isNotEmpty();
        // what `runc features` says, passed through
        Process runc = new ProcessBuilder("runc", "features").start();
        JsonNode direct = new ObjectMapper().readTree(runc.getInputStream().readAllBytes());
        assertThat(features).isEqualTo(direct);
        assertThat(features.path("mountOptions").toString()).contains("\"rro\"");
    }

    @Test
    void withoutRuncThereAreNoFeaturesButStillAnAnswer() throws Exception {
        ProcessBuilder pb = new ProcessBuilder(SHIM.toString(), "-info");
        pb.environment().put("KUASAR_RUNC", "/nonexistent/runc");
        Process p = pb.start();
        p.getOutputStream().close();
        RuntimeInfo info = RuntimeInfo.parseFrom(p.getInputStream().readAllBytes());
        assertThat(p.waitFor()).isZero();
        assertThat(info.getName()).isEqualTo("io.containerd.kuasar-runc.v1");
        assertThat(info.hasFeatures()).isFalse();
        assertThat(info.hasOptions()).isFalse();
    }

    @Test
    void deleteAnswersAnEmptyResponseAndStartExplains() throws Exception {
        Process del = new ProcessBuilder(SHIM.toString(), "-namespace", "k8s.io", "-id", "c1", "delete").start();
        assertThat(del.getInputStream().readAllBytes()).isEmpty();
        assertThat(del.waitFor()).isZero();
        Process start = new ProcessBuilder(SHIM.toString(), "-namespace", "k8s.io", "-id", "c1", "start").start();
        assertThat(new String(start.getErrorStream().readAllBytes())).contains("sandboxer = \"runc\"");
        assertThat(start.waitFor()).isEqualTo(1);
    }

    /** The same helper for the other sandboxers: named for their runtime type; runc's features only for vmm. */
    @org.junit.jupiter.params.ParameterizedTest
    @org.junit.jupiter.params.provider.CsvSource({"vmm,true", "wasm,false", "quark,false"})
    void eachSandboxerHasItsHelper(String kind, boolean features) throws Exception {
        Path shim = RuncSandboxerMain.libexec().resolve("containerd-shim-kuasar-" + kind + "-v1");
        Process p = new ProcessBuilder(shim.toString(), "-info").start();
        p.getOutputStream().close();
        RuntimeInfo info = RuntimeInfo.parseFrom(p.getInputStream().readAllBytes());
        assertThat(p.waitFor()).isZero();
        assertThat(info.getName()).isEqualTo("io.containerd.kuasar-" + kind + ".v1");
        assertThat(info.hasFeatures()).isEqualTo(features);
        Process del = new ProcessBuilder(shim.toString(), "-namespace", "k8s.io", "-id", "c1", "delete").start();
        assertThat(del.getInputStream().readAllBytes()).isEmpty();
        assertThat(del.waitFor()).isZero();
        Process start = new ProcessBuilder(shim.toString(), "-namespace", "k8s.io", "-id", "c1", "start").start();
        assertThat(new String(start.getErrorStream().readAllBytes())).contains("sandboxer = \"" + kind + "\"");
        assertThat(start.waitFor()).isEqualTo(1);
    }
}
