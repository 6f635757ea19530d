package io.kuasar.sandbox.tracing;

import com.google.protobuf.StringValue;
import com.sun.net.httpserver.HttpServer;
import io.kuasar.api.task.v2.StateRequest;
import io.kuasar.api.task.v2.StateResponse;
import io.kuasar.sandbox.metrics.MetricsRegistry;
import io.kuasar.sandbox.ttrpc.TtrpcClient;
import io.kuasar.sandbox.ttrpc.TtrpcServer;
import io.kuasar.sandbox.ttrpc.TtrpcService;
import io.opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;
import io.opentelemetry.proto.common.v1.KeyValue;
import io.opentelemetry.proto.trace.v1.Span.SpanKind;
import io.opentelemetry.proto.trace.v1.Status.StatusCode;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * Spans of a real ttrpc server, exported over OTLP/HTTP to a receiver that decodes them with the official protos.
 * (The OTLP/gRPC path runs against real containerd in the e2e TracingTest.)
 */
class TracingTest {
    private static final String PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
    private static final String PARENT_SPAN = "00f067aa0ba902b7";

    @TempDir
    Path dir;
    HttpServer receiver;
    final LinkedBlockingQueue<io.opentelemetry.proto.trace.v1.Span> spans = new LinkedBlockingQueue<>();
    final List<String> services = new ArrayList<>();
    TtrpcServer server;
    TtrpcClient client;
    final MetricsRegistry metrics = new MetricsRegistry();

    @BeforeEach
    void start() throws Exception {
        receiver = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
        receiver.createContext("/v1/traces", ex -> {
            ExportTraceServiceRequest req = ExportTraceServiceRequest.parseFrom(ex.getRequestBody().readAllBytes());
            req.getResourceSpansList().forEach(rs -> {
                synchronized (services) {
                    services.add(attr(rs.getResource().getAttributesList(), "service.name"));
                }
                rs.getScopeSpansList().forEach(ss -> spans.addAll(ss.getSpansList()));
            });
            ex.sendResponseHeaders(200, -1);
            ex.close();
        });
        receiver.start();
        Tracing.configure(TracingSettings.from(Map.of(
                "OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:" + receiver.getAddress().getPort(),
                "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf",
                "OTEL_BSP_SCHEDULE_DELAY", "50")::get, "kuasar-test-service"), true);
        Tracing.observeSteps(metrics::recordStep);
        TtrpcService svc = TtrpcService.builder("containerd.task.v2.Task")
                .unary("State", StateRequest.parser(), (ctx, r) -> {
                    try (Span s = Tracing.step("oci.state")) {
                        s.attr("oci.runtime", "runc");
                    }
                    if (r.getId().equals("missing")) {
                        throw io.grpc.Status.NOT_FOUND.withDescription("container missing").asRuntimeException();
                    }
                    return StateResponse.newBuilder().setId(r.getId()).build();
                })
                .build();
        server = new TtrpcServer(dir.resolve("t.sock")).register(svc).start();
        client = TtrpcClient.connect(server.socketPath());
    }

    @AfterEach
    void stop() {
        client.close();
        server.close();
        Tracing.shutdown();
        Tracing.observeSteps((n, t, f) -> { });
        receiver.stop(0);
    }

    private StateResponse state(String id, Map<String, String> metadata) {
        return client.call("containerd.task.v2.Task", "State", StateRequest.newBuilder().setId(id).build(),
                StateResponse.parser(), Duration.ofSeconds(10), metadata);
    }

    @Test
    void aTaskCallContinuesTheCallersTraceAndItsStepsNestUnderIt() throws Exception {
        state("c1", Map.of("traceparent", "00-" + PARENT_TRACE + "-" + PARENT_SPAN + "-01"));
        var a = next();
        var b = next();
        var server = a.getKind() == SpanKind.SPAN_KIND_SERVER ? a : b;
        var step = server == a ? b : a;
        assertThat(hex(server.getTraceId())).isEqualTo(PARENT_TRACE);
        assertThat(hex(server.getParentSpanId())).isEqualTo(PARENT_SPAN);
        assertThat(server.getName()).isEqualTo("containerd.task.v2.Task/State");
        assertThat(attr(server.getAttributesList(), "rpc.system")).isEqualTo("ttrpc");
        assertThat(attr(server.getAttributesList(), "kuasar.container.id")).isEqualTo("c1");
        assertThat(step.getName()).isEqualTo("oci.state");
        assertThat(step.getKind()).isEqualTo(SpanKind.SPAN_KIND_INTERNAL);
        assertThat(hex(step.getTraceId())).isEqualTo(PARENT_TRACE);
        assertThat(step.getParentSpanId()).isEqualTo(server.getSpanId());
        assertThat(step.getStartTimeUnixNano()).isBetween(server.getStartTimeUnixNano(), server.getEndTimeUnixNano());
        synchronized (services) {
            assertThat(services).contains("kuasar-test-service");
        }
        assertThat(metrics.scrape()).contains("kuasar_step_duration_seconds_count{step=\"oci.state\"} 1");
    }

    @Test
    void withoutACallerContextEachCallIsANewTraceAndAFailureIsAnError() throws Exception {
        assertThatThrownBy(() -> state("missing", Map.of())).hasMessageContaining("container missing");
        var a = next();
        var b = next();
        var server = a.getKind() == SpanKind.SPAN_KIND_SERVER ? a : b;
        assertThat(server.getParentSpanId().isEmpty()).isTrue();
        assertThat(server.getStatus().getCode()).isEqualTo(StatusCode.STATUS_CODE_ERROR);
        assertThat(server.getStatus().getMessage()).contains("NOT_FOUND").contains("container missing");
    }

    @Test
    void anUnsampledCallerAndTracingOffExportNothingButStepsAreStillMeasured() throws Exception {
        state("c2", Map.of("traceparent", "00-" + PARENT_TRACE + "-" + PARENT_SPAN + "-00"));
        assertThat(spans.poll(500, TimeUnit.MILLISECONDS)).isNull();
        Tracing.toggle(); // off, as SIGUSR1 does
        assertThat(Tracing.enabled()).isFalse();
        state("c3", Map.of("traceparent", "00-" + PARENT_TRACE + "-" + PARENT_SPAN + "-01"));
        assertThat(spans.poll(500, TimeUnit.MILLISECONDS)).isNull();
        assertThat(metrics.scrape()).contains("kuasar_step_duration_seconds_count{step=\"oci.state\"} 2");
        Tracing.toggle(); // on again
        state("c4", Map.of());
        assertThat(next().getTraceId()).isNotEmpty();
    }

    private io.opentelemetry.proto.trace.v1.Span next() throws InterruptedException {
        var s = spans.poll(10, TimeUnit.SECONDS);
        assertThat(s).as("a span within 10 s").isNotNull();
        return s;
    }

    private static String hex(com.google.protobuf.ByteString b) {
        return HexFormat.of().formatHex(b.toByteArray());
    }

    private static String attr(List<KeyValue> kvs, String key) {
        return kvs.stream().filter(kv -> kv.getKey().equals(key)).map(kv -> kv.getValue().getStringValue())
                .findFirst().orElse(null);
    }
}
