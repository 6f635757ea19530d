package io.kuasar.sandbox.events;

import com.google.protobuf.Message;

/** Sends task events (TaskCreate, TaskExit, ...) to containerd. Never blocks the caller. */
public interface EventPublisher extends AutoCloseable {
    void publish(String namespace, String topic, Message event);

    @Override
    default void close() {
    }

    static EventPublisher discard() {
        return (ns, topic, event) -> {
        };
    }
}
