package io.kuasar.sandbox.task;

import io.kuasar.api.task.v3.CreateTaskRequest;
import io.kuasar.sandbox.ttrpc.CallContext;

/**
 * How a sandboxer creates containers for the shared {@link TaskService}. runc, Wasm and the microVM guest agent
 * each provide one; TaskService does the bookkeeping, Wait, events and error mapping.
 */
public interface ContainerRuntime {
    /** Creates the container with its init process in the created (not yet started) state. */
    Container create(CallContext ctx, CreateTaskRequest request) throws Exception;
}
