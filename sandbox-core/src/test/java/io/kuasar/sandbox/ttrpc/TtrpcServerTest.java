package io.kuasar.sandbox.ttrpc;

import com.google.protobuf.StringValue;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.kuasar.api.ttrpc.Request;
import io.kuasar.api.ttrpc.Response;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.DataInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class TtrpcServerTest {
    @TempDir
    Path dir;
    TtrpcServer server;
    TtrpcClient client;

    @BeforeEach
    void start() throws IOException {
        server = new TtrpcServer(dir.resolve("t.sock")).register(EchoService.build()).start();
        client = TtrpcClient.connect(server.socketPath());
    }

    @AfterEach
    void stop() {
        client.close();
        server.close();
    }

    private String call(String method, String value, Duration timeout) {
        return client.call(EchoService.NAME, method, StringValue.of(value), StringValue.parser(), timeout).getValue();
    }

    @Test
    void unaryCallsRoundTrip() {
        assertThat(call("Echo", "hello", Duration.ofSeconds(5))).isEqualTo("hello");
        assertThat(call("Echo", "", Duration.ofSeconds(5))).isEmpty();
    }

    @Test
    void errorsCarryCodeAndMessage() {
        assertThatThrownBy(() -> call("Fail", "x", Duration.ofSeconds(5)))
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.NOT_FOUND);
                    assertThat(e.getStatus().getDescription()).isEqualTo("no such thing: x");
                });
        assertThatThrownBy(() -> call("Nope", "x", Duration.ofSeconds(5)))
                .isInstanceOfSatisfying(StatusRuntimeException.class,
                        e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.UNIMPLEMENTED));
    }

    @Test
    void metadataAndDeadlineReachTheHandler() {
        String md = client.call(EchoService.NAME, "Metadata", StringValue.of(""), StringValue.parser(),
                Duration.ofSeconds(5), Map.of("x-test", "abc")).getValue();
        assertThat(md).isEqualTo("abc");
        assertThat(call("Deadline", "", Duration.ofSeconds(5))).isEqualTo("set");
        assertThat(call("Deadline", "", null)).isEqualTo("none");
    }

    @Test
    void serverEnforcesTheDeadline() throws Exception {
        // Raw frame with a 200 ms timeout: the answer must come from the server, not from a client-side timer.
        try (SocketChannel ch = rawConnect()) {
            Request req = Request.newBuilder().setService(EchoService.NAME).setMethod("Sleep")
                    .setPayload(StringValue.of("5000").toByteString()).setTimeoutNano(200_000_000L).build();
            long t0 = System.nanoTime();
            send(ch, 1, Frame.TYPE_REQUEST, 0, req.toByteArray());
            Response r = Response.parseFrom(readFrame(ch, 1).data());
            assertThat(r.getStatus().getCode()).isEqualTo(Status.Code.DEADLINE_EXCEEDED.value());
            assertThat(Duration.ofNanos(System.nanoTime() - t0)).isLessThan(Duration.ofSeconds(2));
        }
    }

    @Test
    void manyConcurrentCallsOnOneConnection() throws Exception {
        try (ExecutorService pool = Executors.newVirtualThreadPerTaskExecutor()) {
            List<Future<String>> results = new ArrayList<>();
            for (int i = 0; i < 200; i++) {
                String v = "v" + i;
                results.add(pool.submit(() -> call("Echo", v, Duration.ofSeconds(10))));
            }
            for (int i = 0; i < 200; i++) {
                assertThat(results.get(i).get()).isEqualTo("v" + i);
            }
        }
    }

    @Test
    void largeMessagesUpToTheLimit() {
        String big = "x".repeat(1 << 20);
        assertThat(call("Echo", big, Duration.ofSeconds(10))).hasSize(1 << 20);
    }

    @Test
    void oversizedFrameIsRejectedAndTheConnectionKeepsWorking() throws Exception {
        try (SocketChannel ch = rawConnect()) {
            byte[] huge = new byte[Frame.MAX_DATA_LENGTH + 1];
            send(ch, 1, Frame.TYPE_REQUEST, 0, huge);
            Response r = Response.parseFrom(readFrame(ch, 1).data());
            assertThat(r.getStatus().getCode()).isEqualTo(Status.Code.RESOURCE_EXHAUSTED.value());
            assertThat(r.getStatus().getMessage()).contains("exceeds maximum message size");
            // same connection, next stream: still served
            Request ok = Request.newBuilder().setService(EchoService.NAME).setMethod("Echo")
                    .setPayload(StringValue.of("after").toByteString()).build();
            send(ch, 3, Frame.TYPE_REQUEST, 0, ok.toByteArray());
            assertThat(StringValue.parseFrom(Response.parseFrom(readFrame(ch, 3).data()).getPayload()).getValue())
                    .isEqualTo("after");
        }
    }

    @Test
    void malformedRequestsGetErrorsNotCrashes() throws Exception {
        try (SocketChannel ch = rawConnect()) {
            send(ch, 1, Frame.TYPE_REQUEST, 0, new byte[]{(byte) 0xff, 0x01, 0x02});
            assertThat(Response.parseFrom(readFrame(ch, 1).data()).getStatus().getCode())
                    .isEqualTo(Status.Code.INVALID_ARGUMENT.value());
            send(ch, 2, Frame.TYPE_REQUEST, 0, new byte[0]);
            Response even = Response.parseFrom(readFrame(ch, 2).data());
            assertThat(even.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT.value());
            assertThat(even.getStatus().getMessage()).contains("odd");
            Request badPayload = Request.newBuilder().setService(EchoService.NAME).setMethod("Echo")
                    .setPayload(com.google.protobuf.ByteString.copyFrom(new byte[]{0x0a, 0x7f})).build();
            send(ch, 5, Frame.TYPE_REQUEST, 0, badPayload.toByteArray());
            assertThat(Response.parseFrom(readFrame(ch, 5).data()).getStatus().getCode())
                    .isEqualTo(Status.Code.INVALID_ARGUMENT.value());
        }
        // A peer that sends half a header and hangs up must not disturb other clients.
        try (SocketChannel ch = rawConnect()) {
            ch.write(ByteBuffer.wrap(new byte[]{0, 0, 0}));
        }
        assertThat(call("Echo", "still here", Duration.ofSeconds(5))).isEqualTo("still here");
    }

    @Test
    void bidirectionalStreams() throws Exception {
        TtrpcClient.ClientStream s = client.stream(EchoService.NAME, "Chat", null, true);
        s.send(StringValue.of("a"));
        s.send(StringValue.of("b"));
        assertThat(EchoService.parse(s.recv())).isEqualTo("echo:a");
        assertThat(EchoService.parse(s.recv())).isEqualTo("echo:b");
        s.closeSend();
        assertThat(s.recv()).isNull();
        s.status();
    }

    @Test
    void clientDisconnectCancelsInFlightCalls() throws Exception {
        TtrpcClient other = TtrpcClient.connect(server.socketPath());
        Thread t = Thread.ofVirtual().start(() -> {
            try {
                other.call(EchoService.NAME, "Sleep", StringValue.of("60000"), StringValue.parser(), null);
            } catch (StatusRuntimeException expected) {
                // the connection is closed below
            }
        });
        org.awaitility.Awaitility.await().atMost(Duration.ofSeconds(5)).until(() -> server.activeCalls() == 1);
        other.close();
        org.awaitility.Awaitility.await().atMost(Duration.ofSeconds(5)).until(() -> server.activeCalls() == 0);
        t.join(5000);
    }

    private SocketChannel rawConnect() throws IOException {
        SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
        ch.connect(UnixDomainSocketAddress.of(server.socketPath()));
        return ch;
    }

    static void send(SocketChannel ch, int stream, byte type, int flags, byte[] data) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(10 + data.length);
        b.putInt(data.length).putInt(stream).put(type).put((byte) flags).put(data).flip();
        while (b.hasRemaining()) {
            ch.write(b);
        }
    }

    static Frame readFrame(SocketChannel ch, int expectedStream) throws IOException {
        InputStream in = Channels.newInputStream(ch);
        DataInputStream d = new DataInputStream(in);
        int len = d.readInt();
        int stream = d.readInt();
        byte type = d.readByte();
        byte flags = d.readByte();
        byte[] data = new byte[len];
        d.readFully(data);
        assertThat(stream).isEqualTo(expectedStream);
        assertThat(type).isEqualTo(Frame.TYPE_RESPONSE);
        return new Frame(stream, type, flags, data);
    }
}
