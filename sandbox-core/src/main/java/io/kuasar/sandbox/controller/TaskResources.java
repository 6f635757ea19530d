package io.kuasar.sandbox.controller;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.grpc.Status;

import java.io.IOException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Kuasar's {@code extensions["tasks"]} payload: the full list of a sandbox's tasks and their exec processes, sent
 * by Kuasar's containerd fork and iSulad through {@code Controller.Update(fields=["extensions.tasks"])}.
 * Field names are Kuasar's serde names.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public record TaskResources(@JsonProperty("tasks") List<Task> tasks) {
    public static final String EXTENSION_KEY = "tasks";
    public static final String FIELD = "extensions.tasks";

    public TaskResources {
        tasks = tasks == null ? List.of() : List.copyOf(tasks);
    }

    @JsonIgnoreProperties(ignoreUnknown = true)
    public record Task(@JsonProperty("task_id") String taskId, @JsonProperty("spec") JsonNode spec,
                       @JsonProperty("rootfs") List<JsonNode> rootfs, @JsonProperty("stdin") String stdin,
                       @JsonProperty("stdout") String stdout, @JsonProperty("stderr") String stderr,
                       @JsonProperty("processes") List<Process> processes) {
        public Task {
            processes = processes == null ? List.of() : List.copyOf(processes);
            rootfs = rootfs == null ? List.of() : List.copyOf(rootfs);
        }

        /** The rootfs as containerd mounts ({@code type}, {@code source}, {@code target}, {@code options}). */
        public List<io.kuasar.api.types.Mount> rootfsMounts() {
            List<io.kuasar.api.types.Mount> mounts = new ArrayList<>();
            for (JsonNode m : rootfs) {
                io.kuasar.api.types.Mount.Builder b = io.kuasar.api.types.Mount.newBuilder()
                        .setType(m.path("type").asText()).setSource(m.path("source").asText())
                        .setTarget(m.path("target").asText(""));
                m.path("options").forEach(o -> b.addOptions(o.asText()));
                mounts.add(b.build());
            }
            return mounts;
        }
    }

    @JsonIgnoreProperties(ignoreUnknown = true)
    public record Process(@JsonProperty("exec_id") String execId, @JsonProperty("spec") JsonNode spec,
                          @JsonProperty("stdin") String stdin, @JsonProperty("stdout") String stdout,
                          @JsonProperty("stderr") String stderr) {
    }

    /** What changed between two task lists: tasks added/removed, and exec processes added/removed per task. */
    public record Diff(List<Task> addedTasks, List<String> removedTasks, Map<String, List<Process>> addedProcesses,
                       Map<String, List<String>> removedProcesses) {
        public boolean isEmpty() {
            return addedTasks.isEmpty() && removedTasks.isEmpty() && addedProcesses.isEmpty()
                    && removedProcesses.isEmpty();
        }
    }

    public static TaskResources parse(ObjectMapper json, byte[] value) {
        try {
            TaskResources r = json.readValue(value, TaskResources.class);
            for (Task t : r.tasks()) {
                if (t.taskId() == null || t.taskId().isEmpty()) {
                    throw Status.INVALID_ARGUMENT.withDescription("extensions.tasks: a task has no task_id")
                            .asRuntimeException();
                }
            }
            return r;
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw Status.INVALID_ARGUMENT.withDescription("extensions.tasks is not valid task JSON: "
                    + e.getOriginalMessage()).asRuntimeException();
        } catch (IOException e) {
            throw Status.INVALID_ARGUMENT.withDescription("extensions.tasks cannot be read: " + e.getMessage())
                    .asRuntimeException();
        }
    }

    /** Kuasar's diff: new tasks, removed tasks, then per kept task the exec processes added and removed. */
    public Diff diffFrom(TaskResources old) {
        Map<String, Task> before = new LinkedHashMap<>();
        old.tasks().forEach(t -> before.put(t.taskId(), t));
        Map<String, Task> after = new LinkedHashMap<>();
        tasks.forEach(t -> after.put(t.taskId(), t));
        List<Task> added = new ArrayList<>();
        Map<String, List<Process>> addedProcs = new LinkedHashMap<>();
        Map<String, List<String>> removedProcs = new LinkedHashMap<>();
        for (Task t : tasks) {
            Task prev = before.get(t.taskId());
            if (prev == null) {
                added.add(t);
                continue;
            }
            List<String> prevIds = prev.processes().stream().map(Process::execId).toList();
            List<String> nowIds = t.processes().stream().map(Process::execId).toList();
            List<Process> newOnes = t.processes().stream().filter(p -> !prevIds.contains(p.execId())).toList();
            List<String> gone = prevIds.stream().filter(id -> !nowIds.contains(id)).toList();
            if (!newOnes.isEmpty()) {
                addedProcs.put(t.taskId(), newOnes);
            }
            if (!gone.isEmpty()) {
                removedProcs.put(t.taskId(), gone);
            }
        }
        List<String> removed = before.keySet().stream().filter(id -> !after.containsKey(id)).toList();
        return new Diff(added, removed, addedProcs, removedProcs);
    }
}
