package io.kuasar.tests.e2e;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/** What the tests look at on the host: processes, mounts, namespaces, file descriptors; and running commands. */
final class Host {
    private Host() {
    }

    /** A finished command: exit code and combined output. */
    record Result(int exitCode, String output) {
    }

    /** Runs a command with a bounded wait; output (stdout+stderr) is captured. Kills it on timeout. */
    static Result run(Duration timeout, Map<String, String> env, Path dir, String... cmd) {
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true)
                .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
        if (dir != null) {
            pb.directory(dir.toFile());
        }
        pb.environment().putAll(env);
        try {
            Process p = pb.start();
            CompletableFuture<String> out = readAll(p.getInputStream());
            if (!p.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
                p.descendants().forEach(ProcessHandle::destroyForcibly);
                p.destroyForcibly();
                p.waitFor(5, TimeUnit.SECONDS);
                throw new IllegalStateException("timed out after " + timeout + ": " + String.join(" ", cmd)
                        + "\n" + out.getNow(""));
            }
            return new Result(p.exitValue(), out.get(5, TimeUnit.SECONDS));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot run " + String.join(" ", cmd), e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted: " + String.join(" ", cmd), e);
        } catch (Exception e) {
            throw new IllegalStateException("failed: " + String.join(" ", cmd) + ": " + e, e);
        }
    }

    /** Like {@link #run} but throws, with the output, unless the exit code is 0. */
    static String check(Duration timeout, Map<String, String> env, Path dir, String... cmd) {
        Result r = run(timeout, env, dir, cmd);
        if (r.exitCode() != 0) {
            throw new IllegalStateException("'" + String.join(" ", cmd) + "' exited " + r.exitCode() + ":\n"
                    + r.output());
        }
        return r.output();
    }

    private static CompletableFuture<String> readAll(InputStream in) {
        CompletableFuture<String> f = new CompletableFuture<>();
        Thread.ofVirtual().start(() -> {
            try (in) {
                f.complete(new String(in.readAllBytes(), StandardCharsets.UTF_8));
            } catch (IOException e) {
                f.complete("(output lost: " + e + ")");
            }
        });
        return f;
    }

    static String read(Path p) {
        try {
            return Files.readString(p);
        } catch (IOException e) {
            return "";
        }
    }

    /** Alive and not a zombie (PID 1 here is slow to reap re-parented children). */
    static boolean alive(long pid) {
        String stat = read(Path.of("/proc/" + pid + "/stat"));
        if (stat.isEmpty()) {
            return false;
        }
        String rest = stat.substring(stat.lastIndexOf(')') + 2);
        return !(rest.startsWith("Z") || rest.startsWith("X"));
    }

    static String comm(long pid) {
        return read(Path.of("/proc/" + pid + "/comm")).trim();
    }

    /** Live (non-zombie) pids whose comm equals {@code comm}. */
    static List<Long> pidsWithComm(String comm) {
        List<Long> pids = new ArrayList<>();
        try (Stream<Path> s = Files.list(Path.of("/proc"))) {
            for (Path p : s.toList()) {
                String name = p.getFileName().toString();
                if (!name.chars().allMatch(Character::isDigit)) {
                    continue;
                }
                long pid = Long.parseLong(name);
                if (comm.equals(comm(pid)) && alive(pid)) {
                    pids.add(pid);
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return pids;
    }

    /** Live pids whose command line mentions {@code text} (e.g. a QEMU started for a sandbox directory). */
    static List<Long> pidsWithCmdline(String text) {
        List<Long> pids = new ArrayList<>();
        long self = ProcessHandle.current().pid();
        try (Stream<Path> s = Files.list(Path.of("/proc"))) {
            for (Path p : s.toList()) {
                String name = p.getFileName().toString();
                if (!name.chars().allMatch(Character::isDigit) || Long.parseLong(name) == self) {
                    continue;
                }
                try {
                    String cmd = new String(Files.readAllBytes(p.resolve("cmdline"))).replace('\0', ' ');
                    if (cmd.contains(text) && alive(Long.parseLong(name))) {
                        pids.add(Long.parseLong(name));
                    }
                } catch (IOException gone) {
                    // the process ended while we looked
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return pids;
    }

    /** The comm the runc sandboxer gives a pod's namespace holder. */
    static String holderComm(String sandboxId) {
        return "kuasar-" + sandboxId.substring(0, Math.min(8, sandboxId.length()));
    }

    /** Lines of /proc/self/mountinfo that mention {@code text} (a mount point or source). */
    static List<String> mountsMentioning(String text) {
        return read(Path.of("/proc/self/mountinfo")).lines().filter(l -> l.contains(text)).toList();
    }

    /** The namespace link of a process, e.g. {@code net:[4026531840]}. */
    static String namespace(long pid, String ns) {
        try {
            return Files.readSymbolicLink(Path.of("/proc/" + pid + "/ns/" + ns)).toString();
        } catch (IOException e) {
            return "";
        }
    }

    static int fdCount(long pid) {
        try (Stream<Path> s = Files.list(Path.of("/proc/" + pid + "/fd"))) {
            return (int) s.count();
        } catch (IOException e) {
            return -1;
        }
    }

    /** {@code fd -> target} for a process, for diagnostics. */
    static List<String> fds(long pid) {
        List<String> out = new ArrayList<>();
        try (Stream<Path> s = Files.list(Path.of("/proc/" + pid + "/fd"))) {
            for (Path fd : s.toList()) {
                try {
                    out.add(fd.getFileName() + " -> " + Files.readSymbolicLink(fd));
                } catch (IOException e) {
                    // closed meanwhile
                }
            }
        } catch (IOException e) {
            // process gone
        }
        return out;
    }

    /** The last {@code n} lines of a file, or a note that it is missing. */
    static String tail(Path file, int n) {
        if (!Files.exists(file)) {
            return "(" + file + " does not exist)";
        }
        List<String> lines = read(file).lines().toList();
        return String.join("\n", lines.subList(Math.max(0, lines.size() - n), lines.size()));
    }
}
