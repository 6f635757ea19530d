package io.kuasar.sandbox.metrics;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class MetricsServerTest {
    @TempDir
    Path dir;

    static MetricsRegistry registry() {
        MetricsRegistry r = new MetricsRegistry();
        r.gauge("kuasar_sandboxes{phase=\"running\"}", "Sandboxes.", () -> 3);
        r.recordRpc("task", "Create", "OK", 2_000_000);
        r.recordRpc("task", "Create", "NOT_FOUND", 200_000);
        return r;
    }

    @Test
    void scrapeHasGaugesCountersAndHistograms() {
        String text = registry().scrape();
        assertThat(text).contains("kuasar_sandboxes{phase=\"running\"} 3",
                "kuasar_rpc_requests_total{api=\"task\",method=\"Create\",code=\"OK\"} 1",
                "kuasar_rpc_requests_total{api=\"task\",method=\"Create\",code=\"NOT_FOUND\"} 1",
                "kuasar_rpc_duration_seconds_bucket{api=\"task\",method=\"Create\",le=\"0.0025\"} 2",
                "kuasar_rpc_duration_seconds_bucket{api=\"task\",method=\"Create\",le=\"0.001\"} 1",
                "kuasar_rpc_duration_seconds_count{api=\"task\",method=\"Create\"} 2",
                "# TYPE kuasar_process_open_fds gauge");
    }

    @Test
    void servesOnLoopbackTcp() throws Exception {
        try (MetricsServer s = MetricsServer.start("127.0.0.1:0", registry())) {
            int port = ((java.net.InetSocketAddress) s.localAddress()).getPort();
            HttpResponse<String> r = HttpClient.newHttpClient().send(HttpRequest.newBuilder(
                    URI.create("http://127.0.0.1:" + port + "/metrics")).build(), HttpResponse.BodyHandlers.ofString());
            assertThat(r.statusCode()).isEqualTo(200);
            assertThat(r.body()).contains("kuasar_sandboxes{phase=\"running\"} 3");
            HttpResponse<String> other = HttpClient.newHttpClient().send(HttpRequest.newBuilder(
                    URI.create("http://127.0.0.1:" + port + "/")).build(), HttpResponse.BodyHandlers.ofString());
            assertThat(other.statusCode()).isEqualTo(404);
        }
    }

    @Test
    void servesOnAUnixSocket() throws Exception {
        Path sock = dir.resolve("m.sock");
        try (MetricsServer s = MetricsServer.start("unix:" + sock, registry());
             SocketChannel c = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            c.connect(UnixDomainSocketAddress.of(sock));
            c.write(ByteBuffer.wrap("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".getBytes(StandardCharsets.US_ASCII)));
            String resp = new String(java.nio.channels.Channels.newInputStream(c).readAllBytes(), StandardCharsets.UTF_8);
            assertThat(resp).startsWith("HTTP/1.1 200 OK").contains("kuasar_rpc_requests_total");
        }
    }

    @Test
    void refusesNonLoopbackAddresses() {
        assertThatThrownBy(() -> MetricsServer.start("0.0.0.0:9090", registry()))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("loopback");
        assertThatThrownBy(() -> MetricsServer.start("nonsense", registry()))
                .isInstanceOf(IllegalArgumentException.class);
    }
}
