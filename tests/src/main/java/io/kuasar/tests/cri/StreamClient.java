package io.kuasar.tests.cri;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.ByteArrayOutputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpResponse;
import java.net.http.WebSocket;
import java.net.http.WebSocketHandshakeException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.Predicate;

/**
 * A minimal client for the URLs CRI's Exec and Attach return: containerd's streaming server (kubelet's
 * {@code pkg/cri/streaming}) upgraded to a WebSocket with Kubernetes' channel protocol.
 *
 * <p>Each binary message starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error (a JSON
 * {@code metav1.Status}; {@code Success}, or {@code NonZeroExitCode} with the code as an {@code ExitCode} cause),
 * 4 terminal resize (JSON {@code {"Width":..,"Height":..}}). {@code v5.channel.k8s.io} adds 255 = close, whose
 * payload is the channel being closed (the client closes stdin with {@code [255, 0]}).
 */
public final class StreamClient {
    public static final String V5 = "v5.channel.k8s.io";
    public static final String V4 = "v4.channel.k8s.io";
    /** Preference order offered to the server. */
    public static final List<String> PROTOCOLS = List.of(V5, V4);

    public static final int STDIN = 0;
    public static final int STDOUT = 1;
    public static final int STDERR = 2;
    public static final int ERROR = 3;
    public static final int RESIZE = 4;
    public static final int CLOSE = 255;

    private static final ObjectMapper JSON = new ObjectMapper();

    private StreamClient() {
    }

    /** Connects offering {@link #PROTOCOLS}. */
    public static Session open(URI url, Duration timeout) {
        return open(url, timeout, PROTOCOLS);
    }

    /** Connects offering the given subprotocols, most preferred first. */
    public static Session open(URI url, Duration timeout, List<String> protocols) {
        URI ws = toWebSocket(url);
        HttpClient http = HttpClient.newBuilder().connectTimeout(timeout).build();
        Session s = new Session();
        WebSocket.Builder b = http.newWebSocketBuilder().connectTimeout(timeout);
        if (!protocols.isEmpty()) {
            b.subprotocols(protocols.getFirst(), protocols.subList(1, protocols.size()).toArray(String[]::new));
        }
        try {
            s.ws = b.buildAsync(ws, s.listener).get(timeout.toMillis(), TimeUnit.MILLISECONDS);
        } catch (ExecutionException e) {
            http.close();
            String detail = String.valueOf(e.getCause());
            if (e.getCause() instanceof WebSocketHandshakeException h) {
                HttpResponse<?> r = h.getResponse();
                detail = "HTTP " + r.statusCode() + " " + r.headers().map() + " " + r.body();
            }
            throw new StreamException("WebSocket upgrade of " + ws + " offering " + protocols + " failed: " + detail,
                    e.getCause());
        } catch (InterruptedException | TimeoutException e) {
            http.close();
            throw new StreamException("WebSocket upgrade of " + ws + " failed: " + e, e);
        }
        s.http = http;
        return s;
    }

    static URI toWebSocket(URI url) {
        String scheme = switch (url.getScheme()) {
            case "http" -> "ws";
            case "https" -> "wss";
            default -> url.getScheme();
        };
        return URI.create(scheme + url.toString().substring(url.getScheme().length()));
    }

    /** The end of a stream: the exit code from the error channel (-1 if there was none or it was not an exit). */
    public record Result(int exitCode, String status, String stdout, String stderr) {
    }

    public static final class StreamException extends RuntimeException {
        StreamException(String message, Throwable cause) {
            super(message, cause);
        }
    }

    /** One open exec or attach stream. */
    public static final class Session implements AutoCloseable {
        private final Object lock = new Object();
        private final ByteArrayOutputStream stdout = new ByteArrayOutputStream();
        private final ByteArrayOutputStream stderr = new ByteArrayOutputStream();
        private final ByteArrayOutputStream error = new ByteArrayOutputStream();
        /** Port-forward only: what the server sends on channel 0 (the forwarded port's data). */
        private final ByteArrayOutputStream portData = new ByteArrayOutputStream();
        private final CompletableFuture<Integer> closed = new CompletableFuture<>();
        private final Listener listener = new Listener();
        private WebSocket ws;
        private HttpClient http;
        private CompletableFuture<WebSocket> sending = CompletableFuture.completedFuture(null);

        /** The subprotocol the server chose. */
        public String protocol() {
            return ws.getSubprotocol();
        }

        public void sendStdin(String text) {
            sendStdin(text.getBytes(StandardCharsets.UTF_8));
        }

        public void sendStdin(byte[] data) {
            send(STDIN, data);
        }

        /** Half-closes stdin (v5 only: earlier protocols can only close the whole stream). */
        public void closeStdin() {
            if (!V5.equals(protocol())) {
                throw new IllegalStateException("closing stdin needs " + V5 + ", server chose '" + protocol() + "'");
            }
            send(CLOSE, new byte[] {STDIN});
        }

        public void resize(int width, int height) {
            send(RESIZE, ("{\"Width\":" + width + ",\"Height\":" + height + "}").getBytes(StandardCharsets.UTF_8));
        }

        private void send(int channel, byte[] data) {
            ByteBuffer buf = ByteBuffer.allocate(data.length + 1);
            buf.put((byte) channel).put(data).flip();
            synchronized (this) {
                // The JDK allows one outstanding send at a time: chain them.
                sending = sending.thenCompose(w -> ws.sendBinary(buf, true));
                try {
                    sending.get(10, TimeUnit.SECONDS);
                } catch (InterruptedException | ExecutionException | TimeoutException e) {
                    throw new StreamException("send on channel " + channel + " failed: " + e, e);
                }
            }
        }

        public String stdout() {
            synchronized (lock) {
                return stdout.toString(StandardCharsets.UTF_8);
            }
        }

        public String stderr() {
            synchronized (lock) {
                return stderr.toString(StandardCharsets.UTF_8);
            }
        }

        /**
         * Port-forward of one port: what came back on its data channel (channel 0), without the two-byte port number
         * the server sends first on each channel.
         */
        public byte[] portData() {
            synchronized (lock) {
                byte[] all = portData.toByteArray();
                return all.length < 2 ? new byte[0] : java.util.Arrays.copyOfRange(all, 2, all.length);
            }
        }

        /** Waits until the port-forward data satisfies {@code condition} (as UTF-8); false on timeout. */
        public boolean awaitPortData(Predicate<String> condition, Duration timeout) {
            return awaitUntil(() -> new String(portData(), StandardCharsets.UTF_8), condition, timeout);
        }

        /** Waits until stdout satisfies {@code condition}; false on timeout or when the stream ends first. */
        public boolean awaitStdout(Predicate<String> condition, Duration timeout) {
            return awaitUntil(this::stdout, condition, timeout);
        }

        /** Waits until what {@code read} returns satisfies {@code condition}; false on timeout or end of stream. */
        private boolean awaitUntil(java.util.function.Supplier<String> read, Predicate<String> condition,
                                   Duration timeout) {
            long end = System.nanoTime() + timeout.toNanos();
            synchronized (lock) {
                while (!condition.test(read.get())) {
                    long left = end - System.nanoTime();
                    if (left <= 0 || closed.isDone()) {
                        return condition.test(read.get());
                    }
                    try {
                        TimeUnit.NANOSECONDS.timedWait(lock, Math.min(left, 50_000_000L));
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                        return false;
                    }
                }
                return true;
            }
        }

        /** Waits for the server to end the stream and returns what came over it. */
        public Result await(Duration timeout) {
            try {
                closed.get(timeout.toMillis(), TimeUnit.MILLISECONDS);
            } catch (TimeoutException e) {
                throw new StreamException("stream did not end within " + timeout + "; stdout so far: '" + stdout()
                        + "', stderr: '" + stderr() + "'", e);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new StreamException("interrupted", e);
            } catch (ExecutionException | CompletionException e) {
                throw new StreamException("stream failed: " + e.getCause(), e.getCause());
            }
            String status;
            synchronized (lock) {
                status = error.toString(StandardCharsets.UTF_8);
            }
            return new Result(exitCode(status), status, stdout(), stderr());
        }

        /** Exit code from a v4/v5 error-channel status; -1 if there is none. */
        static int exitCode(String status) {
            if (status.isBlank()) {
                return -1;
            }
            try {
                JsonNode s = JSON.readTree(status);
                if ("Success".equals(s.path("status").asText())) {
                    return 0;
                }
                if ("NonZeroExitCode".equals(s.path("reason").asText())) {
                    for (JsonNode c : s.path("details").path("causes")) {
                        if ("ExitCode".equals(c.path("reason").asText())) {
                            return Integer.parseInt(c.path("message").asText());
                        }
                    }
                }
            } catch (Exception e) {
                return -1;
            }
            return -1;
        }

        @Override
        public void close() {
            if (ws != null && !ws.isOutputClosed()) {
                ws.sendClose(WebSocket.NORMAL_CLOSURE, "").orTimeout(5, TimeUnit.SECONDS).exceptionally(t -> null);
            }
            if (ws != null) {
                try {
                    closed.get(5, TimeUnit.SECONDS);
                } catch (Exception e) {
                    ws.abort();
                }
            }
            if (http != null) {
                http.close();
            }
        }

        private final class Listener implements WebSocket.Listener {
            private final ByteArrayOutputStream partial = new ByteArrayOutputStream();

            @Override
            public CompletionStage<?> onBinary(WebSocket webSocket, ByteBuffer data, boolean last) {
                byte[] chunk = new byte[data.remaining()];
                data.get(chunk);
                partial.writeBytes(chunk);
                if (last) {
                    byte[] msg = partial.toByteArray();
                    partial.reset();
                    if (msg.length > 0) {
                        deliver(msg[0] & 0xff, msg, 1);
                    }
                }
                webSocket.request(1);
                return null;
            }

            @Override
            public CompletionStage<?> onText(WebSocket webSocket, CharSequence data, boolean last) {
                webSocket.request(1); // only the base64 protocols use text frames; not offered
                return null;
            }

            private void deliver(int channel, byte[] msg, int off) {
                synchronized (lock) {
                    switch (channel) {
                        case STDIN -> portData.write(msg, off, msg.length - off); // port-forward's data channel
                        case STDOUT -> stdout.write(msg, off, msg.length - off);
                        case STDERR -> stderr.write(msg, off, msg.length - off);
                        case ERROR -> error.write(msg, off, msg.length - off);
                        default -> {
                            // 255 (close of a server channel) and anything else carry no data for us
                        }
                    }
                    lock.notifyAll();
                }
            }

            @Override
            public CompletionStage<?> onClose(WebSocket webSocket, int statusCode, String reason) {
                synchronized (lock) {
                    closed.complete(statusCode);
                    lock.notifyAll();
                }
                return null;
            }

            @Override
            public void onError(WebSocket webSocket, Throwable error) {
                synchronized (lock) {
                    closed.completeExceptionally(error);
                    lock.notifyAll();
                }
            }
        }
    }
}
