package io.kuasar.runc;

import com.google.protobuf.StringValue;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.kuasar.api.ttrpc.Request;
import io.kuasar.api.ttrpc.Response;
import io.kuasar.sandbox.ttrpc.CallContext;
import io.kuasar.sandbox.ttrpc.TtrpcClient;
import io.kuasar.sandbox.ttrpc.TtrpcServer;
import io.kuasar.sandbox.ttrpc.TtrpcService;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.EOFException;
import java.io.File;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Stream;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The real kuasar-ttrpc-proxy (built by Maven into target/libexec) between our own ttrpc client and server: calls
 * pass through, idempotent calls in flight survive the backend server going away and a new one taking its place,
 * and every other call in flight is answered UNAVAILABLE.
 */
class TtrpcProxyTest {
    /**
     * The proxy decides what to replay by service and method name: the backend serves containerd's Task service
     * names with stand-in messages (StringValue), which the proxy never looks into.
     */
    static final String SVC = "containerd.task.v3.Task";
    static final Duration T = Duration.ofSeconds(20);

    @TempDir
    Path dir;
    Path front;
    Path back;
    Path log;
    Process proxy;
    final List<TtrpcServer> servers = new ArrayList<>();
    final List<TtrpcClient> clients = new ArrayList<>();

    static Path binary() {
        return RuncSandboxerMain.libexec().resolve("kuasar-ttrpc-proxy");
    }

    /**
     * A backend named {@code who}; {@code calls} counts the Wait (idempotent) and Create (not) calls it started;
     * both sleep for the number of milliseconds they are given.
     */
    static TtrpcService service(String who, AtomicInteger calls, List<CallContext> seen) {
        return TtrpcService.builder(SVC)
                .unary("Echo", StringValue.parser(), (ctx, r) -> r)
                .unary("Who", StringValue.parser(), (ctx, r) -> StringValue.of(who))
                .waiting("Wait", StringValue.parser(), (ctx, r) -> {
                    calls.incrementAndGet();
                    seen.add(ctx);
                    Thread.sleep(Long.parseLong(r.getValue()));
                    return StringValue.of("slept by " + who);
                })
                .unary("Create", StringValue.parser(), (ctx, r) -> {
                    calls.incrementAndGet();
                    seen.add(ctx);
                    Thread.sleep(Long.parseLong(r.getValue()));
                    return StringValue.of("created by " + who);
                })
                .unary("Fail", StringValue.parser(), (ctx, r) -> {
                    throw Status.NOT_FOUND.withDescription("no such thing: " + r.getValue()).asRuntimeException();
                })
                .build();
    }

    TtrpcServer backend(String who, AtomicInteger calls, List<CallContext> seen) throws IOException {
        TtrpcServer s = new TtrpcServer(back).register(service(who, calls, seen)).start();
        servers.add(s);
        return s;
    }

    TtrpcServer backend(String who, AtomicInteger calls) throws IOException {
        return backend(who, calls, new CopyOnWriteArrayList<>());
    }

    TtrpcServer backend(String who) throws IOException {
        return backend(who, new AtomicInteger());
    }

    TtrpcClient client() throws IOException {
        TtrpcClient c = TtrpcClient.connect(front);
        clients.add(c);
        return c;
    }

    static String call(TtrpcClient c, String method, String arg) {
        return c.call(SVC, method, StringValue.of(arg), StringValue.parser(), T).getValue();
    }

    @BeforeEach
    void setUp() throws Exception {
        front = dir.resolve("front.sock");
        back = dir.resolve("back.sock");
        log = dir.resolve("proxy.log");
    }

    Process startProxy(String... extra) throws Exception {
        List<String> cmd = new ArrayList<>(List.of(binary().toString(), "--listen", front.toString(),
                "--backend", back.toString()));
        cmd.addAll(List.of(extra));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        await().atMost(Duration.ofSeconds(10)).until(() -> connectable(front));
        return p;
    }

    static boolean connectable(Path socket) {
        try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            ch.connect(UnixDomainSocketAddress.of(socket));
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    @AfterEach
    void tearDown() throws Exception {
        clients.forEach(TtrpcClient::close);
        servers.forEach(TtrpcServer::close);
        if (proxy != null) {
            proxy.destroy(); // SIGTERM
            assertThat(proxy.waitFor(10, TimeUnit.SECONDS)).isTrue();
            assertThat(proxy.exitValue()).isZero();
            assertThat(front).doesNotExist();
        }
        if (Files.exists(log)) {
            System.out.print(Files.readString(log));
        }
    }

    @Test
    void callsPassThrough() throws Exception {
        backend("A");
        proxy = startProxy();
        TtrpcClient c = client();
        assertThat(call(c, "Echo", "hello")).isEqualTo("hello");

        String big = "x".repeat(1 << 20);
        assertThat(call(c, "Echo", big)).isEqualTo(big);

        var pool = Executors.newVirtualThreadPerTaskExecutor();
        List<CompletableFuture<String>> calls = new ArrayList<>();
        for (int i = 0; i < 50; i++) {
            String arg = "call-" + i + "-" + "y".repeat(i * 1000);
            calls.add(CompletableFuture.supplyAsync(() -> call(c, "Echo", arg), pool));
        }
        for (int i = 0; i < 50; i++) {
            assertThat(calls.get(i).get(20, TimeUnit.SECONDS)).startsWith("call-" + i + "-").hasSize(
                    ("call-" + i + "-").length() + i * 1000);
        }
        pool.close();

        assertThatThrownBy(() -> call(c, "Fail", "thing"))
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.NOT_FOUND);
                    assertThat(e.getStatus().getDescription()).isEqualTo("no such thing: thing");
                });
        assertThatThrownBy(() -> c.call(SVC, "Nope", StringValue.of(""), StringValue.parser(), T))
                .isInstanceOfSatisfying(StatusRuntimeException.class,
                        e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.UNIMPLEMENTED));
        assertThat(call(c, "Echo", "still fine")).isEqualTo("still fine");
    }

    @Test
    void framesSplitAcrossWritesAndManyFramesPerWrite() throws Exception {
        backend("A");
        proxy = startProxy();
        try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            ch.connect(UnixDomainSocketAddress.of(front));
            // 20 requests in one write
            ByteBuffer all = ByteBuffer.allocate(1 << 16);
            for (int id = 1; id <= 39; id += 2) {
                all.put(requestFrame(id, "Echo", "batch" + id));
            }
            all.flip();
            while (all.hasRemaining()) {
                ch.write(all);
            }
            Map<Integer, String> got = readResponses(ch, 20);
            for (int id = 1; id <= 39; id += 2) {
                assertThat(got).containsEntry(id, "batch" + id);
            }
            // 5 requests, written a byte at a time
            ByteBuffer slow = ByteBuffer.allocate(1 << 16);
            for (int id = 41; id <= 49; id += 2) {
                slow.put(requestFrame(id, "Echo", "slow" + id));
            }
            slow.flip();
            int n = 0;
            while (slow.hasRemaining()) {
                ch.write(ByteBuffer.wrap(new byte[]{slow.get()}));
                if (++n % 7 == 0) {
                    Thread.sleep(1);
                }
            }
            got = readResponses(ch, 5);
            for (int id = 41; id <= 49; id += 2) {
                assertThat(got).containsEntry(id, "slow" + id);
            }
        }
    }

    @Test
    void inFlightCallSurvivesBackendRestart() throws Exception {
        AtomicInteger waitsA = new AtomicInteger();
        AtomicInteger waitsB = new AtomicInteger();
        List<CallContext> seenB = new CopyOnWriteArrayList<>();
        TtrpcServer a = backend("A", waitsA);
        proxy = startProxy();
        TtrpcClient c = client();
        assertThat(call(c, "Who", "")).isEqualTo("A");

        Instant called = Instant.now();
        CompletableFuture<String> sleeping = CompletableFuture.supplyAsync(() -> call(c, "Wait", "3000"));
        await().atMost(Duration.ofSeconds(5)).until(() -> a.activeCalls() == 1);
        a.close(); // the JVM is killed: its connections end, the in-flight call is never answered
        // kill -9 leaves the socket file behind: the proxy gets ECONNREFUSED until the new JVM binds again
        try (var stale = java.nio.channels.ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            stale.bind(UnixDomainSocketAddress.of(back));
        }
        assertThat(back).exists();
        Thread.sleep(1000);
        assertThat(sleeping).isNotDone();
        TtrpcServer b = backend("B", waitsB, seenB); // the new JVM, on the same path

        assertThat(sleeping.get(15, TimeUnit.SECONDS)).isEqualTo("slept by B");
        assertThat(waitsA).hasValue(1);
        assertThat(waitsB).hasValue(1);
        // The replay carries what is left of the call's 20 s timeout, not 20 s again (B got it > 1 s later).
        assertThat(seenB.getFirst().deadline()).isBefore(called.plus(T).plusMillis(500));
        assertThat(call(c, "Who", "")).isEqualTo("B");
        assertThat(call(c, "Echo", "after")).isEqualTo("after");
        await().atMost(Duration.ofSeconds(5)).until(() -> b.activeCalls() == 0);
        assertThat(c.isClosed()).isFalse();
        assertThat(Files.readString(log)).contains("backend lost").contains("replayed 1 request(s)");
    }

    /** containerd must get an answer for a call that cannot be replayed, and the next backend must not run it. */
    @Test
    void nonIdempotentCallInFlightIsAnsweredUnavailableAndNotReplayed() throws Exception {
        AtomicInteger callsA = new AtomicInteger();
        AtomicInteger callsB = new AtomicInteger();
        TtrpcServer a = backend("A", callsA);
        proxy = startProxy();
        TtrpcClient c = client();
        CompletableFuture<String> create = CompletableFuture.supplyAsync(() -> call(c, "Create", "60000"));
        CompletableFuture<String> wait = CompletableFuture.supplyAsync(() -> call(c, "Wait", "800"));
        await().atMost(Duration.ofSeconds(5)).until(() -> a.activeCalls() == 2);
        a.close();

        // Answered at once, while no backend is up.
        assertThatThrownBy(() -> create.get(10, TimeUnit.SECONDS)).cause()
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.UNAVAILABLE);
                    assertThat(e.getStatus().getDescription())
                            .startsWith("containerd.task.v3.Task/Create: ")
                            .contains("sandboxer restarted while the call was in flight")
                            .contains("not replayed because it is not idempotent");
                });
        assertThat(wait).isNotDone();
        backend("B", callsB);
        assertThat(wait.get(10, TimeUnit.SECONDS)).isEqualTo("slept by B");
        assertThat(call(c, "Who", "")).isEqualTo("B");
        assertThat(callsA).hasValue(2);
        assertThat(callsB).hasValue(1); // the Wait only
        assertThat(Files.readString(log)).contains("1 unanswered request(s) kept for replay, 1 answered UNAVAILABLE");
    }

    /**
     * containerd 1.7 keeps a WaitSandbox in flight per pod (shim mode) and marks the pod NOTREADY when it fails: it is
     * replayed like a task's Wait; a StopSandbox in flight is not.
     */
    @Test
    void shimSandboxWaitIsReplayedAndStopIsNot() throws Exception {
        String sandboxSvc = "containerd.runtime.sandbox.v1.Sandbox";
        AtomicInteger stops = new AtomicInteger();
        java.util.function.Function<String, TtrpcService> sandboxService = who -> TtrpcService.builder(sandboxSvc)
                .waiting("WaitSandbox", StringValue.parser(), (ctx, r) -> {
                    Thread.sleep(Long.parseLong(r.getValue()));
                    return StringValue.of("exited under " + who);
                })
                .unary("StopSandbox", StringValue.parser(), (ctx, r) -> {
                    stops.incrementAndGet();
                    Thread.sleep(Long.parseLong(r.getValue()));
                    return StringValue.of("stopped by " + who);
                })
                .build();
        TtrpcServer a = new TtrpcServer(back).register(sandboxService.apply("A")).start();
        servers.add(a);
        proxy = startProxy();
        TtrpcClient c = client();
        CompletableFuture<String> wait = CompletableFuture.supplyAsync(() -> c.call(sandboxSvc, "WaitSandbox",
                StringValue.of("800"), StringValue.parser(), T).getValue());
        CompletableFuture<String> stop = CompletableFuture.supplyAsync(() -> c.call(sandboxSvc, "StopSandbox",
                StringValue.of("60000"), StringValue.parser(), T).getValue());
        await().atMost(Duration.ofSeconds(5)).until(() -> a.activeCalls() == 2);
        a.close();
        assertThatThrownBy(() -> stop.get(10, TimeUnit.SECONDS)).cause()
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.UNAVAILABLE);
                    assertThat(e.getStatus().getDescription()).contains("not replayed because it is not idempotent");
                });
        assertThat(wait).isNotDone();
        servers.add(new TtrpcServer(back).register(sandboxService.apply("B")).start());
        assertThat(wait.get(10, TimeUnit.SECONDS)).isEqualTo("exited under B");
        assertThat(stops).hasValue(1);
    }

    /** A call whose deadline passed while the backend was down is answered, not run minutes later. */
    @Test
    void expiredCallIsNotReplayed() throws Exception {
        AtomicInteger waitsA = new AtomicInteger();
        AtomicInteger waitsB = new AtomicInteger();
        TtrpcServer a = backend("A", waitsA);
        proxy = startProxy();
        try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            ch.connect(UnixDomainSocketAddress.of(front));
            long sent = System.nanoTime();
            write(ch, requestFrame(1, "Wait", "60000", Duration.ofMillis(1500)));
            write(ch, requestFrame(3, "Wait", "800", null));
            await().atMost(Duration.ofSeconds(5)).until(() -> a.activeCalls() == 2);
            a.close();
            // The condition is time itself: the first call's deadline passes while no backend is up.
            Thread.sleep(Math.max(0, Duration.ofMillis(1700).toNanos() - (System.nanoTime() - sent)) / 1_000_000);
            backend("B", waitsB);
            Map<Integer, Response> got = readResponseFrames(ch, 2);
            assertThat(got.get(1).getStatus().getCode()).isEqualTo(Status.Code.UNAVAILABLE.value());
            assertThat(got.get(1).getStatus().getMessage()).startsWith("containerd.task.v3.Task/Wait: ")
                    .contains("not replayed because its deadline passed");
            assertThat(got.get(3).getStatus().getCode()).isZero();
            assertThat(StringValue.parseFrom(got.get(3).getPayload()).getValue()).isEqualTo("slept by B");
        }
        assertThat(waitsA).hasValue(2);
        assertThat(waitsB).hasValue(1);
    }

    /** A call that two backends died right after receiving may be what kills them: it is not replayed a third time. */
    @Test
    void callReceivedByTwoBackendsThatDiedAtOnceIsAnsweredUnavailable() throws Exception {
        AtomicInteger waitsA = new AtomicInteger();
        AtomicInteger waitsB = new AtomicInteger();
        AtomicInteger waitsC = new AtomicInteger();
        TtrpcServer a = backend("A", waitsA);
        proxy = startProxy();
        TtrpcClient c = client();
        CompletableFuture<String> wait = CompletableFuture.supplyAsync(() -> call(c, "Wait", "60000"));
        await().atMost(Duration.ofSeconds(5)).until(() -> a.activeCalls() == 1);
        a.close();
        TtrpcServer b = backend("B", waitsB);
        await().atMost(Duration.ofSeconds(5)).until(() -> b.activeCalls() == 1); // replayed once
        b.close();

        assertThatThrownBy(() -> wait.get(10, TimeUnit.SECONDS)).cause()
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.UNAVAILABLE);
                    assertThat(e.getStatus().getDescription()).startsWith("containerd.task.v3.Task/Wait: ")
                            .contains("twice within 10 s of receiving it; not replayed again");
                });
        backend("C", waitsC);
        assertThat(call(c, "Who", "")).isEqualTo("C");
        assertThat(waitsA).hasValue(1);
        assertThat(waitsB).hasValue(1);
        assertThat(waitsC).hasValue(0);
    }

    /** Restarts spaced further apart than the strike window do not count: a long Wait survives any number. */
    @Test
    void waitSurvivesRestartsSpacedApart() throws Exception {
        AtomicInteger waits = new AtomicInteger();
        TtrpcServer s = backend("A", waits);
        proxy = startProxy("--strike-window-ms", "300");
        TtrpcClient c = client();
        CompletableFuture<String> wait = CompletableFuture.supplyAsync(() -> call(c, "Wait", "60000"));
        for (String next : List.of("B", "C", "D")) {
            TtrpcServer current = s;
            await().atMost(Duration.ofSeconds(5)).until(() -> current.activeCalls() == 1);
            Thread.sleep(400); // past the window: the backend ran the call for a while before it went
            current.close();
            s = backend(next, waits);
        }
        TtrpcServer last = s;
        await().atMost(Duration.ofSeconds(5)).until(() -> last.activeCalls() == 1);
        assertThat(wait).isNotDone();
        assertThat(waits).hasValue(4);
    }

    @Test
    void callsMadeWhileTheBackendIsDownCompleteOnceItIsBack() throws Exception {
        TtrpcServer a = backend("A");
        proxy = startProxy();
        TtrpcClient c = client();
        TtrpcClient idle = client(); // connected, no call in flight while the backend restarts
        assertThat(call(c, "Echo", "before")).isEqualTo("before");
        assertThat(call(idle, "Echo", "before")).isEqualTo("before");
        a.close();
        // The JVM closes a socket a virtual thread is reading only once that thread wakes: a request written in
        // that moment is "received" by the dying backend (and rightly refused if not idempotent). This test is
        // about calls made while the backend is down, so it waits until the proxy has seen both connections go.
        await().atMost(Duration.ofSeconds(5))
                .until(() -> Files.readString(log).split("backend lost", -1).length - 1 == 2);

        var pool = Executors.newVirtualThreadPerTaskExecutor();
        List<CompletableFuture<String>> calls = new ArrayList<>();
        for (int i = 0; i < 10; i++) {
            String arg = "down-" + i;
            calls.add(CompletableFuture.supplyAsync(() -> call(c, "Echo", arg), pool));
        }
        CompletableFuture<String> who = CompletableFuture.supplyAsync(() -> call(c, "Who", ""), pool);
        // Not idempotent, but no backend ever received it: it is sent, not refused.
        CompletableFuture<String> create = CompletableFuture.supplyAsync(() -> call(c, "Create", "0"), pool);
        Thread.sleep(700);
        assertThat(calls).noneMatch(CompletableFuture::isDone);
        assertThat(create).isNotDone();
        backend("B");
        for (int i = 0; i < 10; i++) {
            assertThat(calls.get(i).get(10, TimeUnit.SECONDS)).isEqualTo("down-" + i);
        }
        assertThat(who.get(10, TimeUnit.SECONDS)).isEqualTo("B");
        assertThat(create.get(10, TimeUnit.SECONDS)).isEqualTo("created by B");
        assertThat(call(idle, "Who", "")).isEqualTo("B");
        pool.close();
    }

    @Test
    void clientDisconnectClosesItsBackendConnectionAndLeaksNoFd() throws Exception {
        TtrpcServer a = backend("A");
        proxy = startProxy();
        TtrpcClient c = client();
        CompletableFuture.runAsync(() -> {
            try {
                call(c, "Wait", "60000");
            } catch (StatusRuntimeException expected) {
                // the client is closed below
            }
        });
        await().atMost(Duration.ofSeconds(5)).until(() -> a.activeCalls() == 1);
        c.close();
        // The server saw its connection end: it cancels the calls of a closed connection.
        await().atMost(Duration.ofSeconds(5)).until(() -> a.activeCalls() == 0);

        long pid = proxy.pid();
        int baseline = fds(pid);
        for (int i = 0; i < 200; i++) {
            try (TtrpcClient x = TtrpcClient.connect(front)) {
                if (i % 10 == 0) {
                    assertThat(call(x, "Echo", "cycle" + i)).isEqualTo("cycle" + i);
                }
            }
        }
        // also while the backend is down, with a pending request
        a.close();
        for (int i = 0; i < 20; i++) {
            TtrpcClient x = TtrpcClient.connect(front);
            CompletableFuture.runAsync(() -> {
                try {
                    call(x, "Echo", "never");
                } catch (StatusRuntimeException expected) {
                    // closed below
                }
            });
            Thread.sleep(5);
            x.close();
        }
        await().atMost(Duration.ofSeconds(10)).untilAsserted(() -> assertThat(fds(pid)).isEqualTo(baseline));
        backend("B");
        assertThat(call(client(), "Who", "")).isEqualTo("B");
    }

    /** As a ttrpc server does: the oversized call is answered, the connection (containerd never re-dials) stays. */
    @Test
    void oversizedFrameIsAnsweredAndTheConnectionStays() throws Exception {
        backend("A");
        proxy = startProxy();
        TtrpcClient other = client();
        assertThat(call(other, "Echo", "x")).isEqualTo("x");
        try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            ch.connect(UnixDomainSocketAddress.of(front));
            int len = (4 << 20) + 1;
            write(ch, ByteBuffer.allocate(10).putInt(len).putInt(1).put((byte) 1).put((byte) 0).array());
            byte[] junk = new byte[64 * 1024];
            java.util.Arrays.fill(junk, (byte) 'x'); // read as a header, it would be another oversized frame
            for (int left = len; left > 0; left -= junk.length) {
                write(ch, left >= junk.length ? junk : java.util.Arrays.copyOf(junk, left));
            }
            write(ch, requestFrame(3, "Echo", "after"));
            Map<Integer, Response> got = readResponseFrames(ch, 2);
            assertThat(got).containsOnlyKeys(1, 3);
            assertThat(got.get(1).getStatus().getCode()).isEqualTo(Status.Code.RESOURCE_EXHAUSTED.value());
            assertThat(got.get(1).getStatus().getMessage())
                    .isEqualTo("message length 4194305 exceeds maximum message size of 4194304");
            assertThat(StringValue.parseFrom(got.get(3).getPayload()).getValue()).isEqualTo("after");
        }
        assertThat(call(other, "Echo", "y")).isEqualTo("y");
        assertThat(call(client(), "Echo", "z")).isEqualTo("z");
    }

    @Test
    void slowReaderGetsEverythingAndAFloodIsDropped() throws Exception {
        TtrpcServer a = backend("A");
        proxy = startProxy();
        String mib = "m".repeat(1 << 20);
        // 10 MiB of requests, answers read only 1 s later: backpressure, nothing dropped
        try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            ch.connect(UnixDomainSocketAddress.of(front));
            CompletableFuture<Void> writer = CompletableFuture.runAsync(() -> {
                try {
                    for (int id = 1; id <= 19; id += 2) {
                        ByteBuffer f = ByteBuffer.wrap(requestFrame(id, "Echo", id + mib));
                        while (f.hasRemaining()) {
                            ch.write(f);
                        }
                    }
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
            });
            Thread.sleep(1000);
            Map<Integer, String> got = readResponses(ch, 10);
            writer.get(10, TimeUnit.SECONDS);
            for (int id = 1; id <= 19; id += 2) {
                assertThat(got.get(id)).isEqualTo(id + mib);
            }
        }
        // 40 MiB of requests and no reader: over the 16 MiB per-connection limit, that connection is dropped
        TtrpcClient other = client();
        try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            ch.connect(UnixDomainSocketAddress.of(front));
            CompletableFuture<Boolean> writer = CompletableFuture.supplyAsync(() -> {
                try {
                    for (int id = 1; id <= 79; id += 2) {
                        ByteBuffer f = ByteBuffer.wrap(requestFrame(id, "Echo", mib));
                        while (f.hasRemaining()) {
                            ch.write(f);
                        }
                    }
                    return false;
                } catch (IOException e) {
                    return true; // the proxy closed the connection
                }
            });
            assertThat(writer.get(20, TimeUnit.SECONDS)).isTrue();
        }
        assertThat(Files.readString(log)).contains("buffers over the limit");
        assertThat(call(other, "Echo", "fine")).isEqualTo("fine");
        await().atMost(Duration.ofSeconds(10)).until(() -> a.activeCalls() == 0);
    }

    @Test
    void daemonWithPidFile() throws Exception {
        backend("A");
        Path pidFile = dir.resolve("proxy.pid");
        List<String> cmd = List.of(binary().toString(), "--listen", front.toString(), "--backend", back.toString(),
                "--pid-file", pidFile.toString(), "--log", log.toString(), "--daemon");
        Run first = run(cmd);
        assertThat(first.code).isZero();
        assertThat(first.out).contains("started");
        assertThat(front).exists();
        assertThat(pidFile).exists();
        long pid = Long.parseLong(Files.readString(pidFile).trim());
        try {
            assertThat(first.out).contains("pid " + pid);
            assertThat(Files.readString(Path.of("/proc/" + pid + "/comm")).trim()).isEqualTo("kuasar-ttrpc-px");
            assertThat(call(client(), "Echo", "via daemon")).isEqualTo("via daemon");

            Run second = run(cmd);
            assertThat(second.code).isZero();
            assertThat(second.out).contains("already running");
            assertThat(Files.readString(pidFile).trim()).isEqualTo(Long.toString(pid));
            assertThat(call(client(), "Echo", "still")).isEqualTo("still");
        } finally {
            ProcessHandle.of(pid).ifPresent(ProcessHandle::destroy); // SIGTERM
        }
        await().atMost(Duration.ofSeconds(10)).until(() -> !alive(pid));
        assertThat(front).doesNotExist();
        assertThat(pidFile).doesNotExist();

        // A stale pid file (a live process that is not a proxy) does not stop a start.
        Files.writeString(pidFile, ProcessHandle.current().pid() + "\n");
        Run third = run(cmd);
        assertThat(third.code).isZero();
        assertThat(third.out).contains("started");
        long pid3 = Long.parseLong(Files.readString(pidFile).trim());
        assertThat(pid3).isNotEqualTo(ProcessHandle.current().pid());
        assertThat(call(client(), "Echo", "third")).isEqualTo("third");
        ProcessHandle.of(pid3).ifPresent(ProcessHandle::destroy);
        await().atMost(Duration.ofSeconds(10)).until(() -> !alive(pid3));
        assertThat(pidFile).doesNotExist();
    }

    /** The whole story under valgrind (a glibc build of the same source: valgrind cannot follow static musl). */
    @Test
    void noLeaksUnderValgrind() throws Exception {
        assumeTrue(onPath("valgrind") && onPath("gcc"), "valgrind and gcc are needed");
        Path src = Path.of("src/main/c/kuasar-ttrpc-proxy.c").toAbsolutePath();
        assumeTrue(Files.exists(src), "source not found from " + Path.of("").toAbsolutePath());
        Path bin = dir.resolve("kuasar-ttrpc-proxy-g");
        Run cc = run(List.of("gcc", "-g", "-O1", "-Wall", "-Wextra", "-Werror", "-o", bin.toString(), src.toString()));
        assertThat(cc.code).as(cc.out).isZero();

        Path vlog = dir.resolve("valgrind.log");
        TtrpcServer a = backend("A");
        proxy = new ProcessBuilder("valgrind", "--leak-check=full", "--show-leak-kinds=all",
                "--errors-for-leak-kinds=definite,indirect,possible", "--error-exitcode=99", "--log-file=" + vlog,
                bin.toString(), "--listen", front.toString(), "--backend", back.toString())
                .redirectErrorStream(true).redirectOutput(log.toFile()).start();
        await().atMost(Duration.ofSeconds(30)).until(() -> connectable(front));

        TtrpcClient c = client();
        assertThat(call(c, "Echo", "v".repeat(300_000))).hasSize(300_000);
        CompletableFuture<String> sleeping = CompletableFuture.supplyAsync(() -> call(c, "Wait", "1500"));
        await().atMost(Duration.ofSeconds(10)).until(() -> a.activeCalls() == 1);
        a.close();
        TtrpcClient gone = TtrpcClient.connect(front); // a pending request, then the client goes, backend down
        CompletableFuture.runAsync(() -> {
            try {
                call(gone, "Echo", "lost");
            } catch (StatusRuntimeException expected) {
                // closed below
            }
        });
        Thread.sleep(300);
        gone.close();
        Thread.sleep(300);
        backend("B");
        assertThat(sleeping.get(20, TimeUnit.SECONDS)).isEqualTo("slept by B");
        TtrpcClient c2 = client(); // left open: SIGTERM must free its buffers too
        CompletableFuture.runAsync(() -> {
            try {
                call(c2, "Wait", "60000");
            } catch (StatusRuntimeException expected) {
                // the proxy goes away
            }
        });
        assertThatThrownBy(() -> call(c, "Fail", "x")).isInstanceOf(StatusRuntimeException.class);
        await().atMost(Duration.ofSeconds(10)).until(() -> servers.getLast().activeCalls() == 1);

        proxy.destroy(); // SIGTERM with one connection and a pending call
        assertThat(proxy.waitFor(30, TimeUnit.SECONDS)).isTrue();
        String report = Files.readString(vlog);
        System.out.print(report);
        assertThat(proxy.exitValue()).as("valgrind found errors or leaks").isZero();
        proxy = null;
        assertThat(report).contains("ERROR SUMMARY: 0 errors").contains("All heap blocks were freed");
        assertThat(front).doesNotExist();
    }

    static int fds(long pid) throws IOException {
        try (Stream<Path> s = Files.list(Path.of("/proc/" + pid + "/fd"))) {
            return (int) s.count();
        }
    }

    static boolean alive(long pid) {
        try {
            String stat = Files.readString(Path.of("/proc/" + pid + "/stat"));
            return stat.charAt(stat.lastIndexOf(')') + 2) != 'Z';
        } catch (IOException e) {
            return false;
        }
    }

    static boolean onPath(String exe) {
        String path = System.getenv().getOrDefault("PATH", "");
        for (String d : path.split(File.pathSeparator)) {
            if (Files.isExecutable(Path.of(d, exe))) {
                return true;
            }
        }
        return false;
    }

    record Run(int code, String out) {
    }

    static Run run(List<String> cmd) throws Exception {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor(30, TimeUnit.SECONDS)).isTrue();
        return new Run(p.exitValue(), out);
    }

    static byte[] requestFrame(int id, String method, String arg) {
        return requestFrame(id, method, arg, null);
    }

    static byte[] requestFrame(int id, String method, String arg, Duration timeout) {
        Request.Builder req = Request.newBuilder().setService(SVC).setMethod(method)
                .setPayload(StringValue.of(arg).toByteString());
        if (timeout != null) {
            req.setTimeoutNano(timeout.toNanos());
        }
        byte[] data = req.build().toByteArray();
        return ByteBuffer.allocate(10 + data.length).putInt(data.length).putInt(id).put((byte) 1).put((byte) 0)
                .put(data).array();
    }

    static Map<Integer, String> readResponses(SocketChannel ch, int count) throws IOException {
        Map<Integer, String> got = new HashMap<>();
        while (got.size() < count) {
            ByteBuffer h = readFully(ch, 10);
            int len = h.getInt();
            int id = h.getInt();
            byte type = h.get();
            assertThat(type).isEqualTo((byte) 2);
            Response r = Response.parseFrom(readFully(ch, len));
            assertThat(r.getStatus().getCode()).isZero();
            got.put(id, StringValue.parseFrom(r.getPayload()).getValue());
        }
        return got;
    }

    static Map<Integer, Response> readResponseFrames(SocketChannel ch, int count) throws IOException {
        Map<Integer, Response> got = new HashMap<>();
        while (got.size() < count) {
            ByteBuffer h = readFully(ch, 10);
            int len = h.getInt();
            int id = h.getInt();
            assertThat(h.get()).isEqualTo((byte) 2);
            got.put(id, Response.parseFrom(readFully(ch, len)));
        }
        return got;
    }

    static void write(SocketChannel ch, byte[] bytes) throws IOException {
        ByteBuffer b = ByteBuffer.wrap(bytes);
        while (b.hasRemaining()) {
            ch.write(b);
        }
    }

    static ByteBuffer readFully(SocketChannel ch, int n) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(n);
        while (b.hasRemaining()) {
            if (ch.read(b) < 0) {
                throw new EOFException();
            }
        }
        return b.flip();
    }
}
