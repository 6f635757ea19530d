package io.kuasar.sandbox.task;

import io.kuasar.api.task.v3.CreateTaskRequest;
import io.kuasar.sandbox.ttrpc.CallContext;

/**
 * How a sandboxer creates containers for the shared {@link TaskService}. runc, Wasm and the microVM guest agent
 * each provide one; TaskService does the bookkeeping, Wait, events and error mapping.
 */
public interface ContainerRuntime {
    /**
     * The request as this runtime will run it, before it is checked: a runtime whose bundles are laid out elsewhere
     * than the client says (a microVM guest, where the sandboxer laid the container out at Update) points it there.
     * The id has been validated.
     */
    default CreateTaskRequest resolve(CreateTaskRequest request) {
        return request;
    }

    /** Creates the container with its init process in the created (not yet started) state. */
    Container create(CallContext ctx, CreateTaskRequest request) throws Exception;

    /**
     * Re-attaches to a container found in a record after a daemon restart; its init exit future must complete when
     * (or if already) the init process ended. Runtimes that cannot recover return null, and the record is dropped.
     */
    default Container recover(TaskRecord record) throws Exception {
        return null;
    }

    /**
     * Whether the pids this runtime reports are host pids. Only then does the Task service record their start times,
     * which identify the processes after a restart; a guest's pids name nothing on the host.
     */
    default boolean hostPids() {
        return true;
    }
}
