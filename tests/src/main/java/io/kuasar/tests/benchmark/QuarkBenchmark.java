package io.kuasar.tests.benchmark;

import io.kuasar.tests.cri.CriClient;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * {@code make bench-quark}: N pods with one container each, through CRI, one after another, on three handlers of one
 * containerd: {@code kuasar-quark} (quark-sandboxer's gVisor backend: one daemon, one gVisor sandbox per pod),
 * {@code runsc} (gVisor without a sandboxer: containerd's stock runc shim with runsc as its binary, a shim per pod and
 * a gVisor sandbox per container, pause included; tests/benchmark/runsc-stock.sh) and the stock {@code runc} handler.
 * Both gVisor handlers use the same runsc with {@code --network=host} (the stock shim cannot apply the netstack
 * workaround this kernel needs).
 * <ul>
 *   <li>pod + container start: RunPodSandbox + CreateContainer + StartContainer, per pod (median, mean, max);</li>
 *   <li>management memory with N pods up (PSS): kuasar-quark: the sandboxer JVM and its {@code runsc wait}
 *       processes; runsc and runc: every containerd-shim-runc-v2; shown in total and as marginal per pod;</li>
 *   <li>pod memory (PSS per pod): gVisor's sandbox processes (sentry, stubs, gofers) or runc's pause and container
 *       processes.</li>
 * </ul>
 * One pod per handler is started and removed before the measured ones (warm-up), not counted.
 */
public final class QuarkBenchmark {
    private static final List<String> HANDLERS = List.of("kuasar-quark", "runsc", "runc");
    private final Map<String, String> opts;
    private final StringBuilder report = new StringBuilder();

    private QuarkBenchmark(Map<String, String> opts) {
        this.opts = opts;
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> o = new HashMap<>(Map.of("pods", "10"));
        for (int i = 0; i + 1 < args.length; i += 2) {
            o.put(args[i].replaceFirst("^--", ""), args[i + 1]);
        }
        for (String required : List.of("containerd-sock", "sandboxer-pid", "logs", "out")) {
            if (!o.containsKey(required)) {
                System.err.println("usage: QuarkBenchmark --containerd-sock S --sandboxer-pid P --logs DIR --out DIR "
                        + "[--pods 10]");
                System.exit(2);
            }
        }
        new QuarkBenchmark(o).run();
    }

    private record Result(List<Double> startMs, double mgmtBeforeMib, double mgmtMib, int mgmtProcs, double podMib) {
    }

    private void run() throws Exception {
        int n = Integer.parseInt(opts.get("pods"));
        Map<String, Result> results = new HashMap<>();
        for (String h : HANDLERS) {
            results.put(h, measure(h, n));
        }
        line("## App-kernel pods (`make bench-quark`)");
        line("");
        line("### pod + container start, " + n + " pods one after another (RunPodSandbox + CreateContainer + "
                + "StartContainer, busybox `sleep`)");
        line("");
        line("| handler | median (ms) | mean (ms) | max (ms) |");
        line("|---|---|---|---|");
        for (String h : HANDLERS) {
            List<Double> ms = results.get(h).startMs();
            line("| `" + h + "` | " + fmt(VmmBenchmark.median(ms)) + " | "
                    + fmt(ms.stream().mapToDouble(d -> d).average().orElse(0)) + " | "
                    + fmt(ms.stream().mapToDouble(d -> d).max().orElse(0)) + " |");
        }
        line("");
        line("### memory with " + n + " pods up (PSS, MiB)");
        line("");
        line("| handler | management at 0 pods | management at " + n + " | its processes | management per pod "
                + "(marginal) | pod processes per pod |");
        line("|---|---|---|---|---|---|");
        for (String h : HANDLERS) {
            Result r = results.get(h);
            line("| `" + h + "` | " + fmt(r.mgmtBeforeMib()) + " | " + fmt(r.mgmtMib()) + " | " + r.mgmtProcs()
                    + " | " + fmt((r.mgmtMib() - r.mgmtBeforeMib()) / n) + " | " + fmt(r.podMib() / n) + " |");
        }
        line("");
        double ours = VmmBenchmark.median(results.get("kuasar-quark").startMs());
        double stock = VmmBenchmark.median(results.get("runsc").startMs());
        line("kuasar-quark starts a gVisor pod with its container in **" + fmt(ours / stock) + "×** the time of "
                + "gVisor behind the stock runc shim; its management memory at " + n + " pods is **"
                + fmt(results.get("kuasar-quark").mgmtMib() / results.get("runsc").mgmtMib()) + "×** the stock "
                + "shims'.");
        System.out.println(report);
        Path out = Path.of(opts.get("out"));
        Files.createDirectories(out);
        Files.writeString(out.resolve("report-quark.md"), report.toString());
    }

    private Result measure(String handler, int n) throws Exception {
        long sbx = Long.parseLong(opts.get("sandboxer-pid"));
        List<Double> ms = new ArrayList<>();
        try (CriClient cri = new CriClient(Path.of(opts.get("containerd-sock")), handler, Path.of(opts.get("logs")),
                Duration.ofSeconds(180))) {
            CriClient.Pod warm = cri.runPod("qwarm", false);
            cri.runContainer(warm, "c", "sleep", "3600");
            cri.cleanupAll().forEach(e -> log("cleanup: " + e));
            Thread.sleep(2000);
            double before = ProcMemory.sum(management(handler, sbx)).pssKb() / 1024.0;
            try {
                for (int i = 0; i < n; i++) {
                    long t0 = System.nanoTime();
                    CriClient.Pod pod = cri.runPod("qbench" + i, false);
                    cri.runContainer(pod, "c", "sleep", "3600");
                    ms.add((System.nanoTime() - t0) / 1e6);
                    log(handler + ": pod " + (i + 1) + "/" + n + " with its container in " + fmt(ms.getLast()) + " ms");
                }
                Thread.sleep(3000);
                List<Long> mgmt = management(handler, sbx);
                double mgmtMib = ProcMemory.sum(mgmt).pssKb() / 1024.0;
                double podMib = ProcMemory.sum(podProcesses(handler)).pssKb() / 1024.0;
                return new Result(ms, before, mgmtMib, mgmt.size(), podMib);
            } finally {
                cri.cleanupAll().forEach(e -> log("cleanup: " + e));
            }
        }
    }

    /** The processes that manage the pods of a handler (not the pods' own). */
    private static List<Long> management(String handler, long sandboxer) {
        List<Long> pids = new ArrayList<>();
        for (ProcMemory.Proc p : ProcMemory.all()) {
            if (handler.equals("kuasar-quark")) {
                if (p.pid() == sandboxer || p.ppid() == sandboxer && p.cmdline().contains("wait")) {
                    pids.add(p.pid());
                }
            } else if (p.exe().endsWith("/containerd-shim-runc-v2")) {
                pids.add(p.pid());
            }
        }
        return pids;
    }

    /** The pods' own processes: gVisor's (sentry and its stubs, gofers) or, for runc, everything below the shims. */
    private static List<Long> podProcesses(String handler) {
        List<ProcMemory.Proc> all = ProcMemory.all();
        Set<Long> roots = new HashSet<>();
        for (ProcMemory.Proc p : all) {
            boolean gvisor = !p.cmdline().isEmpty() && p.cmdline().getFirst().startsWith("runsc-");
            if (handler.equals("runc") ? p.exe().endsWith("/containerd-shim-runc-v2") : gvisor) {
                roots.add(p.pid());
            }
        }
        List<Long> out = new ArrayList<>();
        boolean grew = true;
        Set<Long> members = new HashSet<>(handler.equals("runc") ? Set.of() : roots);
        while (grew) {
            grew = false;
            for (ProcMemory.Proc p : all) {
                if (!members.contains(p.pid()) && (members.contains(p.ppid()) || roots.contains(p.ppid()))) {
                    members.add(p.pid());
                    grew = true;
                }
            }
        }
        out.addAll(members);
        return out;
    }

    private void line(String s) {
        report.append(s).append('\n');
    }

    private static void log(String s) {
        System.err.println("[bench-quark] " + s);
    }

    private static String fmt(double d) {
        return String.format(Locale.ROOT, "%.2f", d);
    }
}
