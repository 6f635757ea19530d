package io.kuasar.sandbox.state;

import com.google.protobuf.Timestamp;

import java.time.Instant;

/** Conversions between Instants, the epoch nanoseconds kept in state files, and protobuf Timestamps. */
public final class Times {
    private Times() {
    }

    public static long nanos(Instant t) {
        return t.getEpochSecond() * 1_000_000_000L + t.getNano();
    }

    public static Instant instant(long nanos) {
        return Instant.ofEpochSecond(0, nanos);
    }

    public static Timestamp timestamp(long nanos) {
        return Timestamp.newBuilder().setSeconds(Math.floorDiv(nanos, 1_000_000_000L))
                .setNanos((int) Math.floorMod(nanos, 1_000_000_000L)).build();
    }

    public static Timestamp timestamp(Instant t) {
        return Timestamp.newBuilder().setSeconds(t.getEpochSecond()).setNanos(t.getNano()).build();
    }
}
