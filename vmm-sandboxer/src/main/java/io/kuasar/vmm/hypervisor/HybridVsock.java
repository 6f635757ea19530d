package io.kuasar.vmm.hypervisor;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

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

    /** The stream to {@code port} in the guest; fails at once when nothing listens there yet (the caller retries). */
    public static SocketChannel connect(Path socket, int port) throws IOException {
        SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            ch.connect(UnixDomainSocketAddress.of(socket));
            ByteBuffer request = ByteBuffer.wrap(("CONNECT " + port + "\n").getBytes(StandardCharsets.US_ASCII));
            while (request.hasRemaining()) {
                ch.write(request);
            }
            String answer = readLine(ch);
            if (!answer.startsWith("OK")) {
                throw new IOException("hybrid vsock " + socket + ": CONNECT " + port + " answered \"" + answer
                        + "\" (the guest does not listen on vsock port " + port + " yet?)");
            }
            return ch;
        } catch (IOException | RuntimeException e) {
            ch.close();
            throw e;
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
