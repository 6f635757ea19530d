package io.kuasar.sandbox.task;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * The client of {@code kuasar-fifo-keeper}, which holds containerd's stdio FIFOs open (read and write, as
 * containerd's own shim does) while this daemon or containerd restarts. Needed where the daemon itself carries a
 * container's stdio to containerd's FIFOs (the microVM sandboxer bridges the guest's streams): without it
 * containerd's reader sees end-of-file when the daemon dies, and CRI stops copying that container's log for good;
 * and the daemon's writes fail while containerd restarts. The keeper outlives the daemon; a restarted daemon finds
 * it by its socket, and lets go of a FIFO only when its stream really ends.
 * Without the binary every call is a no-op (and a restart cuts the containers' logs, as the start-up warning says).
 */
public final class FifoKeeper implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(FifoKeeper.class);
    /** A keeper that keeps nothing: for tests and for a daemon without the helper. */
    public static final FifoKeeper NONE = new FifoKeeper(null);

    /** The keeper's comm (its name cut to 15 characters), to tell it from a process that reused its pid. */
    private static final String COMM = "kuasar-fifo-kee";

    private final Path socket;
    private SocketChannel channel; // guarded by this
    private BufferedReader reader; // guarded by this

    private FifoKeeper(Path socket) {
        this.socket = socket;
    }

    /**
     * Connects to the keeper serving {@code <stateRoot>/fifo-keeper.sock}, starting it first if none is running
     * (one from an earlier run of this daemon is used as it is: it holds that run's FIFOs).
     */
    public static FifoKeeper start(Path binary, Path stateRoot) throws IOException, InterruptedException {
        Path root = stateRoot.toAbsolutePath();
        Path sock = root.resolve("fifo-keeper.sock");
        if (!Files.isExecutable(binary)) {
            LOG.warn("{} is missing: a restart of this daemon will end the logs of running containers", binary);
            return NONE;
        }
        FifoKeeper k = new FifoKeeper(sock);
        try {
            k.list();
            LOG.info("FIFO keeper from an earlier run serves {}", sock);
            return k;
        } catch (IOException notRunning) {
            LOG.debug("no FIFO keeper answers on {}: {}", sock, notRunning.getMessage());
        }
        Process p = new ProcessBuilder(List.of(binary.toString(), "--socket", sock.toString(), "--pid-file",
                root.resolve("fifo-keeper.pid").toString(), "--log", root.resolve("fifo-keeper.log").toString()))
                .redirectErrorStream(true).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                .start();
        // It says "ready" once it listens ("already running" if another holds its pid file), then keeps running.
        String first = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8)).readLine();
        if (first == null || !(first.equals("ready") || first.equals("already running"))) {
            p.waitFor(2, TimeUnit.SECONDS);
            throw new IOException("kuasar-fifo-keeper failed to start: " + first);
        }
        k.list();
        LOG.info("FIFO keeper {} serves {}", p.pid(), sock);
        return k;
    }

    /** Holds a stdio FIFO (idempotent); a path that is not a FIFO (or no keeper) is left alone. */
    public void hold(String path) {
        if (socket == null || path == null || !path.startsWith("/")) {
            return;
        }
        try {
            String answer = call("HOLD " + path);
            if (!answer.equals("OK")) {
                LOG.debug("keeper: {}: {}", path, answer);
            }
        } catch (IOException e) {
            LOG.warn("cannot hand {} to the FIFO keeper ({}): a restart of this daemon will end its stream", path,
                    e.getMessage());
        }
    }

    /** Lets the FIFO go: call before closing the daemon's own end, so that containerd sees the end of the stream. */
    public void drop(String path) {
        if (socket == null || path == null || !path.startsWith("/")) {
            return;
        }
        try {
            call("DROP " + path);
        } catch (IOException e) {
            LOG.warn("cannot tell the FIFO keeper to let {} go: {}", path, e.getMessage());
        }
    }

    /** The paths held, e.g. to let go of those no recovered container claims. */
    public synchronized List<String> list() throws IOException {
        if (socket == null) {
            return List.of();
        }
        send("LIST");
        List<String> paths = new ArrayList<>();
        String line;
        while ((line = reader.readLine()) != null && !line.equals(".")) {
            paths.add(line);
        }
        if (line == null) {
            reset();
            throw new IOException("the FIFO keeper closed the connection");
        }
        return paths;
    }

    /**
     * This daemon stops (its pods stay, and are recovered by the next run): a keeper holding nothing has nothing to
     * keep for that run, and is stopped; one that holds FIFOs is left to hold them.
     */
    @Override
    public void close() {
        if (socket == null) {
            return;
        }
        try {
            if (!list().isEmpty()) {
                return;
            }
            Path pidFile = socket.resolveSibling("fifo-keeper.pid");
            int pid = Integer.parseInt(Files.readString(pidFile).trim());
            if (Files.readString(Path.of("/proc/" + pid + "/comm")).trim().equals(COMM)) {
                ProcessHandle.of(pid).ifPresent(ProcessHandle::destroy);
                LOG.info("no FIFOs left to keep: stopped the FIFO keeper {}", pid);
            }
        } catch (IOException | RuntimeException e) {
            LOG.debug("FIFO keeper not stopped: {}", e.getMessage());
        } finally {
            synchronized (this) {
                reset();
            }
        }
    }

    private synchronized String call(String command) throws IOException {
        for (int attempt = 0; ; attempt++) {
            try {
                send(command);
                String answer = reader.readLine();
                if (answer == null) {
                    throw new IOException("the FIFO keeper closed the connection");
                }
                return answer;
            } catch (IOException e) {
                reset();
                if (attempt > 0) {
                    throw e;
                }
            }
        }
    }

    private void send(String command) throws IOException {
        if (channel == null) {
            channel = SocketChannel.open(UnixDomainSocketAddress.of(socket));
            reader = new BufferedReader(new InputStreamReader(Channels.newInputStream(channel), StandardCharsets.UTF_8));
        }
        ByteBuffer b = ByteBuffer.wrap((command + "\n").getBytes(StandardCharsets.UTF_8));
        while (b.hasRemaining()) {
            channel.write(b);
        }
    }

    private void reset() {
        try {
            if (channel != null) {
                channel.close();
            }
        } catch (IOException ignored) {
            // reconnect next time
        }
        channel = null;
        reader = null;
    }
}
