package io.kuasar.vmm.task;

import com.google.protobuf.Any;
import com.google.protobuf.Message;
import com.google.protobuf.Timestamp;
import io.kuasar.api.types.Envelope;
import io.kuasar.sandbox.events.EventPublisher;

import java.time.Instant;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;

/**
 * The guest's task events, for the sandboxer's {@code GetEvents} loop. As in Kuasar only OOM events leave the
 * guest: the sandboxer's own Task service publishes the lifecycle events (create, start, exit) to containerd.
 * When nobody collects them, the oldest are dropped rather than growing without bound.
 */
final class GuestEvents implements EventPublisher {
    static final String OOM_TOPIC = "/tasks/oom";
    private final BlockingQueue<Envelope> queue = new ArrayBlockingQueue<>(1024);

    BlockingQueue<Envelope> queue() {
        return queue;
    }

    @Override
    public void publish(String namespace, String topic, Message event) {
        if (!OOM_TOPIC.equals(topic)) {
            return;
        }
        Instant now = Instant.now();
        Envelope e = Envelope.newBuilder()
                .setTimestamp(Timestamp.newBuilder().setSeconds(now.getEpochSecond()).setNanos(now.getNano()))
                .setNamespace(namespace).setTopic(topic).setEvent(Any.newBuilder()
                        .setTypeUrl(event.getDescriptorForType().getFullName()).setValue(event.toByteString())).build();
        while (!queue.offer(e)) {
            queue.poll();
        }
    }
}
