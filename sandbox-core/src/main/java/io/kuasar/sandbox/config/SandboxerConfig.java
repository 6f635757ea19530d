package io.kuasar.sandbox.config;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.MissingNode;
import com.fasterxml.jackson.dataformat.toml.TomlMapper;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Set;

/**
 * A daemon's TOML config file, as Kuasar's {@code --config} (e.g. {@code /var/lib/kuasar/config.toml}). The shared
 * part reads {@code [sandbox]} ({@code log_level}, {@code enable_tracing}); every other section (a hypervisor's,
 * an engine's) belongs to the daemon that knows it and is handed over as a tree.
 */
public final class SandboxerConfig {
    public static final SandboxerConfig EMPTY = new SandboxerConfig(null, MissingNode.getInstance());
    private static final Set<String> LEVELS = Set.of("error", "warn", "info", "debug", "trace");

    private final Path file;
    private final JsonNode root;

    private SandboxerConfig(Path file, JsonNode root) {
        this.file = file;
        this.root = root;
    }

    /** Reads {@code file}; the error names the file and what is wrong with it. */
    public static SandboxerConfig load(Path file) throws IOException {
        if (!Files.isRegularFile(file)) {
            throw new IOException("config file " + file + " does not exist or is not a file");
        }
        try {
            return new SandboxerConfig(file, new TomlMapper().readTree(file.toFile()));
        } catch (IOException e) {
            throw new IOException("config file " + file + " is not valid TOML: " + e.getMessage(), e);
        }
    }

    /** The file it came from; null for {@link #EMPTY}. */
    public Path file() {
        return file;
    }

    /** A top-level table, or a missing node (never null). */
    public JsonNode section(String name) {
        return root.path(name);
    }

    /** {@code [sandbox].log_level}, or "" as in Kuasar when it is not set. */
    public String sandboxLogLevel() {
        return section("sandbox").path("log_level").asText("");
    }

    /** {@code [sandbox].enable_tracing}, false when not set. */
    public boolean enableTracing() {
        return section("sandbox").path("enable_tracing").asBoolean(false);
    }

    /**
     * Kuasar's precedence: {@code --log-level} when given, else {@code [sandbox].log_level} when set, else info.
     * Unknown levels are rejected with the list of valid ones (a typo must not silently log at info).
     */
    public static String effectiveLogLevel(String flag, SandboxerConfig config) {
        String level = flag != null && !flag.isBlank() ? flag
                : !config.sandboxLogLevel().isBlank() ? config.sandboxLogLevel() : "info";
        String normalized = level.trim().toLowerCase(Locale.ROOT);
        if (normalized.equals("warning")) {
            normalized = "warn";
        }
        if (!LEVELS.contains(normalized)) {
            String from = flag != null && !flag.isBlank() ? "--log-level" : "[sandbox].log_level in " + config.file();
            throw new IllegalArgumentException(from + ": unknown log level \"" + level
                    + "\"; use one of error, warn, info, debug, trace");
        }
        return normalized;
    }
}
