package io.kuasar.vmm.task;

import com.google.protobuf.Any;
import com.google.protobuf.ByteString;
import io.kuasar.api.streaming.v1.StreamInit;
import io.kuasar.api.types.transfer.Data;
import io.kuasar.api.types.transfer.WindowUpdate;
import io.kuasar.sandbox.sys.Linux;
import io.kuasar.sandbox.ttrpc.TtrpcClient;
import io.kuasar.sandbox.ttrpc.TtrpcServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/** The guest's Streaming service against a real ttrpc client, with real FIFOs as the process side. */
class StreamingServiceTest {
    @TempDir
    Path dir;
    private TtrpcServer server;
    private TtrpcClient client;
    private final StreamingService streaming = new StreamingService();

    @BeforeEach
    void start() throws Exception {
        server = new TtrpcServer(dir.resolve("s.sock")).register(streaming.service()).start();
        client = TtrpcClient.connect(server.socketPath());
    }

    @AfterEach
    void stop() {
        client.close();
        server.close();
    }

    @Test
    void outputIsSentAsDataAndTheStreamEndsWithTheProcess() throws Exception {
        TtrpcClient.ClientStream s = open("c1-stdout");
        Path fifo = dir.resolve("c1-stdout");
        Linux.mkfifo(fifo.toString(), 0600);
        streaming.register("c1-stdout", fifo); // the container arrives after the stream, as with containerd
        try (FileOutputStream process = new FileOutputStream(fifo.toFile())) {
            process.write("hello\n".getBytes(StandardCharsets.UTF_8));
            process.write("world\n".getBytes(StandardCharsets.UTF_8));
        }
        ByteArrayOutputStream got = new ByteArrayOutputStream();
        byte[] m;
        while ((m = s.recv()) != null) {
            got.write(Data.parseFrom(Any.parseFrom(m).getValue()).getData().toByteArray());
        }
        s.status();
        assertThat(got.toString(StandardCharsets.UTF_8)).isEqualTo("hello\nworld\n");
    }

    @Test
    void stdinGrantsAWindowAndItsEndClosesTheProcessStdin() throws Exception {
        Path fifo = dir.resolve("c2-stdin");
        Linux.mkfifo(fifo.toString(), 0600);
        streaming.register("c2-stdin", fifo); // here the container is first
        CompletableFuture<String> read = CompletableFuture.supplyAsync(() -> {
            try (FileInputStream process = new FileInputStream(fifo.toFile())) {
                return new String(process.readAllBytes(), StandardCharsets.UTF_8);
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        TtrpcClient.ClientStream s = open("c2-stdin");
        WindowUpdate w = WindowUpdate.parseFrom(Any.parseFrom(s.recv()).getValue());
        assertThat(w.getUpdate()).isEqualTo(StreamingService.WINDOW);
        s.send(StreamingService.pack(Data.newBuilder().setData(ByteString.copyFromUtf8("typed")).build()));
        assertThat(WindowUpdate.parseFrom(Any.parseFrom(s.recv()).getValue()).getUpdate()).isEqualTo(5);
        s.closeSend();
        assertThat(read.get(10, TimeUnit.SECONDS)).isEqualTo("typed");
        s.status();
    }

    @Test
    void aStreamWhoseProcessIsGoneEndsWithNotFound() throws Exception {
        Path fifo = dir.resolve("c3-stdout");
        Linux.mkfifo(fifo.toString(), 0600);
        streaming.register("c3-stdout", fifo);
        streaming.unregister("c3-stdout", fifo); // the process never opened its end
        TtrpcClient.ClientStream s = open("c3-stdout");
        assertThat(s.recv()).isNull();
        org.assertj.core.api.Assertions.assertThatThrownBy(s::status)
                .hasMessageContaining("NOT_FOUND").hasMessageContaining("c3-stdout");
    }

    /** The sandboxer restarts: its connection drops mid-output, the next one re-attaches and nothing is lost. */
    @Test
    void outputCarriesOnOnTheNextConnectionAfterTheClientWentAway() throws Exception {
        Path fifo = dir.resolve("c4-stdout");
        Linux.mkfifo(fifo.toString(), 0600);
        streaming.register("c4-stdout", fifo);
        TtrpcClient.ClientStream s = open("c4-stdout");
        try (FileOutputStream process = new FileOutputStream(fifo.toFile())) {
            process.write("before\n".getBytes(StandardCharsets.UTF_8));
            process.flush();
            assertThat(Data.parseFrom(Any.parseFrom(s.recv()).getValue()).getData().toStringUtf8())
                    .isEqualTo("before\n");
            client.close(); // the sandboxer dies
            // A JVM closes a socket a virtual thread is reading only once that thread wakes: output written in that
            // moment lands in the dying connection (as it would in a sandboxer killed mid-write). This test is about
            // output made while no client is attached, so it waits until the agent has seen the client go.
            long end = System.nanoTime() + java.util.concurrent.TimeUnit.SECONDS.toNanos(5);
            while (server.activeCalls() > 0 && System.nanoTime() < end) {
                Thread.sleep(10);
            }
            assertThat(server.activeCalls()).isZero();
            process.write("while away\n".getBytes(StandardCharsets.UTF_8));
            process.flush();
            Thread.sleep(200);
            client = TtrpcClient.connect(server.socketPath()); // ... and comes back
            TtrpcClient.ClientStream again = open("c4-stdout");
            process.write("after\n".getBytes(StandardCharsets.UTF_8));
            process.close();
            ByteArrayOutputStream got = new ByteArrayOutputStream();
            byte[] m;
            while ((m = again.recv()) != null) {
                got.write(Data.parseFrom(Any.parseFrom(m).getValue()).getData().toByteArray());
            }
            again.status();
            assertThat(got.toString(StandardCharsets.UTF_8)).isEqualTo("while away\nafter\n");
        }
    }

    /** A dropped connection is not the end of stdin: the next stream writes on into the same process. */
    @Test
    void stdinStaysOpenForTheNextStreamWhenTheConnectionDrops() throws Exception {
        Path fifo = dir.resolve("c5-stdin");
        Linux.mkfifo(fifo.toString(), 0600);
        streaming.register("c5-stdin", fifo);
        CompletableFuture<String> read = CompletableFuture.supplyAsync(() -> {
            try (FileInputStream process = new FileInputStream(fifo.toFile())) {
                return new String(process.readAllBytes(), StandardCharsets.UTF_8);
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        TtrpcClient.ClientStream s = open("c5-stdin");
        s.recv(); // the window
        s.send(StreamingService.pack(Data.newBuilder().setData(ByteString.copyFromUtf8("one ")).build()));
        s.recv();
        client.close();
        Thread.sleep(200);
        assertThat(read).isNotDone(); // no end of file for the process
        client = TtrpcClient.connect(server.socketPath());
        TtrpcClient.ClientStream again = open("c5-stdin");
        again.recv();
        again.send(StreamingService.pack(Data.newBuilder().setData(ByteString.copyFromUtf8("two")).build()));
        again.recv();
        again.closeSend();
        assertThat(read.get(10, TimeUnit.SECONDS)).isEqualTo("one two");
        again.status();
    }

    private TtrpcClient.ClientStream open(String id) throws Exception {
        TtrpcClient.ClientStream s = client.stream(StreamingService.NAME, "Stream", null, true);
        s.send(StreamingService.pack(StreamInit.newBuilder().setId(id).build()));
        assertThat(Any.parseFrom(s.recv()).getTypeUrl()).isEqualTo("google.protobuf.Empty");
        return s;
    }
}
