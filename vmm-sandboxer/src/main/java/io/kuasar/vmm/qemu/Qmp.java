package io.kuasar.vmm.qemu;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

/**
 * A minimal QMP client: the greeting, {@code qmp_capabilities}, then one command at a time. Asynchronous events
 * interleaved with replies are skipped.
 */
final class Qmp implements AutoCloseable {
    private final SocketChannel channel;
    private final BufferedReader in;
    private final OutputStream out;
    private final ObjectMapper json = new ObjectMapper();

    private Qmp(SocketChannel channel) {
        this.channel = channel;
        this.in = new BufferedReader(new InputStreamReader(Channels.newInputStream(channel), StandardCharsets.UTF_8));
        this.out = Channels.newOutputStream(channel);
    }

    static Qmp connect(Path socket) throws IOException {
        SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            ch.connect(UnixDomainSocketAddress.of(socket));
            Qmp q = new Qmp(ch);
            JsonNode greeting = q.readReply(true);
            if (!greeting.has("QMP")) {
                throw new IOException("not a QMP greeting: " + greeting);
            }
            q.execute("qmp_capabilities");
            return q;
        } catch (IOException | RuntimeException e) {
            ch.close();
            throw e;
        }
    }

    synchronized JsonNode execute(String command) throws IOException {
        ObjectNode req = json.createObjectNode().put("execute", command);
        out.write(json.writeValueAsBytes(req));
        out.write('\n');
        out.flush();
        JsonNode reply = readReply(false);
        if (reply.has("error")) {
            throw new IOException("QMP " + command + ": " + reply.path("error").path("desc").asText());
        }
        return reply.path("return");
    }

    private JsonNode readReply(boolean greeting) throws IOException {
        while (true) {
            String line = in.readLine();
            if (line == null) {
                throw new IOException("QMP connection closed");
            }
            if (line.isBlank()) {
                continue;
            }
            JsonNode n = json.readTree(line);
            if (greeting || !n.has("event")) {
                return n;
            }
        }
    }

    @Override
    public void close() {
        try {
            channel.close();
        } catch (IOException ignored) {
            // already closed
        }
    }
}
