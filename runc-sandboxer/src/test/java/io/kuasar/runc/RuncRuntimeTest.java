package io.kuasar.runc;

import io.kuasar.sandbox.oci.OciRuntime;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** What runc-sandboxer reads back from runc. */
class RuncRuntimeTest {
    @TempDir
    Path bundle;

    @Test
    void runcErrorsComeFromItsJsonLog() throws Exception {
        Path log = bundle.resolve("log.json");
        Files.writeString(log, "{\"level\":\"info\",\"msg\":\"starting\"}\n"
                + "{\"level\":\"error\",\"msg\":\"container_linux.go: starting container process caused: exec: \\\"nope\\\": executable file not found in $PATH\"}\n"
                + "{\"level\":\"info\",\"msg\":\"cleanup\"}\n{\"level\":");
        assertThat(new OciRuntime("runc", bundle).lastLoggedError(log)).contains("executable file not found");
        // A real failing runc call: the message names what failed and why.
        OciRuntime runc = new OciRuntime("runc", bundle.resolve("root"));
        assertThatThrownBy(() -> runc.run("runc start of container ghost", bundle.resolve("log2.json"),
                java.util.List.of("start", "ghost"), OciRuntime.Stdio.none(), null))
                .isInstanceOf(OciRuntime.Failure.class).hasMessageContaining("runc start of container ghost failed")
                .hasMessageContaining("ghost");
    }
}
