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
 * {@code make bench-vmm}: microVM pods through CRI on {@code kuasar-vmm}, against the floor of this machine: the same
 * QEMU command line vmm-sandboxer builds (same kernel, machine, devices, accelerator, memory), booting an initramfs
 * whose busybox init only prints a marker. Serial, N pods (median and max):
 * <ul>
 *   <li>floor: QEMU start until the marker is on the serial console;</li>
 *   <li>RunPodSandbox, and pod + container start (RunPodSandbox + CreateContainer + StartContainer);</li>
 *   <li>host memory per pod with N pods up: QEMU PSS, plus the sandboxer's marginal PSS ((PSS at N − PSS at 0) / N).
 *       The floor VM's PSS at its marker is shown beside it.</li>
 * </ul>
 * One pod is started and removed before the measured ones (the daemon's first pod warms its JIT); it is not counted.
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
                        + "--sandboxer-log F --logs DIR --out DIR --work DIR [--pods 5]");
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
        List<Double> runPod = new ArrayList<>();
        List<Double> podAndContainer = new ArrayList<>();
        List<String> ids = new ArrayList<>();
        List<Long> qemuPss = new ArrayList<>();
        long sbxBefore;
        long sbxAfter;
        try (CriClient cri = new CriClient(Path.of(opts.get("containerd-sock")), "kuasar-vmm",
                Path.of(opts.get("logs")), Duration.ofSeconds(180))) {
            CriClient.Pod warm = cri.runPod("vmwarm", false);
            cri.runContainer(warm, "c", "sleep", "3600");
            cri.cleanupAll().forEach(e -> log("cleanup: " + e));
            Thread.sleep(2000);
            sbxBefore = ProcMemory.usage(sbx).pssKb();
            try {
                for (int i = 0; i < n; i++) {
                    long t0 = System.nanoTime();
                    CriClient.Pod pod = cri.runPod("vmbench" + i, false);
                    long t1 = System.nanoTime();
                    cri.runContainer(pod, "c", "sleep", "3600");
                    long t2 = System.nanoTime();
                    ids.add(pod.id());
                    runPod.add((t1 - t0) / 1e9);
                    podAndContainer.add((t2 - t0) / 1e9);
                    log("pod " + (i + 1) + "/" + n + ": RunPodSandbox " + fmt(runPod.getLast()) + " s, with its "
                            + "container " + fmt(podAndContainer.getLast()) + " s");
                }
                Thread.sleep(5000); // let the guests settle (the agent's class loading, page cache)
                sbxAfter = ProcMemory.usage(sbx).pssKb();
                for (String id : ids) {
                    long pid = qemuOf(id);
                    ProcMemory.Usage u = pid > 0 ? ProcMemory.usage(pid) : null;
                    qemuPss.add(u == null ? 0 : u.pssKb());
                }
            } finally {
                cri.cleanupAll().forEach(e -> log("cleanup: " + e));
            }
        }

        Map<String, long[]> agent = agentTimes(Path.of(opts.get("sandboxer-log")), ids);
        List<Double> agentAnswer = new ArrayList<>();
        List<Double> setup = new ArrayList<>();
        agent.values().forEach(v -> {
            agentAnswer.add(v[0] / 1000.0);
            setup.add(v[1] / 1000.0);
        });
        double marginalMiB = (sbxAfter - sbxBefore) / 1024.0 / n;
        List<Double> qemuMiB = qemuPss.stream().map(k -> k / 1024.0).toList();
        List<Double> floorMiB = floorPss.stream().map(k -> k / 1024.0).toList();

        line("## microVM pods (`make bench-vmm`)");
        line("");
        line("QEMU " + accel.toUpperCase(Locale.ROOT) + ", machine `" + qemu.machineType() + "`, " + qemu.vcpus()
                + " vCPU, " + qemu.memoryInMb() + " MiB, kernel `" + qemu.kernelPath() + "`; " + n
                + " pods serially (one warm-up pod before, not counted); each pod has one busybox container.");
        line("");
        line("| step | median | max |");
        line("|---|---|---|");
        row("floor: bare QEMU + kernel + busybox init, start → marker on the console (s)", floor);
        row("RunPodSandbox (s)", runPod);
        row("pod + container start: RunPodSandbox + CreateContainer + StartContainer (s)", podAndContainer);
        row("  of which: QEMU start → guest agent answers (sandboxer log) (s)", agentAnswer);
        row("  of which: SetupSandbox in the guest (s)", setup);
        row("RunPodSandbox − floor (s)", minus(runPod, median(floor)));
        row("pod + container − floor (s)", minus(podAndContainer, median(floor)));
        line("");
        line("| host memory per pod (" + n + " pods up) | MiB |");
        line("|---|---|");
        line("| QEMU PSS, median (max) | " + fmt(median(qemuMiB)) + " (" + fmt(max(qemuMiB)) + ") |");
        line("| sandboxer marginal PSS ((PSS at " + n + " − PSS at 0) / " + n + ") | " + fmt(marginalMiB) + " |");
        line("| **total per pod** | **" + fmt(median(qemuMiB) + marginalMiB) + "** |");
        line("| floor VM (bare QEMU at its marker) PSS, median | " + fmt(median(floorMiB)) + " |");
        line("");
        double gap = median(runPod) - median(floor);
        double mem = median(qemuMiB) + marginalMiB;
        line("Targets: pod-ready − floor ≤ 1.0 s: " + (gap <= 1.0 ? "**met**" : "**not met**") + " (" + fmt(gap)
                + " s); host memory per pod ≤ 200 MiB: " + (mem <= 200 ? "**met**" : "**not met**") + " ("
                + fmt(mem) + " MiB).");
        System.out.println(report);
        Files.writeString(out.resolve("report-vmm.md"), report.toString());
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
