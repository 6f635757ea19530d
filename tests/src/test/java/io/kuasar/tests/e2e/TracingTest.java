package io.kuasar.tests.e2e;

import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.netty.NettyServerBuilder;
import io.grpc.stub.MetadataUtils;
import io.grpc.stub.StreamObserver;
import io.kuasar.api.cri.v1.ContainerState;
import io.kuasar.api.sandbox.v1.ControllerGrpc;
import io.kuasar.api.sandbox.v1.ControllerStatusRequest;
import io.kuasar.tests.cri.CriClient;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollDomainSocketChannel;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.unix.DomainSocketAddress;
import io.opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;
import io.opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse;
import io.opentelemetry.proto.collector.trace.v1.TraceServiceGrpc;
import io.opentelemetry.proto.common.v1.KeyValue;
import io.opentelemetry.proto.trace.v1.Span;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.net.InetSocketAddress;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * OTLP tracing against real containerd 2.x: containerd and a runc-sandboxer with {@code enable_tracing = true} both
 * export to an OTLP/gRPC receiver built here from the official OpenTelemetry protos. The daemon's Task API spans
 * continue the trace context containerd's otelttrpc client sends; its Sandbox API spans carry the pod's id (and
 * continue a traceparent header, which containerd 2.1's sandbox proxy does not send: checked with our own client);
 * steps nest under the calls; SIGUSR1 turns the daemon's tracing off and on again while containerd's goes on.
 */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class TracingTest {
    private static final Duration T = Duration.ofSeconds(30);
    private static final String KUASAR = "kuasar-runc-sandboxer-service";
    private static Server receiver;
    /** Every span received, with the service.name of its resource. */
    private static final List<Received> spans = new ArrayList<>();

    record Received(String service, Span span) {
        String attr(String key) {
            return span.getAttributesList().stream().filter(kv -> kv.getKey().equals(key))
                    .map(kv -> kv.getValue().hasIntValue() ? String.valueOf(kv.getValue().getIntValue())
                            : kv.getValue().getStringValue()).findFirst().orElse(null);
        }

        String traceId() {
            return HexFormat.of().formatHex(span.getTraceId().toByteArray());
        }

        String spanId() {
            return HexFormat.of().formatHex(span.getSpanId().toByteArray());
        }

        String parentId() {
            return HexFormat.of().formatHex(span.getParentSpanId().toByteArray());
        }
    }

    @BeforeAll
    static void startReceiver() throws Exception {
        receiver = NettyServerBuilder.forAddress(new InetSocketAddress("127.0.0.1", 0))
                .addService(new TraceServiceGrpc.TraceServiceImplBase() {
                    @Override
                    public void export(ExportTraceServiceRequest request,
                                       StreamObserver<ExportTraceServiceResponse> response) {
                        synchronized (spans) {
                            request.getResourceSpansList().forEach(rs -> {
                                String service = rs.getResource().getAttributesList().stream()
                                        .filter(kv -> kv.getKey().equals("service.name"))
                                        .map(kv -> kv.getValue().getStringValue()).findFirst().orElse("?");
                                rs.getScopeSpansList().forEach(ss -> ss.getSpansList()
                                        .forEach(s -> spans.add(new Received(service, s))));
                            });
                            spans.notifyAll();
                        }
                        response.onNext(ExportTraceServiceResponse.getDefaultInstance());
                        response.onCompleted();
                    }
                }).build().start();
    }

    @AfterAll
    static void stopReceiver() {
        receiver.shutdownNow();
    }

    private static Map<String, String> otel() {
        return Map.of("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:" + receiver.getPort(),
                "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc",
                "OTEL_EXPORTER_OTLP_INSECURE", "true",
                "OTEL_BSP_SCHEDULE_DELAY", "200");
    }

    private static Received await(String what, Predicate<Received> p) throws InterruptedException {
        long end = System.nanoTime() + T.toNanos();
        synchronized (spans) {
            while (true) {
                Optional<Received> r = spans.stream().filter(p).findFirst();
                if (r.isPresent()) {
                    return r.get();
                }
                long left = end - System.nanoTime();
                if (left <= 0) {
                    throw new AssertionError("no span " + what + " within " + T + "; got: " + spans.stream()
                            .map(x -> x.service() + ":" + x.span().getName()).distinct().toList());
                }
                spans.wait(TimeUnit.NANOSECONDS.toMillis(left) + 1);
            }
        }
    }

    private static List<Received> all(Predicate<Received> p) {
        synchronized (spans) {
            return spans.stream().filter(p).toList();
        }
    }

    @Test
    void theDaemonsSpansJoinContainerdsTracesAndSigusr1TogglesThem(E2eEnvironment env) throws Exception {
        CriClient cri = env.tracedCri(otel());
        CriClient.Pod pod = cri.runPod("traced", true);
        String c = cri.runContainer(pod, "hello", "sh", "-c", "echo traced; sleep 300");
        Cri.awaitState(cri, c, ContainerState.CONTAINER_RUNNING, T);

        // Sandbox API: a server span per call, with the pod's id; containerd's proxy sends no context (root spans)
        Received create = await("Controller/Create of the pod", r -> r.service().equals(KUASAR)
                && r.span().getName().equals("containerd.services.sandbox.v1.Controller/Create")
                && pod.id().equals(r.attr("kuasar.sandbox.id")));
        assertThat(create.span().getKind()).isEqualTo(Span.SpanKind.SPAN_KIND_SERVER);
        assertThat(create.attr("rpc.system")).isEqualTo("grpc");
        assertThat(create.attr("rpc.grpc.status_code")).isEqualTo("0");
        await("Controller/Start", r -> r.service().equals(KUASAR) && r.span().getName().endsWith("Controller/Start")
                && pod.id().equals(r.attr("kuasar.sandbox.id")));

        // Task API: the server span continues containerd's client span (otelttrpc), and runc's steps nest under it
        Received taskCreate = await("Task/Create of the container", r -> r.service().equals(KUASAR)
                && r.span().getName().matches("containerd\\.task\\.v[23]\\.Task/Create")
                && c.equals(r.attr("kuasar.container.id")));
        assertThat(taskCreate.attr("rpc.system")).isEqualTo("ttrpc");
        assertThat(taskCreate.parentId()).as("a parent from containerd's traceparent").isNotEqualTo("0".repeat(16))
                .isNotEmpty();
        Received caller = await("containerd's span " + taskCreate.parentId(), r -> r.service().equals("containerd")
                && r.spanId().equals(taskCreate.parentId()));
        assertThat(caller.traceId()).isEqualTo(taskCreate.traceId());
        assertThat(caller.span().getName()).contains("Create");
        Received runcCreate = await("oci.create under Task/Create", r -> r.service().equals(KUASAR)
                && r.span().getName().equals("oci.create") && r.parentId().equals(taskCreate.spanId()));
        assertThat(runcCreate.traceId()).isEqualTo(taskCreate.traceId());
        assertThat(runcCreate.span().getStartTimeUnixNano())
                .isBetween(taskCreate.span().getStartTimeUnixNano(), taskCreate.span().getEndTimeUnixNano());
        // the whole request is one trace: containerd's CRI span is an ancestor of the daemon's Task/Create
        assertThat(all(r -> r.service().equals("containerd") && r.traceId().equals(taskCreate.traceId())))
                .extracting(r -> r.span().getName()).anyMatch(n -> n.contains("CreateContainer")
                        || n.contains("StartContainer") || n.contains("Create"));

        // our own client: a traceparent header on the Sandbox API is continued too
        String trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        String parent = "00f067aa0ba902b7";
        Metadata headers = new Metadata();
        headers.put(Metadata.Key.of("traceparent", Metadata.ASCII_STRING_MARSHALLER), "00-" + trace + "-" + parent + "-01");
        MultiThreadIoEventLoopGroup loop = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
        ManagedChannel ch = NettyChannelBuilder.forAddress(new DomainSocketAddress(env.tracedSandboxerSocket().toString()))
                .channelType(EpollDomainSocketChannel.class).eventLoopGroup(loop).usePlaintext().build();
        try {
            ControllerGrpc.newBlockingStub(ch).withInterceptors(MetadataUtils.newAttachHeadersInterceptor(headers))
                    .withDeadlineAfter(10, TimeUnit.SECONDS)
                    .status(ControllerStatusRequest.newBuilder().setSandboxId(pod.id()).build());
        } finally {
            ch.shutdownNow();
            loop.shutdownGracefully(0, 1, TimeUnit.SECONDS);
        }
        Received status = await("Controller/Status in our trace", r -> r.service().equals(KUASAR)
                && r.traceId().equals(trace));
        assertThat(status.parentId()).isEqualTo(parent);
        assertThat(status.attr("kuasar.sandbox.id")).isEqualTo(pod.id());

        // SIGUSR1: the daemon stops exporting, containerd goes on; a second SIGUSR1 turns it back on
        signalUsr1(env);
        awaitLines(env.tracedSandboxerLog(), "tracing off", 1);
        Thread.sleep(1000); // spans that ended before the signal are still on their way
        int before = all(r -> r.service().equals(KUASAR)).size();
        assertThat(cri.execSync(c, "echo", "untraced").stdout()).contains("untraced");
        await("containerd's span of the untraced exec", r -> r.service().equals("containerd")
                && r.span().getName().contains("Exec"));
        Thread.sleep(1500); // two export periods of the daemon
        assertThat(all(r -> r.service().equals(KUASAR))).as("no daemon spans while tracing is off").hasSize(before);

        signalUsr1(env);
        awaitLines(env.tracedSandboxerLog(), "tracing on", 2); // the first at start-up
        assertThat(cri.execSync(c, "echo", "traced-again").stdout()).contains("traced-again");
        await("Task/Exec after tracing is back on", r -> r.service().equals(KUASAR)
                && r.span().getName().endsWith("Task/Exec") && c.equals(r.attr("kuasar.container.id")));

        cri.stopAndRemovePod(pod.id());
    }

    /** Waits until {@code log} has {@code n} lines containing {@code text}. */
    private static void awaitLines(java.nio.file.Path log, String text, int n) throws Exception {
        long end = System.nanoTime() + T.toNanos();
        while (java.nio.file.Files.readAllLines(log).stream().filter(l -> l.contains(text)).count() < n) {
            if (System.nanoTime() > end) {
                throw new AssertionError(n + " lines with \"" + text + "\" expected in " + log + ":\n"
                        + Host.tail(log, 20));
            }
            Thread.sleep(50);
        }
    }

    private static void signalUsr1(E2eEnvironment env) {
        Host.check(Duration.ofSeconds(10), Map.of(), null, "kill", "-USR1", String.valueOf(env.tracedSandboxerPid()));
    }
}
