package io.kuasar.vmm.hypervisor;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.SocketTimeoutException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

/**
 * The QMP client against a server that answers as StratoVirt's QMP does. The shapes are StratoVirt's (openeuler-mirror
 * /stratovirt, 2.5.0): the greeting from {@code machine_manager/src/qmp/qmp_response.rs} ({@code QmpGreeting},
 * version under "qemu", package "StratoVirt-&lt;version&gt;", sent on accept by {@code qmp_socket.rs}); lines ending
 * in \r\n ({@code machine_manager/src/socket.rs}, {@code send_str}); the empty answer {@code {"return":{}}} and the
 * error answer {@code {"error":{"class":..,"desc":..}}} ({@code qmp_response.rs}, {@code Response}); the
 * {@code query-cpus} list ({@code qmp_schema.rs}, {@code CpuInfo} tagged by "arch", with "CPU", "thread_id",
 * "qom_path", "props" as {@code machine/src/standard_common/mod.rs} fills them, keys sorted as serde_json's map
 * writes them); the device_add error text of {@code standard_common/mod.rs}; {@code DEVICE_DELETED} and
 * {@code SHUTDOWN} events as {@code docs/qmp.md} shows them (DEVICE_DELETED before device_del's answer there).
 */
class QmpTest {
    static final String GREETING = "{\"QMP\":{\"version\":{\"qemu\":{\"micro\":1,\"minor\":0,\"major\":5},"
            + "\"package\":\"StratoVirt-2.5.0\"},\"capabilities\":[]}}";
    static final String EMPTY = "{\"return\":{}}";
    static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path dir;
    FakeStratoVirt server;

    @AfterEach
    void stop() throws IOException {
        if (server != null) {
            server.close();
        }
    }

    /** A QMP socket: greets, then answers each command with the lines given for it (none: StratoVirt's empty answer). */
    static final class FakeStratoVirt implements AutoCloseable {
        final ServerSocketChannel listener;
        final Map<String, List<String>> answers = new ConcurrentHashMap<>();
        final List<JsonNode> requests = new CopyOnWriteArrayList<>();

        FakeStratoVirt(Path socket) throws IOException {
            listener = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
            listener.bind(UnixDomainSocketAddress.of(socket));
            Thread.ofVirtual().start(this::serve);
        }

        private void serve() {
            while (listener.isOpen()) {
                try (SocketChannel c = listener.accept()) {
                    BufferedReader in = new BufferedReader(new InputStreamReader(Channels.newInputStream(c),
                            StandardCharsets.UTF_8));
                    OutputStream out = Channels.newOutputStream(c);
                    send(out, GREETING);
                    for (String line; (line = in.readLine()) != null; ) {
                        JsonNode req = JSON.readTree(line);
                        requests.add(req);
                        for (String a : answers.getOrDefault(req.path("execute").asText(), List.of(EMPTY))) {
                            send(out, a);
                        }
                    }
                } catch (IOException e) {
                    return;
                }
            }
        }

        private static void send(OutputStream out, String line) throws IOException {
            out.write((line + "\r\n").getBytes(StandardCharsets.UTF_8));
            out.flush();
        }

        @Override
        public void close() throws IOException {
            listener.close();
        }
    }

    @Test
    void greetingCapabilitiesStatusAndVcpuThreads() throws Exception {
        server = new FakeStratoVirt(dir.resolve("qmp.sock"));
        server.answers.put("query-status", List.of("{\"return\":{\"running\":true,\"singlestep\":false,"
                + "\"status\":\"running\"}}"));
        server.answers.put("query-cpus", List.of("{\"return\":["
                + "{\"CPU\":0,\"arch\":\"x86\",\"current\":true,\"halted\":false,\"props\":{\"core-id\":0,\"die_id\":0,"
                + "\"socket-id\":0,\"thread-id\":0},\"qom_path\":\"/machine/unattached/device[0]\",\"thread_id\":3134},"
                + "{\"CPU\":1,\"arch\":\"x86\",\"current\":true,\"halted\":false,\"props\":{\"core-id\":1,\"die_id\":0,"
                + "\"socket-id\":0,\"thread-id\":0},\"qom_path\":\"/machine/unattached/device[1]\",\"thread_id\":3135}"
                + "]}"));
        try (Qmp qmp = Qmp.connect(dir.resolve("qmp.sock"), Duration.ofSeconds(5))) {
            assertThat(qmp.greeting().path("QMP").path("version").path("package").asText())
                    .isEqualTo("StratoVirt-2.5.0");
            assertThat(qmp.queryStatus().path("status").asText()).isEqualTo("running");
            assertThat(qmp.queryCpus()).containsExactly(Map.entry(0, 3134L), Map.entry(1, 3135L));
        }
        assertThat(server.requests).extracting(r -> r.toString()).containsExactly(
                "{\"execute\":\"qmp_capabilities\"}", "{\"execute\":\"query-status\"}", "{\"execute\":\"query-cpus\"}");
    }

    @Test
    void hotPlugCommandsCarryKuasarsArguments() throws Exception {
        server = new FakeStratoVirt(dir.resolve("qmp.sock"));
        String deleted = "{\"event\":\"DEVICE_DELETED\",\"data\":{\"device\":\"virtio-drive-0\",\"path\":"
                + "\"virtio-drive-0\"},\"timestamp\":{\"seconds\":1614310541,\"microseconds\":554250}}";
        server.answers.put("device_del", List.of(deleted, EMPTY)); // as docs/qmp.md shows it: the event first
        try (Qmp qmp = Qmp.connect(dir.resolve("qmp.sock"), Duration.ofSeconds(5))) {
            qmp.blockdevAdd("drive-0", Path.of("/dev/dm-8"), false);
            qmp.deviceAdd("virtio-blk-pci", "virtio-drive-0", "pcie.1", Map.of("drive", "drive-0", "addr", "0x0"));
            qmp.deviceDel("virtio-drive-0", Duration.ofSeconds(5));
            qmp.blockdevDel("drive-0");
            // the event after the answer (QEMU's order, and StratoVirt's when the guest is slow to let go)
            server.answers.put("device_del", List.of(EMPTY, "{\"event\":\"RESUME\",\"data\":{},\"timestamp\":"
                    + "{\"seconds\":1,\"microseconds\":2}}", deleted));
            qmp.deviceDel("virtio-drive-0", Duration.ofSeconds(5));
            qmp.execute("query-status"); // the stream is in step after the events
        }
        List<JsonNode> r = server.requests;
        // Kuasar's block.rs tests: the exact blockdev-add, device_add and blockdev-del arguments
        assertThat(r.get(1)).isEqualTo(JSON.readTree("{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"raw\","
                + "\"read-only\":false,\"node-name\":\"drive-0\",\"cache\":{\"direct\":true},\"file\":{\"driver\":\"file\","
                + "\"filename\":\"/dev/dm-8\"}}}"));
        assertThat(r.get(2)).isEqualTo(JSON.readTree("{\"execute\":\"device_add\",\"arguments\":{\"driver\":"
                + "\"virtio-blk-pci\",\"id\":\"virtio-drive-0\",\"bus\":\"pcie.1\",\"addr\":\"0x0\",\"drive\":\"drive-0\"}}"));
        assertThat(r.get(3)).isEqualTo(JSON.readTree("{\"execute\":\"device_del\",\"arguments\":{\"id\":"
                + "\"virtio-drive-0\"}}"));
        assertThat(r.get(4)).isEqualTo(JSON.readTree("{\"execute\":\"blockdev-del\",\"arguments\":{\"node-name\":"
                + "\"drive-0\"}}"));
        assertThat(r).hasSize(7);
    }

    @Test
    void anErrorAnswerCarriesStratoVirtsClassAndDesc() throws Exception {
        server = new FakeStratoVirt(dir.resolve("qmp.sock"));
        server.answers.put("device_add", List.of("{\"error\":{\"class\":\"GenericError\",\"desc\":"
                + "\"Failed to add device: Bus not found\"}}"));
        try (Qmp qmp = Qmp.connect(dir.resolve("qmp.sock"), Duration.ofSeconds(5))) {
            Qmp.QmpError e = catchThrowableOfType(Qmp.QmpError.class,
                    () -> qmp.deviceAdd("virtio-blk-pci", "virtio-blk9", "pcie.11", Map.of("drive", "blk9")));
            assertThat(e.errorClass()).isEqualTo("GenericError");
            assertThat(e.desc()).isEqualTo("Failed to add device: Bus not found");
            assertThat(e).hasMessage("QMP device_add: Failed to add device: Bus not found (GenericError)");
            assertThat(qmp.queryStatus().isObject()).isTrue(); // the connection is still good
        }
    }

    @Test
    void quitIsAnsweredThenTheShutdownEventFollows() throws Exception {
        server = new FakeStratoVirt(dir.resolve("qmp.sock"));
        server.answers.put("quit", List.of(EMPTY, "{\"event\":\"SHUTDOWN\",\"data\":{\"guest\":false,\"reason\":"
                + "\"host-qmp-quit\"},\"timestamp\":{\"seconds\":1590563776,\"microseconds\":519808}}"));
        try (Qmp qmp = Qmp.connect(dir.resolve("qmp.sock"), Duration.ofSeconds(5))) {
            qmp.quit();
        }
        assertThat(server.requests.getLast().toString()).isEqualTo("{\"execute\":\"quit\"}");
    }

    @Test
    void aServerThatNeverAnswersTimesOut() throws Exception {
        Path silentSock = dir.resolve("silent.sock");
        try (ServerSocketChannel silent = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            silent.bind(UnixDomainSocketAddress.of(silentSock));
            long t0 = System.nanoTime();
            SocketTimeoutException e = catchThrowableOfType(SocketTimeoutException.class,
                    () -> Qmp.connect(silentSock, Duration.ofMillis(300)));
            assertThat(e).hasMessage("QMP at " + silentSock + ": no answer to the greeting within 300 ms");
            assertThat((System.nanoTime() - t0) / 1_000_000).isBetween(250L, 5000L);
        }
        // greets, then says nothing: a command times out, and so does a device_del whose event never comes
        server = new FakeStratoVirt(dir.resolve("qmp.sock"));
        server.answers.put("query-cpus", List.of());
        try (Qmp qmp = Qmp.connect(dir.resolve("qmp.sock"), Duration.ofMillis(300))) {
            assertThat(catchThrowableOfType(SocketTimeoutException.class, qmp::queryCpus))
                    .hasMessageEndingWith("no answer to query-cpus within 300 ms");
        }
        try (Qmp qmp = Qmp.connect(dir.resolve("qmp.sock"), Duration.ofSeconds(5))) {
            assertThat(catchThrowableOfType(SocketTimeoutException.class,
                    () -> qmp.deviceDel("virtio-blk1", Duration.ofMillis(300))))
                    .hasMessageEndingWith("no answer to device_del's event within 300 ms");
        }
        assertThat(catchThrowableOfType(IOException.class, () -> Qmp.connect(dir.resolve("none.sock")))).isNotNull();
    }
}
