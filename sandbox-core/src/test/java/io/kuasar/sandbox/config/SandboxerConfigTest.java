package io.kuasar.sandbox.config;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class SandboxerConfigTest {
    @TempDir
    Path dir;

    @Test
    void readsKuasarsSandboxSectionAndHandsOverTheRest() throws Exception {
        Path f = dir.resolve("config.toml");
        Files.writeString(f, """
                [sandbox]
                log_level = "debug"
                enable_tracing = true

                [hypervisor]
                path = "/usr/bin/qemu-system-x86_64"
                vcpus = 1
                """);
        SandboxerConfig c = SandboxerConfig.load(f);
        assertThat(c.sandboxLogLevel()).isEqualTo("debug");
        assertThat(c.enableTracing()).isTrue();
        assertThat(c.section("hypervisor").path("vcpus").asInt()).isEqualTo(1);
        assertThat(c.section("absent").isMissingNode()).isTrue();
    }

    @Test
    void logLevelPrecedenceIsKuasars() throws Exception {
        Path f = dir.resolve("config.toml");
        Files.writeString(f, "[sandbox]\nlog_level = \"warn\"\n");
        SandboxerConfig c = SandboxerConfig.load(f);
        assertThat(SandboxerConfig.effectiveLogLevel("debug", c)).isEqualTo("debug"); // the flag wins
        assertThat(SandboxerConfig.effectiveLogLevel(null, c)).isEqualTo("warn"); // else the file
        assertThat(SandboxerConfig.effectiveLogLevel(null, SandboxerConfig.EMPTY)).isEqualTo("info"); // else info
        assertThat(SandboxerConfig.effectiveLogLevel("WARNING", c)).isEqualTo("warn");
        assertThatThrownBy(() -> SandboxerConfig.effectiveLogLevel("verbose", c))
                .hasMessageContaining("--log-level").hasMessageContaining("verbose");
        Files.writeString(f, "[sandbox]\nlog_level = \"loud\"\n");
        SandboxerConfig bad = SandboxerConfig.load(f);
        assertThatThrownBy(() -> SandboxerConfig.effectiveLogLevel(null, bad))
                .hasMessageContaining("[sandbox].log_level").hasMessageContaining(f.toString());
    }

    @Test
    void aBrokenOrMissingFileIsAClearError() throws Exception {
        Path f = dir.resolve("broken.toml");
        Files.writeString(f, "[sandbox\nlog_level = ");
        assertThatThrownBy(() -> SandboxerConfig.load(f)).isInstanceOf(IOException.class)
                .hasMessageContaining(f.toString()).hasMessageContaining("not valid TOML");
        assertThatThrownBy(() -> SandboxerConfig.load(dir.resolve("nope.toml"))).isInstanceOf(IOException.class)
                .hasMessageContaining("does not exist");
    }
}
