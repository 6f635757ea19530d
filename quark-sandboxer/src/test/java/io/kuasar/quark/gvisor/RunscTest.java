package io.kuasar.quark.gvisor;

import io.grpc.StatusRuntimeException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

class RunscTest {
    @TempDir
    Path dir;

    @Test
    void theReleaseDateDecidesTheNetnsWorkaround() {
        assertThat(Runsc.parseRelease("runsc version 0.0~20240729.0\nspec: 1.1.0-rc.1")).isEqualTo(20240729);
        assertThat(Runsc.parseRelease("runsc version release-20240807.0")).isEqualTo(20240807);
        assertThat(Runsc.parseRelease("runsc version unknown")).isZero();
        assertThat(Runsc.parseRelease("runsc version 0.0~20240729.0")).isLessThan(Runsc.NETNS_FIX_RELEASE);
    }

    @Test
    void aMissingRunscNamesTheFix() {
        StatusRuntimeException e = catchThrowableOfType(StatusRuntimeException.class, () -> new Runsc(
                new Runsc.Config(dir.resolve("nope"), dir.resolve("root"), "systrap", Runsc.Network.SANDBOX)));
        assertThat(e.getMessage()).contains("FAILED_PRECONDITION").contains(dir.resolve("nope").toString())
                .contains("make runsc").contains("--runsc");
    }

    @Test
    void onlyRunscsOwnHelpersAreAdoptedAsOrphans() {
        assertThat(GvisorRuntime.isRunscHelper("runsc-gofer")).isTrue();
        assertThat(GvisorRuntime.isRunscHelper("runsc-sandbox")).isTrue();
        assertThat(GvisorRuntime.isRunscHelper("/var/lib/kuasar/runsc/runsc")).isFalse();
        assertThat(GvisorRuntime.isRunscHelper("")).isFalse();
    }
}
