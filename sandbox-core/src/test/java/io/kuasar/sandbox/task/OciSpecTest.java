package io.kuasar.sandbox.task;

import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** OCI spec validation: each problem is INVALID_ARGUMENT and names its field. */
class OciSpecTest {
    @TempDir
    Path bundle;

    private StatusRuntimeException invalid(String spec) throws Exception {
        Files.writeString(bundle.resolve("config.json"), spec);
        try {
            OciSpec.read("c1", bundle, true);
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
    void namespacePathsAreCheckedOnlyForARuntimeThatJoinsThemOnThisHost() throws Exception {
        Files.writeString(bundle.resolve("config.json"), "{\"ociVersion\":\"1.1.0\",\"root\":{\"path\":\"rootfs\"},"
                + "\"process\":{\"args\":[\"sh\"],\"cwd\":\"/\"},\"linux\":{\"namespaces\":[{\"type\":\"ipc\","
                + "\"path\":\"/proc/999999999/ns/ipc\"}]}}");
        assertThat(OciSpec.read("c1", bundle).path("linux").path("namespaces")).hasSize(1);
        assertThatThrownBy(() -> OciSpec.read("c1", bundle, true)).hasMessageContaining("ipc namespace path");
    }

    @Test
    void acceptsAMinimalValidSpec() throws Exception {
        Files.writeString(bundle.resolve("config.json"), "{\"ociVersion\":\"1.1.0\",\"root\":{\"path\":\"rootfs\"},"
                + "\"process\":{\"args\":[\"sh\"],\"cwd\":\"/\"},\"linux\":{\"namespaces\":[{\"type\":\"pid\"}]}}");
        assertThat(OciSpec.read("c1", bundle).path("process").path("args").get(0).asText()).isEqualTo("sh");
    }

    @Test
    void aMissingBundleSpecIsInvalidArgument() {
        assertThatThrownBy(() -> OciSpec.read("c2", bundle.resolve("nope")))
                .isInstanceOfSatisfying(StatusRuntimeException.class,
                        e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT));
    }
}
