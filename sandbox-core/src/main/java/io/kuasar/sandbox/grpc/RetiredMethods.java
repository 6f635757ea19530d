package io.kuasar.sandbox.grpc;

import io.grpc.HandlerRegistry;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerMethodDefinition;
import io.grpc.Status;

import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.util.Map;

/**
 * Answers the Sandbox API methods of older clients that this daemon does not serve, with a message that says which
 * client version to run instead of gRPC's bare "Method not found": iSulad builds before 2024-09 called
 * {@code Prepare}, {@code Purge} and {@code UpdateResources}, which containerd 2.x's Controller replaced with
 * {@code Update} and {@code Metrics}.
 */
final class RetiredMethods extends HandlerRegistry {
    static final String CONTROLLER = "containerd.services.sandbox.v1.Controller";
    private static final Map<String, String> RETIRED = Map.of(
            CONTROLLER + "/Prepare", "Update (fields [\"extensions.tasks\"])",
            CONTROLLER + "/Purge", "Update (fields [\"extensions.tasks\"])",
            CONTROLLER + "/UpdateResources", "Update");

    private static final MethodDescriptor.Marshaller<byte[]> RAW = new MethodDescriptor.Marshaller<>() {
        @Override
        public InputStream stream(byte[] value) {
            return new ByteArrayInputStream(value);
        }

        @Override
        public byte[] parse(InputStream stream) {
            try {
                return stream.readAllBytes();
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
    };

    @Override
    public ServerMethodDefinition<?, ?> lookupMethod(String methodName, String authority) {
        String instead = RETIRED.get(methodName);
        if (instead == null) {
            return null; // gRPC's own UNIMPLEMENTED
        }
        MethodDescriptor<byte[], byte[]> method = MethodDescriptor.<byte[], byte[]>newBuilder()
                .setType(MethodDescriptor.MethodType.UNARY).setFullMethodName(methodName)
                .setRequestMarshaller(RAW).setResponseMarshaller(RAW).build();
        String message = methodName + " is a Sandbox API method of iSulad builds before 2024-09; this sandboxer "
                + "serves containerd 2.x's Controller, where " + instead + " replaces it: upgrade iSulad (any build "
                + "since 2024-09 uses Update and Metrics)";
        ServerCallHandler<byte[], byte[]> refuse = new ServerCallHandler<>() {
            @Override
            public ServerCall.Listener<byte[]> startCall(ServerCall<byte[], byte[]> call, Metadata headers) {
                call.close(Status.UNIMPLEMENTED.withDescription(message), new Metadata());
                return new ServerCall.Listener<>() {
                };
            }
        };
        return ServerMethodDefinition.create(method, refuse);
    }
}
