package io.kuasar.sandbox.task;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.grpc.Status;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/** The OCI runtime spec containerd writes into a bundle, checked at the edge before any runtime acts on it. */
public final class OciSpec {
    private static final ObjectMapper JSON = new ObjectMapper();

    private OciSpec() {
    }

    /**
     * Reads {@code <bundle>/config.json} and checks what every runtime here needs of it; each problem names its
     * field. INVALID_ARGUMENT, naming the container and the file, if it is not a spec a runtime can run.
     */
    public static ObjectNode read(String id, Path bundle) {
        return read(id, bundle, false);
    }

    /**
     * As {@link #read(String, Path)}; with {@code hostNamespaces}, namespace paths must also exist on this host (a
     * runtime that joins them here: not a VM's, whose paths are rewritten for the guest).
     */
    public static ObjectNode read(String id, Path bundle, boolean hostNamespaces) {
        Path file = bundle.resolve("config.json");
        JsonNode spec;
        try {
            spec = JSON.readTree(file.toFile());
        } catch (IOException e) {
            throw Status.INVALID_ARGUMENT.withDescription("container " + id + ": " + file
                    + " is not a valid OCI spec: " + e.getMessage()).asRuntimeException();
        }
        List<String> problems = new ArrayList<>();
        if (spec == null || !spec.isObject()) {
            problems.add("the spec must be a JSON object");
        } else {
            if (!spec.path("ociVersion").isTextual()) {
                problems.add("ociVersion is missing");
            }
            JsonNode process = spec.path("process");
            if (!process.isObject()) {
                problems.add("process is missing");
            } else {
                if (!process.path("args").isArray() || process.path("args").isEmpty()) {
                    problems.add("process.args must be a non-empty list");
                }
                if (!process.path("cwd").isTextual() || !process.path("cwd").asText().startsWith("/")) {
                    problems.add("process.cwd must be an absolute path");
                }
            }
            if (!spec.path("root").path("path").isTextual() || spec.path("root").path("path").asText().isEmpty()) {
                problems.add("root.path is missing");
            }
            if (hostNamespaces) {
                JsonNode ns = spec.path("linux").path("namespaces");
                if (ns.isArray()) {
                    for (JsonNode n : ns) {
                        String path = n.path("path").asText("");
                        if (!path.isEmpty() && !Files.exists(Path.of(path))) {
                            problems.add("linux.namespaces: " + n.path("type").asText() + " namespace path " + path
                                    + " does not exist (has the sandbox stopped?)");
                        }
                    }
                }
            }
        }
        if (!problems.isEmpty()) {
            throw Status.INVALID_ARGUMENT.withDescription("container " + id + ": invalid OCI spec " + file + ": "
                    + String.join("; ", problems)).asRuntimeException();
        }
        return (ObjectNode) spec;
    }

    /** Whether a spec mount is a bind mount: its type says so, or its options do (containerd writes both forms). */
    public static boolean isBindMount(JsonNode m) {
        if (m.path("type").asText().equals("bind")) {
            return true;
        }
        for (JsonNode o : m.path("options")) {
            if (o.asText().equals("bind") || o.asText().equals("rbind")) {
                return true;
            }
        }
        return false;
    }
}
