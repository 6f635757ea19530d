package io.kuasar.sandbox.tracing;

import com.google.protobuf.ByteString;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.stub.MetadataUtils;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollDomainSocketChannel;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.epoll.EpollSocketChannel;
import io.netty.channel.unix.DomainSocketAddress;
import io.opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;
import io.opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse;
import io.opentelemetry.proto.collector.trace.v1.TraceServiceGrpc;
import io.opentelemetry.proto.common.v1.AnyValue;
import io.opentelemetry.proto.common.v1.InstrumentationScope;
import io.opentelemetry.proto.common.v1.KeyValue;
import io.opentelemetry.proto.resource.v1.Resource;
import io.opentelemetry.proto.trace.v1.ResourceSpans;
import io.opentelemetry.proto.trace.v1.ScopeSpans;
import io.opentelemetry.proto.trace.v1.Status;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.LongAdder;

/**
 * OTLP trace export, the SDK's batch span processor in small: ended spans queue up (bounded; a full queue drops and
 * counts), one thread sends them every {@code OTEL_BSP_SCHEDULE_DELAY} or once a batch is full, over OTLP/gRPC
 * ({@code TraceService/Export}) or OTLP/HTTP (protobuf body). The messages are the official OpenTelemetry protos
 * (io.opentelemetry.proto). A collector that is down costs a warning a minute, never a blocked RPC.
 */
public final class OtlpExporter implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(OtlpExporter.class);
    private static final HexFormat HEX = HexFormat.of();
    private static final String SCOPE = "io.kuasar.sandbox";

    private final TracingSettings settings;
    private final BlockingQueue<Span> queue;
    private final Resource resource;
    private final Transport transport;
    private final Thread thread;
    private final LongAdder exported = new LongAdder();
    private final LongAdder dropped = new LongAdder();
    private final LongAdder failed = new LongAdder();
    private volatile boolean closing;
    private long lastWarning;

    /** One way to deliver a batch. */
    interface Transport extends AutoCloseable {
        void send(ExportTraceServiceRequest request) throws Exception;

        @Override
        void close();
    }

    OtlpExporter(TracingSettings settings) {
        this.settings = settings;
        this.queue = new ArrayBlockingQueue<>(settings.maxQueue());
        this.resource = resource(settings);
        this.transport = settings.protocol().equals("grpc") ? new GrpcTransport(settings) : new HttpTransport(settings);
        this.thread = Thread.ofPlatform().daemon().name("otlp-exporter").start(this::run);
    }

    /** Spans sent, dropped (queue full) and lost in failed exports, for the daemon's metrics. */
    public long exported() {
        return exported.sum();
    }

    public long dropped() {
        return dropped.sum();
    }

    public long failed() {
        return failed.sum();
    }

    void offer(Span span) {
        if (closing || !queue.offer(span)) {
            dropped.increment();
        }
    }

    private void run() {
        List<Span> batch = new ArrayList<>(settings.maxBatch());
        long delayNanos = settings.scheduleDelay().toNanos();
        while (!closing || !queue.isEmpty()) {
            long deadline = System.nanoTime() + delayNanos;
            try {
                while (batch.size() < settings.maxBatch() && !closing) {
                    long left = deadline - System.nanoTime();
                    if (left <= 0) {
                        break;
                    }
                    Span s = queue.poll(left, TimeUnit.NANOSECONDS);
                    if (s != null) {
                        batch.add(s);
                        queue.drainTo(batch, settings.maxBatch() - batch.size());
                    }
                }
            } catch (InterruptedException e) {
                closing = true; // close(): send what is left, then stop
            }
            queue.drainTo(batch, settings.maxBatch() - batch.size());
            if (!batch.isEmpty()) {
                export(batch);
                batch.clear();
            }
        }
    }

    private void export(List<Span> spans) {
        try {
            transport.send(request(spans));
            exported.add(spans.size());
        } catch (Exception e) {
            failed.add(spans.size());
            long now = System.nanoTime();
            if (lastWarning == 0 || now - lastWarning > TimeUnit.MINUTES.toNanos(1)) {
                lastWarning = now;
                LOG.warn("could not export {} spans to {} ({}): {}; is the collector up? (warned once a minute)",
                        spans.size(), settings.endpoint(), settings.protocol(), e.getMessage());
            }
        }
    }

    ExportTraceServiceRequest request(List<Span> spans) {
        ScopeSpans.Builder scope = ScopeSpans.newBuilder()
                .setScope(InstrumentationScope.newBuilder().setName(SCOPE).setVersion(version()));
        for (Span s : spans) {
            io.opentelemetry.proto.trace.v1.Span.Builder b = io.opentelemetry.proto.trace.v1.Span.newBuilder()
                    .setTraceId(ByteString.copyFrom(HEX.parseHex(s.traceId)))
                    .setSpanId(ByteString.copyFrom(HEX.parseHex(s.spanId)))
                    .setName(s.name)
                    .setKind(s.kind == Span.Kind.SERVER ? io.opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER
                            : io.opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_INTERNAL)
                    .setStartTimeUnixNano(s.startEpochNanos)
                    .setEndTimeUnixNano(s.endEpochNanos())
                    .setFlags(1); // W3C trace flags: sampled
            if (!s.parentSpanId.isEmpty()) {
                b.setParentSpanId(ByteString.copyFrom(HEX.parseHex(s.parentSpanId)));
            }
            s.attributes().forEach((k, v) -> b.addAttributes(keyValue(k, v)));
            String error = s.errorMessage();
            b.setStatus(error == null ? Status.newBuilder().setCode(Status.StatusCode.STATUS_CODE_UNSET)
                    : Status.newBuilder().setCode(Status.StatusCode.STATUS_CODE_ERROR).setMessage(error));
            scope.addSpans(b);
        }
        return ExportTraceServiceRequest.newBuilder().addResourceSpans(
                ResourceSpans.newBuilder().setResource(resource).addScopeSpans(scope)).build();
    }

    private static Resource resource(TracingSettings s) {
        Map<String, Object> attrs = new LinkedHashMap<>();
        attrs.put("telemetry.sdk.language", "java");
        attrs.put("telemetry.sdk.name", SCOPE);
        attrs.put("process.pid", ProcessHandle.current().pid());
        attrs.put("service.version", version());
        attrs.putAll(s.resource());
        attrs.put("service.name", s.serviceName());
        Resource.Builder r = Resource.newBuilder();
        attrs.forEach((k, v) -> r.addAttributes(keyValue(k, v)));
        return r.build();
    }

    private static String version() {
        String v = OtlpExporter.class.getPackage().getImplementationVersion();
        return v == null ? "dev" : v;
    }

    static KeyValue keyValue(String key, Object value) {
        AnyValue.Builder v = AnyValue.newBuilder();
        switch (value) {
            case Long l -> v.setIntValue(l);
            case Integer i -> v.setIntValue(i);
            case Boolean bool -> v.setBoolValue(bool);
            case Double d -> v.setDoubleValue(d);
            default -> v.setStringValue(String.valueOf(value));
        }
        return KeyValue.newBuilder().setKey(key).setValue(v).build();
    }

    /** Sends what is queued (within the export timeout) and stops. */
    @Override
    public void close() {
        closing = true;
        thread.interrupt();
        try {
            thread.join(settings.timeout().toMillis() + 1000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        transport.close();
    }

    /** OTLP/gRPC: {@code http://host:port} (plaintext), {@code https://} (TLS) or {@code unix:///path}. */
    private static final class GrpcTransport implements Transport {
        private final EventLoopGroup loop = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
        private final ManagedChannel channel;
        private final TraceServiceGrpc.TraceServiceBlockingStub stub;
        private final TracingSettings settings;

        GrpcTransport(TracingSettings s) {
            this.settings = s;
            URI u = s.endpoint();
            NettyChannelBuilder b;
            if (u.getScheme().equals("unix")) {
                b = NettyChannelBuilder.forAddress(new DomainSocketAddress(u.getPath()))
                        .channelType(EpollDomainSocketChannel.class).usePlaintext();
            } else {
                int port = u.getPort() > 0 ? u.getPort() : u.getScheme().equals("https") ? 443 : 4317;
                b = NettyChannelBuilder.forAddress(u.getHost(), port).channelType(EpollSocketChannel.class);
                if (u.getScheme().equals("https")) {
                    b.useTransportSecurity();
                } else {
                    b.usePlaintext();
                }
            }
            channel = b.eventLoopGroup(loop).build();
            Metadata headers = new Metadata();
            s.headers().forEach((k, v) -> headers.put(Metadata.Key.of(k, Metadata.ASCII_STRING_MARSHALLER), v));
            stub = TraceServiceGrpc.newBlockingStub(channel)
                    .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(headers));
        }

        @Override
        public void send(ExportTraceServiceRequest request) {
            ExportTraceServiceResponse r = stub.withDeadlineAfter(settings.timeout().toMillis(), TimeUnit.MILLISECONDS)
                    .export(request);
            if (r.hasPartialSuccess() && r.getPartialSuccess().getRejectedSpans() > 0) {
                LOG.debug("collector rejected {} spans: {}", r.getPartialSuccess().getRejectedSpans(),
                        r.getPartialSuccess().getErrorMessage());
            }
        }

        @Override
        public void close() {
            channel.shutdown();
            try {
                channel.awaitTermination(2, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            channel.shutdownNow();
            loop.shutdownGracefully(0, 1, TimeUnit.SECONDS);
        }
    }

    /** OTLP/HTTP with a protobuf body, POSTed to the endpoint (…/v1/traces). */
    private static final class HttpTransport implements Transport {
        private final HttpClient client;
        private final TracingSettings settings;

        HttpTransport(TracingSettings s) {
            if (s.endpoint().getScheme().equals("unix")) {
                throw new IllegalArgumentException("OTLP over http/protobuf needs an http(s):// endpoint, not "
                        + s.endpoint() + "; use OTEL_EXPORTER_OTLP_PROTOCOL=grpc for a unix socket");
            }
            this.settings = s;
            this.client = HttpClient.newBuilder().connectTimeout(s.timeout()).build();
        }

        @Override
        public void send(ExportTraceServiceRequest request) throws Exception {
            HttpRequest.Builder b = HttpRequest.newBuilder(settings.endpoint()).timeout(settings.timeout())
                    .header("Content-Type", "application/x-protobuf")
                    .POST(HttpRequest.BodyPublishers.ofByteArray(request.toByteArray()));
            settings.headers().forEach(b::header);
            HttpResponse<Void> r = client.send(b.build(), HttpResponse.BodyHandlers.discarding());
            if (r.statusCode() / 100 != 2) {
                throw new java.io.IOException("HTTP " + r.statusCode());
            }
        }

        @Override
        public void close() {
            client.close();
        }
    }
}
