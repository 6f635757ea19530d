package io.kuasar.ctl;

import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.io.PrintStream;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

/**
 * {@code kuasar-ctl}: Kuasar's diagnostic tool. {@code exec} runs a command in a microVM through its guest's debug
 * console (Kuasar's protocol); beyond Kuasar, {@code ps} and {@code inspect} show the sandboxes of every sandboxer
 * daemon on the node, and {@code check} diagnoses the node. docs/kuasar-ctl.md.
 */
@Command(name = "kuasar-ctl", version = "kuasar-ctl 0.1.0 (Kuasar Java)",
        description = "Kuasar's node tool: exec into a microVM's debug console, list and inspect the sandboxes of "
                + "every sandboxer daemon, check the node.",
        subcommands = {KuasarCtlMain.Exec.class, KuasarCtlMain.Ps.class, KuasarCtlMain.Inspect.class,
                KuasarCtlMain.Check.class})
public final class KuasarCtlMain implements Callable<Integer> {
    static final int EXIT_ERROR = 1;

    /** -h/--help on the tool and on each command, worded as the daemons' (their -v/--version too). */
    static final class HelpOption {
        @Option(names = {"-h", "--help"}, usageHelp = true, description = "Show this help and exit")
        boolean help;
    }

    @CommandLine.Mixin
    HelpOption helpOption;

    @Option(names = {"-v", "--version"}, versionHelp = true, description = "Print version information and exit")
    boolean versionRequested;

    @Override
    public Integer call() {
        CommandLine.usage(this, System.err);
        return 2;
    }

    /** The daemons to look at: the defaults, or those named with --sandboxer. */
    static class DaemonOptions {
        @Option(names = "--sandboxer", paramLabel = "name=socket[,dir]", description = "A sandboxer daemon to look at "
                + "instead of the defaults (runc, vmm, wasm and quark at their default sockets and state dirs); "
                + "repeat for more. The name starts with its kind: runc, vmm, wasm or quark.")
        List<String> sandboxers = new ArrayList<>();

        @Option(names = "--timeout", paramLabel = "seconds", description = "Per call to a daemon (default: "
                + "${DEFAULT-VALUE})")
        int timeoutSeconds = 5;

        List<Sandboxers.Sandboxer> list() {
            return Sandboxers.of(sandboxers);
        }

        Duration timeout() {
            return Duration.ofSeconds(Math.max(1, timeoutSeconds));
        }
    }

    @Command(name = "exec", description = "Run a command in a microVM pod's guest through its debug console (needs "
            + "[hypervisor.task] debug = true in vmm-sandboxer's config). Exit code: the command's; 124 on timeout, "
            + "130 on Ctrl-C, 125 when kuasar-ctl itself fails.")
    static final class Exec implements Callable<Integer> {
        @CommandLine.Mixin
        HelpOption helpOption;

        @Parameters(index = "0", paramLabel = "SANDBOX", description = "Sandbox id or a unique prefix of it")
        String sandbox;

        @Parameters(index = "1..*", paramLabel = "COMMAND", description = "The command and its arguments (after --)")
        List<String> command = new ArrayList<>();

        @Option(names = "--timeout", paramLabel = "seconds", description = "Give up after this long (exit 124); 0: "
                + "wait (default: ${DEFAULT-VALUE})")
        long timeoutSeconds = 0;

        @Option(names = "--dir", description = "vmm-sandboxer's state directory (default: ${DEFAULT-VALUE})")
        Path dir = Path.of("/run/kuasar-vmm");

        @Override
        public Integer call() throws Exception {
            try {
                return DebugConsoleClient.exec(dir, sandbox, command, Duration.ofSeconds(Math.max(0, timeoutSeconds)),
                        System.out, System.err);
            } catch (CtlException | java.io.UncheckedIOException e) {
                System.out.flush();
                System.err.println("kuasar-ctl: " + e.getMessage());
                return DebugConsoleClient.EXIT_FAILED;
            }
        }
    }

    @Command(name = "ps", description = "List the sandboxes of every sandboxer daemon on the node.")
    static final class Ps implements Callable<Integer> {
        @CommandLine.Mixin
        HelpOption helpOption;

        @CommandLine.Mixin
        DaemonOptionsMixin daemons;

        @Option(names = {"-o", "--output"}, description = "table or json (default: ${DEFAULT-VALUE})")
        String output = "table";

        @Option(names = "--no-trunc", description = "Full sandbox ids")
        boolean noTrunc;

        @Override
        public Integer call() throws Exception {
            if (!output.equals("table") && !output.equals("json")) {
                throw new CtlException("-o " + output + ": use table or json");
            }
            Overview.Result res = Overview.gather(daemons.list(), daemons.timeout());
            System.out.print(output.equals("json") ? Overview.json(res) : Overview.table(res, Instant.now(), noTrunc));
            return 0;
        }
    }

    @Command(name = "inspect", description = "Print a sandbox's full Status (verbose) from its daemon, as JSON.")
    static final class Inspect implements Callable<Integer> {
        @CommandLine.Mixin
        HelpOption helpOption;

        @CommandLine.Mixin
        DaemonOptionsMixin daemons;

        @Parameters(index = "0", paramLabel = "SANDBOX", description = "Sandbox id or a unique prefix of it")
        String sandbox;

        @Override
        public Integer call() throws Exception {
            Resolver.Found f = Resolver.resolve(daemons.list(), sandbox);
            String json = Overview.inspect(f, daemons.timeout());
            System.out.print(json);
            return json.contains("\"error\" :") ? EXIT_ERROR : 0;
        }
    }

    @Command(name = "check", description = "Diagnose the node: one line per check, OK, WARN or FAIL with the fix. "
            + "Exit code 0 without a FAIL, else 1.")
    static final class Check implements Callable<Integer> {
        @CommandLine.Mixin
        HelpOption helpOption;

        @CommandLine.Mixin
        DaemonOptionsMixin daemons;

        @Option(names = "--containerd-config", description = "containerd's config (default: ${DEFAULT-VALUE})")
        Path containerdConfig = Path.of("/etc/containerd/config.toml");

        @Option(names = "--vmm-config", description = "vmm-sandboxer's config (default: ${DEFAULT-VALUE})")
        Path vmmConfig = Path.of("/var/lib/kuasar/config.toml");

        @Option(names = "--root", hidden = true, description = "Look at this tree instead of / (tests)")
        Path root = Path.of("/");

        @Override
        public Integer call() {
            Duration timeout = daemons.timeout();
            List<Checks.Result> results = new Checks(root, daemons.list(), containerdConfig, vmmConfig,
                    s -> SandboxApi.probe(s.socket(), timeout)).run();
            PrintStream out = System.out;
            results.forEach(out::println);
            return results.stream().anyMatch(r -> r.level() == Checks.Level.FAIL) ? EXIT_ERROR : 0;
        }
    }

    /** picocli mixin form of {@link DaemonOptions}. */
    static final class DaemonOptionsMixin extends DaemonOptions {
    }

    static int run(String... args) {
        CommandLine cl = new CommandLine(new KuasarCtlMain());
        cl.setExecutionExceptionHandler((e, cmd, parsed) -> {
            cmd.getErr().println("kuasar-ctl: " + (e instanceof CtlException || e instanceof java.io.IOException
                    || e instanceof java.io.UncheckedIOException ? e.getMessage() : e));
            return EXIT_ERROR;
        });
        return cl.execute(args);
    }

    public static void main(String[] args) {
        io.kuasar.sandbox.logging.StderrLogging.setLevel(System.getProperty("kuasar.log.level", "warn"));
        int rc = run(args);
        System.out.flush();
        System.exit(rc);
    }
}
