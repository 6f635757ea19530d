package io.kuasar.quark.gvisor;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.grpc.Status;
import io.kuasar.sandbox.oci.OciRuntime;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * gVisor's {@code runsc} CLI as the gvisor backend drives it: one state root for the daemon, and the same global
 * flags on every call (runsc finds a sandbox by {@code --root} and configures its network at {@code start} from that
 * call's own {@code --network}). Every call logs runsc's errors as JSON into the caller's log file, so a failure is
 * reported with runsc's message (its exit status, 128, says nothing).
 */
public final class Runsc {
    private static final Logger LOG = LoggerFactory.getLogger(Runsc.class);
    private static final ObjectMapper JSON = new ObjectMapper();
    /** The first release with google/gvisor#10704 fixed (netstack refused every netns on Linux ≥ 6.7). */
    static final int NETNS_FIX_RELEASE = 20240807;
    /** Hides /proc/sys/net from the sandbox's start only: runsc's root-netns check reads it (google/gvisor#10704). */
    static final List<String> NETNS_FIX = List.of("unshare", "-m", "--propagation", "private", "sh", "-c",
            "mount -t tmpfs -o size=4k,mode=0555 none /proc/sys/net && exec \"$@\"", "kuasar-netns-fix");

    /** How the pod's network reaches the app kernel. */
    public enum Network {
        /** gVisor's own network stack (netstack) on the pod netns's interfaces: the default. */
        SANDBOX,
        /** host-kernel sockets inside the pod netns. */
        HOST,
        /** loopback only. */
        NONE;

        String flag() {
            return name().toLowerCase(Locale.ROOT);
        }
    }

    /** @param platform systrap (default), ptrace, or kvm where /dev/kvm is real hardware virtualisation */
    public record Config(Path binary, Path root, String platform, Network network) {
    }

    private final Config config;
    private final OciRuntime cli;
    private final OciRuntime sandboxStart;
    private final int release;

    public Runsc(Config config) throws IOException {
        this.config = config;
        if (!Files.isExecutable(config.binary())) {
            throw Status.FAILED_PRECONDITION.withDescription("gVisor's runsc is missing at " + config.binary()
                    + ": run `make runsc` (Debian trixie's runsc, unpacked privately) or pass --runsc PATH")
                    .asRuntimeException();
        }
        Files.createDirectories(config.root());
        this.cli = new OciRuntime(config.binary().toString(), config.root())
                .withGlobalFlags(List.of("--platform=" + config.platform(), "--network=" + config.network().flag()))
                .withInstallHint("run `make runsc` or pass --runsc PATH");
        this.release = release(config.binary());
        boolean fix = config.network() == Network.SANDBOX && release > 0 && release < NETNS_FIX_RELEASE;
        this.sandboxStart = fix ? cli.monitoredBy(NETNS_FIX) : cli;
        LOG.info("runsc {} (release {}), platform {}, network {}{}", config.binary(), release, config.platform(),
                config.network().flag(), fix ? " (with the /proc/sys/net start workaround of google/gvisor#10704)" : "");
    }

    public Config config() {
        return config;
    }

    /** The release date runsc reports ({@code runsc version 0.0~20240729.0} or {@code release-20240729.0}), or 0. */
    static int release(Path binary) {
        try {
            Process p = new ProcessBuilder(binary.toString(), "--version").redirectErrorStream(true).start();
            String out = new String(p.getInputStream().readAllBytes());
            p.waitFor();
            return parseRelease(out);
        } catch (IOException e) {
            return 0;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return 0;
        }
    }

    static int parseRelease(String versionOutput) {
        Matcher m = Pattern.compile("(20\\d{6})").matcher(versionOutput);
        return m.find() ? Integer.parseInt(m.group(1)) : 0;
    }

    public OciRuntime cli() {
        return cli;
    }

    /** {@code runsc start} of a sandbox (its root container), with the netns workaround when this runsc needs it. */
    public void startSandbox(String id, Path log, OciRuntime.Stdio stdio) throws IOException {
        sandboxStart.run("runsc start of sandbox " + id, log, List.of("start", id), stdio, null);
    }

    /** {@code runsc state}: null if runsc does not know the container. */
    public JsonNode state(String id, Path log) throws IOException {
        try {
            return JSON.readTree(cli.run("runsc state of " + id, log, List.of("state", id), OciRuntime.Stdio.none(),
                    null).output());
        } catch (OciRuntime.Failure e) {
            if (unknown(e)) {
                return null;
            }
            throw e;
        }
    }

    private static boolean unknown(OciRuntime.Failure e) {
        return e.reason().contains("does not exist") || e.reason().contains("no such file");
    }

    /**
     * {@code runsc delete --force}: the container's (or sandbox's) processes, gofer, state, cgroup and filestore; one
     * that runsc does not know is already gone. Failures are logged: the caller's own error is what matters.
     */
    public void deleteQuietly(String what, String id, Path log) {
        try {
            cli.run("runsc delete of " + what, log, List.of("delete", "--force", id), OciRuntime.Stdio.none(), null);
        } catch (OciRuntime.Failure e) {
            if (!unknown(e)) {
                LOG.warn("{}: runsc delete: {}", what, e.reason());
            }
        } catch (IOException | RuntimeException e) {
            LOG.warn("{}: runsc delete: {}", what, e.getMessage());
        }
    }

    /** A long-lived {@code runsc wait}: its stdout is {@code {"id":…,"exitStatus":N}} once the container ends. */
    public Process startWait(String id, Path log, Path output) throws IOException {
        return new ProcessBuilder(cli.command(log, List.of("wait", id)))
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                .redirectOutput(output.toFile()).redirectError(ProcessBuilder.Redirect.appendTo(log.toFile())).start();
    }

    /** The full command of a call, for long-lived calls the caller runs itself (an attached exec). */
    public List<String> command(Path log, List<String> args) {
        return new ArrayList<>(cli.command(log, args));
    }
}
