package io.kuasar.vmm.hypervisor;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Hybrid vsock (Cloud Hypervisor's, and vhost-device-vsock's for QEMU), the host's way to a guest vsock port: connect to the VM's vsock Unix socket, send
 * {@code CONNECT <port>\n}, and read one line, which starts with {@code OK} (Cloud Hypervisor answers
 * {@code OK <host-side port>\n}) when the guest accepted; the socket is then a byte stream to that guest port.
 */
public final class HybridVsock {
    /** Cloud Hypervisor answers within a line of this size; anything longer is not its answer. */
    private static final int MAX_ANSWER = 128;

    private HybridVsock() {
    }

    /**
     * How long a CONNECT may go unanswered. A guest whose vsock driver is not up yet may never answer one
     * (vhost-device-vsock then neither answers nor closes: seen in CI, the host waiting forever on a booted guest).
     */
    static final Duration ANSWER_TIMEOUT = Duration.ofSeconds(3);
    private static final int WAITING = 0;
    private static final int ANSWERED = 1;
    private static final int TIMED_OUT = 2;

    /** The stream to {@code port} in the guest; fails when nothing listens there yet (the caller retries). */
    public static SocketChannel connect(Path socket, int port) throws IOException {
        return connect(socket, port, ANSWER_TIMEOUT);
    }

    static SocketChannel connect(Path socket, int port, Duration answerTimeout) throws IOException {
        SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
        Thread timer = null;
        try {
            ch.connect(UnixDomainSocketAddress.of(socket)); // fails at once while the VMM has no socket yet
            // a blocking read has no timeout of its own: closing the channel ends it
            AtomicInteger state = new AtomicInteger(WAITING);
            timer = Thread.ofVirtual().name("hybrid-vsock-timeout").start(() -> {
                try {
                    Thread.sleep(answerTimeout);
                    if (state.compareAndSet(WAITING, TIMED_OUT)) {
                        ch.close();
                    }
                } catch (InterruptedException | IOException done) {
                    // answered (or failed) in time
                }
            });
            ByteBuffer request = ByteBuffer.wrap(("CONNECT " + port + "\n").getBytes(StandardCharsets.US_ASCII));
            while (request.hasRemaining()) {
                ch.write(request);
            }
            String answer;
            try {
                answer = readLine(ch);
            } finally {
                if (!state.compareAndSet(WAITING, ANSWERED)) {
                    throw new IOException("hybrid vsock " + socket + ": CONNECT " + port + " unanswered after "
                            + answerTimeout.toMillis() + " ms (the guest is still starting?)");
                }
            }
            if (!answer.startsWith("OK")) {
                throw new IOException("hybrid vsock " + socket + ": CONNECT " + port + " answered \"" + answer
                        + "\" (the guest does not listen on vsock port " + port + " yet?)");
            }
            return ch;
        } catch (IOException | RuntimeException e) {
            ch.close();
            throw e;
        } finally {
            if (timer != null) {
                timer.interrupt();
            }
        }
    }

    /** One line, read a byte at a time: nothing of the guest's stream that follows it may be consumed here. */
    private static String readLine(SocketChannel ch) throws IOException {
        ByteBuffer one = ByteBuffer.allocate(1);
        StringBuilder line = new StringBuilder();
        while (line.length() < MAX_ANSWER) {
            one.clear();
            if (ch.read(one) < 0) {
                return line.isEmpty() ? "(connection closed)" : line.toString();
            }
            char c = (char) one.get(0);
            if (c == '\n') {
                return line.toString();
            }
            line.append(c);
        }
        return line.toString();
    }
}
