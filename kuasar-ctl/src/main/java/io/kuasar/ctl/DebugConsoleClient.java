package io.kuasar.ctl;

import io.kuasar.sandbox.state.SandboxRecord;
import io.kuasar.sandbox.state.StateStore;
import io.kuasar.vmm.hypervisor.HybridVsock;

import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * {@code kuasar-ctl exec}: a command through a microVM's debug console. The console is reached through a root-only
 * socket in the sandbox directory: {@code debug.sock} (QEMU's chardev of the guest's second virtio-serial port), or
 * vsock port {@value #VSOCK_PORT} through the VM's hybrid vsock socket ({@code vsock.uds}, QEMU with
 * vhost-device-vsock; {@code task.vsock}, Cloud Hypervisor).
 */
final class DebugConsoleClient {
    static final int VSOCK_PORT = 1025;
    static final int EXIT_TIMEOUT = 124;
    static final int EXIT_FAILED = 125;
    private static final String HOW = "set [hypervisor.task] debug = true in vmm-sandboxer's config "
            + "(/var/lib/kuasar/config.toml; or task.debug in kernel_params), restart vmm-sandboxer and start a new pod";

    private DebugConsoleClient() {
    }

    /** Runs {@code args} in the sandbox's guest; returns the guest's exit code, or 124 after {@code timeout}. */
    static int exec(Path vmmDir, String idOrPrefix, List<String> args, Duration timeout, OutputStream out,
                    PrintStream err) throws IOException, InterruptedException {
        Sandboxers.Sandboxer vmm = new Sandboxers.Sandboxer("vmm", "vmm", Path.of(""), vmmDir);
        String id = Resolver.resolve(List.of(vmm), idOrPrefix).id();
        SandboxRecord r = StateStore.peek(vmmDir).get(id);
        if (r != null && r.phase() != SandboxRecord.Phase.RUNNING) {
            throw new CtlException("sandbox " + id + " is " + r.phase().name().toLowerCase() + ", not running");
        }
        String token = ExecProtocol.token();
        byte[] request = ExecProtocol.request(token, args);
        SocketChannel ch = connect(vmmDir.resolve("sandboxes").resolve(id), id);
        Thread closer = new Thread(() -> close(ch)); // Ctrl-C: the JVM exits 130; the guest's session hangs up
        Runtime.getRuntime().addShutdownHook(closer);
        try {
            ByteBuffer req = ByteBuffer.wrap(request);
            while (req.hasRemaining()) {
                ch.write(req);
            }
            ExecProtocol.Scanner scanner = new ExecProtocol.Scanner(token, out);
            CompletableFuture<Integer> done = new CompletableFuture<>();
            Thread.ofPlatform().daemon().name("console-read").start(() -> {
                ByteBuffer b = ByteBuffer.allocate(16 * 1024);
                try {
                    while (true) {
                        b.clear();
                        if (ch.read(b) < 0) {
                            scanner.finish();
                            done.completeExceptionally(new CtlException("the debug console of " + id
                                    + " closed before the command's exit status came"));
                            return;
                        }
                        int rc = scanner.feed(b.array(), 0, b.position());
                        if (rc >= 0) {
                            done.complete(rc);
                            return;
                        }
                    }
                } catch (IOException e) {
                    done.completeExceptionally(e);
                }
            });
            try {
                return timeout.isZero() ? done.get() : done.get(timeout.toMillis(), TimeUnit.MILLISECONDS);
            } catch (TimeoutException e) {
                out.flush();
                err.println("kuasar-ctl: timed out after " + timeout.toSeconds() + "s; the command's session in the "
                        + "guest is hung up");
                return EXIT_TIMEOUT;
            } catch (ExecutionException e) {
                if (e.getCause() instanceof CtlException c) {
                    throw c;
                }
                throw new CtlException("reading the debug console of " + id + ": " + e.getCause().getMessage(),
                        e.getCause());
            }
        } finally {
            close(ch);
            try {
                Runtime.getRuntime().removeShutdownHook(closer);
            } catch (IllegalStateException e) {
                // shutting down already
            }
        }
    }

    static SocketChannel connect(Path sandboxDir, String id) throws IOException {
        Path debug = sandboxDir.resolve("debug.sock");
        if (Files.exists(debug)) {
            SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
            try {
                ch.connect(UnixDomainSocketAddress.of(debug));
                return ch;
            } catch (IOException e) {
                ch.close();
                throw new CtlException("cannot connect to " + debug + ": " + e.getMessage() + " (is the VM of " + id
                        + " running? kuasar-ctl must run as root)", e);
            }
        }
        for (String name : List.of("vsock.uds", "task.vsock")) {
            Path hybrid = sandboxDir.resolve(name);
            if (Files.exists(hybrid)) {
                try {
                    return HybridVsock.connect(hybrid, VSOCK_PORT);
                } catch (IOException e) {
                    throw new CtlException("the guest of " + id + " does not serve the debug console on vsock port "
                            + VSOCK_PORT + " (" + e.getMessage() + "): " + HOW, e);
                }
            }
        }
        throw new CtlException("sandbox " + id + " has no debug console (no debug.sock or hybrid vsock socket in "
                + sandboxDir + "): " + HOW);
    }

    private static void close(SocketChannel ch) {
        try {
            ch.close();
        } catch (IOException ignored) {
            // closing
        }
    }
}
