package io.kuasar.tests.benchmark;

import io.kuasar.sandbox.config.SandboxerConfig;
import io.kuasar.tests.cri.CriClient;
import io.kuasar.vmm.config.QemuConfig;
import io.kuasar.vmm.hypervisor.VmSpec;
import io.kuasar.vmm.qemu.QemuCommand;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * {@code make bench-vmm}: Kuasar's pod start benchmark on {@code kuasar-vmm} through CRI (pod + one container, serial
 * with a 1 s pause, and N pods at once), cold (the VM boots) and from the VM template, against the floor of this
 * machine: the same QEMU command line booting an initramfs whose busybox init only prints a marker. Reports p50, p90
 * and max of RunPodSandbox and of pod + container, every point of the pod + container CDF, the QEMU-to-agent and
 * SetupSandbox times from the sandboxer's log, and host memory with a serial run's pods up (QEMU PSS, the
 * sandboxer's PSS and its marginal PSS per pod). One warm-up pod runs first and is not counted. The sandboxer must
 * run with {@code enable_template = true} (run.sh writes such a config); cold pods opt out per pod.
 */
public final class VmmBenchmark {
    private static final String MARKER = "KUASAR-FLOOR-READY";
    private static final Pattern AGENT = Pattern.compile("sandbox (\\w+): VM \\d+ booted, agent answered in (\\d+) ms, "
            + "set up in (\\d+) ms");

    private final Map<String, String> opts;
    private final StringBuilder report = new StringBuilder();

    private VmmBenchmark(Map<String, String> opts) {
        this.opts = opts;
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> o = new HashMap<>(Map.of("pods", "5"));
        for (int i = 0; i + 1 < args.length; i += 2) {
            o.put(args[i].replaceFirst("^--", ""), args[i + 1]);
        }
        for (String required : List.of("containerd-sock", "sandboxer-pid", "config", "sandboxer-log", "logs", "out",
                "work")) {
            if (!o.containsKey(required)) {
                System.err.println("usage: VmmBenchmark --containerd-sock S --sandboxer-pid P --config TOML "
                        + "--sandboxer-log F --logs DIR --out DIR --work DIR [--pods 5] [--parallel-max 10] [--cold-parallel-max 5]");
                System.exit(2);
            }
        }
        new VmmBenchmark(o).run();
    }

    private void run() throws Exception {
        int n = Integer.parseInt(opts.get("pods"));
        Path out = Path.of(opts.get("out"));
        Files.createDirectories(out);
        QemuConfig qemu = QemuConfig.from(SandboxerConfig.load(Path.of(opts.get("config"))).section("hypervisor"),
                opts.get("config"));
        String accel = qemu.effectiveAccelerator();

        List<Double> floor = new ArrayList<>();
        List<Long> floorPss = new ArrayList<>();
        Path work = Path.of(opts.get("work"));
        Path initrd = floorInitrd(work.resolve("floor"));
        for (int i = 0; i < n; i++) {
            double[] f = floorBoot(qemu, accel, initrd, work.resolve("floor/vm" + i));
            floor.add(f[0]);
            floorPss.add((long) f[1]);
            log("floor boot " + (i + 1) + "/" + n + ": " + fmt(f[0]) + " s");
        }

        long sbx = Long.parseLong(opts.get("sandboxer-pid"));
        Path sandboxerLog = Path.of(opts.get("sandboxer-log"));
        int big = Integer.parseInt(opts.getOrDefault("parallel-max", "10"));
        List<Phase> phases = new ArrayList<>();
        try (CriClient cri = new CriClient(Path.of(opts.get("containerd-sock")), "kuasar-vmm",
                Path.of(opts.get("logs")), Duration.ofSeconds(600))) {
            awaitTemplate(sandboxerLog);
            CriClient.Pod warm = cri.runPod("vmwarm", false);
            cri.runContainer(warm, "c", "sleep", "3600");
            cri.cleanupAll().forEach(e -> log("cleanup: " + e));
            Thread.sleep(2000);
            // Kuasar's benchmark: serial (with a pause between pods, as its scripts sleep 1 s), then parallel
            // Ten cold boots at once do not fit this machine kind (2 cores, TCG): each takes ~2 minutes, and some run
            // past containerd's deadline for a sandbox start. Cold runs go to 5 at once (--cold-parallel-max).
            int coldBig = Integer.parseInt(opts.getOrDefault("cold-parallel-max", "5"));
            for (boolean template : new boolean[]{false, true}) {
                phases.add(measure(cri, sbx, template, n, false));
                for (int p : java.util.stream.IntStream.of(5, template ? big : coldBig).distinct().toArray()) {
                    phases.add(measure(cri, sbx, template, p, true));
                }
            }
        }
        Map<String, long[]> agent = agentTimes(sandboxerLog, phases.stream().flatMap(p -> p.ids.stream()).toList());

        line("## microVM pods (`make bench-vmm`)");
        line("");
        line("QEMU " + accel.toUpperCase(Locale.ROOT) + ", machine `" + qemu.machineType() + "`, " + qemu.vcpus()
                + " vCPU, " + qemu.memoryInMb() + " MiB, kernel `" + qemu.kernelPath() + "`; each pod has one busybox "
                + "container (`sleep`); one warm-up pod before, not counted. **cold**: the VM boots (the pod carries "
                + "`io.kuasar.vmm.template: \"false\"`); **template**: the VM is a copy of the saved VM template "
                + "(`enable_template = true`). Serial: one pod after the other, 1 s apart (Kuasar's scripts); parallel: "
                + "N pods started at once, each timed from the common start.");
        line("");
        line("| start | floor: bare QEMU + kernel + busybox init to its marker (s) | median " + fmt(median(floor))
                + " | max " + fmt(max(floor)) + " |");
        line("|---|---|---|---|");
        line("");
        line("| mode | pods | RunPodSandbox p50 / p90 / max (s) | pod + container p50 / p90 / max (s) | QEMU → agent "
                + "answers, p50 (s) | SetupSandbox p50 (s) |");
        line("|---|---|---|---|---|---|");
        for (Phase p : phases) {
            List<Double> answer = new ArrayList<>();
            List<Double> setup = new ArrayList<>();
            for (String id : p.ids) {
                long[] v = agent.get(id);
                if (v != null) {
                    answer.add(v[0] / 1000.0);
                    setup.add(v[1] / 1000.0);
                }
            }
            line("| " + p.label() + " | " + p.ids.size() + " | " + pct(p.runPod) + " | " + pct(p.podAndContainer)
                    + " | " + fmt(median(answer)) + " | " + fmt(median(setup)) + " |");
        }
        line("");
        line("Pod + container start, every pod sorted (the CDF's points, s):");
        line("");
        for (Phase p : phases) {
            line("* " + p.label() + ": " + String.join(" ", p.podAndContainer.stream().sorted().map(VmmBenchmark::fmt)
                    .toList()));
        }
        line("");
        line("| host memory per pod (all pods of a serial run up) | cold | template |");
        line("|---|---|---|");
        Phase coldSerial = phases.stream().filter(p -> !p.template && !p.parallel).findFirst().orElseThrow();
        Phase tmplSerial = phases.stream().filter(p -> p.template && !p.parallel).findFirst().orElseThrow();
        line("| QEMU PSS, median (max) (MiB) | " + fmt(median(coldSerial.qemuMiB())) + " (" + fmt(max(coldSerial.qemuMiB()))
                + ") | " + fmt(median(tmplSerial.qemuMiB())) + " (" + fmt(max(tmplSerial.qemuMiB())) + ") |");
        line("| sandboxer PSS with the pods up (MiB) | " + fmt(coldSerial.sbxAfterKb / 1024.0) + " | "
                + fmt(tmplSerial.sbxAfterKb / 1024.0) + " |");
        line("| sandboxer marginal PSS per pod ((PSS at N − PSS at 0) / N, MiB) | "
                + fmt(coldSerial.marginalMiB()) + " | " + fmt(tmplSerial.marginalMiB()) + " |");
        line("| floor VM (bare QEMU at its marker) PSS, median (MiB) | " + fmt(median(floorPss.stream()
                .map(k -> k / 1024.0).toList())) + " | |");
        line("");
        double tmplRun = median(tmplSerial.runPod);
        line("Target: RunPodSandbox from the template ≤ 1.0 s: " + (tmplRun <= 1.0 ? "**met**" : "**not met**") + " ("
                + fmt(tmplRun) + " s median, serial; cold: " + fmt(median(coldSerial.runPod)) + " s).");
        System.out.println(report);
        Files.writeString(out.resolve("report-vmm.md"), report.toString());
    }

    /** One run of pods: their start times and, for a serial run, host memory with all of them up. */
    private static final class Phase {
        final boolean template;
        final boolean parallel;
        final List<String> ids = new java.util.concurrent.CopyOnWriteArrayList<>();
        final List<Double> runPod = new java.util.concurrent.CopyOnWriteArrayList<>();
        final List<Double> podAndContainer = new java.util.concurrent.CopyOnWriteArrayList<>();
        final List<Long> qemuPssKb = new ArrayList<>();
        long sbxBeforeKb;
        long sbxAfterKb;

        Phase(boolean template, boolean parallel) {
            this.template = template;
            this.parallel = parallel;
        }

        String label() {
            return (template ? "template" : "cold") + ", " + (parallel ? ids.size() + " in parallel" : "serial");
        }

        List<Double> qemuMiB() {
            return qemuPssKb.stream().map(k -> k / 1024.0).toList();
        }

        double marginalMiB() {
            return ids.isEmpty() ? Double.NaN : (sbxAfterKb - sbxBeforeKb) / 1024.0 / ids.size();
        }
    }

    private Phase measure(CriClient cri, long sbx, boolean template, int n, boolean parallel) throws Exception {
        Phase ph = new Phase(template, parallel);
        String prefix = (template ? "t" : "c") + (parallel ? "p" + n : "s") + "-";
        log(ph.label() + ", " + n + " pods");
        ph.sbxBeforeKb = ProcMemory.usage(sbx).pssKb();
        try {
            if (parallel) {
                long t0 = System.nanoTime();
                List<Thread> threads = new ArrayList<>();
                List<Exception> failures = new java.util.concurrent.CopyOnWriteArrayList<>();
                for (int i = 0; i < n; i++) {
                    String name = prefix + i;
                    threads.add(Thread.ofPlatform().start(() -> {
                        try {
                            startPod(cri, ph, name, template, t0);
                        } catch (Exception e) {
                            failures.add(e);
                        }
                    }));
                }
                for (Thread t : threads) {
                    t.join();
                }
                if (!failures.isEmpty()) {
                    throw failures.getFirst();
                }
            } else {
                for (int i = 0; i < n; i++) {
                    startPod(cri, ph, prefix + i, template, System.nanoTime());
                    Thread.sleep(1000);
                }
                Thread.sleep(5000); // let the guests settle (the agent's class loading, page cache)
                ph.sbxAfterKb = ProcMemory.usage(sbx).pssKb();
                for (String id : ph.ids) {
                    long pid = qemuOf(id);
                    ProcMemory.Usage u = pid > 0 ? ProcMemory.usage(pid) : null;
                    ph.qemuPssKb.add(u == null ? 0 : u.pssKb());
                }
            }
        } finally {
            cri.cleanupAll().forEach(e -> log("cleanup: " + e));
        }
        log(ph.label() + ", " + n + " pods: pod + container p50 " + fmt(median(ph.podAndContainer)) + " s, max "
                + fmt(max(ph.podAndContainer)) + " s");
        return ph;
    }

    private static void startPod(CriClient cri, Phase ph, String name, boolean template, long t0) {
        var config = cri.podConfig(name, false, io.kuasar.api.cri.v1.NamespaceMode.CONTAINER).toBuilder()
                .putAnnotations("io.kuasar.vmm.template", Boolean.toString(template)).build();
        CriClient.Pod pod = cri.runPod(config, "kuasar-vmm", Duration.ofMinutes(10));
        long t1 = System.nanoTime();
        cri.runContainer(pod, "c", "sleep", "3600");
        long t2 = System.nanoTime();
        ph.ids.add(pod.id());
        ph.runPod.add((t1 - t0) / 1e9);
        ph.podAndContainer.add((t2 - t0) / 1e9);
        log(name + ": RunPodSandbox " + fmt((t1 - t0) / 1e9) + " s, with its container " + fmt((t2 - t0) / 1e9) + " s");
    }

    /** The sandboxer makes its VM template in the background at start: the runs begin once it is there. */
    private static void awaitTemplate(Path sandboxerLog) throws Exception {
        long end = System.nanoTime() + Duration.ofMinutes(10).toNanos();
        while (true) {
            String l = Files.readString(sandboxerLog, StandardCharsets.ISO_8859_1);
            if (l.contains("VM template made") || l.contains("matches this QEMU")) {
                return;
            }
            if (l.contains("no VM template (")) {
                throw new IllegalStateException("the sandboxer could not make its VM template:\n" + String.join("\n",
                        l.lines().filter(x -> x.contains("template") || x.contains("Exception")).toList()));
            }
            if (System.nanoTime() > end) {
                throw new IllegalStateException("no VM template within 10 minutes; see " + sandboxerLog);
            }
            Thread.sleep(500);
        }
    }

    private static String pct(List<Double> v) {
        if (v.isEmpty()) {
            return "–";
        }
        List<Double> s = v.stream().sorted().toList();
        double p90 = s.get(Math.min(s.size() - 1, (int) Math.ceil(0.9 * s.size()) - 1));
        return fmt(median(v)) + " / " + fmt(p90) + " / " + fmt(max(v));
    }

    /** An initramfs with busybox whose init prints the marker and powers off. */
    private static Path floorInitrd(Path dir) throws Exception {
        Path root = dir.resolve("root");
        Files.createDirectories(root.resolve("bin"));
        Files.createDirectories(root.resolve("dev"));
        Files.copy(Path.of("/bin/busybox"), root.resolve("bin/busybox"),
                java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        Path init = root.resolve("init");
        Files.writeString(init, "#!/bin/busybox sh\necho " + MARKER + " > /dev/console\n"
                + "exec /bin/busybox poweroff -f\n");
        Files.setPosixFilePermissions(init, PosixFilePermissions.fromString("rwxr-xr-x"));
        Path out = dir.resolve("floor.initrd");
        Process p = new ProcessBuilder("sh", "-c", "cd " + root + " && find . | cpio -o -H newc --quiet > " + out)
                .redirectErrorStream(true).start();
        if (p.waitFor() != 0) {
            throw new IOException("cpio failed: " + new String(p.getInputStream().readAllBytes(),
                    StandardCharsets.UTF_8));
        }
        return out;
    }

    /** One floor boot: seconds until the marker, and the VM's PSS (KiB) then. */
    private static double[] floorBoot(QemuConfig qemu, String accel, Path initrd, Path dir) throws Exception {
        Files.createDirectories(dir.resolve("shared"));
        VmSpec spec = new VmSpec("floor", dir, dir.resolve("shared"), qemu.vcpus(), qemu.memoryInMb(), "", List.of());
        List<String> cmd = new ArrayList<>(QemuCommand.build(qemu, accel, spec));
        cmd.set(cmd.indexOf("-initrd") + 1, initrd.toString());
        Path console = dir.resolve("console.log");
        long t0 = System.nanoTime();
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(dir.resolve("qemu.log").toFile())
                .start();
        try {
            while (true) {
                if (Files.exists(console) && Files.readString(console, StandardCharsets.ISO_8859_1).contains(MARKER)) {
                    double s = (System.nanoTime() - t0) / 1e9;
                    ProcMemory.Usage u = ProcMemory.usage(p.pid());
                    return new double[]{s, u == null ? 0 : u.pssKb()};
                }
                if (!p.isAlive()) {
                    throw new IllegalStateException("the floor VM exited without its marker; see " + console);
                }
                if ((System.nanoTime() - t0) > 120e9) {
                    throw new IllegalStateException("no marker from the floor VM in 120 s; see " + console);
                }
                Thread.sleep(5);
            }
        } finally {
            p.destroyForcibly().waitFor();
        }
    }

    /** The QEMU of a pod: the process named {@code sandbox-<id>}. */
    private static long qemuOf(String id) {
        for (ProcMemory.Proc p : ProcMemory.all()) {
            int i = p.cmdline().indexOf("-name");
            if (i >= 0 && i + 1 < p.cmdline().size() && p.cmdline().get(i + 1).equals("sandbox-" + id)) {
                return p.pid();
            }
        }
        return -1;
    }

    /** For each measured pod: ms until the agent answered, and ms of SetupSandbox, from the sandboxer's log. */
    private static Map<String, long[]> agentTimes(Path log, List<String> ids) throws IOException {
        Map<String, long[]> times = new HashMap<>();
        for (String line : Files.readAllLines(log, StandardCharsets.ISO_8859_1)) {
            Matcher m = AGENT.matcher(line);
            if (m.find() && ids.contains(m.group(1))) {
                times.put(m.group(1), new long[]{Long.parseLong(m.group(2)), Long.parseLong(m.group(3))});
            }
        }
        return times;
    }

    private void row(String name, List<Double> v) {
        line("| " + name + " | " + fmt(median(v)) + " | " + fmt(max(v)) + " |");
    }

    private void line(String s) {
        report.append(s).append('\n');
    }

    private static List<Double> minus(List<Double> v, double d) {
        return v.stream().map(x -> x - d).toList();
    }

    static double median(List<Double> v) {
        if (v.isEmpty()) {
            return Double.NaN;
        }
        List<Double> s = v.stream().sorted().toList();
        int m = s.size() / 2;
        return s.size() % 2 == 1 ? s.get(m) : (s.get(m - 1) + s.get(m)) / 2;
    }

    private static double max(List<Double> v) {
        return v.stream().mapToDouble(Double::doubleValue).max().orElse(Double.NaN);
    }

    private static String fmt(double d) {
        return String.format(Locale.ROOT, "%.2f", d);
    }

    private static void log(String s) {
        System.err.println("[bench-vmm] " + s);
    }
}
