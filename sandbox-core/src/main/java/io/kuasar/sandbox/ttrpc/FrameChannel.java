package io.kuasar.sandbox.ttrpc;

import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.ByteChannel;
import java.util.concurrent.locks.ReentrantLock;

/**
 * Reads and writes ttrpc frames on a connected byte stream (a Unix socket, or a microVM's virtio-serial port). Reads
 * happen on one thread; writes from many threads are serialised so frames never interleave.
 */
final class FrameChannel implements AutoCloseable {
    private final ByteChannel channel;
    private final InputStream in;
    private final ReentrantLock writeLock = new ReentrantLock();
    private final int maxDataLength;
    private final java.util.concurrent.Semaphore budget;

    FrameChannel(ByteChannel channel, int maxDataLength) {
        this(channel, maxDataLength, null);
    }

    /** {@code budget}: bytes a read frame takes from a shared allowance (the reader waits for room); may be null. */
    FrameChannel(ByteChannel channel, int maxDataLength, java.util.concurrent.Semaphore budget) {
        this.budget = budget;
        this.channel = channel;
        // containerd keeps one connection per container: a small buffer per connection adds up to less.
        this.in = new java.io.BufferedInputStream(Channels.newInputStream(channel), 8 * 1024);
        this.maxDataLength = maxDataLength;
    }

    /**
     * Reads the next frame, or returns null at a clean end of stream. A frame longer than the maximum is read and
     * discarded, then reported as {@link FrameTooLargeException} so the caller can answer that stream and go on.
     */
    Frame read() throws IOException {
        byte[] header = new byte[Frame.HEADER_LENGTH];
        int first = in.read();
        if (first < 0) {
            return null;
        }
        header[0] = (byte) first;
        readFully(header, 1, header.length - 1);
        ByteBuffer h = ByteBuffer.wrap(header);
        long length = Integer.toUnsignedLong(h.getInt());
        int streamId = h.getInt();
        byte type = h.get();
        byte flags = h.get();
        if (length > maxDataLength) {
            discard(length);
            throw new FrameTooLargeException(streamId, length, maxDataLength);
        }
        if (budget != null) {
            budget.acquireUninterruptibly((int) length); // released by whoever is done with the frame
        }
        byte[] data = new byte[(int) length];
        try {
            readFully(data, 0, data.length);
        } catch (IOException | RuntimeException e) {
            if (budget != null) {
                budget.release((int) length);
            }
            throw e;
        }
        return new Frame(streamId, type, flags, data);
    }

    void write(Frame frame) throws IOException {
        if (frame.data().length > maxDataLength) {
            throw new IOException("refusing to send " + frame.data().length + " bytes: maximum message size is "
                    + maxDataLength);
        }
        ByteBuffer buf = ByteBuffer.allocate(Frame.HEADER_LENGTH + frame.data().length);
        buf.putInt(frame.data().length).putInt(frame.streamId()).put(frame.type()).put(frame.flags()).put(frame.data());
        buf.flip();
        writeLock.lock();
        try {
            while (buf.hasRemaining()) {
                channel.write(buf);
            }
        } finally {
            writeLock.unlock();
        }
    }

    int maxDataLength() {
        return maxDataLength;
    }

    private void readFully(byte[] b, int off, int len) throws IOException {
        while (len > 0) {
            int n = in.read(b, off, len);
            if (n < 0) {
                throw new EOFException("connection closed in the middle of a frame");
            }
            off += n;
            len -= n;
        }
    }

    private void discard(long length) throws IOException {
        byte[] sink = new byte[64 * 1024];
        while (length > 0) {
            int n = in.read(sink, 0, (int) Math.min(sink.length, length));
            if (n < 0) {
                throw new EOFException("connection closed while discarding an oversized frame");
            }
            length -= n;
        }
    }

    @Override
    public void close() {
        try {
            channel.close();
        } catch (IOException ignored) {
            // closing a socket that is already broken
        }
    }
}
