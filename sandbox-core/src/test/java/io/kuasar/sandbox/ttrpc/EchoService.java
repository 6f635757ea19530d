package io.kuasar.sandbox.ttrpc;

import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.StringValue;
import io.grpc.Status;

/**
 * The interop service both peers implement ({@code kuasar.interop.v1.Echo}, messages are StringValue), with the
 * semantics of the Go peer in src/test/go/ttrpcpeer.
 */
final class EchoService {
    static final String NAME = "kuasar.interop.v1.Echo";
    /** What happened to "Work" calls. */
    static final java.util.Queue<String> WORK = new java.util.concurrent.ConcurrentLinkedQueue<>();
    /** "Hold" calls wait for this. */
    static volatile java.util.concurrent.CountDownLatch HOLD = new java.util.concurrent.CountDownLatch(0);

    private EchoService() {
    }

    static TtrpcService build() {
        return TtrpcService.builder(NAME)
                .unary("Echo", StringValue.parser(), (ctx, r) -> r)
                .waiting("Sleep", StringValue.parser(), (ctx, r) -> {
                    Thread.sleep(Long.parseLong(r.getValue()));
                    return StringValue.of("slept");
                })
                // A state-changing call: it runs to the end whatever happens to its client.
                .unary("Work", StringValue.parser(), (ctx, r) -> {
                    try {
                        Thread.sleep(Long.parseLong(r.getValue()));
                        WORK.add("completed");
                    } catch (InterruptedException e) {
                        WORK.add("interrupted");
                    }
                    return StringValue.of("worked");
                })
                .unary("Hold", StringValue.parser(), (ctx, r) -> {
                    HOLD.await();
                    return StringValue.of("held");
                })
                .unary("Fail", StringValue.parser(), (ctx, r) -> {
                    throw Status.NOT_FOUND.withDescription("no such thing: " + r.getValue()).asRuntimeException();
                })
                .unary("Metadata", StringValue.parser(), (ctx, r) -> StringValue.of(
                        String.join(",", ctx.metadata().getOrDefault("x-test", java.util.List.of()))))
                .unary("Deadline", StringValue.parser(), (ctx, r) -> StringValue.of(ctx.deadline() == null ? "none" : "set"))
                .streaming("Chat", true, (ctx, stream) -> {
                    byte[] msg;
                    while ((msg = stream.recv()) != null) {
                        stream.send(StringValue.of("echo:" + parse(msg)));
                    }
                })
                .build();
    }

    static String parse(byte[] b) throws InvalidProtocolBufferException {
        return StringValue.parseFrom(b).getValue();
    }
}
