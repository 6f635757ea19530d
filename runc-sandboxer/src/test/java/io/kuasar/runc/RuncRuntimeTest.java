package io.kuasar.runc;

import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** OCI spec validation: each problem is INVALID_ARGUMENT and names its field. */
class RuncRuntimeTest {
    @TempDir
    Path bundle;

    private final RuncRuntime runtime = new RuncRuntime(new Runc("runc", Path.of("/tmp/unused")), null, null, null);

    private StatusRuntimeException invalid(String spec) throws Exception {
        Files.writeString(bundle.resolve("config.json"), spec);
        try {
            runtime.readSpec("c1", bundle);
        } catch (StatusRuntimeException e) {
            assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT);
            assertThat(e.getStatus().getDescription()).contains("container c1");
            return e;
        }
        throw new AssertionError("spec was accepted: " + spec);
    }

    @Test
    void namesTheFieldThatIsWrong() throws Exception {
        assertThat(invalid("{not json").getMessage()).contains("not a valid OCI spec");
        assertThat(invalid("[]").getMessage()).contains("JSON object");
        assertThat(invalid("{\"ociVersion\":\"1.1.0\",\"root\":{\"path\":\"rootfs\"},\"process\":{\"cwd\":\"/\"}}")
                .getMessage()).contains("process.args");
        assertThat(invalid("{\"ociVersion\":\"1.1.0\",\"root\":{\"path\":\"rootfs\"},"
                + "\"process\":{\"args\":[\"sh\"],\"cwd\":\"relative\"}}").getMessage()).contains("process.cwd");
        assertThat(invalid("{\"ociVersion\":\"1.1.0\",\"process\":{\"args\":[\"sh\"],\"cwd\":\"/\"}}")
                .getMessage()).contains("root.path");
        assertThat(invalid("{\"root\":{\"path\":\"rootfs\"},\"process\":{\"args\":[\"sh\"],\"cwd\":\"/\"}}")
                .getMessage()).contains("ociVersion");
        assertThat(invalid("{\"ociVersion\":\"1.1.0\",\"root\":{\"path\":\"rootfs\"},\"process\":{\"args\":[\"sh\"],"
                + "\"cwd\":\"/\"},\"linux\":{\"namespaces\":[{\"type\":\"network\",\"path\":\"/proc/999999999/ns/net\"}]}}")
                .getMessage()).contains("network namespace path");
    }

    @Test
    void acceptsAMinimalValidSpec() throws Exception {
        Files.writeString(bundle.resolve("config.json"), "{\"ociVersion\":\"1.1.0\",\"root\":{\"path\":\"rootfs\"},"
                + "\"process\":{\"args\":[\"sh\"],\"cwd\":\"/\"},\"linux\":{\"namespaces\":[{\"type\":\"pid\"}]}}");
        assertThat(runtime.readSpec("c1", bundle).path("process").path("args").get(0).asText()).isEqualTo("sh");
    }

    @Test
    void aMissingBundleSpecIsInvalidArgument() {
        assertThatThrownBy(() -> runtime.readSpec("c2", bundle.resolve("nope")))
                .isInstanceOfSatisfying(StatusRuntimeException.class,
                        e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT));
    }

    @Test
    void runcErrorsComeFromItsJsonLog() throws Exception {
        Path log = bundle.resolve("log.json");
        Files.writeString(log, "{\"level\":\"info\",\"msg\":\"starting\"}\n"
                + "{\"level\":\"error\",\"msg\":\"container_linux.go: starting container process caused: exec: \\\"nope\\\": executable file not found in $PATH\"}\n"
                + "{\"level\":\"info\",\"msg\":\"cleanup\"}\n{\"level\":");
        assertThat(new Runc("runc", bundle).lastLoggedError(log)).contains("executable file not found");
        // A real failing runc call: the message names what failed and why.
        Runc runc = new Runc("runc", bundle.resolve("root"));
        assertThatThrownBy(() -> runc.run("runc start of container ghost", bundle.resolve("log2.json"),
                java.util.List.of("start", "ghost"), Runc.Stdio.none(), null))
                .isInstanceOf(Runc.RuncException.class).hasMessageContaining("runc start of container ghost failed")
                .hasMessageContaining("ghost");
    }
}
