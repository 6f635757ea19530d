package io.kuasar.sandbox.ttrpc;

import io.grpc.Status;
import io.grpc.StatusException;
import io.grpc.StatusRuntimeException;

/** Maps what a handler threw to the gRPC status a peer sees, over ttrpc and gRPC alike. */
public final class Statuses {
    private Statuses() {
    }

    public static Status of(Throwable t) {
        return switch (t) {
            case StatusRuntimeException e -> e.getStatus();
            case StatusException e -> e.getStatus();
            case com.google.protobuf.InvalidProtocolBufferException e ->
                    Status.INVALID_ARGUMENT.withDescription("malformed protobuf message: " + e.getMessage());
            case InterruptedException e -> Status.CANCELLED.withDescription("call cancelled");
            case UnsupportedOperationException e -> Status.UNIMPLEMENTED.withDescription(e.getMessage());
            default -> Status.INTERNAL.withDescription(t.getClass().getSimpleName()
                    + (t.getMessage() == null ? "" : ": " + t.getMessage()));
        };
    }

    public static com.google.rpc.Status toProto(Status status) {
        com.google.rpc.Status.Builder b = com.google.rpc.Status.newBuilder().setCode(status.getCode().value());
        if (status.getDescription() != null) {
            b.setMessage(status.getDescription());
        }
        return b.build();
    }

    public static StatusRuntimeException fromProto(com.google.rpc.Status status) {
        return Status.fromCodeValue(status.getCode()).withDescription(status.getMessage()).asRuntimeException();
    }
}
