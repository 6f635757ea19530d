package io.kuasar.sandbox.task;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;

import java.util.List;
import java.util.Map;

/**
 * What survives a daemon restart about one container: {@code <dir>/tasks/<id>.json}, written atomically at every
 * state change. {@code facts} are the runtime's own (e.g. runc's root and exit file); {@code startTime} is the
 * process's start time in clock ticks (/proc/PID/stat field 22), which guards against a reused pid.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public record TaskRecord(String id, String bundle, String namespace, String sandboxId, String stdin, String stdout,
                         String stderr, boolean terminal, String status, int pid, long startTime, int exitCode,
                         long exitedAt, Map<String, String> facts, List<ExecRecord> execs) {

    public TaskRecord {
        facts = facts == null ? Map.of() : Map.copyOf(facts);
        execs = execs == null ? List.of() : List.copyOf(execs);
    }

    @JsonIgnoreProperties(ignoreUnknown = true)
    public record ExecRecord(String execId, String stdin, String stdout, String stderr, boolean terminal,
                             String status, int pid, long startTime, int exitCode, long exitedAt,
                             Map<String, String> facts) {
        public ExecRecord {
            facts = facts == null ? Map.of() : Map.copyOf(facts);
        }
    }
}
