package io.kuasar.sandbox.ttrpc;

import java.io.IOException;

/** A peer announced a frame larger than the maximum; its data was discarded and the stream can be answered. */
public final class FrameTooLargeException extends IOException {
    private final int streamId;

    FrameTooLargeException(int streamId, long length, int max) {
        super("message length " + length + " exceeds maximum message size of " + max);
        this.streamId = streamId;
    }

    public int streamId() {
        return streamId;
    }
}
