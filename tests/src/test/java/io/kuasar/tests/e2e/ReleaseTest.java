package io.kuasar.tests.e2e;

import io.kuasar.api.cri.v1.ContainerState;
import io.kuasar.api.cri.v1.ContainerStatus;
import io.kuasar.tests.cri.CriClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The release tarball of {@code make release}, installed as a user would and run: its {@code .sha256} checked, unpacked
 * into a fresh scratch directory, {@code install.sh --root <scratch>}, the layout checked, then the installed
 * runc-sandboxer started from the scratch root on its bundled Java runtime (not the JDK that runs the build) as the
 * {@code kuasar-release} handler of the run's containerd (tests/e2e/env.sh), a pod with a container through CRI, and
 * at the end {@code uninstall.sh --root <scratch>} leaves only the kept configs.
 *
 * <p>The tarball is {@code dist/kuasar-*-linux-<arch>.tar.gz}; when there is none, or it is older than the module
 * build outputs or packaging/, this test runs {@code make release MVN=true} (no Maven step: inside {@code make test}
 * the reactor has built everything by now; about 20 s). {@code -Dkuasar.e2e.release=<tarball>} tests that tarball as
 * it is (one made elsewhere or downloaded; its .sha256 beside it).
 */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class ReleaseTest {
    private static final Duration T = Duration.ofSeconds(30);
    private static final List<String> DAEMONS = List.of("runc-sandboxer", "vmm-sandboxer", "wasm-sandboxer",
            "quark-sandboxer");

    @Test
    void tarballInstallsIntoAScratchRootAndRunsAPodOnItsOwnJava(E2eEnvironment env) throws Exception {
        Path tarball = tarball(env);
        checkSha256(tarball);

        Path scratch = Files.createTempDirectory(env.workdir(), "release-");
        Path root = scratch.resolve("root");
        Path state = env.workdir().resolve("rel-state"); // short: the daemon's task.sock lives in it
        Path log = env.workdir().resolve("release-sandboxer.log");
        Path prefix = root.resolve("usr/local");
        Map<String, String> hostEnv = Map.of("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        Process daemon = null;
        CriClient cri = null;
        List<String> pods = new ArrayList<>();
        try {
            Host.check(Duration.ofMinutes(2), hostEnv, scratch, "tar", "xzf", tarball.toString());
            Path top = scratch.resolve(tarball.getFileName().toString().replaceAll("-linux-[^-]+\\.tar\\.gz$", ""));
            assertThat(top).as("the tarball's top directory").isDirectory();
            assertThat(top.resolve("README")).content().contains("install.sh").contains("make vmm-image");

            String out = Host.check(Duration.ofMinutes(2), hostEnv, top, "./install.sh", "--root", root.toString());
            E2eEnvironment.log("install.sh --root " + root + ":\n" + out.strip());
            assertThat(out).contains("files match SHA256SUMS").contains("installed ");
            checkLayout(root, prefix);

            daemon = startDaemon(env, prefix, state, log);
            checkRunsOnTheBundledJava(daemon.pid(), prefix);

            cri = new CriClient(env.containerdSock(), E2eEnvironment.RELEASE_HANDLER, env.workdir().resolve("logs"));
            CriClient.Pod pod = cri.runPod("release", false);
            pods.add(pod.id());
            long holder = Cri.podPid(cri, pod.id());
            assertThat(exe(holder)).as("the pod's namespace holder is the installed helper")
                    .isEqualTo(prefix.resolve("libexec/kuasar/kuasar-holder").toRealPath());
            String c = cri.runContainer(pod, "greeter", "sh", "-c",
                    "echo hello from the release on $(hostname); exec sleep 1000");
            Cri.awaitState(cri, c, ContainerState.CONTAINER_RUNNING, T);
            assertThat(Cri.awaitLog(pod, "greeter", l -> l.contains("hello from the release"), T))
                    .containsPattern("stdout F hello from the release on \\S+");
            CriClient.ExecResult exec = cri.execSync(c, "sh", "-c", "echo exec-ok; exit 3");
            assertThat(exec.exitCode()).isEqualTo(3);
            assertThat(exec.stdout()).isEqualTo("exec-ok\n");
            cri.stopContainer(c, 0);
            ContainerStatus st = cri.containerStatus(c);
            assertThat(st.getState()).isEqualTo(ContainerState.CONTAINER_EXITED);
            assertThat(st.getExitCode()).isEqualTo(137);
            cri.removeContainer(c);
            cri.stopAndRemovePod(pod.id());
            pods.clear();

            // Nothing of the pod is left: no holder, no sandbox state, no mounts.
            assertThat(Host.alive(holder)).as("holder after removal").isFalse();
            assertThat(Host.pidsWithComm(Host.holderComm(pod.id()))).isEmpty();
            assertThat(Host.mountsMentioning(state.toString())).isEmpty();
            assertThat(leftIn(state.resolve("sandboxes"))).as("sandbox state after removal").isEmpty();
            assertThat(cri.listPods()).noneMatch(p -> p.getId().equals(pod.id()));

            stopDaemon(daemon, state);
            daemon = null;
            cri.close();
            cri = null;

            out = Host.check(Duration.ofMinutes(1), hostEnv, null,
                    prefix.resolve("lib/kuasar/uninstall.sh").toString(), "--root", root.toString());
            E2eEnvironment.log("uninstall.sh --root " + root + ":\n" + out.strip());
            assertThat(leftIn(root)).as("what uninstall.sh leaves: the configs, nothing installed")
                    .containsExactlyInAnyOrder("var/lib/kuasar/config.toml", "var/lib/kuasar/config_clh.toml",
                            "var/lib/kuasar/config_stratovirt.toml", "etc/sysconfig/kuasar-runc",
                            "etc/sysconfig/kuasar-vmm", "etc/sysconfig/kuasar-wasm", "etc/sysconfig/kuasar-quark");
            assertThat(root.resolve("usr")).doesNotExist();
        } finally {
            if (cri != null) {
                if (daemon != null && daemon.isAlive()) {
                    for (String id : pods) {
                        try {
                            cri.stopAndRemovePod(id);
                        } catch (RuntimeException e) {
                            E2eEnvironment.log("release pod " + id + ": " + e.getMessage());
                        }
                    }
                }
                cri.close();
            }
            if (daemon != null) {
                daemon.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
                E2eEnvironment.log("release sandboxer log:\n" + Host.tail(log, 60));
            }
            for (String id : pods) {
                Host.pidsWithComm(Host.holderComm(id)).forEach(p -> ProcessHandle.of(p)
                        .ifPresent(ProcessHandle::destroyForcibly));
            }
            killTaskProxy(state);
            for (String m : Host.mountsMentioning(state.toString())) {
                Host.run(Duration.ofSeconds(10), hostEnv, null, "umount", "-l", m.split(" ")[4]);
            }
            E2eEnvironment.removeTree(scratch);
            E2eEnvironment.removeTree(state);
        }
    }

    /** dist/'s tarball for this machine, made (again) by make release when missing or older than its inputs. */
    private static Path tarball(E2eEnvironment env) throws IOException {
        String given = System.getProperty("kuasar.e2e.release", "");
        if (!given.isEmpty()) {
            E2eEnvironment.log("release tarball " + given + " (-Dkuasar.e2e.release: used as it is)");
            return Path.of(given).toAbsolutePath();
        }
        Path repo = env.repo();
        String arch = Host.check(Duration.ofSeconds(10), Map.of("PATH", "/usr/bin:/bin"), null, "dpkg",
                "--print-architecture").strip();
        Optional<Path> found = newestTarball(repo.resolve("dist"), arch);
        FileTime inputs = newestInput(repo);
        if (found.isPresent() && Files.getLastModifiedTime(found.get()).compareTo(inputs) >= 0) {
            E2eEnvironment.log("release tarball " + found.get());
            return found.get();
        }
        E2eEnvironment.log(found.map(p -> p + " is older than the build outputs").orElse("no release tarball in dist/")
                + ": make release MVN=true");
        long t0 = System.nanoTime();
        Host.check(Duration.ofMinutes(5), Map.of("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "JAVA_HOME", System.getProperty("java.home")), repo, "make", "-s", "release", "MVN=true");
        E2eEnvironment.log("make release: " + (System.nanoTime() - t0) / 1_000_000 + " ms");
        return newestTarball(repo.resolve("dist"), arch)
                .orElseThrow(() -> new AssertionError("make release wrote no dist/kuasar-*-linux-" + arch + ".tar.gz"));
    }

    private static Optional<Path> newestTarball(Path dist, String arch) throws IOException {
        if (!Files.isDirectory(dist)) {
            return Optional.empty();
        }
        try (Stream<Path> s = Files.list(dist)) {
            return s.filter(p -> p.getFileName().toString().matches("kuasar-.+-linux-" + arch + "\\.tar\\.gz"))
                    .max(Comparator.comparing(p -> p.toFile().lastModified()));
        }
    }

    /** The newest of what goes into the tarball: the daemons' and kuasar-ctl's jars, helpers, packaging/, Makefile. */
    private static FileTime newestInput(Path repo) throws IOException {
        List<Path> roots = new ArrayList<>(List.of(repo.resolve("packaging"), repo.resolve("Makefile")));
        for (String d : Stream.concat(DAEMONS.stream(), Stream.of("kuasar-ctl")).toList()) {
            Path target = repo.resolve(d).resolve("target");
            roots.add(target.resolve("lib"));
            roots.add(target.resolve("libexec"));
            try (Stream<Path> s = Files.exists(target) ? Files.list(target) : Stream.empty()) {
                s.filter(p -> p.getFileName().toString().endsWith(".jar")).forEach(roots::add);
            }
        }
        FileTime newest = FileTime.fromMillis(0);
        for (Path r : roots) {
            if (!Files.exists(r)) {
                continue;
            }
            try (Stream<Path> s = Files.walk(r)) {
                for (Path p : s.filter(Files::isRegularFile).toList()) {
                    FileTime t = Files.getLastModifiedTime(p);
                    if (t.compareTo(newest) > 0) {
                        newest = t;
                    }
                }
            }
        }
        return newest;
    }

    /** The .sha256 beside the tarball names it and matches it (sha256sum's format). */
    private static void checkSha256(Path tarball) throws Exception {
        Path sum = tarball.resolveSibling(tarball.getFileName() + ".sha256");
        assertThat(sum).exists();
        MessageDigest md = MessageDigest.getInstance("SHA-256");
        try (InputStream in = Files.newInputStream(tarball)) {
            byte[] buf = new byte[1 << 16];
            for (int n; (n = in.read(buf)) > 0; ) {
                md.update(buf, 0, n);
            }
        }
        assertThat(Files.readString(sum))
                .isEqualTo(HexFormat.of().formatHex(md.digest()) + "  " + tarball.getFileName() + "\n");
    }

    private static void checkLayout(Path root, Path prefix) throws IOException {
        for (String d : DAEMONS) {
            assertThat(prefix.resolve("bin").resolve(d)).isExecutable();
            assertThat(prefix.resolve("lib/kuasar").resolve(d)).isDirectoryContaining("glob:**/sandbox-core-*.jar");
        }
        for (String kind : List.of("runc", "vmm", "wasm", "quark")) {
            assertThat(prefix.resolve("bin/containerd-shim-kuasar-" + kind + "-v1")).isExecutable();
            assertThat(prefix.resolve("bin/containerd-shim-kuasar-" + kind + "-v2")).isExecutable();
            assertThat(prefix.resolve("lib/systemd/system/kuasar-" + kind + ".service")).content()
                    .contains("ExecStart=/usr/local/bin/" + kind + "-sandboxer");
        }
        // containerd 2.x asks the runc handler's shim for runc's features (the kuasar-release handler itself names the
        // run's shim, as containerd's config is written before the tarball is installed): the installed one answers.
        assertThat(Host.check(Duration.ofSeconds(10), Map.of(), null,
                prefix.resolve("bin/containerd-shim-kuasar-runc-v1").toString(), "-info"))
                .contains("io.containerd.kuasar-runc.v1");
        for (String h : List.of("kuasar-holder", "kuasar-monitor", "kuasar-ttrpc-proxy", "kuasar-fifo-keeper",
                "kuasar-pause")) {
            assertThat(prefix.resolve("libexec/kuasar").resolve(h)).isExecutable();
        }
        assertThat(root.resolve("var/lib/kuasar/config.toml")).content().contains("[hypervisor]");
        // Kuasar's /etc/sysconfig/kuasar-<kind>: the OPTIONS each unit passes
        assertThat(root.resolve("etc/sysconfig/kuasar-vmm")).content()
                .contains("OPTIONS='--listen /run/vmm-sandboxer.sock --dir /run/kuasar-vmm'");
        assertThat(prefix.resolve("lib/kuasar/uninstall.sh")).isExecutable();

        // A Java runtime of its own, not a JDK, and one the launchers name instead of the build's JDK.
        Path jre = prefix.resolve("lib/kuasar/jre");
        assertThat(jre.resolve("bin/java")).isExecutable();
        assertThat(jre.resolve("bin/javac")).doesNotExist();
        assertThat(jre.resolve("lib/server/classes_coh.jsa")).exists();
        String modules = Host.check(Duration.ofSeconds(30), Map.of(), null, jre.resolve("bin/java").toString(),
                "--list-modules");
        assertThat(modules).contains("java.base@", "jdk.unsupported@", "java.management@").doesNotContain("java.desktop@");
        String launcher = Files.readString(prefix.resolve("bin/runc-sandboxer"));
        assertThat(launcher).contains("java=/usr/local/lib/kuasar/jre/bin/java")
                .doesNotContain(System.getProperty("java.home"));

        // The manifest lists what is there.
        List<String> listed = Files.readAllLines(root.resolve("var/lib/kuasar/install-manifest")).stream()
                .filter(l -> l.startsWith("f ")).map(l -> l.substring(2)).toList();
        assertThat(listed).contains("/usr/local/bin/runc-sandboxer", "/usr/local/lib/kuasar/jre/bin/java")
                .noneMatch(f -> f.endsWith(".toml") || f.startsWith("/etc/sysconfig/"));
        assertThat(listed).allMatch(f -> Files.exists(root.resolve(f.substring(1))));
    }

    /** The installed launcher from the scratch root, with Kuasar's flags, as the kuasar-release handler. */
    private static Process startDaemon(E2eEnvironment env, Path prefix, Path state, Path log) throws IOException {
        Path sock = env.releaseSocket();
        ProcessBuilder pb = new ProcessBuilder(prefix.resolve("bin/runc-sandboxer").toString(),
                "--listen", sock.toString(), "--dir", state.toString(),
                "--containerd-ttrpc-address", env.containerdTtrpc().toString(), "--log-level", "debug")
                .redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()))
                .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
        // What a fresh host has: no JAVA_HOME, no java on PATH.
        pb.environment().clear();
        pb.environment().put("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        Process p = pb.start();
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (!Files.exists(sock)) {
            if (!p.isAlive() || System.nanoTime() > end) {
                p.destroyForcibly();
                throw new AssertionError("the installed runc-sandboxer did not start:\n" + Host.tail(log, 40));
            }
            Cri.sleep(50);
        }
        return p;
    }

    /** The daemon's process is the bundled JRE's java with the scratch root's jars and helpers. */
    private static void checkRunsOnTheBundledJava(long pid, Path prefix) throws IOException {
        Path bundled = prefix.resolve("lib/kuasar/jre/bin/java").toRealPath();
        Path buildJava = Path.of(System.getProperty("java.home"), "bin", "java").toRealPath();
        assertThat(exe(pid)).as("/proc/%d/exe", pid).isEqualTo(bundled).isNotEqualTo(buildJava);
        List<String> cmdline = List.of(new String(Files.readAllBytes(Path.of("/proc/" + pid + "/cmdline")))
                .split("\0"));
        String real = prefix.toRealPath().toString();
        assertThat(cmdline).contains("-Dkuasar.libexec=" + real + "/libexec/kuasar",
                real + "/lib/kuasar/runc-sandboxer/*", "io.kuasar.runc.RuncSandboxerMain");
    }

    private static Path exe(long pid) throws IOException {
        return Files.readSymbolicLink(Path.of("/proc/" + pid + "/exe"));
    }

    /** SIGTERM: a clean exit; its task proxy (a helper of the install) ends too once no container is left. */
    private static void stopDaemon(Process daemon, Path state) throws InterruptedException {
        daemon.destroy();
        assertThat(daemon.waitFor(15, TimeUnit.SECONDS)).as("runc-sandboxer stops on SIGTERM").isTrue();
        assertThat(daemon.exitValue()).isIn(0, 143);
        Path pidFile = state.resolve("task-proxy.pid");
        if (Files.exists(pidFile)) {
            long pid = Long.parseLong(Host.read(pidFile).strip());
            for (int i = 0; i < 50 && Host.alive(pid) && "kuasar-ttrpc-px".equals(Host.comm(pid)); i++) {
                Cri.sleep(100);
            }
            assertThat(Host.alive(pid) && "kuasar-ttrpc-px".equals(Host.comm(pid))).as("task proxy still running")
                    .isFalse();
        }
    }

    private static void killTaskProxy(Path state) {
        try {
            Path pidFile = state.resolve("task-proxy.pid");
            if (Files.exists(pidFile)) {
                long pid = Long.parseLong(Files.readString(pidFile).strip());
                if (Host.alive(pid) && "kuasar-ttrpc-px".equals(Host.comm(pid))) {
                    ProcessHandle.of(pid).ifPresent(ProcessHandle::destroyForcibly);
                }
            }
        } catch (IOException | RuntimeException e) {
            E2eEnvironment.log("release task proxy: " + e);
        }
    }

    /** Regular files and links below {@code dir}, relative to it. */
    private static List<String> leftIn(Path dir) throws IOException {
        if (!Files.exists(dir)) {
            return List.of();
        }
        try (Stream<Path> s = Files.walk(dir)) {
            return s.filter(p -> !Files.isDirectory(p, java.nio.file.LinkOption.NOFOLLOW_LINKS))
                    .map(p -> dir.relativize(p).toString()).sorted().toList();
        }
    }

}
