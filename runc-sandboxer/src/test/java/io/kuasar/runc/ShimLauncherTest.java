package io.kuasar.runc;

import io.kuasar.api.task.v2.DeleteResponse;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

/**
 * containerd 1.7's launchers, containerd-shim-kuasar-&lt;kind&gt;-v2, as containerd runs them: {@code start} in the
 * pod's bundle (stdout and stderr read together) must print only the daemon's shim endpoint and leave it in the
 * bundle's {@code address} file; {@code delete} must print a DeleteResponse; a missing daemon is named with the fix.
 */
class ShimLauncherTest {
    @TempDir
    Path dir;

    static Path launcher(String kind) {
        return RuncSandboxerMain.libexec().resolve("containerd-shim-kuasar-" + kind + "-v2");
    }

    record Run(int exit, String output, byte[] stdout) {
    }

    Run run(String kind, Path cwd, Map<String, String> env, String... args) throws Exception {
        String[] cmd = new String[args.length + 1];
        cmd[0] = launcher(kind).toString();
        System.arraycopy(args, 0, cmd, 1, args.length);
        ProcessBuilder pb = new ProcessBuilder(cmd).directory(cwd.toFile());
        pb.environment().keySet().removeIf(k -> k.startsWith("KUASAR_"));
        pb.environment().putAll(env);
        Process p = pb.start();
        p.getOutputStream().close();
        byte[] out = p.getInputStream().readAllBytes();
        String err = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
        return new Run(p.waitFor(), new String(out, StandardCharsets.UTF_8) + err, out);
    }

    /** What containerd 1.7 runs: {@code -namespace k8s.io -address ... -publish-binary ... -id ID start}. */
    static String[] startArgs() {
        return new String[]{"-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock", "-publish-binary",
                "/usr/bin/containerd", "-id", "a".repeat(64), "-debug", "start"};
    }

    @ParameterizedTest
    @ValueSource(strings = {"runc", "vmm", "wasm", "quark"})
    void startPrintsTheDaemonsShimEndpointAndWritesItIntoTheBundle(String kind) throws Exception {
        Path sock = dir.resolve(kind + ".sock");
        Path taskSocket = dir.resolve("state").resolve("task.sock");
        Files.createDirectories(taskSocket.getParent());
        Path bundle = Files.createDirectories(dir.resolve("bundle-" + kind));
        try (ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            server.bind(UnixDomainSocketAddress.of(taskSocket));
            Files.createSymbolicLink(dir.resolve(kind + ".sock.ttrpc"), taskSocket);
            String env = "KUASAR_" + kind.toUpperCase() + "_SANDBOXER_ADDRESS";
            for (String value : new String[]{sock.toString(), "unix://" + sock}) {
                Run r = run(kind, bundle, Map.of(env, value), startArgs());
                assertThat(r.exit()).as(r.output()).isZero();
                assertThat(r.output()).isEqualTo("unix://" + taskSocket.toRealPath());
                // containerd parses the file as it is: exactly the address, no newline
                assertThat(Files.readString(bundle.resolve("address"))).isEqualTo("unix://" + taskSocket.toRealPath());
            }
            // another kind's variable is not this one's
            String other = kind.equals("runc") ? "KUASAR_VMM_SANDBOXER_ADDRESS" : "KUASAR_RUNC_SANDBOXER_ADDRESS";
            Run wrong = run(kind, bundle, Map.of(other, sock.toString()), startArgs());
            assertThat(wrong.exit()).isEqualTo(1);
            assertThat(wrong.output()).contains("/run/" + kind + "-sandboxer.sock.ttrpc");
        }
    }

    @Test
    void startWithoutADaemonSaysWhatToDo() throws Exception {
        Path sock = dir.resolve("runc.sock");
        Run missing = run("runc", dir, Map.of("KUASAR_RUNC_SANDBOXER_ADDRESS", sock.toString()), startArgs());
        assertThat(missing.exit()).isEqualTo(1);
        assertThat(missing.output()).contains(sock + ".ttrpc").contains("No such file or directory")
                .contains("start runc-sandboxer --listen " + sock).contains("KUASAR_RUNC_SANDBOXER_ADDRESS");
        assertThat(dir.resolve("address")).doesNotExist();

        // the link is there but nothing listens (the daemon and its task proxy are gone)
        Path taskSocket = dir.resolve("task.sock");
        try (ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            server.bind(UnixDomainSocketAddress.of(taskSocket));
        }
        Files.createSymbolicLink(dir.resolve("runc.sock.ttrpc"), taskSocket);
        Run dead = run("runc", dir, Map.of("KUASAR_RUNC_SANDBOXER_ADDRESS", sock.toString()), startArgs());
        assertThat(dead.exit()).isEqualTo(1);
        assertThat(dead.output()).contains("runc-sandboxer does not answer on " + taskSocket.toRealPath())
                .contains("Connection refused");
        assertThat(dir.resolve("address")).doesNotExist();
    }

    @ParameterizedTest
    @ValueSource(strings = {"runc", "vmm"})
    void deleteAnswersADeleteResponse(String kind) throws Exception {
        Run r = run(kind, dir, Map.of(), "-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock",
                "-publish-binary", "/usr/bin/containerd", "-id", "b".repeat(64), "-bundle", dir.toString(), "delete");
        assertThat(r.exit()).isZero();
        DeleteResponse d = DeleteResponse.parseFrom(r.stdout());
        assertThat(d.getExitStatus()).isEqualTo(137);
        assertThat(d.getPid()).isZero();
        assertThat(Instant.ofEpochSecond(d.getExitedAt().getSeconds(), d.getExitedAt().getNanos()))
                .isCloseTo(Instant.now(), within(10, java.time.temporal.ChronoUnit.SECONDS));
    }

    @Test
    void versionHelpAndNonsense() throws Exception {
        Run v = run("wasm", dir, Map.of(), "-v");
        assertThat(v.exit()).isZero();
        assertThat(v.output()).startsWith("containerd-shim-kuasar-wasm-v2 (Kuasar Java) ");
        Run h = run("quark", dir, Map.of(), "--help");
        assertThat(h.exit()).isZero();
        assertThat(h.output()).contains("KUASAR_QUARK_SANDBOXER_ADDRESS").contains("/run/quark-sandboxer.sock");
        Run bad = run("runc", dir, Map.of(), "-id", "x", "frobnicate");
        assertThat(bad.exit()).isEqualTo(1);
        assertThat(bad.output()).contains("unsupported invocation: -id x frobnicate").contains("usage:");
    }
}
