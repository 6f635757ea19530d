package io.kuasar.sandbox.oci;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;

import static org.assertj.core.api.Assertions.assertThat;

class OciRuntimeTest {
    @TempDir
    Path dir;

    @Test
    void aMissingBinaryIsNamedWithItsRemedy() throws Exception {
        Path runc = dir.resolve("runc");
        assertThat(new OciRuntime(runc.toString(), dir).missing())
                .isEqualTo(runc + " is not an executable file (install runc or pass --runc)");
        Files.writeString(runc, "#!/bin/sh\n");
        assertThat(new OciRuntime(runc.toString(), dir).missing()).contains("not an executable");
        Files.setPosixFilePermissions(runc, PosixFilePermissions.fromString("rwxr-xr-x"));
        assertThat(new OciRuntime(runc.toString(), dir).missing()).isNull();
        // a bare name is looked up on PATH
        assertThat(new OciRuntime("sh", dir).missing()).isNull();
        assertThat(new OciRuntime("kuasar-no-such-runtime", dir).withInstallHint("run `make runsc`").missing())
                .startsWith("kuasar-no-such-runtime is not on PATH (").endsWith("); run `make runsc`");
    }
}
