package io.kuasar.vmm.hypervisor;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.SocketTimeoutException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.Predicate;

/**
 * A minimal QMP client, for QEMU and StratoVirt (whose QMP server speaks the same protocol): the greeting,
 * {@code qmp_capabilities}, then one command at a time. Asynchronous events interleaved with answers are skipped,
 * except the one a command waits for ({@code device_del} completes with {@code DEVICE_DELETED}, which StratoVirt may
 * send before its answer). A server that does not answer within the timeout fails the call and the connection is
 * closed: a VMM that is that stuck is not talked to again.
 */
public final class Qmp implements AutoCloseable {
    /** How long a command may take; Kuasar's QMP connect retry is as long. */
    public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(10);
    private static final ObjectMapper JSON = new ObjectMapper();
    private final Path socket;
    private final SocketChannel channel;
    private final BufferedReader in;
    private final OutputStream out;
    private final Duration timeout;
    private JsonNode greeting;

    private Qmp(Path socket, SocketChannel channel, Duration timeout) {
        this.socket = socket;
        this.channel = channel;
        this.timeout = timeout;
        this.in = new BufferedReader(new InputStreamReader(Channels.newInputStream(channel), StandardCharsets.UTF_8));
        this.out = Channels.newOutputStream(channel);
    }

    public static Qmp connect(Path socket) throws IOException {
        return connect(socket, DEFAULT_TIMEOUT);
    }

    /** Connects, reads the greeting and negotiates capabilities, each within {@code timeout}. */
    public static Qmp connect(Path socket, Duration timeout) throws IOException {
        SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            ch.connect(UnixDomainSocketAddress.of(socket));
            Qmp q = new Qmp(socket, ch, timeout);
            q.greeting = q.within("the greeting", timeout, q::next);
            if (!q.greeting.has("QMP")) {
                throw new IOException("QMP at " + socket + ": not a QMP greeting: " + q.greeting);
            }
            q.execute("qmp_capabilities");
            return q;
        } catch (IOException | RuntimeException e) {
            ch.close();
            throw e;
        }
    }

    /** The server's greeting: {@code {"QMP":{"version":{...},"capabilities":[...]}}}. */
    public JsonNode greeting() {
        return greeting;
    }

    public JsonNode execute(String command) throws IOException {
        return execute(command, null);
    }

    /** Runs one command; its {@code return}, or a {@link QmpError} with the server's {@code class} and {@code desc}. */
    public synchronized JsonNode execute(String command, ObjectNode arguments) throws IOException {
        return execute(command, arguments, null, null);
    }

    private synchronized JsonNode execute(String command, ObjectNode arguments, Predicate<JsonNode> awaited,
                                          Duration eventTimeout) throws IOException {
        ObjectNode req = JSON.createObjectNode().put("execute", command);
        if (arguments != null) {
            req.set("arguments", arguments);
        }
        boolean[] seen = {false};
        JsonNode reply = within(command, timeout, () -> {
            out.write(JSON.writeValueAsBytes(req));
            out.write('\n');
            out.flush();
            while (true) {
                JsonNode n = next();
                if (!n.has("event")) {
                    return n;
                }
                seen[0] |= awaited != null && awaited.test(n);
            }
        });
        if (reply.has("error")) {
            throw new QmpError(command, reply.path("error").path("class").asText(),
                    reply.path("error").path("desc").asText());
        }
        if (awaited != null && !seen[0]) {
            within(command + "'s event", eventTimeout, () -> {
                JsonNode n;
                do {
                    n = next();
                } while (!awaited.test(n));
                return n;
            });
        }
        return reply.path("return");
    }

    /** {@code query-status}: {@code {"running":true,"singlestep":false,"status":"running"}}. */
    public JsonNode queryStatus() throws IOException {
        return execute("query-status");
    }

    /** {@code query-cpus}: each vCPU's host thread, by vCPU index (Kuasar's {@code vcpus()} for StratoVirt). */
    public Map<Integer, Long> queryCpus() throws IOException {
        Map<Integer, Long> threads = new LinkedHashMap<>();
        for (JsonNode cpu : execute("query-cpus")) {
            threads.put(cpu.path("CPU").asInt(), cpu.path("thread_id").asLong());
        }
        return threads;
    }

    /**
     * {@code blockdev-add} of a raw image or device with direct I/O, the arguments Kuasar's StratoVirt block device
     * sends: {@code {"driver":"raw","node-name":..,"read-only":..,"cache":{"direct":true},
     * "file":{"driver":"file","filename":..}}}.
     */
    public void blockdevAdd(String nodeName, Path file, boolean readOnly) throws IOException {
        ObjectNode args = JSON.createObjectNode().put("driver", "raw").put("node-name", nodeName)
                .put("read-only", readOnly);
        args.putObject("cache").put("direct", true);
        args.putObject("file").put("driver", "file").put("filename", file.toString());
        execute("blockdev-add", args);
    }

    /** {@code device_add} of {@code driver} with {@code id} on {@code bus}, plus the driver's own properties. */
    public void deviceAdd(String driver, String id, String bus, Map<String, String> properties) throws IOException {
        ObjectNode args = JSON.createObjectNode().put("driver", driver).put("id", id).put("bus", bus);
        properties.forEach(args::put);
        execute("device_add", args);
    }

    /** {@code device_del}, then waits up to {@code eventTimeout} for the guest to release it ({@code DEVICE_DELETED}). */
    public void deviceDel(String id, Duration eventTimeout) throws IOException {
        execute("device_del", JSON.createObjectNode().put("id", id), n -> "DEVICE_DELETED".equals(
                n.path("event").asText()) && id.equals(n.path("data").path("device").asText()), eventTimeout);
    }

    /** {@code blockdev-del} of a node {@link #blockdevAdd} made. */
    public void blockdevDel(String nodeName) throws IOException {
        execute("blockdev-del", JSON.createObjectNode().put("node-name", nodeName));
    }

    /** {@code quit}: the VMM answers, then exits. */
    public void quit() throws IOException {
        execute("quit");
    }

    /** The next JSON line (QMP ends lines with \r\n, or \n). */
    private JsonNode next() throws IOException {
        while (true) {
            String line = in.readLine();
            if (line == null) {
                throw new IOException("QMP at " + socket + ": connection closed");
            }
            if (!line.isBlank()) {
                return JSON.readTree(line);
            }
        }
    }

    @FunctionalInterface
    private interface Exchange {
        JsonNode run() throws IOException;
    }

    /** Runs an exchange; past {@code limit} the connection is closed, which ends a blocked read. */
    private JsonNode within(String what, Duration limit, Exchange exchange) throws IOException {
        Object lock = new Object();
        boolean[] state = {false, false}; // done, expired
        Thread watchdog = Thread.ofVirtual().start(() -> {
            try {
                Thread.sleep(limit);
                synchronized (lock) {
                    if (!state[0]) {
                        state[1] = true;
                        channel.close();
                    }
                }
            } catch (InterruptedException | IOException done) {
                // answered in time
            }
        });
        try {
            return exchange.run();
        } catch (IOException e) {
            synchronized (lock) {
                if (state[1]) {
                    throw new SocketTimeoutException("QMP at " + socket + ": no answer to " + what + " within "
                            + limit.toMillis() + " ms");
                }
            }
            throw e;
        } finally {
            synchronized (lock) {
                state[0] = true;
            }
            watchdog.interrupt();
        }
    }

    /** The server answered a command with {@code {"error":{"class":..,"desc":..}}}. */
    public static final class QmpError extends IOException {
        private final String errorClass;
        private final String desc;

        QmpError(String command, String errorClass, String desc) {
            super("QMP " + command + ": " + desc + " (" + errorClass + ")");
            this.errorClass = errorClass;
            this.desc = desc;
        }

        public String errorClass() {
            return errorClass;
        }

        public String desc() {
            return desc;
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
