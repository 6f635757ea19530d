package io.kuasar.sandbox.state;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;

import java.util.Map;

/**
 * What survives a daemon restart about one sandbox; stored as {@code <dir>/<id>/sandbox.json}. Times are Unix epoch
 * nanoseconds (0 = unset). {@code podConfig} is the protobuf-encoded {@code runtime.v1.PodSandboxConfig} containerd
 * sent; {@code backend} holds sandboxer-specific facts (e.g. the runc holder's pid).
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public record SandboxRecord(
        String id,
        String sandboxer,
        Phase phase,
        String netnsPath,
        byte[] podConfig,
        String podConfigType,
        Map<String, String> annotations,
        Map<String, String> labels,
        Map<String, AnyValue> extensions,
        byte[] spec,
        String specType,
        String runtimeName,
        int pid,
        String taskAddress,
        long createdAt,
        long startedAt,
        long exitedAt,
        int exitStatus,
        Map<String, String> backend) {

    public enum Phase { CREATED, RUNNING, STOPPED }

    /** A google.protobuf.Any kept as its type URL and raw value. */
    public record AnyValue(String typeUrl, byte[] value) {
    }

    public SandboxRecord {
        annotations = annotations == null ? Map.of() : Map.copyOf(annotations);
        labels = labels == null ? Map.of() : Map.copyOf(labels);
        extensions = extensions == null ? Map.of() : Map.copyOf(extensions);
        backend = backend == null ? Map.of() : Map.copyOf(backend);
    }

    public SandboxRecord running(int newPid, String address, long now, Map<String, String> backendFacts) {
        return new SandboxRecord(id, sandboxer, Phase.RUNNING, netnsPath, podConfig, podConfigType, annotations, labels,
                extensions, spec, specType, runtimeName, newPid, address, createdAt, now, 0, 0, backendFacts);
    }

    public SandboxRecord stopped(int code, long when) {
        return new SandboxRecord(id, sandboxer, Phase.STOPPED, netnsPath, podConfig, podConfigType, annotations, labels,
                extensions, spec, specType, runtimeName, pid, taskAddress, createdAt, startedAt, when, code, backend);
    }

    public SandboxRecord updated(Map<String, String> newLabels, Map<String, AnyValue> newExtensions, byte[] newSpec,
                                 String newSpecType) {
        return new SandboxRecord(id, sandboxer, phase, netnsPath, podConfig, podConfigType, annotations, newLabels,
                newExtensions, newSpec, newSpecType, runtimeName, pid, taskAddress, createdAt, startedAt, exitedAt,
                exitStatus, backend);
    }
}
