package io.kuasar.sandbox.events;

import com.google.protobuf.Any;
import com.google.protobuf.Empty;
import com.google.protobuf.Message;
import com.google.protobuf.Timestamp;
import io.kuasar.api.events.ttrpc.v1.ForwardRequest;
import io.kuasar.api.types.Envelope;
import io.kuasar.sandbox.ttrpc.TtrpcClient;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * Forwards events to containerd's ttrpc {@code containerd.services.events.ttrpc.v1.Events/Forward}, as a runc
 * shim does. Events queue in order on one virtual thread; a lost connection is re-dialled, and an event that
 * cannot be delivered after a few tries is logged and dropped (containerd also learns exits through Wait).
 */
public final class TtrpcEventPublisher implements EventPublisher {
    private static final Logger LOG = LoggerFactory.getLogger(TtrpcEventPublisher.class);
    private static final int QUEUE_LIMIT = 4096;
    private static final int ATTEMPTS = 3;

    private final Path address;
    private final LinkedBlockingQueue<Envelope> queue = new LinkedBlockingQueue<>(QUEUE_LIMIT);
    private final Thread worker;
    private TtrpcClient client;
    private volatile boolean closed;

    public TtrpcEventPublisher(Path address) {
        this.address = address;
        this.worker = Thread.ofVirtual().name("event-publisher").start(this::run);
    }

    @Override
    public void publish(String namespace, String topic, Message event) {
        Instant now = Instant.now();
        Envelope env = Envelope.newBuilder()
                .setTimestamp(Timestamp.newBuilder().setSeconds(now.getEpochSecond()).setNanos(now.getNano()))
                .setNamespace(namespace).setTopic(topic)
                // containerd's typeurl names protobuf types by their bare full name.
                .setEvent(Any.newBuilder().setTypeUrl(event.getDescriptorForType().getFullName())
                        .setValue(event.toByteString()))
                .build();
        if (!queue.offer(env)) {
            LOG.warn("event queue full; dropping {} event", topic);
        }
    }

    private void run() {
        while (!closed) {
            Envelope env;
            try {
                env = queue.poll(1, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                return;
            }
            if (env != null) {
                deliver(env);
            }
        }
    }

    private void deliver(Envelope env) {
        for (int attempt = 1; attempt <= ATTEMPTS && !closed; attempt++) {
            try {
                if (client == null || client.isClosed()) {
                    if (!Files.exists(address)) {
                        throw new java.io.IOException("no containerd ttrpc socket at " + address);
                    }
                    client = TtrpcClient.connect(address);
                }
                client.call("containerd.services.events.ttrpc.v1.Events", "Forward",
                        ForwardRequest.newBuilder().setEnvelope(env).build(), Empty.parser(), Duration.ofSeconds(5));
                return;
            } catch (Exception e) {
                if (client != null) {
                    client.close();
                    client = null;
                }
                if (attempt == ATTEMPTS) {
                    LOG.warn("could not forward {} event to containerd at {}: {}", env.getTopic(), address,
                            e.getMessage());
                    return;
                }
                try {
                    Thread.sleep(100L * attempt);
                } catch (InterruptedException ie) {
                    return;
                }
            }
        }
    }

    @Override
    public void close() {
        closed = true;
        worker.interrupt();
        if (client != null) {
            client.close();
        }
    }
}
