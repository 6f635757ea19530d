package io.kuasar.sandbox.tracing;

import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.Message;
import io.grpc.ForwardingServerCall;
import io.grpc.ForwardingServerCallListener;
import io.grpc.Metadata;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.Status;

/**
 * A server span for each Sandbox API call, continuing the {@code traceparent} header when the caller sent one, and
 * current on whichever thread runs the handler's callbacks, so its steps nest under it.
 */
public final class TracingInterceptor implements ServerInterceptor {
    private static final Metadata.Key<String> TRACEPARENT =
            Metadata.Key.of(TraceParent.KEY, Metadata.ASCII_STRING_MARSHALLER);

    @Override
    public <Q, R> ServerCall.Listener<Q> interceptCall(ServerCall<Q, R> call, Metadata headers,
                                                       ServerCallHandler<Q, R> next) {
        if (!Tracing.enabled()) {
            return next.startCall(call, headers);
        }
        var method = call.getMethodDescriptor();
        Span span = Tracing.server("grpc", method.getServiceName(), method.getBareMethodName(), headers.get(TRACEPARENT));
        ServerCall<Q, R> traced = new ForwardingServerCall.SimpleForwardingServerCall<>(call) {
            @Override
            public void close(Status status, Metadata trailers) {
                span.attr("rpc.grpc.status_code", status.getCode().value());
                if (!status.isOk()) {
                    span.error(status.getCode() + (status.getDescription() == null ? "" : ": " + status.getDescription()));
                }
                span.close();
                super.close(status, trailers);
            }
        };
        ServerCall.Listener<Q> listener;
        try (Span.Scope ignored = span.enter()) {
            listener = next.startCall(traced, headers);
        }
        return new ForwardingServerCallListener.SimpleForwardingServerCallListener<>(listener) {
            @Override
            public void onMessage(Q message) {
                annotate(span, message);
                try (Span.Scope ignored = span.enter()) {
                    super.onMessage(message);
                }
            }

            @Override
            public void onHalfClose() {
                try (Span.Scope ignored = span.enter()) {
                    super.onHalfClose();
                }
            }

            @Override
            public void onCancel() {
                span.error("cancelled by the client").close();
                super.onCancel();
            }
        };
    }

    /**
     * The ids a request names, as span attributes: {@code sandbox_id} (Sandbox API), {@code id} and {@code exec_id}
     * (Task API: the container and the exec process).
     */
    public static void annotate(Span span, Object request) {
        if (!span.recording() || !(request instanceof Message m)) {
            return;
        }
        var fields = m.getDescriptorForType();
        attr(span, m, fields.findFieldByName("sandbox_id"), "kuasar.sandbox.id");
        attr(span, m, fields.findFieldByName("id"), "kuasar.container.id");
        attr(span, m, fields.findFieldByName("exec_id"), "kuasar.exec.id");
    }

    private static void attr(Span span, Message m, FieldDescriptor f, String key) {
        if (f != null && f.getJavaType() == FieldDescriptor.JavaType.STRING && !f.isRepeated()) {
            String v = (String) m.getField(f);
            if (!v.isEmpty()) {
                span.attr(key, v);
            }
        }
    }
}
