package io.kuasar.tests.e2e;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.kuasar.tests.cri.CriClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The installed {@code kuasar-ctl} against the suite's real daemons: {@code ps}, {@code inspect} and {@code check}
 * with a runc pod running, and {@code exec} into microVM pods through the guest's debug console (the suite's vmm
 * daemons run with {@code [hypervisor.task] debug = true}): over the second virtio-serial port (9p daemon) and over
 * vsock port 1025 (the VirtioFS/vsock daemon).
 */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class KuasarCtlTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final String MAIN = "io.kuasar.ctl.KuasarCtlMain";

    /** A finished kuasar-ctl: exit code, stdout, stderr, and how long it ran. */
    record Run(int exitCode, String stdout, String stderr, Duration took) {
    }

    private static Path ctl() {
        String p = System.getProperty("kuasar.e2e.prefix", "");
        Path prefix = p.isEmpty() ? Path.of(System.getProperty("kuasar.repo", "..")).toAbsolutePath().normalize()
                .resolve("tests/target/e2e-prefix") : Path.of(p);
        return prefix.resolve("bin/kuasar-ctl");
    }

    private static Process start(String... args) throws IOException {
        List<String> cmd = new ArrayList<>(List.of(ctl().toString()));
        cmd.addAll(List.of(args));
        return new ProcessBuilder(cmd).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                .start();
    }

    private static Run finish(Process p, long started) throws Exception {
        CompletableFuture<byte[]> out = CompletableFuture.supplyAsync(() -> readAll(p.getInputStream()));
        CompletableFuture<byte[]> err = CompletableFuture.supplyAsync(() -> readAll(p.getErrorStream()));
        if (!p.waitFor(90, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new AssertionError("kuasar-ctl did not exit in 90 s: " + p.info().commandLine().orElse(""));
        }
        return new Run(p.exitValue(), new String(out.get(5, TimeUnit.SECONDS), StandardCharsets.UTF_8),
                new String(err.get(5, TimeUnit.SECONDS), StandardCharsets.UTF_8),
                Duration.ofNanos(System.nanoTime() - started));
    }

    private static Run run(String... args) throws Exception {
        long started = System.nanoTime();
        return finish(start(args), started);
    }

    private static byte[] readAll(java.io.InputStream in) {
        try (in) {
            return in.readAllBytes();
        } catch (IOException e) {
            return new byte[0];
        }
    }

    @Test
    void psInspectAndCheckSeeTheRuncDaemonsPod(E2eEnvironment env) throws Exception {
        assertThat(ctl()).isExecutable();
        CriClient cri = env.cri();
        CriClient.Pod pod = cri.runPod("ctl", false);
        String c = cri.runContainer(pod, "c", "sleep", "1000");
        Path wd = env.workdir();
        String runc = "--sandboxer=runc=" + wd.resolve("runc.sock") + "," + env.stateDir();
        // a daemon that is down but has left its state: shown as down, with what its records say
        Path downDir = wd.resolve("ctl-down");
        Files.createDirectories(downDir.resolve("sandboxes/feedfacefeedface"));
        String down = "--sandboxer=wasm=" + wd.resolve("ctl-down.sock") + "," + downDir;

        Run json = run("ps", "-o", "json", runc, down);
        assertThat(json.exitCode()).as(json.stderr()).isZero();
        JsonNode j = JSON.readTree(json.stdout());
        JsonNode s = find(j.path("sandboxes"), pod.id());
        assertThat(s.path("sandboxer").asText()).isEqualTo("runc");
        assertThat(s.path("state").asText()).isEqualTo("SANDBOX_READY");
        assertThat(s.path("pid").asLong()).isPositive();
        assertThat(Host.alive(s.path("pid").asLong())).isTrue();
        assertThat(s.path("address").asText()).startsWith("ttrpc+unix://");
        assertThat(s.path("createdAt").asText()).isNotEmpty();
        assertThat(s.path("containers").toString()).contains(c);
        assertThat(j.path("sandboxers").get(0).path("up").asBoolean()).isTrue();
        assertThat(j.path("sandboxers").get(1).path("up").asBoolean()).isFalse();
        assertThat(find(j.path("sandboxes"), "feedfacefeedface").path("error").asText()).contains("no socket");

        Run table = run("ps", runc, down);
        assertThat(table.exitCode()).as(table.stderr()).isZero();
        assertThat(table.stdout().lines().findFirst().orElseThrow()).startsWith("SANDBOX").contains("STATE");
        assertThat(table.stdout()).containsPattern(pod.id().substring(0, 13) + " +runc +ready +\\d+ +1 ")
                .contains("wasm: down: no socket " + wd.resolve("ctl-down.sock"));

        Run inspect = run("inspect", runc, pod.id().substring(0, 10));
        assertThat(inspect.exitCode()).as(inspect.stderr()).isZero();
        JsonNode i = JSON.readTree(inspect.stdout());
        assertThat(i.path("id").asText()).isEqualTo(pod.id());
        assertThat(i.path("status").path("state").asText()).isEqualTo("SANDBOX_READY");
        assertThat(i.path("status").path("info").path("stateDir").asText()).endsWith(pod.id());
        assertThat(i.path("containers").toString()).contains(c);
        Run unknown = run("inspect", runc, "nosuchsandbox");
        assertThat(unknown.exitCode()).isEqualTo(1);
        assertThat(unknown.stderr()).contains("no sandbox nosuchsandbox");

        Path ctrdConfig = wd.resolve("ctrd/config.toml");
        Run check = run("check", runc, "--containerd-config=" + ctrdConfig);
        assertThat(check.stdout()).contains("OK   runc: socket: ")
                .contains("OK   containerd: runc: proxy plugin runc -> " + wd.resolve("runc.sock"))
                .contains("runc: runc: ").containsPattern("(OK|WARN) +cgroups: ");
        assertThat(check.exitCode()).as(check.stdout()).isEqualTo(check.stdout().contains("FAIL ") ? 1 : 0);
        assertThat(check.stdout()).as("only the runc daemon was named").doesNotContain("vmm:");

        // each run is a process of its own that leaves nothing behind
        assertThat(Host.pidsWithCmdline(MAIN)).isEmpty();
        cri.stopAndRemovePod(pod.id());
    }

    @Test
    void execRunsCommandsInAMicroVmThroughItsDebugConsole(E2eEnvironment env) throws Exception {
        CriClient cri = env.vmmCri();
        CriClient.Pod pod = cri.runPod("ctlvm", false);
        String dir = "--dir=" + env.vmmStateDir();
        String prefix = pod.id().substring(0, 12);
        Path sandboxDir = env.vmmStateDir().resolve("sandboxes").resolve(pod.id());
        assertThat(Files.getPosixFilePermissions(sandboxDir.resolve("debug.sock")))
                .isEqualTo(PosixFilePermissions.fromString("rw-------"));

        Run r = run("exec", dir, prefix, "--", "sh", "-c", "echo out-$((6*7)); echo err >&2; exit 42");
        assertThat(r.exitCode()).as(r.stderr()).isEqualTo(42);
        assertThat(r.stdout()).isEqualTo("out-42\nerr\n"); // the guest's terminal carries both streams, as written
        int agentFds = Integer.parseInt(run("exec", dir, prefix, "--", "sh", "-c", "ls /proc/1/fd | wc -l")
                .stdout().trim());

        // arguments arrive as given, quotes and spaces included; the command runs in the guest
        Run args = run("exec", dir, prefix, "--", "printf", "%s|", "a b", "it's", "$HOME");
        assertThat(args.exitCode()).isZero();
        assertThat(args.stdout()).isEqualTo("a b|it's|$HOME|");
        Run uname = run("exec", dir, pod.id(), "--", "uname", "-r");
        assertThat(uname.stdout().trim()).isNotEqualTo(Files.readString(Path.of("/proc/sys/kernel/osrelease")).trim());

        // timeout: 124, and the command's session in the guest is hung up
        Run timeout = run("exec", dir, "--timeout", "2", prefix, "--", "sleep", "31");
        assertThat(timeout.exitCode()).isEqualTo(124);
        assertThat(timeout.took()).isLessThan(Duration.ofSeconds(20));
        assertThat(timeout.stderr()).contains("timed out after 2s");
        // Ctrl-C: 130
        long started = System.nanoTime();
        Process p = start("exec", dir, prefix, "--", "sh", "-c", "echo started; exec sleep 32");
        byte[] first = p.getInputStream().readNBytes("started\n".length());
        assertThat(new String(first, StandardCharsets.UTF_8)).isEqualTo("started\n");
        Host.check(Duration.ofSeconds(10), java.util.Map.of(), null, "kill", "-INT", Long.toString(p.pid()));
        assertThat(finish(p, started).exitCode()).isEqualTo(130);
        String left = "";
        for (int i = 0; i < 50; i++) {
            left = run("exec", dir, prefix, "--", "sh", "-c", "ps -o args | grep -c '^sleep 3[12]' || true")
                    .stdout().trim();
            if (left.equals("0")) {
                break;
            }
            Thread.sleep(200);
        }
        assertThat(left).as("sleeps left in the guest after timeout and Ctrl-C").isEqualTo("0");
        // no descriptor of those sessions left in the guest agent, no kuasar-ctl left on the host
        assertThat(Integer.parseInt(run("exec", dir, prefix, "--", "sh", "-c", "ls /proc/1/fd | wc -l").stdout()
                .trim())).isEqualTo(agentFds);
        assertThat(Host.pidsWithCmdline(MAIN)).isEmpty();

        // errors: ambiguous/unknown ids, a daemon dir without the console
        Run none = run("exec", dir, "zzzz", "--", "true");
        assertThat(none.exitCode()).isEqualTo(125);
        assertThat(none.stderr()).contains("no sandbox zzzz");
        cri.stopAndRemovePod(pod.id());
    }

    @Test
    void execReachesTheConsoleOverVsockPort1025(E2eEnvironment env) throws Exception {
        CriClient cri = env.vmmVirtiofsCri();
        CriClient.Pod pod = cri.runPod("ctlvs", false);
        Path sandboxDir = env.vmmVirtiofsStateDir().resolve("sandboxes").resolve(pod.id());
        assertThat(sandboxDir.resolve("debug.sock")).doesNotExist();
        Run r = run("exec", "--dir=" + env.vmmVirtiofsStateDir(), pod.id().substring(0, 8), "--timeout", "60", "--",
                "sh", "-c", "grep -c vsock /proc/modules >/dev/null; echo over-vsock; exit 7");
        assertThat(r.exitCode()).as(r.stderr()).isEqualTo(7);
        assertThat(r.stdout()).isEqualTo("over-vsock\n");
        cri.stopAndRemovePod(pod.id());
    }

    private static JsonNode find(JsonNode sandboxes, String id) {
        for (JsonNode s : sandboxes) {
            if (s.path("id").asText().equals(id)) {
                return s;
            }
        }
        throw new AssertionError(id + " not in " + sandboxes);
    }
}
