package io.kuasar.vmm.clh;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Locale;

/**
 * Cloud Hypervisor's REST API ({@code http://localhost/api/v1/...}) over its {@code --api-socket}: the calls Kuasar's
 * vmm-sandboxer makes (ping, VM info, disk hot-plug and removal, shutdown), each on a connection of its own
 * (HTTP/1.1, {@code Connection: close}). A non-2xx answer is an {@link ApiException} with Cloud Hypervisor's status
 * and message.
 */
public final class ClhApi {
    private static final ObjectMapper JSON = new ObjectMapper();
    private final Path socket;
    private final Duration timeout;

    public ClhApi(Path socket, Duration timeout) {
        this.socket = socket;
        this.timeout = timeout;
    }

    /** {@code GET /vmm.ping}: the VMM's version and pid ({@code VmmPingResponse}). */
    public JsonNode ping() throws IOException {
        return JSON.readTree(request("GET", "vmm.ping", null).body());
    }

    /** {@code GET /vm.info}: the VM's config, state and device tree ({@code VmInfo}). */
    public JsonNode info() throws IOException {
        return JSON.readTree(request("GET", "vm.info", null).body());
    }

    /**
     * {@code PUT /vm.add-disk} with Kuasar's {@code DiskConfig}; returns the PCI address the disk got in the guest
     * ({@code PciDeviceInfo.bdf}), or null when the disk was cold-added (204: the VM was not booted).
     */
    public String addDisk(String id, Path path, boolean readonly) throws IOException {
        ObjectNode disk = JSON.createObjectNode().put("path", path.toString()).put("readonly", readonly)
                .put("direct", true).put("vhost_user", false).putNull("vhost_socket").put("id", id);
        Response r = request("PUT", "vm.add-disk", disk);
        return r.status() == 204 ? null : JSON.readTree(r.body()).path("bdf").asText(null);
    }

    /** {@code PUT /vm.remove-device} ({@code VmRemoveDevice}). */
    public void removeDevice(String id) throws IOException {
        request("PUT", "vm.remove-device", JSON.createObjectNode().put("id", id));
    }

    /** {@code PUT /vm.shutdown}: the guest is stopped; the VMM process stays. */
    public void shutdownVm() throws IOException {
        request("PUT", "vm.shutdown", null);
    }

    /** {@code PUT /vmm.shutdown}: the VMM process exits. */
    public void shutdownVmm() throws IOException {
        request("PUT", "vmm.shutdown", null);
    }

    /** One exchange. */
    public record Response(int status, String body) {
    }

    /** Cloud Hypervisor answered with an error status. */
    public static final class ApiException extends IOException {
        private final int status;

        ApiException(String endpoint, int status, String body) {
            super("Cloud Hypervisor " + endpoint + ": HTTP " + status + (body.isBlank() ? "" : ": " + body.strip()));
            this.status = status;
        }

        public int status() {
            return status;
        }
    }

    Response request(String method, String endpoint, JsonNode body) throws IOException {
        byte[] payload = body == null ? new byte[0] : JSON.writeValueAsBytes(body);
        StringBuilder head = new StringBuilder().append(method).append(" /api/v1/").append(endpoint)
                .append(" HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n");
        if (body != null) {
            head.append("Content-Type: application/json\r\n");
        }
        head.append("Content-Length: ").append(payload.length).append("\r\n\r\n");
        try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            ch.connect(UnixDomainSocketAddress.of(socket));
            ByteBuffer out = ByteBuffer.allocate(head.length() + payload.length);
            out.put(head.toString().getBytes(StandardCharsets.US_ASCII)).put(payload).flip();
            while (out.hasRemaining()) {
                ch.write(out);
            }
            Response r = parse(endpoint, readAll(ch));
            if (r.status() / 100 != 2) {
                throw new ApiException(endpoint, r.status(), r.body());
            }
            return r;
        }
    }

    /** Reads the whole answer (the server closes the connection after it), within the timeout. */
    private byte[] readAll(SocketChannel ch) throws IOException {
        var in = Channels.newInputStream(ch);
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        long end = System.nanoTime() + timeout.toNanos();
        Thread watchdog = Thread.ofVirtual().start(() -> {
            try {
                Thread.sleep(timeout);
                ch.close(); // unblocks the read below
            } catch (InterruptedException | IOException done) {
                // finished in time
            }
        });
        try {
            byte[] b = new byte[8192];
            for (int n; (n = in.read(b)) > 0; ) {
                buf.write(b, 0, n);
            }
        } catch (IOException e) {
            if (System.nanoTime() >= end) {
                throw new SocketTimeoutException("Cloud Hypervisor at " + socket + " did not answer within "
                        + timeout.toMillis() + " ms");
            }
            throw e;
        } finally {
            watchdog.interrupt();
        }
        return buf.toByteArray();
    }

    static Response parse(String endpoint, byte[] raw) throws IOException {
        String text = new String(raw, StandardCharsets.UTF_8);
        int headEnd = text.indexOf("\r\n\r\n");
        if (!text.startsWith("HTTP/1.") || headEnd < 0) {
            throw new IOException("Cloud Hypervisor " + endpoint + ": not an HTTP answer: "
                    + text.substring(0, Math.min(80, text.length())));
        }
        String[] status = text.substring(0, text.indexOf("\r\n")).split(" ", 3);
        int code = Integer.parseInt(status[1]);
        String body = text.substring(headEnd + 4);
        for (String h : text.substring(0, headEnd).split("\r\n")) {
            if (h.toLowerCase(Locale.ROOT).startsWith("transfer-encoding:") && h.toLowerCase(Locale.ROOT)
                    .contains("chunked")) {
                body = dechunk(body);
            }
        }
        return new Response(code, body);
    }

    private static String dechunk(String body) {
        StringBuilder out = new StringBuilder();
        int i = 0;
        while (i < body.length()) {
            int eol = body.indexOf("\r\n", i);
            if (eol < 0) {
                break;
            }
            int size = Integer.parseInt(body.substring(i, eol).split(";")[0].trim(), 16);
            if (size == 0) {
                break;
            }
            out.append(body, eol + 2, eol + 2 + size);
            i = eol + 2 + size + 2;
        }
        return out.toString();
    }
}
