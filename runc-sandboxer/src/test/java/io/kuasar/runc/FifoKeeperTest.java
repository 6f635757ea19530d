package io.kuasar.runc;

import io.kuasar.sandbox.sys.Linux;
import io.kuasar.sandbox.task.FifoKeeper;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * The real kuasar-fifo-keeper (built by Maven into target/libexec) through its Java client: a held FIFO gives its
 * reader no end of file when the writer that feeds it goes away (a daemon killed), until it is let go, and takes
 * writes while its reader is away (containerd restarting); a keeper survives its client and is found again; an
 * idle one is stopped.
 */
class FifoKeeperTest {
    private static final Path BINARY = Path.of(System.getProperty("kuasar.libexec", "target/libexec"))
            .resolve("kuasar-fifo-keeper");

    @TempDir
    Path dir;
    private FifoKeeper keeper;

    @AfterEach
    void stop() throws Exception {
        if (Files.exists(dir.resolve("fifo-keeper.pid"))) {
            int pid = Integer.parseInt(Files.readString(dir.resolve("fifo-keeper.pid")).trim());
            ProcessHandle.of(pid).ifPresent(ProcessHandle::destroyForcibly);
        }
    }

    @Test
    void aHeldOutputFifoOutlivesItsWriterUntilItIsLetGo() throws Exception {
        keeper = FifoKeeper.start(BINARY, dir);
        Path fifo = dir.resolve("stdout");
        Linux.mkfifo(fifo.toString(), 0600);
        CompletableFuture<String> reader = CompletableFuture.supplyAsync(() -> {
            try (FileInputStream in = new FileInputStream(fifo.toFile())) { // containerd's end
                return new String(in.readAllBytes(), StandardCharsets.UTF_8);
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        try (FileOutputStream daemon = new FileOutputStream(fifo.toFile())) {
            keeper.hold(fifo.toString());
            daemon.write("before\n".getBytes(StandardCharsets.UTF_8));
        } // the daemon dies
        Thread.sleep(300);
        assertThat(reader).as("no end of file while the keeper holds the FIFO").isNotDone();
        assertThat(keeper.list()).containsExactly(fifo.toString());

        FifoKeeper again = FifoKeeper.start(BINARY, dir); // the next daemon finds the same keeper
        try (FileOutputStream daemon = new FileOutputStream(fifo.toFile())) {
            daemon.write("after\n".getBytes(StandardCharsets.UTF_8));
            again.drop(fifo.toString()); // the stream ended: let go before closing our end
        }
        assertThat(reader.get(10, TimeUnit.SECONDS)).isEqualTo("before\nafter\n");
        assertThat(again.list()).isEmpty();
    }

    @Test
    void aHeldFifoTakesOutputWhileItsReaderRestartsAndWhatIsNoFifoIsRefused() throws Exception {
        keeper = FifoKeeper.start(BINARY, dir);
        keeper.hold(dir.resolve("missing").toString());
        Files.writeString(dir.resolve("plain"), "x");
        keeper.hold(dir.resolve("plain").toString()); // not a FIFO
        assertThat(keeper.list()).isEmpty();

        Path fifo = dir.resolve("out");
        Linux.mkfifo(fifo.toString(), 0600);
        keeper.hold(fifo.toString());
        keeper.hold(fifo.toString()); // idempotent
        assertThat(keeper.list()).containsExactly(fifo.toString());
        // no reader (containerd is restarting): the daemon's open and write neither block nor fail with EPIPE
        try (FileOutputStream daemon = CompletableFuture.supplyAsync(() -> {
            try {
                return new FileOutputStream(fifo.toFile());
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        }).get(5, TimeUnit.SECONDS)) {
            daemon.write("while containerd is away\n".getBytes(StandardCharsets.UTF_8));
            try (java.io.RandomAccessFile containerd = new java.io.RandomAccessFile(fifo.toFile(), "r")) {
                byte[] b = new byte[64];
                int n = containerd.read(b);
                assertThat(new String(b, 0, n, StandardCharsets.UTF_8)).isEqualTo("while containerd is away\n");
            }
        }
        keeper.drop(fifo.toString());
        assertThat(keeper.list()).isEmpty();
    }

    @Test
    void anIdleKeeperIsStoppedWithItsDaemonAndABusyOneIsNot() throws Exception {
        keeper = FifoKeeper.start(BINARY, dir);
        int pid = Integer.parseInt(Files.readString(dir.resolve("fifo-keeper.pid")).trim());
        keeper.close();
        await().atMost(5, TimeUnit.SECONDS).until(() -> ProcessHandle.of(pid).map(p -> !p.isAlive()).orElse(true));
        assertThat(dir.resolve("fifo-keeper.sock")).doesNotExist();

        keeper = FifoKeeper.start(BINARY, dir);
        Path fifo = dir.resolve("in");
        Linux.mkfifo(fifo.toString(), 0600);
        try (java.io.RandomAccessFile writer = new java.io.RandomAccessFile(fifo.toFile(), "rw")) { // containerd
            keeper.hold(fifo.toString());
            int busy = Integer.parseInt(Files.readString(dir.resolve("fifo-keeper.pid")).trim());
            keeper.close();
            Thread.sleep(300);
            assertThat(ProcessHandle.of(busy).map(ProcessHandle::isAlive)).contains(true);
            assertThat(writer).isNotNull();
        }
    }
}
