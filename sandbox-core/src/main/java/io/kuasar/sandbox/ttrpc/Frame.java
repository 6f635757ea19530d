package io.kuasar.sandbox.ttrpc;

/**
 * One ttrpc frame: a 10-byte header (uint32 BE data length, uint32 BE stream id, uint8 type, uint8 flags) and data.
 */
public record Frame(int streamId, byte type, byte flags, byte[] data) {
    public static final int HEADER_LENGTH = 10;
    /** containerd/ttrpc's default and maximum message length. */
    public static final int MAX_DATA_LENGTH = 4 << 20;

    public static final byte TYPE_REQUEST = 0x1;
    public static final byte TYPE_RESPONSE = 0x2;
    public static final byte TYPE_DATA = 0x3;

    /** The sender will send no more data on this stream. */
    public static final byte FLAG_REMOTE_CLOSED = 0x1;
    /** The sender will send more data on this stream (non-unary request). */
    public static final byte FLAG_REMOTE_OPEN = 0x2;
    /** The frame carries no data (a bare close). */
    public static final byte FLAG_NO_DATA = 0x4;

    public boolean has(byte flag) {
        return (flags & flag) != 0;
    }
}
