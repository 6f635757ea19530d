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
        String[] cmd = new String[args.length + 1];
        cmd[0] = env.prefix().resolve("bin").resolve(bin).toString();
        System.arraycopy(args, 0, cmd, 1, args.length);
        return Host.run(Duration.ofSeconds(30), Map.of("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), null, cmd);
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
