package io.kuasar.sandbox.ttrpc;

import com.google.protobuf.Message;
import com.google.protobuf.Parser;
import io.kuasar.sandbox.tracing.Span;
import io.kuasar.sandbox.tracing.Tracing;
import io.kuasar.sandbox.tracing.TracingInterceptor;

import java.util.LinkedHashMap;
import java.util.Map;

/** A named ttrpc service: its methods by bare name (e.g. "Create" in "containerd.task.v3.Task"). */
public final class TtrpcService {
    private final String name;
    private final Map<String, Method> methods;

    private TtrpcService(String name, Map<String, Method> methods) {
        this.name = name;
        this.methods = Map.copyOf(methods);
    }

    public String name() {
        return name;
    }

    Method method(String method) {
        return methods.get(method);
    }

    public static Builder builder(String name) {
        return new Builder(name);
    }

    @FunctionalInterface
    public interface UnaryHandler<Q, R extends Message> {
        R handle(CallContext ctx, Q request) throws Exception;
    }

    @FunctionalInterface
    public interface StreamHandler {
        void handle(CallContext ctx, ServerStream stream) throws Exception;
    }

    sealed interface Method permits Unary, Streaming {
    }

    /**
     * {@code interruptible}: the handler only waits or reads, so its thread may be interrupted when the client goes
     * away or the deadline passes. Other handlers change state (create a container, kill, delete) and always run to
     * the end, their answer discarded, so a disconnect mid-call (containerd restarting) never leaves a half-made
     * container behind.
     */
    record Unary(Parser<?> parser, UnaryHandler<Object, ?> handler, boolean interruptible) implements Method {
        Message invoke(CallContext ctx, byte[] payload) throws Exception {
            Object request = parser.parseFrom(payload);
            Span span = Tracing.current();
            if (span != null) {
                TracingInterceptor.annotate(span, request); // the ids it names, on the call's span
            }
            return handler.handle(ctx, request);
        }
    }

    /** {@code streamingClient}: the client sends a stream; otherwise the request payload is its single message. */
    record Streaming(boolean streamingClient, StreamHandler handler) implements Method {
    }

    public static final class Builder {
        private final String name;
        private final Map<String, Method> methods = new LinkedHashMap<>();

        private Builder(String name) {
            this.name = name;
        }

        @SuppressWarnings("unchecked")
        public <Q extends Message, R extends Message> Builder unary(String method, Parser<Q> parser,
                                                                     UnaryHandler<Q, R> handler) {
            methods.put(method, new Unary(parser, (UnaryHandler<Object, ?>) (UnaryHandler<?, ?>) handler, false));
            return this;
        }

        /** A unary method that only waits or reads: interrupted when its client goes away or its deadline passes. */
        @SuppressWarnings("unchecked")
        public <Q extends Message, R extends Message> Builder waiting(String method, Parser<Q> parser,
                                                                       UnaryHandler<Q, R> handler) {
            methods.put(method, new Unary(parser, (UnaryHandler<Object, ?>) (UnaryHandler<?, ?>) handler, true));
            return this;
        }

        public Builder streaming(String method, boolean streamingClient, StreamHandler handler) {
            methods.put(method, new Streaming(streamingClient, handler));
            return this;
        }

        public TtrpcService build() {
            return new TtrpcService(name, methods);
        }
    }
}
