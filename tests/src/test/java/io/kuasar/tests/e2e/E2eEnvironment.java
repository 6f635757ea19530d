package io.kuasar.tests.e2e;

import io.kuasar.tests.cri.CriClient;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.UnaryOperator;
import java.util.stream.Stream;

/**
 * One private containerd 2.x plus one runc-sandboxer for the whole test run (see {@link E2eExtension}).
 *
 * <pre>
 *   /tmp/kuasar-e2e-NNN/            workdir (short: every socket path must fit into sun_path, 108 bytes)
 *     runc.sock                     runc-sandboxer's Sandbox API (containerd's proxy plugin 'runc')
 *     state/                        runc-sandboxer --dir: one directory per sandbox, and task.sock
 *     sandboxer.log                 runc-sandboxer's output (--log-level debug)
 *     ctrd/                         env.sh start-containerd workdir: config.toml, containerd.sock, containerd.log, ...
 *     logs/                         pod log directories (CRI log_directory)
 * </pre>
 *
 * Knobs (system properties): {@code kuasar.repo} (set by the pom), {@code kuasar.e2e.prefix} (an existing
 * {@code make install} prefix; default {@code <repo>/tests/target/e2e-prefix}, built when missing),
 * {@code kuasar.e2e.keep=true} (leave the workdir for inspection). Environment: {@code KUASAR_E2E_BRIDGE} /
 * {@code KUASAR_E2E_SUBNET} (the CNI bridge and /24; defaults below keep clear of env.sh's defaults, which
 * a hand-started containerd may be using: host-local IPAM state is per workdir, so two daemons on one
 * bridge could hand out the same address).
 */
public final class E2eEnvironment implements AutoCloseable {
    public static final String HANDLER = "kuasar-runc";
    /** The handler of the runc-sandboxer that ReleaseTest installs from the release tarball. */
    public static final String RELEASE_HANDLER = "kuasar-release";
    public static final String RUNC_ROOT = "/run/containerd/runc/k8s.io";
    static final String DEFAULT_BRIDGE = "kuasare2e0";
    static final String DEFAULT_SUBNET = "10.88.78.0/24";

    private final Path repo;
    private final Path prefix;
    private final Path envSh;
    private final Path workdir;
    private final Path ctrdDir;
    private final Path sandboxerSock;
    private final Path stateDir;
    private final Path sandboxerLog;
    private final Map<String, String> childEnv = new HashMap<>();
    private final String subnet;
    private final AtomicBoolean failed = new AtomicBoolean();
    private final AtomicBoolean closed = new AtomicBoolean();
    private Process sandboxer;
    private CriClient cri;
    /**
     * The microVM sandboxers, each started by the first test that asks for it: 9p ({@link #vmmCri()}) and VirtioFS
     * ({@link #vmmVirtiofsCri()}).
     */
    private final VmmDaemon vmm;
    private final VmmDaemon vmmfs;
    /** The Wasm sandboxer, started by the first test that asks for it ({@link #wasmCri()}). */
    private final VmmDaemon wasm;
    /** quark-sandboxer with its gVisor backend, started by the first test that asks for it ({@link #quarkCri()}). */
    private final VmmDaemon quark;
    private final Thread shutdownHook = new Thread(this::close, "e2e-environment-cleanup");
    /**
     * containerd 1.7 with the kuasar runtimes in shim mode (containerd-shim-kuasar-&lt;kind&gt;-v2), on a bridge and
     * subnet of its own, and one daemon of each kind for it (their task events go to it): started by the first test
     * that asks ({@link #ctrd17Cri}).
     */
    private final Path ctrd17Dir;
    private final Map<String, VmmDaemon> ctrd17Daemons = new java.util.LinkedHashMap<>();
    private boolean ctrd17Started;

    /**
     * A containerd 2.x and a runc-sandboxer for it that both send OTLP traces where a test says
     * ({@link #tracedCri}), on a bridge and subnet of their own.
     */
    private final Path tracedDir;
    private final Map<String, String> tracedEnv = new HashMap<>();
    private VmmDaemon traced;

    private E2eEnvironment() throws IOException {
        repo = Path.of(System.getProperty("kuasar.repo", "..")).toAbsolutePath().normalize();
        String p = System.getProperty("kuasar.e2e.prefix", "");
        prefix = p.isEmpty() ? repo.resolve("tests/target/e2e-prefix") : Path.of(p).toAbsolutePath();
        envSh = repo.resolve("tests/e2e/env.sh");
        workdir = Files.createTempDirectory(Path.of("/tmp"), "kuasar-e2e-");
        ctrdDir = workdir.resolve("ctrd");
        sandboxerSock = workdir.resolve("runc.sock");
        stateDir = workdir.resolve("state");
        sandboxerLog = workdir.resolve("sandboxer.log");
        // Not below the workdir: QEMU's sockets live in <dir>/sandboxes/<64-hex id>/ and must fit into sun_path.
        String n = workdir.getFileName().toString().replaceAll("\\D", "").substring(0, 6);
        // Not below the workdir: QEMU's sockets live in <dir>/sandboxes/<64-hex id>/ and must fit into sun_path.
        // The 9p daemon makes a VM template: pods of the default size start from it once it is ready
        // (VmmTemplateTest), the others (and any before) boot.
        vmm = new VmmDaemon("kuasar-vmm", workdir.resolve("vmm.sock"), Path.of("/run/kvmm-" + n),
                workdir.resolve("vmm-sandboxer.log"), d -> launchVmm(d.sock, d.dir, d.log,
                c -> c.replace("enable_template = false", "enable_template = true")));
        vmmfs = new VmmDaemon("kuasar-vmm-virtiofs", workdir.resolve("vmmfs.sock"), Path.of("/run/kvfs-" + n),
                workdir.resolve("vmmfs-sandboxer.log"), d -> launchVmm(d.sock, d.dir, d.log,
                c -> c.replace("share_fs = \"Virtio9P\"", "share_fs = \"VirtioFS\"")
                        .replace("use_vsock = false", "use_vsock = true")));
        wasm = new VmmDaemon("kuasar-wasm", workdir.resolve("wasm.sock"), workdir.resolve("wasm-state"),
                workdir.resolve("wasm-sandboxer.log"), d -> launchWasm(d, ctrdDir));
        // Not below the workdir: console sockets live in <dir>/console/ and must fit into sun_path.
        quark = new VmmDaemon("kuasar-quark", workdir.resolve("quark.sock"), Path.of("/run/kq-" + n),
                workdir.resolve("quark-sandboxer.log"), d -> launchGvisor(d, ctrdDir));
        String bridge = envOr("KUASAR_E2E_BRIDGE", DEFAULT_BRIDGE);
        subnet = envOr("KUASAR_E2E_SUBNET", DEFAULT_SUBNET);
        childEnv.put("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        childEnv.put("KUASAR_E2E_BRIDGE", bridge);
        childEnv.put("KUASAR_E2E_SUBNET", subnet);
        childEnv.put("KUASAR_SHIM_DIR", prefix.resolve("bin").toString());
        childEnv.put("KUASAR_E2E_VMM_SOCKET", vmm.sock.toString());
        childEnv.put("KUASAR_E2E_VMMFS_SOCKET", vmmfs.sock.toString());
        childEnv.put("KUASAR_E2E_WASM_SOCKET", wasm.sock.toString());
        childEnv.put("KUASAR_E2E_QUARK_SOCKET", quark.sock.toString());
        childEnv.put("KUASAR_E2E_RELEASE_SOCKET", releaseSocket().toString());

        tracedDir = workdir.resolve("ctrdt");
        ctrd17Dir = workdir.resolve("ctrd17");
        java.util.function.Supplier<Path> ctrd17Sock = () -> ctrd17Dir.resolve("containerd.sock");
        ctrd17Daemons.put("runc", new VmmDaemon("kuasar-runc", workdir.resolve("c17-runc.sock"),
                workdir.resolve("c17-runc-state"), workdir.resolve("c17-runc-sandboxer.log"),
                d -> launchDaemon("runc-sandboxer", d.sock, d.dir, d.log, List.of(), ctrd17Dir), ctrd17Sock));
        ctrd17Daemons.put("wasm", new VmmDaemon("kuasar-wasm", workdir.resolve("c17-wasm.sock"),
                workdir.resolve("c17-wasm-state"), workdir.resolve("c17-wasm-sandboxer.log"),
                d -> launchWasm(d, ctrd17Dir), ctrd17Sock));
        ctrd17Daemons.put("quark", new VmmDaemon("kuasar-quark", workdir.resolve("c17-quark.sock"),
                Path.of("/run/k17q-" + n), workdir.resolve("c17-quark-sandboxer.log"),
                d -> launchGvisor(d, ctrd17Dir), ctrd17Sock));
        ctrd17Daemons.put("vmm", new VmmDaemon("kuasar-vmm", workdir.resolve("c17-vmm.sock"),
                Path.of("/run/k17v-" + n), workdir.resolve("c17-vmm-sandboxer.log"),
                d -> launchVmm(d.sock, d.dir, d.log, c -> c, ctrd17Dir), ctrd17Sock));
    }

    /** The environment env.sh runs containerd 1.7 with: its bridge, subnet, and where each kind's daemon listens. */
    private Map<String, String> ctrd17Env() {
        Map<String, String> env = new HashMap<>(childEnv);
        env.put("KUASAR_E2E_CTRD", "1.7");
        env.put("KUASAR_E2E_BRIDGE", "kuasare2e7");
        env.put("KUASAR_E2E_SUBNET", "10.88.81.0/24"); // not the e2e (78) or bench (79) one
        ctrd17Daemons.forEach((kind, d) -> env.put("KUASAR_" + kind.toUpperCase(java.util.Locale.ROOT)
                + "_SANDBOXER_ADDRESS", d.sock.toString()));
        return env;
    }

    /**
     * A CRI client of containerd 1.7 for the {@code kuasar-<kind>} runtime (shim mode); the first call starts
     * containerd 1.7, the first call for a kind that kind's daemon.
     */
    public synchronized CriClient ctrd17Cri(String kind) {
        VmmDaemon d = ctrd17Daemons.get(kind);
        if (d == null) {
            throw new IllegalArgumentException("no sandboxer kind " + kind);
        }
        if (!ctrd17Started) {
            Host.check(Duration.ofSeconds(90), ctrd17Env(), workdir, envSh.toString(), "start-containerd",
                    ctrd17Dir.toString(), workdir.resolve("c17-none.sock").toString());
            ctrd17Started = true;
        }
        return d.cri();
    }

    /**
     * A CRI client of a containerd 2.x whose {@code kuasar-runc} pods run on a runc-sandboxer with
     * {@code [sandbox] enable_tracing = true}; both processes get {@code otel} (the OTLP exporter's standard
     * variables) in their environment. Started by the first call; later calls must pass the same settings.
     */
    public synchronized CriClient tracedCri(Map<String, String> otel) {
        if (traced == null) {
            tracedEnv.putAll(childEnv);
            tracedEnv.putAll(otel);
            tracedEnv.put("KUASAR_E2E_BRIDGE", "kuasare2et");
            tracedEnv.put("KUASAR_E2E_SUBNET", "10.88.82.0/24"); // not the e2e (78), bench (79) or 1.7 (81) one
            Path config = workdir.resolve("traced.toml");
            try {
                Files.writeString(config, "[sandbox]\nenable_tracing = true\n");
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            traced = new VmmDaemon("kuasar-runc", workdir.resolve("trc-runc.sock"), workdir.resolve("trc-state"),
                    workdir.resolve("trc-sandboxer.log"), d -> launchDaemon("runc-sandboxer", d.sock, d.dir, d.log,
                    List.of("--config", config.toString()), tracedDir, tracedEnv), () -> tracedDir.resolve("containerd.sock"));
            traced.cri(); // the daemon first: containerd's proxy plugin dials its socket lazily anyway
            Host.check(Duration.ofSeconds(90), tracedEnv, workdir, envSh.toString(), "start-containerd",
                    tracedDir.toString(), traced.sock.toString());
        } else if (!tracedEnv.entrySet().containsAll(otel.entrySet())) {
            throw new IllegalStateException("the traced containerd already runs with other OTLP settings");
        }
        return traced.cri();
    }

    /** The Sandbox API socket and the log of the traced runc-sandboxer ({@link #tracedCri}). */
    public Path tracedSandboxerSocket() {
        return traced.sock;
    }

    public Path tracedSandboxerLog() {
        return traced.log;
    }

    /** The pid of the traced runc-sandboxer ({@link #tracedCri}). */
    public long tracedSandboxerPid() {
        return traced.process.pid();
    }

    /** Stops containerd 1.7 (pods keep running) and starts it again on the same state. */
    public synchronized void restartCtrd17() {
        Host.check(Duration.ofSeconds(30), ctrd17Env(), workdir, envSh.toString(), "stop-containerd",
                ctrd17Dir.toString());
        Host.check(Duration.ofSeconds(90), ctrd17Env(), workdir, envSh.toString(), "start-containerd",
                ctrd17Dir.toString(), workdir.resolve("c17-none.sock").toString());
    }

    /** kill -9 of the daemon of {@code kind} that serves containerd 1.7, then a new one on the same socket and dir. */
    public synchronized void killAndRestartCtrd17Sandboxer(String kind) {
        ctrd17Daemons.get(kind).killAndRestart();
    }

    /** containerd 1.7's root and state directories (CRI's pod files, task bundles). */
    public Path ctrd17Dir() {
        return ctrd17Dir;
    }

    /** The --dir and log of the daemon of {@code kind} that serves containerd 1.7. */
    public Path ctrd17StateDir(String kind) {
        return ctrd17Daemons.get(kind).dir;
    }

    public Path ctrd17Log(String kind) {
        return ctrd17Daemons.get(kind).log;
    }

    public Path ctrd17Socket(String kind) {
        return ctrd17Daemons.get(kind).sock;
    }

    private static String envOr(String name, String dflt) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? dflt : v;
    }

    /** Sets everything up; on any failure, tears down what was started and rethrows. */
    static E2eEnvironment start() {
        E2eEnvironment env;
        try {
            env = new E2eEnvironment();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        Runtime.getRuntime().addShutdownHook(env.shutdownHook);
        try {
            env.doStart();
            return env;
        } catch (RuntimeException | Error e) {
            env.failed.set(true);
            env.close();
            throw e;
        }
    }

    private void doStart() {
        long t0 = System.nanoTime();
        log("workdir " + workdir);
        Host.check(Duration.ofMinutes(15), childEnv, repo, envSh.toString(), "setup");
        Path launcher = prefix.resolve("bin/runc-sandboxer");
        ensureInstalled(launcher);
        if (!Files.isExecutable(prefix.resolve("bin/containerd-shim-kuasar-runc-v1"))) {
            throw new IllegalStateException(prefix + "/bin/containerd-shim-kuasar-runc-v1 missing: broken install");
        }
        startSandboxer(launcher);
        Host.check(Duration.ofSeconds(90), childEnv, workdir, envSh.toString(), "start-containerd",
                ctrdDir.toString(), sandboxerSock.toString());
        cri = new CriClient(containerdSock(), HANDLER, workdir.resolve("logs"));
        String v = cri.version().getRuntimeVersion();
        log(String.format("up in %d ms: containerd %s, runc-sandboxer pid %d", (System.nanoTime() - t0) / 1_000_000,
                v, sandboxer.pid()));
    }

    /**
     * A missing default prefix is built and installed ({@code make install}, which runs the Maven build first).
     * An existing one is refreshed when it differs from the module build outputs (the README's test command builds
     * first), by the Makefile's own install recipe with the build step skipped ({@code MVN=true}): testing a stale
     * sandboxer would be worse than useless. A prefix given with {@code -Dkuasar.e2e.prefix} is used as it is.
     */
    private void ensureInstalled(Path launcher) {
        boolean explicit = !System.getProperty("kuasar.e2e.prefix", "").isEmpty();
        Map<String, String> env = new HashMap<>(childEnv);
        env.put("JAVA_HOME", System.getProperty("java.home"));
        if (!Files.isExecutable(launcher)) {
            if (explicit) {
                throw new IllegalStateException(launcher + " missing: -Dkuasar.e2e.prefix must name an installed prefix");
            }
            boolean built = Files.isExecutable(repo.resolve("runc-sandboxer/target/libexec/kuasar-holder"))
                    && Files.isDirectory(repo.resolve("runc-sandboxer/target/lib"));
            // Inside `make test` the reactor has already built runc-sandboxer: install without a nested Maven run.
            log("no install at " + prefix + ": make install PREFIX=" + prefix + (built ? " MVN=true" : ""));
            if (built) {
                Host.check(Duration.ofMinutes(2), env, repo, "make", "install", "PREFIX=" + prefix, "MVN=true");
            } else {
                Host.check(Duration.ofMinutes(15), env, repo, "make", "install", "PREFIX=" + prefix,
                        "MVN_FLAGS=-B -q -o");
            }
            return;
        }
        String stale = explicit ? null : staleness();
        if (stale != null) {
            log("install at " + prefix + " is stale (" + stale + "): make install MVN=true (no rebuild)");
            Host.check(Duration.ofMinutes(2), env, repo, "make", "install", "PREFIX=" + prefix, "MVN=true");
        }
    }

    /** Why the installed files differ from the module build outputs, or null if they do not (or cannot tell). */
    private String staleness() {
        Path target = repo.resolve("runc-sandboxer/target");
        Path lib = prefix.resolve("lib/kuasar/runc-sandboxer");
        try {
            if (!Files.isDirectory(target.resolve("lib"))) {
                return null;
            }
            List<Path> built = new ArrayList<>();
            try (Stream<Path> s = Files.list(target.resolve("lib"))) {
                s.filter(p -> p.toString().endsWith(".jar")).forEach(built::add);
            }
            try (Stream<Path> s = Files.list(target)) {
                s.filter(p -> p.getFileName().toString().matches("runc-sandboxer-.*[0-9T]\\.jar")).forEach(built::add);
            }
            List<String> names = new ArrayList<>();
            for (Path b : built) {
                names.add(b.getFileName().toString());
                if (differs(b, lib.resolve(b.getFileName()))) {
                    return b.getFileName() + " changed";
                }
            }
            try (Stream<Path> s = Files.list(lib)) {
                for (Path installed : s.toList()) {
                    if (!names.contains(installed.getFileName().toString())) {
                        return installed.getFileName() + " no longer built";
                    }
                }
            }
            if (differs(target.resolve("libexec/kuasar-ttrpc-proxy"),
                    prefix.resolve("libexec/kuasar/kuasar-ttrpc-proxy"))) {
                return "kuasar-ttrpc-proxy changed";
            }
            if (differs(target.resolve("libexec/kuasar-monitor"), prefix.resolve("libexec/kuasar/kuasar-monitor"))) {
                return "kuasar-monitor changed";
            }
            if (differs(target.resolve("libexec/kuasar-holder"), prefix.resolve("libexec/kuasar/kuasar-holder"))) {
                return "kuasar-holder changed";
            }
            for (String kind : List.of("runc", "vmm", "wasm", "quark")) {
                for (String v : List.of("-v1", "-v2")) {
                    String shim = "containerd-shim-kuasar-" + kind + v;
                    if (differs(target.resolve("libexec/" + shim), prefix.resolve("bin/" + shim))) {
                        return shim + " changed";
                    }
                }
            }
            if (differs(target.resolve("libexec/kuasar-fifo-keeper"), prefix.resolve("libexec/kuasar/kuasar-fifo-keeper"))) {
                return "kuasar-fifo-keeper changed";
            }
            for (String module : List.of("vmm-sandboxer", "kuasar-ctl")) {
                String changed = jarsDiffer(module);
                if (changed != null) {
                    return changed;
                }
            }
            return null;
        } catch (IOException e) {
            return "cannot compare: " + e.getMessage();
        }
    }

    /** Why a module's installed jars (lib/kuasar/{@code module}) differ from its build's, or null. */
    private String jarsDiffer(String module) throws IOException {
        Path target = repo.resolve(module).resolve("target");
        if (!Files.isDirectory(target.resolve("lib"))) {
            return null;
        }
        if (!Files.isExecutable(prefix.resolve("bin").resolve(module))) {
            return "bin/" + module + " missing";
        }
        List<Path> built = new ArrayList<>();
        try (Stream<Path> s = Files.list(target.resolve("lib"))) {
            s.filter(p -> p.toString().endsWith(".jar")).forEach(built::add);
        }
        try (Stream<Path> s = Files.list(target)) {
            s.filter(p -> p.getFileName().toString().matches(module + "-.*[0-9T]\\.jar")).forEach(built::add);
        }
        for (Path b : built) {
            if (differs(b, prefix.resolve("lib/kuasar").resolve(module).resolve(b.getFileName()))) {
                return module + ": " + b.getFileName() + " changed";
            }
        }
        return null;
    }

    private static boolean differs(Path built, Path installed) throws IOException {
        return Files.exists(built) && (!Files.exists(installed) || Files.mismatch(built, installed) != -1);
    }

    private void startSandboxer(Path launcher) {
        ProcessBuilder pb = new ProcessBuilder(launcher.toString(),
                "--listen", sandboxerSock.toString(),
                "--dir", stateDir.toString(),
                "--containerd-ttrpc-address", ctrdDir.resolve("containerd.sock.ttrpc").toString(),
                "--log-level", "debug",
                "--metrics-listen", "unix:" + workdir.resolve("metrics.sock"))
                .redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.appendTo(sandboxerLog.toFile()))
                .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
        pb.environment().putAll(childEnv);
        try {
            sandboxer = pb.start();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot start " + launcher, e);
        }
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (!Files.exists(sandboxerSock)) {
            if (!sandboxer.isAlive()) {
                throw new IllegalStateException("runc-sandboxer exited " + sandboxer.exitValue() + " during startup:\n"
                        + Host.tail(sandboxerLog, 40));
            }
            if (System.nanoTime() > end) {
                throw new IllegalStateException("runc-sandboxer did not create " + sandboxerSock + " within 30 s:\n"
                        + Host.tail(sandboxerLog, 40));
            }
            sleep(50);
        }
    }

    /**
     * A CRI client for the {@code kuasar-vmm} handler. The first call brings the guest image up to date
     * ({@code make vmm-image}, cached) and starts vmm-sandboxer with the shipped QEMU config.
     */
    public CriClient vmmCri() {
        return vmm.cri();
    }

    /** The same for {@code kuasar-vmm-virtiofs}: a second vmm-sandboxer whose share_fs is VirtioFS. */
    public CriClient vmmVirtiofsCri() {
        return vmmfs.cri();
    }

    /** A CRI client for the {@code kuasar-wasm} handler; the first call starts wasm-sandboxer. */
    public CriClient wasmCri() {
        return wasm.cri();
    }

    public Path wasmStateDir() {
        return wasm.dir;
    }

    public boolean wasmSandboxerAlive() {
        return wasm.alive();
    }

    /** A CRI client for the {@code kuasar-quark} handler (gVisor); the first call starts quark-sandboxer. */
    public CriClient quarkCri() {
        return quark.cri();
    }

    public Path quarkStateDir() {
        return quark.dir;
    }

    public boolean quarkSandboxerAlive() {
        return quark.alive();
    }

    /** kill -9 of quark-sandboxer (its gVisor sandboxes live on), then a new daemon on the same state. */
    public void killAndRestartQuarkSandboxer() {
        quark.killAndRestart();
    }

    /**
     * kill -9 of the (9p) vmm-sandboxer: its VMs run on. {@code whileDown} runs before the new daemon starts on the
     * same state.
     */
    public void killAndRestartVmmSandboxer(Runnable whileDown) {
        vmm.killAndRestart(whileDown);
    }

    /** kill -9 of wasm-sandboxer with whatever runs in it, then a new daemon on the same state. */
    public void killAndRestartWasmSandboxer() {
        wasm.killAndRestart();
    }

    /** The pid of the Wasm sandboxer (its threads and fds are what a Wasm container costs). */
    public long wasmSandboxerPid() {
        return wasm.process.pid();
    }

    /** WasmEdge for the wasmedge engine ({@code make wasm-engines}: a few ms when it is there already). */
    private void wasmEngines() {
        log("make wasm-engines");
        Host.check(Duration.ofMinutes(5), childEnv, repo, "make", "wasm-engines");
    }

    private boolean imageReady;

    private synchronized void vmmImage() {
        if (imageReady) {
            return;
        }
        Map<String, String> env = new HashMap<>(childEnv);
        env.put("JAVA_HOME", System.getProperty("java.home"));
        // Always: it rebuilds only when the agent or the recipe changed (a few seconds otherwise), so the VMs run
        // the agent this build made.
        log("make vmm-image");
        Host.check(Duration.ofMinutes(20), env, repo, "make", "vmm-image");
        imageReady = true;
    }

    /** One more sandboxer of the run (microVM, Wasm), registered in containerd under its handler. */
    final class VmmDaemon {
        final String handler;
        final Path sock;
        final Path dir;
        final Path log;
        private final java.util.function.Function<VmmDaemon, Process> launch;
        private Process process;
        private CriClient cri;

        /** The containerd whose CRI drives it: the run's 2.x one, unless it serves containerd 1.7 ({@link #ctrd17Cri}). */
        private final java.util.function.Supplier<Path> containerd;

        VmmDaemon(String handler, Path sock, Path dir, Path log, java.util.function.Function<VmmDaemon, Process> launch) {
            this(handler, sock, dir, log, launch, E2eEnvironment.this::containerdSock);
        }

        VmmDaemon(String handler, Path sock, Path dir, Path log, java.util.function.Function<VmmDaemon, Process> launch,
                  java.util.function.Supplier<Path> containerd) {
            this.handler = handler;
            this.sock = sock;
            this.dir = dir;
            this.log = log;
            this.launch = launch;
            this.containerd = containerd;
        }

        synchronized CriClient cri() {
            if (cri == null) {
                if (handler.startsWith("kuasar-vmm")) {
                    vmmImage();
                }
                process = launch.apply(this);
                cri = new CriClient(containerd.get(), handler, workdir.resolve("logs"), Duration.ofSeconds(120));
            }
            return cri;
        }

        boolean alive() {
            return process != null && process.isAlive();
        }

        /** kill -9 of the daemon, then a new one on the same socket and state dir. */
        synchronized void killAndRestart() {
            killAndRestart(() -> { });
        }

        /** The same, running {@code whileDown} between the kill and the restart. */
        synchronized void killAndRestart(Runnable whileDown) {
            process.destroyForcibly();
            try {
                process.waitFor(10, TimeUnit.SECONDS);
                Files.deleteIfExists(sock); // stale: the new daemon's socket is what we wait for
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            whileDown.run();
            process = launch.apply(this);
        }

        /** Removes its pods and stops it; what survives is a problem of the run. */
        void stop(List<String> problems) {
            if (cri != null) {
                if (process.isAlive()) {
                    problems.addAll(cri.cleanupAll());
                }
                cri.close();
            }
            if (process != null && process.isAlive()) {
                process.destroy();
                try {
                    if (!process.waitFor(15, TimeUnit.SECONDS)) {
                        problems.add(handler + " sandboxer ignored SIGTERM for 15 s; killed");
                        process.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
                    }
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
            if (process != null) {
                for (long pid : Host.pidsWithCmdline(dir.toString())) {
                    problems.add("process " + pid + " (" + Host.comm(pid) + ") of the " + handler
                            + " sandboxer survived; killing it");
                    ProcessHandle.of(pid).ifPresent(ProcessHandle::destroyForcibly);
                }
            }
        }

        /** Its state dir lives outside the workdir (short socket paths): removed here, unless mounts remain. */
        void removeDir() {
            removeTree(dir);
        }
    }

    /**
     * Starts a vmm-sandboxer on the shipped QEMU config (guest agent at debug) as {@code edit} changes it; returns once
     * its Sandbox API socket exists. The image must be there ({@link #vmmCri()} makes it).
     */
    Process launchVmm(Path sock, Path dir, Path log, UnaryOperator<String> edit) {
        return launchVmm(sock, dir, log, edit, ctrdDir);
    }

    Process launchVmm(Path sock, Path dir, Path log, UnaryOperator<String> edit, Path containerdDir) {
        Path config = workdir.resolve(sock.getFileName() + "-config.toml");
        try {
            Files.writeString(config, edit.apply(Files.readString(repo.resolve(
                    "vmm-sandboxer/config_qemu_x86_64.toml")).replace("debug = false", "debug = true")));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return launchDaemon("vmm-sandboxer", sock, dir, log, List.of("--config", config.toString()), containerdDir);
    }

    /** wasm-sandboxer (the WasmEdge engine fetched first) for the containerd of {@code containerdDir}. */
    private Process launchWasm(VmmDaemon d, Path containerdDir) {
        wasmEngines();
        return launchDaemon("wasm-sandboxer", d.sock, d.dir, d.log, List.of(), containerdDir);
    }

    /** quark-sandboxer with its gVisor backend (runsc fetched first) for the containerd of {@code containerdDir}. */
    private Process launchGvisor(VmmDaemon d, Path containerdDir) {
        log("make runsc");
        Host.check(Duration.ofMinutes(5), childEnv, repo, "make", "runsc");
        return launchDaemon("quark-sandboxer", d.sock, d.dir, d.log, List.of("--backend", "gvisor"), containerdDir);
    }

    /** Starts an installed sandboxer daemon with Kuasar's flags; returns once its Sandbox API socket exists. */
    Process launchDaemon(String name, Path sock, Path dir, Path log, List<String> extra) {
        return launchDaemon(name, sock, dir, log, extra, ctrdDir);
    }

    /** The same, sending its task events to the containerd of {@code containerdDir}. */
    Process launchDaemon(String name, Path sock, Path dir, Path log, List<String> extra, Path containerdDir) {
        return launchDaemon(name, sock, dir, log, extra, containerdDir, childEnv);
    }

    /** The same, with {@code env} as the daemon's environment. */
    Process launchDaemon(String name, Path sock, Path dir, Path log, List<String> extra, Path containerdDir,
                         Map<String, String> env) {
        Path launcher = prefix.resolve("bin").resolve(name);
        if (!Files.isExecutable(launcher)) {
            throw new IllegalStateException(launcher + " missing: the install prefix predates " + name);
        }
        List<String> cmd = new ArrayList<>(List.of(launcher.toString(), "--listen", sock.toString(), "--dir",
                dir.toString(), "--containerd-ttrpc-address", containerdDir.resolve("containerd.sock.ttrpc").toString(),
                "--log-level", "debug", "--metrics-listen", "unix:" + metricsSocket(sock)));
        cmd.addAll(extra);
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()))
                .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
        pb.environment().putAll(env);
        Process p;
        try {
            p = pb.start();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot start " + launcher, e);
        }
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (!Files.exists(sock)) {
            if (!p.isAlive() || System.nanoTime() > end) {
                p.destroyForcibly();
                throw new IllegalStateException(name + " did not start:\n" + Host.tail(log, 40));
            }
            sleep(50);
        }
        return p;
    }

    public Path vmmStateDir() {
        return vmm.dir;
    }

    public Path vmmVirtiofsStateDir() {
        return vmmfs.dir;
    }

    public Path vmmLog() {
        return vmm.log;
    }

    public boolean vmmSandboxerAlive() {
        return vmm.alive();
    }

    public boolean vmmVirtiofsSandboxerAlive() {
        return vmmfs.alive();
    }

    public CriClient cri() {
        return cri;
    }

    /**
     * Removes {@code dir} and everything below it, unless the run is kept ({@code -Dkuasar.e2e.keep}) or mounts
     * remain below it (then it is logged and left: removing files under a live mount would be worse).
     */
    static void removeTree(Path dir) {
        if (!Files.exists(dir) || Boolean.getBoolean("kuasar.e2e.keep")) {
            return;
        }
        if (!Host.mountsMentioning(dir.toString()).isEmpty()) {
            log("mounts left below " + dir + ", not removing it");
            return;
        }
        try (Stream<Path> s = Files.walk(dir)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        } catch (IOException e) {
            log("cannot remove " + dir + ": " + e);
        }
    }

    /** The install prefix the run's daemons come from ({@code make install PREFIX=...}). */
    public Path prefix() {
        return prefix;
    }

    /** The source tree (make, the release tarball in dist/). */
    public Path repo() {
        return repo;
    }

    /**
     * Where containerd expects the Sandbox API of the {@code kuasar-release} handler: ReleaseTest starts a
     * runc-sandboxer installed from the release tarball there.
     */
    public Path releaseSocket() {
        return workdir.resolve("release.sock");
    }

    /** containerd's ttrpc address, for a sandboxer's task events ({@code --containerd-ttrpc-address}). */
    public Path containerdTtrpc() {
        return ctrdDir.resolve("containerd.sock.ttrpc");
    }

    public Path workdir() {
        return workdir;
    }

    /** runc-sandboxer's --dir. */
    public Path stateDir() {
        return stateDir;
    }

    /** containerd's own state directory (task bundles with their rootfs mounts, netns). */
    public Path containerdState() {
        return ctrdDir.resolve("state");
    }

    public Path containerdSock() {
        return ctrdDir.resolve("containerd.sock");
    }

    public long sandboxerPid() {
        return sandboxer.pid();
    }

    public boolean sandboxerAlive() {
        return sandboxer.isAlive();
    }

    /** The CNI subnet, e.g. {@code 10.88.78.0/24}. */
    public String subnet() {
        return subnet;
    }

    public Path sandboxerLog() {
        return sandboxerLog;
    }

    /** containerd's log; after teardown ({@code env.sh clean} removes its directory), the copy kept in the workdir. */
    public Path containerdLog() {
        Path live = ctrdDir.resolve("containerd.log");
        return Files.exists(live) ? live : workdir.resolve("containerd.log");
    }

    /**
     * Stops containerd (SIGTERM; pods and runc-sandboxer keep running), optionally waits, and starts it again on the
     * same state; returns once CRI answers.
     */
    public void restartContainerd(Duration downtime) {
        Host.check(Duration.ofSeconds(30), childEnv, workdir, envSh.toString(), "stop-containerd", ctrdDir.toString());
        sleep(downtime.toMillis());
        Host.check(Duration.ofSeconds(90), childEnv, workdir, envSh.toString(), "start-containerd",
                ctrdDir.toString(), sandboxerSock.toString());
        long until = System.nanoTime() + Duration.ofSeconds(30).toNanos();
        while (true) {
            try {
                cri.version();
                return;
            } catch (RuntimeException e) {
                if (System.nanoTime() > until) {
                    throw e;
                }
                sleep(200);
            }
        }
    }

    /**
     * kill -9 of runc-sandboxer (pods and containers keep running), then a new runc-sandboxer on the same --dir;
     * returns once it serves again.
     */
    public void killAndRestartSandboxer() {
        sandboxer.destroyForcibly();
        try {
            sandboxer.waitFor(10, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        try {
            Files.deleteIfExists(sandboxerSock); // stale: the new daemon's socket is what we wait for
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        startSandboxer(prefix.resolve("bin/runc-sandboxer"));
    }

    /** Mounts under the sandboxer's state dir (pod shm) left by a failed teardown: reported, then removed. */
    private void unmountLeftovers(List<String> problems) {
        String prefix = stateDir.toAbsolutePath() + "/";
        String vmmPrefix = vmm.dir.toAbsolutePath() + "/";
        String vmmfsPrefix = vmmfs.dir.toAbsolutePath() + "/";
        List<String> left = Host.read(Path.of("/proc/self/mounts")).lines().map(l -> l.split(" ")[1])
                .filter(m -> m.startsWith(prefix) || m.startsWith(vmmPrefix) || m.startsWith(vmmfsPrefix))
                .sorted(Comparator.reverseOrder()).toList();
        for (String m : left) {
            problems.add("mount " + m + " survived teardown; unmounting it");
            Host.run(Duration.ofSeconds(10), childEnv, null, "umount", "-l", m);
        }
    }

    /** The task proxy outlives runc-sandboxer by design; a clean stop with no containers ends it, else we do. */
    private void killTaskProxy(List<String> problems) {
        Path pidFile = stateDir.resolve("task-proxy.pid");
        try {
            if (!Files.exists(pidFile)) {
                return;
            }
            long pid = Long.parseLong(Files.readString(pidFile).trim());
            for (int i = 0; i < 50 && Host.alive(pid) && "kuasar-ttrpc-px".equals(Host.comm(pid)); i++) {
                sleep(100);
            }
            if (Host.alive(pid) && "kuasar-ttrpc-px".equals(Host.comm(pid))) {
                problems.add("task proxy " + pid + " still running after runc-sandboxer stopped; killing it");
                ProcessHandle.of(pid).ifPresent(ProcessHandle::destroyForcibly);
            }
        } catch (IOException | RuntimeException e) {
            log("cannot check the task proxy: " + e);
        }
    }

    /** runc-sandboxer's Prometheus text, from its metrics endpoint (a Unix socket in the workdir). */
    public String scrapeMetrics() {
        return scrape(workdir.resolve("metrics.sock"));
    }

    /**
     * The Prometheus text of the run's daemon of {@code kind} ("runc", "vmm", "wasm" or "quark"), started if it
     * was not yet running.
     */
    public String scrapeMetrics(String kind) {
        VmmDaemon d = switch (kind) {
            case "runc" -> null;
            case "vmm" -> vmm;
            case "wasm" -> wasm;
            case "quark" -> quark;
            default -> throw new IllegalArgumentException("no daemon kind " + kind);
        };
        if (d == null) {
            return scrapeMetrics();
        }
        d.cri();
        return scrape(metricsSocket(d.sock));
    }

    /** Where a daemon started by {@link #launchDaemon} serves its metrics: beside its Sandbox API socket. */
    static Path metricsSocket(Path sock) {
        return sock.resolveSibling(sock.getFileName() + ".metrics");
    }

    private static String scrape(Path socket) {
        try (java.nio.channels.SocketChannel c = java.nio.channels.SocketChannel.open(
                java.net.StandardProtocolFamily.UNIX)) {
            c.connect(java.net.UnixDomainSocketAddress.of(socket));
            c.write(java.nio.ByteBuffer.wrap("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".getBytes()));
            String resp = new String(java.nio.channels.Channels.newInputStream(c).readAllBytes());
            return resp.substring(resp.indexOf("\r\n\r\n") + 4);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** One sample of a metric without labels, e.g. kuasar_process_heap_used_bytes. */
    public long metric(String name) {
        return scrapeMetrics().lines().filter(l -> l.startsWith(name + " ")).findFirst()
                .map(l -> Long.parseLong(l.substring(name.length() + 1).trim()))
                .orElseThrow(() -> new IllegalStateException("no metric " + name));
    }

    /** Asks the sandboxer's JVM for a full GC (jcmd from the JDK running the tests, the same JDK 25). */
    public void gcSandboxer() {
        Path jcmd = Path.of(System.getProperty("java.home"), "bin", "jcmd");
        Host.check(Duration.ofSeconds(30), childEnv, null, jcmd.toString(), Long.toString(sandboxerPid()), "GC.run");
    }

    /** {@code runc list} of the shared k8s.io runc root. */
    public String runcList() {
        return Host.check(Duration.ofSeconds(20), childEnv, null, "runc", "--root", RUNC_ROOT, "list");
    }

    void markFailed() {
        failed.set(true);
    }

    String logTails() {
        return (Files.exists(vmm.log) ? "---- vmm-sandboxer log (" + vmm.log + ") ----\n" + Host.tail(vmm.log, 80) + "\n"
                : "")
                + (Files.exists(vmmfs.log) ? "---- vmm-sandboxer (VirtioFS) log (" + vmmfs.log + ") ----\n"
                + Host.tail(vmmfs.log, 80) + "\n" : "")
                + (Files.exists(wasm.log) ? "---- wasm-sandboxer log (" + wasm.log + ") ----\n"
                + Host.tail(wasm.log, 80) + "\n" : "")
                + (Files.exists(quark.log) ? "---- quark-sandboxer log (" + quark.log + ") ----\n"
                + Host.tail(quark.log, 80) + "\n" : "")
                + "---- runc-sandboxer log (" + sandboxerLog + ") ----\n" + Host.tail(sandboxerLog, 60)
                + "\n---- containerd log (" + containerdLog() + ") ----\n" + Host.tail(containerdLog(), 60);
    }

    static void log(String msg) {
        System.err.println("[e2e] " + msg);
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    // ---------------------------------------------------------------------------------------------------------
    // Teardown

    /**
     * Removes every pod through CRI, stops runc-sandboxer and containerd, then {@code env.sh clean} (containers,
     * shims, mounts below the workdir) and kills any namespace holder still alive. Idempotent.
     */
    @Override
    public void close() {
        if (!closed.compareAndSet(false, true)) {
            return;
        }
        if (Thread.currentThread() != shutdownHook) {
            try {
                Runtime.getRuntime().removeShutdownHook(shutdownHook);
            } catch (IllegalStateException e) {
                // already shutting down
            }
        }
        long t0 = System.nanoTime();
        List<String> problems = new ArrayList<>();
        List<String> pods = cri != null ? cri.podsCreated() : List.of();
        if (ctrd17Started) {
            ctrd17Daemons.values().forEach(d -> d.stop(problems));
            try {
                Path log = ctrd17Dir.resolve("containerd.log");
                if (Files.exists(log)) {
                    Files.copy(log, workdir.resolve("containerd17.log"),
                            java.nio.file.StandardCopyOption.REPLACE_EXISTING);
                }
                Host.check(Duration.ofSeconds(90), ctrd17Env(), null, envSh.toString(), "clean", ctrd17Dir.toString());
            } catch (IOException | RuntimeException e) {
                problems.add("containerd 1.7: env.sh clean: " + e.getMessage());
            }
            ctrd17Daemons.values().forEach(VmmDaemon::removeDir);
        }
        if (traced != null) {
            traced.stop(problems);
            try {
                Host.check(Duration.ofSeconds(90), tracedEnv, null, envSh.toString(), "clean", tracedDir.toString());
            } catch (RuntimeException e) {
                problems.add("traced containerd: env.sh clean: " + e.getMessage());
            }
            traced.removeDir();
        }
        vmm.stop(problems);
        vmmfs.stop(problems);
        wasm.stop(problems);
        quark.stop(problems);
        if (cri != null) {
            if (sandboxer != null && sandboxer.isAlive()) {
                problems.addAll(cri.cleanupAll());
            }
            cri.close();
        }
        if (sandboxer != null) {
            stopSandboxer(problems);
        }
        killTaskProxy(problems);
        unmountLeftovers(problems);
        vmm.removeDir();
        vmmfs.removeDir();
        quark.removeDir();
        try {
            Path log = ctrdDir.resolve("containerd.log");
            if (Files.exists(log)) {
                Files.copy(log, workdir.resolve("containerd.log"), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
            }
        } catch (IOException e) {
            log("cannot keep containerd.log: " + e);
        }
        try {
            Host.check(Duration.ofSeconds(90), childEnv, null, envSh.toString(), "clean", ctrdDir.toString());
        } catch (RuntimeException e) {
            problems.add("env.sh clean: " + e.getMessage());
        }
        for (String id : pods) {
            for (long pid : Host.pidsWithComm(Host.holderComm(id))) {
                problems.add("namespace holder " + pid + " of pod " + id + " survived teardown; killing it");
                ProcessHandle.of(pid).ifPresent(ProcessHandle::destroyForcibly);
            }
        }
        if (!problems.isEmpty()) {
            failed.set(true);
            problems.forEach(p -> log("teardown: " + p));
        }
        log(String.format("torn down in %d ms (%d pods were created in this run)",
                (System.nanoTime() - t0) / 1_000_000, pods.size()));
        if (failed.get()) {
            System.err.println(logTails());
        }
        if (Boolean.getBoolean("kuasar.e2e.keep")) {
            log("kept " + workdir);
        } else {
            removeWorkdir();
        }
    }

    private void stopSandboxer(List<String> problems) {
        if (sandboxer.isAlive()) {
            sandboxer.destroy(); // SIGTERM: clean exit 0, pods (none left by now) keep running
            try {
                if (!sandboxer.waitFor(15, TimeUnit.SECONDS)) {
                    problems.add("runc-sandboxer ignored SIGTERM for 15 s; killed");
                    sandboxer.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        if (!sandboxer.isAlive() && sandboxer.exitValue() != 0 && sandboxer.exitValue() != 143) {
            problems.add("runc-sandboxer exited " + sandboxer.exitValue());
        }
    }

    private void removeWorkdir() {
        List<String> mounts = Host.mountsMentioning(workdir.toString());
        if (!mounts.isEmpty()) {
            log("mounts left below " + workdir + ", not removing it:\n" + String.join("\n", mounts));
            return;
        }
        try (Stream<Path> s = Files.walk(workdir)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        } catch (IOException e) {
            log("cannot remove " + workdir + ": " + e);
        }
    }
}
