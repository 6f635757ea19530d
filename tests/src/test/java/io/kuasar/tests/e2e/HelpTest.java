package io.kuasar.tests.e2e;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.time.Duration;
import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;

/** The installed binaries' --help and --version: complete, and the same shape for every daemon. */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class HelpTest {
    private static final List<String> DAEMONS = List.of("runc-sandboxer", "vmm-sandboxer", "wasm-sandboxer",
            "quark-sandboxer");
    /** What every daemon takes, as Kuasar's daemons do (plus the shared extras). */
    private static final List<String> SHARED = List.of("-l, --listen", "-d, --dir", "-c, --config", "--log-level",
            "--metrics-listen", "--containerd-ttrpc-address", "-h, --help", "-v, --version");

    private static Host.Result run(E2eEnvironment env, String bin, String... args) {
        return run(env, Map.of(), bin, args);
    }

    private static Host.Result run(E2eEnvironment env, Map<String, String> extraEnv, String bin, String... args) {
        String[] cmd = new String[args.length + 1];
        cmd[0] = env.prefix().resolve("bin").resolve(bin).toString();
        System.arraycopy(args, 0, cmd, 1, args.length);
        Map<String, String> e = new java.util.HashMap<>(extraEnv);
        e.put("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        return Host.run(Duration.ofSeconds(30), e, null, cmd);
    }

    @Test
    void aDaemonThatCannotStartSaysWhyAndWhatToDoWithoutAStackTrace(E2eEnvironment env) throws Exception {
        java.nio.file.Path scratch = java.nio.file.Files.createTempDirectory(env.workdir(), "help-");
        String sock = scratch.resolve("x.sock").toString();
        String dir = scratch.resolve("state").toString();
        record Case(Map<String, String> env, List<String> args, int exit, String says, String daemon) {
            Case(Map<String, String> env, List<String> args, int exit, String says) {
                this(env, args, exit, says, "runc-sandboxer");
            }
        }
        List<Case> cases = List.of(
                new Case(Map.of(), List.of("--listen", sock, "--dir", "/proc/kuasar-no"), 1,
                        "cannot start: /proc/kuasar-no does not exist; check --listen, --dir"),
                new Case(Map.of(), List.of("--listen", sock, "--dir", dir, "--metrics-listen", "0.0.0.0:9"), 1,
                        "only loopback addresses are allowed"),
                new Case(Map.of("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift"), List.of("--listen", sock, "--dir", dir), 2,
                        "OTEL_EXPORTER_OTLP_PROTOCOL=thrift is not supported; use grpc or http/protobuf"),
                new Case(Map.of(), List.of("--listen", sock, "--dir", dir, "--config", "/nonexistent.toml"), 2,
                        "config file /nonexistent.toml does not exist"),
                new Case(Map.of(), List.of("--listen", sock, "--dir", env.stateDir().toString()), 1,
                        "another sandboxer is already serving " + env.stateDir()),
                new Case(Map.of(), List.of("--listen", sock, "--dir", dir, "--backend", "gvisor", "--runsc",
                        "/nonexistent/runsc"), 1, "cannot start: gVisor's runsc is missing at /nonexistent/runsc: run "
                        + "`make runsc`", "quark-sandboxer"));
        for (Case c : cases) {
            Host.Result r = run(env, c.env(), c.daemon(), c.args().toArray(String[]::new));
            assertThat(r.exitCode()).as(c.args() + ": " + r.output()).isEqualTo(c.exit());
            assertThat(r.output()).as(String.valueOf(c.args())).contains(c.says()).doesNotContain("\tat ");
        }
    }

    @Test
    void everyDaemonDocumentsTheSharedFlagsSignalsAndEnvironment(E2eEnvironment env) {
        for (String d : DAEMONS) {
            Host.Result help = run(env, d, "--help");
            assertThat(help.exitCode()).as(d + " --help").isZero();
            String text = help.output().replaceAll("\\s+", " "); // picocli wraps at 80 columns
            assertThat(text).as(d).startsWith("Usage: " + d + " ");
            for (String flag : SHARED) {
                assertThat(text).as(d + " documents " + flag).contains(flag);
            }
            assertThat(text).as(d).contains("(default: /run/" + d + ".sock)", "SIGUSR1", "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "Exit codes:", "docs/observability.md").doesNotContain("${");
            Host.Result version = run(env, d, "--version");
            assertThat(version.exitCode()).as(d + " --version").isZero();
            assertThat(version.output()).startsWith(d + " ");
            Host.Result bad = run(env, d, "--no-such-flag");
            assertThat(bad.exitCode()).as(d + " with an unknown flag").isEqualTo(2);
            assertThat(bad.output()).contains("Unknown option: '--no-such-flag'").contains("Usage: " + d);
        }
    }

    @Test
    void kuasarCtlAndTheShimLaunchersHaveHelpAndVersionToo(E2eEnvironment env) {
        Host.Result ctl = run(env, "kuasar-ctl", "--help");
        assertThat(ctl.exitCode()).isZero();
        assertThat(ctl.output()).contains("exec", "ps", "inspect", "check", "-h, --help", "-v, --version");
        assertThat(run(env, "kuasar-ctl", "-v").output()).startsWith("kuasar-ctl ");
        for (String sub : List.of("exec", "ps", "inspect", "check")) {
            Host.Result h = run(env, "kuasar-ctl", sub, "--help");
            assertThat(h.exitCode()).as("kuasar-ctl " + sub + " --help").isZero();
            assertThat(h.output()).startsWith("Usage: kuasar-ctl " + sub).contains("-h, --help");
        }
        for (String kind : List.of("runc", "vmm", "wasm", "quark")) {
            String shim = "containerd-shim-kuasar-" + kind + "-v2";
            Host.Result h = run(env, shim, "--help");
            assertThat(h.exitCode()).as(shim + " --help").isZero();
            assertThat(h.output()).contains("usage: " + shim, "KUASAR_" + kind.toUpperCase() + "_SANDBOXER_ADDRESS");
            assertThat(run(env, shim, "-v").output()).startsWith(shim + " ");
        }
    }
}
