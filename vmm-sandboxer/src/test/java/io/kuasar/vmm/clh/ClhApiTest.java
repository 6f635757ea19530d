package io.kuasar.vmm.clh;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

/**
 * The Cloud Hypervisor API client against a server that answers as Cloud Hypervisor's published API
 * ({@code vmm/src/api/openapi/cloud-hypervisor.yaml}: statuses, bodies and their schemas) and its HTTP server
 * (status lines, {@code Content-Length}, one answer per connection). Cloud Hypervisor itself is not packaged for
 * Debian and cannot boot a guest without hardware KVM, so these recorded exchanges stand in for it.
 */
class ClhApiTest {
    @TempDir
    Path dir;
    FakeClh server;

    @AfterEach
    void stop() throws IOException {
        if (server != null) {
            server.close();
        }
    }

    /** One exchange: the answer the fake gives to a request line ("PUT /api/v1/vm.add-disk"). */
    record Answer(int status, String reason, String body) {
    }

    /** A fake API socket: answers by request line, records each request (line and body). */
    static final class FakeClh implements AutoCloseable {
        final ServerSocketChannel server;
        final Map<String, Answer> answers = new LinkedHashMap<>();
        final List<String[]> requests = new ArrayList<>();

        FakeClh(Path socket) throws IOException {
            server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
            server.bind(UnixDomainSocketAddress.of(socket));
            Thread.ofVirtual().start(this::serve);
        }

        private void serve() {
            while (server.isOpen()) {
                try (SocketChannel c = server.accept()) {
                    String[] req = read(c);
                    synchronized (requests) {
                        requests.add(req);
                    }
                    Answer a = answers.getOrDefault(req[0], new Answer(404, "Not Found", ""));
                    String resp = "HTTP/1.1 " + a.status() + " " + a.reason() + "\r\nServer: Cloud Hypervisor API\r\n"
                            + "Connection: close\r\n" + (a.body().isEmpty() ? "" : "Content-Type: application/json\r\n")
                            + "Content-Length: " + a.body().getBytes(StandardCharsets.UTF_8).length + "\r\n\r\n"
                            + a.body();
                    c.write(ByteBuffer.wrap(resp.getBytes(StandardCharsets.UTF_8)));
                } catch (IOException e) {
                    return;
                }
            }
        }

        /** [request line without the version, body, Content-Type]. */
        private static String[] read(SocketChannel c) throws IOException {
            ByteArrayOutputStream buf = new ByteArrayOutputStream();
            ByteBuffer b = ByteBuffer.allocate(4096);
            while (true) {
                String s = buf.toString(StandardCharsets.UTF_8);
                int end = s.indexOf("\r\n\r\n");
                if (end >= 0) {
                    int len = 0;
                    String type = "";
                    for (String h : s.substring(0, end).split("\r\n")) {
                        if (h.toLowerCase().startsWith("content-length:")) {
                            len = Integer.parseInt(h.substring(15).trim());
                        }
                        if (h.toLowerCase().startsWith("content-type:")) {
                            type = h.substring(13).trim();
                        }
                    }
                    if (s.length() >= end + 4 + len) {
                        String line = s.substring(0, s.indexOf("\r\n"));
                        return new String[]{line.substring(0, line.lastIndexOf(' ')), s.substring(end + 4, end + 4 + len),
                                type};
                    }
                }
                b.clear();
                if (c.read(b) < 0) {
                    throw new IOException("closed");
                }
                buf.write(b.array(), 0, b.position());
            }
        }

        @Override
        public void close() throws IOException {
            server.close();
        }
    }

    @Test
    void pingInfoHotplugAndShutdownAsCloudHypervisorAnswersThem() throws Exception {
        Path sock = dir.resolve("api.sock");
        server = new FakeClh(sock);
        server.answers.put("GET /api/v1/vmm.ping", new Answer(200, "OK",
                "{\"build_version\":\"v28.2-dirty\",\"version\":\"28.2.0\",\"pid\":4242,\"features\":[\"kvm\"]}"));
        server.answers.put("GET /api/v1/vm.info", new Answer(200, "OK",
                "{\"config\":{\"cpus\":{\"boot_vcpus\":1,\"max_vcpus\":1},\"memory\":{\"size\":1073741824}},"
                        + "\"state\":\"Running\",\"memory_actual_size\":1073741824}"));
        server.answers.put("PUT /api/v1/vm.add-disk", new Answer(200, "OK",
                "{\"id\":\"blk0\",\"bdf\":\"0000:00:06.0\"}"));
        server.answers.put("PUT /api/v1/vm.remove-device", new Answer(204, "No Content", ""));
        server.answers.put("PUT /api/v1/vmm.shutdown", new Answer(204, "No Content", ""));
        ClhApi api = new ClhApi(sock, Duration.ofSeconds(5));

        assertThat(api.ping().path("version").asText()).isEqualTo("28.2.0");
        assertThat(api.info().path("state").asText()).isEqualTo("Running");
        assertThat(api.addDisk("blk0", Path.of("/run/kuasar-vmm/sb1/rootfs.img"), true)).isEqualTo("0000:00:06.0");
        api.removeDevice("blk0");
        api.shutdownVmm();

        // what went over the wire: Kuasar's DiskConfig and VmRemoveDevice bodies, JSON typed
        ObjectMapper json = new ObjectMapper();
        String[] add = server.requests.get(2);
        assertThat(add[0]).isEqualTo("PUT /api/v1/vm.add-disk");
        assertThat(add[2]).isEqualTo("application/json");
        JsonNode disk = json.readTree(add[1]);
        assertThat(disk.path("path").asText()).isEqualTo("/run/kuasar-vmm/sb1/rootfs.img");
        assertThat(disk.path("readonly").asBoolean()).isTrue();
        assertThat(disk.path("direct").asBoolean()).isTrue();
        assertThat(disk.path("vhost_user").asBoolean()).isFalse();
        assertThat(disk.get("vhost_socket").isNull()).isTrue();
        assertThat(disk.path("id").asText()).isEqualTo("blk0");
        assertThat(json.readTree(server.requests.get(3)[1]).path("id").asText()).isEqualTo("blk0");
        assertThat(server.requests.get(4)[0]).isEqualTo("PUT /api/v1/vmm.shutdown");
        assertThat(server.requests.get(4)[1]).isEmpty();
    }

    @Test
    void errorStatusesCarryCloudHypervisorsMessage() throws Exception {
        Path sock = dir.resolve("api.sock");
        server = new FakeClh(sock);
        server.answers.put("PUT /api/v1/vm.add-disk", new Answer(409, "Conflict",
                "Error from API: The disk could not be added to the VM: Identifier blk0 is not unique"));
        server.answers.put("PUT /api/v1/vm.add-fs", new Answer(204, "No Content", ""));
        ClhApi api = new ClhApi(sock, Duration.ofSeconds(5));
        ClhApi.ApiException conflict = catchThrowableOfType(ClhApi.ApiException.class,
                () -> api.addDisk("blk0", Path.of("/img"), false));
        assertThat(conflict.status()).isEqualTo(409);
        assertThat(conflict.getMessage()).isEqualTo("Cloud Hypervisor vm.add-disk: HTTP 409: Error from API: The disk "
                + "could not be added to the VM: Identifier blk0 is not unique");
        // "The VM information is not available because the VM is not created."
        assertThat(catchThrowableOfType(ClhApi.ApiException.class, api::info).status()).isEqualTo(404);
    }

    @Test
    void aCloudHypervisorThatDoesNotAnswerTimesOutAndNoneListeningIsAnError() throws Exception {
        Path sock = dir.resolve("silent.sock");
        try (ServerSocketChannel silent = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            silent.bind(UnixDomainSocketAddress.of(sock));
            ClhApi api = new ClhApi(sock, Duration.ofMillis(300));
            long t0 = System.nanoTime();
            IOException e = catchThrowableOfType(IOException.class, api::ping);
            assertThat(e).hasMessageContaining("did not answer within 300 ms");
            assertThat((System.nanoTime() - t0) / 1_000_000).isLessThan(5000);
        }
        assertThat(catchThrowableOfType(IOException.class, () -> new ClhApi(dir.resolve("none.sock"),
                Duration.ofSeconds(1)).ping())).isNotNull();
    }

    @Test
    void chunkedAnswersAreRead() throws Exception {
        ClhApi.Response r = ClhApi.parse("vmm.ping", ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                + "5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n").getBytes(StandardCharsets.UTF_8));
        assertThat(r.status()).isEqualTo(200);
        assertThat(r.body()).isEqualTo("{\"a\":1}");
    }
}
