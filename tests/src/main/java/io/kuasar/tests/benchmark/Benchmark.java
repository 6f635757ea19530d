package io.kuasar.tests.benchmark;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import io.kuasar.api.cri.v1.NamespaceMode;
import io.kuasar.tests.cri.CriClient;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Function;

/**
 * The 1:N benchmark: N pods with one container each, through CRI, on our {@code kuasar-runc} handler and on
 * containerd's stock {@code runc} handler (podsandbox + pause + containerd-shim-runc-v2) of the same containerd.
 *
 * <p>For each N and mode (serial, then parallel with {@code --workers} concurrent clients) and each handler: start N
 * pods (RunPodSandbox + CreateContainer + StartContainer per pod, the container runs {@code sleep}), sample the PSS
 * of the management processes with all N pods running, then stop and remove every pod (StopContainer with timeout 0,
 * RemoveContainer, StopPodSandbox, RemovePodSandbox, as kubelet does). Management processes are, for
 * {@code kuasar-runc}, the sandboxer JVM and every process of its libexec helpers ({@code kuasar-holder} per pod);
 * for {@code runc}, every
 * {@code containerd-shim-runc-v2} of this containerd and every pause process. Container processes and containerd
 * are excluded (containerd's PSS is reported on its own).
 *
 * <p>Not a unit test: a main started by {@code tests/benchmark/run.sh} (which owns containerd and the sandboxer and
 * cleans up). Prints a Markdown report on stdout and writes raw JSON and CSV into {@code --out}.
 */
public final class Benchmark {
    static final String OURS = "kuasar-runc";
    static final String STOCK = "runc";
    /** The pause image's command (tests/e2e/env.sh builds it from busybox-static). */
    static final List<String> PAUSE_CMD = List.of("/bin/sleep", "2147483647");
    /** The benchmark container's command: distinct from the pause command, so the two can be told apart. */
    static final List<String> CONTAINER_CMD = List.of("/bin/sleep", "1000000000");

    // ---- options
    Path containerdSock;
    long containerdPid;
    long sandboxerPid;
    /** Our install's libexec directory: every process running one of its binaries is a management process. */
    Path libexec;
    Path logs;
    Path out = Path.of("tests/target/benchmark");
    List<Integer> podCounts = List.of(20, 50);
    int workers = 10;
    List<String> handlers = List.of(OURS, STOCK);
    List<String> modes = List.of("serial", "parallel");
    boolean hostNetwork;
    int warmup = 5;
    long settleMs = 2000;
    String label = "";
    boolean cleanupOnly;
    boolean nmt;
    /** OCI runtimes whose bare create + start is measured as the floor (by default those of the handlers). */
    List<String> floorRuntimes = null;
    Path imageTar = Path.of("/var/cache/kuasar-e2e/images/busybox-oci.tar");
    static final String FLOOR = "floor:";

    // ---- results
    final List<PhaseResult> phases = new ArrayList<>();
    final List<MemSample> memory = new ArrayList<>();
    final Map<String, Object> machine = new LinkedHashMap<>();
    final Map<String, CriClient> clients = new LinkedHashMap<>();
    final AtomicInteger podSeq = new AtomicInteger();

    /** One pod's start or stop timings, in nanoseconds per CRI call, in call order. */
    record PodTiming(int pod, long totalNs, long[] stepsNs) {
    }

    /** A started pod and its one container. */
    record BenchPod(CriClient.Pod pod, String container) {
    }

    record PhaseResult(String handler, int n, String mode, String op, List<String> steps, List<PodTiming> pods,
                       long wallNs) {
    }

    record MemSample(String handler, String point, int pods, String mode, Map<String, Component> components,
                     long mgmtPssKb, long mgmtRssKb, long mgmtUssKb, long sandboxerThreads, long sandboxerFds,
                     String loadavg, List<String> foreignSharers) {
        MemSample withSharers(List<String> s) {
            return new MemSample(handler, point, pods, mode, components, mgmtPssKb, mgmtRssKb, mgmtUssKb,
                    sandboxerThreads, sandboxerFds, loadavg, s);
        }
    }

    record Component(int count, long pssKb, long rssKb, long ussKb) {
    }

    public static void main(String[] args) throws Exception {
        Benchmark b = new Benchmark();
        try {
            b.parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println("Benchmark: " + e.getMessage());
            System.err.println(USAGE);
            System.exit(2);
        }
        int rc = b.run();
        System.exit(rc);
    }

    static final String USAGE = """
            usage: Benchmark --containerd-sock PATH --containerd-pid PID --sandboxer-pid PID --libexec DIR --logs DIR
                             [--out DIR] [--pods 20,50] [--workers 10] [--handlers kuasar-runc,runc]
                             [--modes serial,parallel] [--network pod|host] [--warmup 5] [--settle-ms 2000]
                             [--label TEXT] [--nmt true] [--cleanup-only true] [--floor runc|none]
                             [--image-tar busybox-oci.tar]""";

    /** Our sandboxer's handlers (kuasar-runc, kuasar-crun); the others are containerd's stock ones. */
    static boolean ours(String handler) {
        return handler.startsWith("kuasar-");
    }

    /** The OCI runtime a handler's containers run on (its floor): crun for the *-crun handlers, else runc. */
    static String runtimeOf(String handler) {
        return handler.endsWith("crun") ? "crun" : "runc";
    }

    void parse(String[] args) {
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (i + 1 >= args.length) {
                throw new IllegalArgumentException("missing value for " + a);
            }
            String v = args[++i];
            switch (a) {
                case "--containerd-sock" -> containerdSock = Path.of(v);
                case "--containerd-pid" -> containerdPid = Long.parseLong(v);
                case "--sandboxer-pid" -> sandboxerPid = Long.parseLong(v);
                case "--libexec" -> libexec = Path.of(v);
                case "--logs" -> logs = Path.of(v);
                case "--out" -> out = Path.of(v);
                case "--pods" -> podCounts = Arrays.stream(v.split(",")).map(Integer::parseInt).toList();
                case "--workers" -> workers = Integer.parseInt(v);
                case "--handlers" -> handlers = List.of(v.split(","));
                case "--modes" -> modes = List.of(v.split(","));
                case "--network" -> {
                    if (!v.equals("pod") && !v.equals("host")) {
                        throw new IllegalArgumentException("--network must be pod or host");
                    }
                    hostNetwork = v.equals("host");
                }
                case "--warmup" -> warmup = Integer.parseInt(v);
                case "--settle-ms" -> settleMs = Long.parseLong(v);
                case "--label" -> label = v;
                case "--cleanup-only" -> cleanupOnly = Boolean.parseBoolean(v);
                case "--nmt" -> nmt = Boolean.parseBoolean(v);
                case "--floor" -> floorRuntimes = v.equals("none") ? List.of() : List.of(v.split(","));
                case "--image-tar" -> imageTar = Path.of(v);
                default -> throw new IllegalArgumentException("unknown option " + a);
            }
        }
        if (cleanupOnly && containerdSock != null && logs != null) {
            return;
        }
        if (containerdSock == null || containerdPid <= 0 || logs == null
                || handlers.stream().anyMatch(Benchmark::ours) && (sandboxerPid <= 0 || libexec == null)) {
            throw new IllegalArgumentException("--containerd-sock, --containerd-pid, --logs (and for " + OURS
                    + " --sandboxer-pid, --libexec) are required");
        }
        for (String m : modes) {
            if (!m.equals("serial") && !m.equals("parallel")) {
                throw new IllegalArgumentException("unknown mode " + m);
            }
        }
    }

    int run() throws Exception {
        if (cleanupOnly) {
            try (CriClient cri = new CriClient(containerdSock, OURS, logs, Duration.ofSeconds(60))) {
                List<String> errors = cri.cleanupAll();
                errors.forEach(err -> log("cleanup: " + err));
                return errors.isEmpty() ? 0 : 1;
            }
        }
        if (libexec != null) {
            libexec = libexec.toRealPath();
        }
        Files.createDirectories(out);
        if (floorRuntimes == null) {
            floorRuntimes = handlers.stream().map(Benchmark::runtimeOf).distinct().filter(Benchmark::onPath).toList();
        }
        Instant began = Instant.now();
        boolean ok = false;
        OciFloor floor = null;
        try {
            if (!floorRuntimes.isEmpty()) {
                floor = new OciFloor(Files.createTempDirectory(Path.of("/tmp"), "kuasar-floor-"), imageTar);
                for (String rt : floorRuntimes) {
                    runFloor(floor, rt, warmup, "serial", false); // warm-up, not recorded
                }
            }
            for (String h : handlers) {
                clients.put(h, new CriClient(containerdSock, h, logs, Duration.ofSeconds(60)));
            }
            describeMachine();
            log("containerd " + machine.get("containerd") + "; handlers " + handlers + "; pods " + podCounts
                    + "; modes " + modes + "; network " + (hostNetwork ? "host" : "pod (CNI bridge)"));
            for (String h : handlers) {
                warmUp(h);
            }
            for (String h : handlers) {
                memory.add(sampleMemory(h, "idle after warm-up", 0, "-"));
            }
            int round = 0;
            for (int n : podCounts) {
                for (String mode : modes) {
                    // Alternate which handler goes first, so that drift (load, containerd's own state) is shared.
                    List<String> order = new ArrayList<>(handlers);
                    if (round++ % 2 == 1) {
                        Collections.reverse(order);
                    }
                    for (String h : order) {
                        runPhase(h, n, mode);
                    }
                    for (String rt : floorRuntimes) {
                        runFloor(floor, rt, n, mode, true);
                    }
                }
            }
            for (String h : handlers) {
                memory.add(sampleMemory(h, "idle at the end", 0, "-"));
            }
            ok = true;
        } catch (Exception | Error e) {
            log("FAILED: " + e);
            e.printStackTrace();
        } finally {
            if (floor != null) {
                try {
                    floor.close();
                } catch (Exception e) {
                    log("floor cleanup: " + e);
                }
            }
            for (CriClient c : clients.values()) {
                List<String> errors = c.cleanupAll();
                errors.forEach(err -> log("cleanup: " + err));
                break; // one client sees every pod of this containerd
            }
            clients.values().forEach(CriClient::close);
        }
        machine.put("began", began.toString());
        machine.put("seconds", Duration.between(began, Instant.now()).toSeconds());
        writeRaw();
        String report = report();
        Files.writeString(out.resolve("report.md"), report);
        System.out.println(report);
        return ok ? 0 : 1;
    }

    // ---------------------------------------------------------------------------------------------------------
    // Phases

    void warmUp(String h) throws Exception {
        if (warmup <= 0) {
            return;
        }
        long t0 = System.nanoTime();
        List<BenchPod> pods = new ArrayList<>();
        for (int i = 0; i < warmup; i++) {
            pods.add(startPod(h, "warm", new long[3]));
        }
        waitForProcesses(h, warmup);
        for (BenchPod p : pods) {
            stopPod(h, p, new long[4]);
        }
        // and once in parallel, so that the concurrent paths are loaded too
        List<BenchPod> par = Collections.synchronizedList(new ArrayList<>());
        parallel(warmup, i -> {
            par.add(startPod(h, "warm", new long[3]));
            return null;
        });
        parallel(par.size(), i -> {
            stopPod(h, par.get(i), new long[4]);
            return null;
        });
        waitForProcesses(h, 0);
        log(String.format("%s: warmed up with %d + %d pods in %.1f s", h, warmup, warmup,
                (System.nanoTime() - t0) / 1e9));
    }

    void runPhase(String h, int n, String mode) throws Exception {
        boolean par = mode.equals("parallel");
        List<BenchPod> pods = Collections.synchronizedList(new ArrayList<>(Collections.nCopies(n, null)));
        List<PodTiming> starts = Collections.synchronizedList(new ArrayList<>());
        long t0 = System.nanoTime();
        Function<Integer, Void> start = i -> {
            long[] steps = new long[3];
            long s = System.nanoTime();
            BenchPod p = startPod(h, "p" + n + mode.charAt(0), steps);
            starts.add(new PodTiming(i, System.nanoTime() - s, steps));
            pods.set(i, p);
            return null;
        };
        if (par) {
            parallel(n, start);
        } else {
            for (int i = 0; i < n; i++) {
                start.apply(i);
            }
        }
        long startWall = System.nanoTime() - t0;
        phases.add(new PhaseResult(h, n, mode, "start",
                List.of("RunPodSandbox", "CreateContainer", "StartContainer"), sorted(starts), startWall));
        log(String.format("%s: %d pods started (%s) in %.2f s", h, n, mode, startWall / 1e9));

        waitForProcesses(h, n);
        memory.add(sampleMemory(h, "running", n, mode));
        if (nmt && ours(h)) {
            String jcmd = System.getProperty("kuasar.bench.jcmd", "jcmd");
            // Diagnostics (perturb later samples: the histogram runs a full GC).
            Files.writeString(out.resolve("nmt-" + n + "-" + mode + ".txt"),
                    command(jcmd, Long.toString(sandboxerPid), "VM.native_memory", "summary") + "\n"
                            + command(jcmd, Long.toString(sandboxerPid), "VM.metaspace", "summary") + "\n"
                            + histogram(jcmd, 40));
        }

        List<PodTiming> stops = Collections.synchronizedList(new ArrayList<>());
        t0 = System.nanoTime();
        Function<Integer, Void> stop = i -> {
            long[] steps = new long[4];
            long s = System.nanoTime();
            stopPod(h, pods.get(i), steps);
            stops.add(new PodTiming(i, System.nanoTime() - s, steps));
            return null;
        };
        if (par) {
            parallel(n, stop);
        } else {
            for (int i = 0; i < n; i++) {
                stop.apply(i);
            }
        }
        long stopWall = System.nanoTime() - t0;
        phases.add(new PhaseResult(h, n, mode, "stop+remove",
                List.of("StopContainer", "RemoveContainer", "StopPodSandbox", "RemovePodSandbox"), sorted(stops),
                stopWall));
        log(String.format("%s: %d pods stopped and removed (%s) in %.2f s", h, n, mode, stopWall / 1e9));
        waitForProcesses(h, 0);
    }

    /**
     * The floor: n containers started straight with the OCI runtime ({@code create}, then {@code start}), serially or
     * by the same number of workers as the pods, then removed (untimed). Bundles are made before the clock starts.
     */
    void runFloor(OciFloor floor, String runtime, int n, String mode, boolean record) throws Exception {
        String name = Path.of(runtime).getFileName().toString();
        List<String> ids = new ArrayList<>();
        List<Path> bundles = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            String id = "kuasar-floor-" + name + "-" + podSeq.incrementAndGet();
            ids.add(id);
            bundles.add(floor.bundle(runtime, id, CONTAINER_CMD));
        }
        List<PodTiming> starts = Collections.synchronizedList(new ArrayList<>());
        Function<Integer, Void> one = i -> {
            try {
                long s = System.nanoTime();
                floor.create(runtime, ids.get(i), bundles.get(i));
                long c = System.nanoTime();
                floor.start(runtime, ids.get(i));
                long e = System.nanoTime();
                starts.add(new PodTiming(i, e - s, new long[]{c - s, e - c}));
            } catch (Exception ex) {
                throw new IllegalStateException(ex);
            }
            return null;
        };
        long t0 = System.nanoTime();
        if (mode.equals("parallel")) {
            parallel(n, one);
        } else {
            for (int i = 0; i < n; i++) {
                one.apply(i);
            }
        }
        long wall = System.nanoTime() - t0;
        floor.removeAll();
        if (record) {
            phases.add(new PhaseResult(FLOOR + name, n, mode, "start", List.of("create", "start"), sorted(starts),
                    wall));
            log(String.format("floor %s: %d containers started (%s) in %.2f s", name, n, mode, wall / 1e9));
        }
    }

    static boolean onPath(String binary) {
        for (String dir : System.getenv().getOrDefault("PATH", "/usr/sbin:/usr/bin").split(":")) {
            if (Files.isExecutable(Path.of(dir, binary))) {
                return true;
            }
        }
        return false;
    }

    private static List<PodTiming> sorted(List<PodTiming> l) {
        List<PodTiming> c = new ArrayList<>(l);
        c.sort((a, b) -> Integer.compare(a.pod(), b.pod()));
        return c;
    }

    BenchPod startPod(String h, String prefix, long[] steps) {
        CriClient cri = clients.get(h);
        String name = "bench-" + (ours(h) ? "k" : "r") + "-" + prefix + "-" + podSeq.incrementAndGet();
        long t = System.nanoTime();
        CriClient.Pod pod = cri.runPod(cri.podConfig(name, hostNetwork, NamespaceMode.CONTAINER));
        long t1 = System.nanoTime();
        String c = cri.createContainer(pod, "sleeper", CONTAINER_CMD.toArray(String[]::new));
        long t2 = System.nanoTime();
        cri.startContainer(c);
        long t3 = System.nanoTime();
        steps[0] = t1 - t;
        steps[1] = t2 - t1;
        steps[2] = t3 - t2;
        return new BenchPod(pod, c);
    }

    void stopPod(String h, BenchPod p, long[] steps) {
        CriClient cri = clients.get(h);
        long t = System.nanoTime();
        cri.stopContainer(p.container(), 0);
        long t1 = System.nanoTime();
        cri.removeContainer(p.container());
        long t2 = System.nanoTime();
        cri.stopPod(p.pod().id());
        long t3 = System.nanoTime();
        cri.removePod(p.pod().id());
        long t4 = System.nanoTime();
        steps[0] = t1 - t;
        steps[1] = t2 - t1;
        steps[2] = t3 - t2;
        steps[3] = t4 - t3;
    }

    /** Runs task(0..n-1) on {@link #workers} threads; the first failure is rethrown after all have finished. */
    void parallel(int n, Function<Integer, Void> task) throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(workers);
        try {
            List<Future<Void>> fs = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                int idx = i;
                fs.add(pool.submit(() -> task.apply(idx)));
            }
            Exception first = null;
            for (Future<Void> f : fs) {
                try {
                    f.get(10, TimeUnit.MINUTES);
                } catch (java.util.concurrent.ExecutionException e) {
                    if (first == null) {
                        first = e.getCause() instanceof Exception x ? x : e;
                    }
                }
            }
            if (first != null) {
                throw first;
            }
        } finally {
            pool.shutdownNow();
        }
    }

    // ---------------------------------------------------------------------------------------------------------
    // Processes and memory

    /**
     * The processes of both handlers, found in /proc. {@code helpers}: processes running a binary of our install's
     * libexec directory ({@code kuasar-holder}, and any per-pod or per-container helper added later), by binary name.
     * {@code ourContainers} / {@code stockContainers}: benchmark containers whose parent is one of our processes /
     * one of this containerd's shims.
     */
    record Census(List<Long> sandboxer, Map<String, List<Long>> helpers, List<Long> shims, List<Long> pauses,
                  List<Long> ourContainers, List<Long> stockContainers) {
        List<Long> helper(String name) {
            return helpers.getOrDefault(name, List.of());
        }
    }

    static final String HOLDER = "kuasar-holder";
    /** Helpers that live as long as one container: none may be left once every pod is gone. */
    static final List<String> PER_CONTAINER = List.of("kuasar-monitor");

    Census census() {
        List<ProcMemory.Proc> all = ProcMemory.all();
        String sock = containerdSock.toString();
        String lib = libexec == null ? null : libexec + "/";
        List<Long> shims = new ArrayList<>();
        Map<String, List<Long>> helpers = new java.util.TreeMap<>();
        java.util.Set<Long> ours = new java.util.HashSet<>();
        if (sandboxerPid > 0) {
            ours.add(sandboxerPid);
        }
        for (ProcMemory.Proc p : all) {
            if (p.exe().endsWith("/containerd-shim-runc-v2")) {
                int a = p.cmdline().indexOf("-address");
                if (a >= 0 && a + 1 < p.cmdline().size() && p.cmdline().get(a + 1).equals(sock)) {
                    shims.add(p.pid());
                }
            } else if (lib != null && p.exe().startsWith(lib)) {
                helpers.computeIfAbsent(p.exe().substring(lib.length()), k -> new ArrayList<>()).add(p.pid());
                ours.add(p.pid());
            }
        }
        List<Long> pauses = new ArrayList<>();
        List<Long> ourContainers = new ArrayList<>();
        List<Long> stockContainers = new ArrayList<>();
        for (ProcMemory.Proc p : all) {
            if (p.cmdline().equals(PAUSE_CMD) && shims.contains(p.ppid())) {
                pauses.add(p.pid());
            } else if (p.cmdline().equals(CONTAINER_CMD)) {
                if (shims.contains(p.ppid())) {
                    stockContainers.add(p.pid());
                } else if (ours.contains(p.ppid())) {
                    ourContainers.add(p.pid());
                }
            }
        }
        return new Census(sandboxerPid > 0 ? List.of(sandboxerPid) : List.of(), helpers, shims, pauses,
                ourContainers, stockContainers);
    }

    /**
     * Waits until the handler has n pods' management processes and n running containers: for kuasar-runc n
     * holders (and, at n = 0, no per-container helper either; daemon-wide helpers such as the ttrpc proxy stay),
     * for runc n shims and n pause processes.
     */
    void waitForProcesses(String h, int n) throws InterruptedException {
        long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (true) {
            Census c = census();
            boolean okay = ours(h)
                    ? c.helper(HOLDER).size() == n && c.ourContainers().size() == n
                            && (n > 0 || PER_CONTAINER.stream().allMatch(x -> c.helper(x).isEmpty()))
                    : c.shims().size() == n && c.pauses().size() == n && c.stockContainers().size() == n;
            if (okay) {
                return;
            }
            if (System.nanoTime() > end) {
                throw new IllegalStateException(String.format(
                        "%s: expected %d pods' processes, found helpers %s, shims %d, pause %d, containers %d + %d",
                        h, n, c.helpers(), c.shims().size(), c.pauses().size(), c.ourContainers().size(),
                        c.stockContainers().size()));
            }
            Thread.sleep(100);
        }
    }

    /** Settles, then takes three samples 500 ms apart and keeps the one with the median management PSS. */
    MemSample sampleMemory(String h, String point, int n, String mode) throws InterruptedException {
        Thread.sleep(settleMs);
        List<MemSample> samples = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            if (i > 0) {
                Thread.sleep(500);
            }
            samples.add(sampleOnce(h, point, n, mode));
        }
        samples.sort((a, b) -> Long.compare(a.mgmtPssKb(), b.mgmtPssKb()));
        MemSample s = samples.get(1).withSharers(foreignSharers(h));
        if (!s.foreignSharers().isEmpty()) {
            log("WARNING: processes outside the benchmark share the management processes' binaries, which lowers "
                    + "their PSS: " + s.foreignSharers());
        }
        log(String.format("%s: %s, %d pods (%s): management PSS %.1f MB, containerd PSS %.1f MB", h, point, n, mode,
                s.mgmtPssKb() / 1024.0, s.components().get("containerd").pssKb() / 1024.0));
        return s;
    }

    MemSample sampleOnce(String h, String point, int n, String mode) {
        Census c = census();
        Map<String, Component> comps = new LinkedHashMap<>();
        Component total;
        if (ours(h)) {
            total = component(c.sandboxer());
            comps.put("sandboxer", total);
            if (c.helpers().isEmpty()) {
                comps.put(HOLDER, component(List.of()));
            }
            for (var e : c.helpers().entrySet()) {
                Component helper = component(e.getValue());
                comps.put(e.getKey(), helper);
                total = add(total, helper);
            }
        } else {
            Component shims = component(c.shims());
            Component pauses = component(c.pauses());
            comps.put("shims", shims);
            comps.put("pause", pauses);
            total = add(shims, pauses);
        }
        comps.put("containers", component(ours(h) ? c.ourContainers() : c.stockContainers()));
        comps.put("containerd", component(List.of(containerdPid)));
        String load = "";
        try {
            load = Files.readString(Path.of("/proc/loadavg")).trim();
        } catch (IOException e) {
            // informational only
        }
        return new MemSample(h, point, n, mode, comps, total.pssKb(), total.rssKb(), total.ussKb(),
                sandboxerPid > 0 ? ProcMemory.status(sandboxerPid, "Threads") : -1,
                sandboxerPid > 0 ? ProcMemory.fds(sandboxerPid) : -1, load, List.of());
    }

    /**
     * Processes other than this handler's management processes that map the same binaries (another JVM of the
     * sandboxer's JDK, shims of another containerd): PSS splits shared pages between all of them, so their presence
     * makes the management processes look smaller than they are on a node of their own.
     */
    List<String> foreignSharers(String h) {
        Census c = census();
        List<Long> own = new ArrayList<>();
        String needle;
        if (ours(h)) {
            ProcMemory.Proc p = ProcMemory.read(sandboxerPid);
            if (p == null || p.exe().isEmpty()) {
                return List.of();
            }
            needle = Path.of(p.exe()).getParent().getParent().resolve("lib").toString() + "/";
            own.addAll(c.sandboxer());
        } else {
            needle = "/containerd-shim-runc-v2";
            own.addAll(c.shims());
        }
        List<String> out = new ArrayList<>();
        for (ProcMemory.Proc p : ProcMemory.all()) {
            if (own.contains(p.pid()) || p.pid() == ProcessHandle.current().pid()) {
                continue;
            }
            try {
                if (Files.readString(Path.of("/proc/" + p.pid() + "/maps")).contains(needle)) {
                    out.add(p.pid() + " " + p.comm());
                }
            } catch (IOException | RuntimeException e) {
                // gone or unreadable
            }
        }
        return out;
    }

    private static Component component(List<Long> pids) {
        ProcMemory.Usage u = ProcMemory.sum(pids);
        return new Component(pids.size(), u.pssKb(), u.rssKb(), u.ussKb());
    }

    private static Component add(Component a, Component b) {
        return new Component(a.count() + b.count(), a.pssKb() + b.pssKb(), a.rssKb() + b.rssKb(),
                a.ussKb() + b.ussKb());
    }

    // ---------------------------------------------------------------------------------------------------------
    // Machine description

    void describeMachine() {
        CriClient any = clients.values().iterator().next();
        var v = any.version();
        machine.put("containerd", v.getRuntimeName() + " " + v.getRuntimeVersion() + " (CRI " + v.getRuntimeApiVersion()
                + ")");
        machine.put("kernel", read("/proc/sys/kernel/osrelease"));
        machine.put("cpus", Runtime.getRuntime().availableProcessors());
        machine.put("cpu", read("/proc/cpuinfo").lines().filter(l -> l.startsWith("model name")).findFirst()
                .map(l -> l.substring(l.indexOf(':') + 1).trim()).orElse("?"));
        machine.put("memTotal", read("/proc/meminfo").lines().findFirst().orElse("?").replaceAll("\\s+", " "));
        machine.put("os", read("/etc/os-release").lines().filter(l -> l.startsWith("PRETTY_NAME="))
                .findFirst().orElse("?").replace("PRETTY_NAME=", "").replace("\"", ""));
        machine.put("runc", command("runc", "--version").lines().findFirst().orElse("?"));
        if (onPath("crun")) {
            machine.put("crun", command("crun", "--version").lines().findFirst().orElse("?"));
        }
        if (sandboxerPid > 0) {
            ProcMemory.Proc p = ProcMemory.read(sandboxerPid);
            machine.put("sandboxerCommand", p == null ? "?" : String.join(" ", p.cmdline()));
            if (p != null && !p.exe().isEmpty()) {
                machine.put("sandboxerJava", command(p.exe(), "-version").lines().skip(1).findFirst().orElse("?"));
            }
        }
        machine.put("network", hostNetwork ? "host" : "pod (CNI bridge)");
        machine.put("workers", workers);
        machine.put("warmup", warmup);
        machine.put("label", label);
    }

    /** The first {@code top} lines and the Total line of a class histogram (live objects, after a full GC). */
    private String histogram(String jcmd, int top) {
        List<String> lines = command(jcmd, Long.toString(sandboxerPid), "GC.class_histogram").lines().toList();
        List<String> keep = new ArrayList<>(lines.subList(0, Math.min(top, lines.size())));
        lines.stream().filter(l -> l.startsWith("Total")).forEach(keep::add);
        return String.join("\n", keep);
    }

    private static String read(String path) {
        try {
            return Files.readString(Path.of(path)).trim();
        } catch (IOException e) {
            return "?";
        }
    }

    private static String command(String... cmd) {
        try {
            Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
            String s = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
            p.waitFor(10, TimeUnit.SECONDS);
            return s;
        } catch (IOException e) {
            return "?";
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return "?";
        }
    }

    // ---------------------------------------------------------------------------------------------------------
    // Output

    void writeRaw() throws IOException {
        Map<String, Object> json = new LinkedHashMap<>();
        json.put("machine", machine);
        List<Map<String, Object>> ph = new ArrayList<>();
        for (PhaseResult p : phases) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("handler", p.handler());
            m.put("pods", p.n());
            m.put("mode", p.mode());
            m.put("op", p.op());
            m.put("wallMs", p.wallNs() / 1e6);
            m.put("perPodMs", stats(p.pods().stream().map(PodTiming::totalNs).toList()));
            Map<String, Object> steps = new LinkedHashMap<>();
            for (int i = 0; i < p.steps().size(); i++) {
                int idx = i;
                steps.put(p.steps().get(i), stats(p.pods().stream().map(t -> t.stepsNs()[idx]).toList()));
            }
            m.put("stepsMs", steps);
            ph.add(m);
        }
        json.put("phases", ph);
        json.put("memory", memory);
        json.put("targets", targets());
        new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT).writeValue(out.resolve("results.json").toFile(),
                json);

        StringBuilder csv = new StringBuilder("handler,pods,mode,op,pod,total_ms,step,step_ms\n");
        for (PhaseResult p : phases) {
            for (PodTiming t : p.pods()) {
                for (int i = 0; i < p.steps().size(); i++) {
                    csv.append(String.format(Locale.ROOT, "%s,%d,%s,%s,%d,%.3f,%s,%.3f%n", p.handler(), p.n(),
                            p.mode(), p.op(), t.pod(), t.totalNs() / 1e6, p.steps().get(i), t.stepsNs()[i] / 1e6));
                }
            }
        }
        Files.writeString(out.resolve("latency.csv"), csv);
        StringBuilder mcsv = new StringBuilder("handler,point,pods,mode,component,count,pss_kb,rss_kb,uss_kb,"
                + "sandboxer_threads,sandboxer_fds\n");
        for (MemSample s : memory) {
            for (var e : s.components().entrySet()) {
                mcsv.append(String.format(Locale.ROOT, "%s,%s,%d,%s,%s,%d,%d,%d,%d,%d,%d%n", s.handler(), s.point(),
                        s.pods(), s.mode(), e.getKey(), e.getValue().count(), e.getValue().pssKb(),
                        e.getValue().rssKb(), e.getValue().ussKb(), s.sandboxerThreads(), s.sandboxerFds()));
            }
        }
        Files.writeString(out.resolve("memory.csv"), mcsv);
    }

    static Map<String, Double> stats(List<Long> ns) {
        Map<String, Double> m = new LinkedHashMap<>();
        m.put("median", pct(ns, 50));
        m.put("p90", pct(ns, 90));
        m.put("p99", pct(ns, 99));
        m.put("min", pct(ns, 0));
        m.put("max", pct(ns, 100));
        m.put("mean", ns.stream().mapToLong(Long::longValue).average().orElse(0) / 1e6);
        return m;
    }

    /** Nearest-rank percentile in ms (p0 = min). */
    static double pct(List<Long> ns, double p) {
        if (ns.isEmpty()) {
            return Double.NaN;
        }
        List<Long> s = new ArrayList<>(ns);
        Collections.sort(s);
        int rank = (int) Math.ceil(p / 100.0 * s.size());
        return s.get(Math.max(0, Math.min(s.size() - 1, rank - 1))) / 1e6;
    }

    PhaseResult phase(String h, int n, String mode, String op) {
        return phases.stream().filter(p -> p.handler().equals(h) && p.n() == n && p.mode().equals(mode)
                && p.op().equals(op)).findFirst().orElse(null);
    }

    MemSample mem(String h, String point, int n, String mode) {
        return memory.stream().filter(m -> m.handler().equals(h) && m.point().equals(point) && m.pods() == n
                && m.mode().equals(mode)).findFirst().orElse(null);
    }

    /** The three targets, evaluated on this run. */
    List<Map<String, Object>> targets() {
        List<Map<String, Object>> t = new ArrayList<>();
        for (String ours : handlers.stream().filter(Benchmark::ours).toList()) {
            String who = ours.equals(OURS) ? "" : ours + ": ";
            for (int n : podCounts) {
                for (String mode : modes) {
                    PhaseResult o = phase(ours, n, mode, "start");
                    PhaseResult s = phase(STOCK, n, mode, "start");
                    if (o == null || s == null) {
                        continue;
                    }
                    double om = pct(o.pods().stream().map(PodTiming::totalNs).toList(), 50);
                    double sm = pct(s.pods().stream().map(PodTiming::totalNs).toList(), 50);
                    t.add(target(who + "start, median per pod, " + mode + ", N=" + n, om / sm, 0.5,
                            String.format(Locale.ROOT, "%.0f ms vs %.0f ms", om, sm)));
                    double or = pct(o.pods().stream().map(x -> x.stepsNs()[0]).toList(), 50);
                    double sr = pct(s.pods().stream().map(x -> x.stepsNs()[0]).toList(), 50);
                    t.add(target(who + "(pod sandbox only) RunPodSandbox, median, " + mode + ", N=" + n, or / sr,
                            0.5, String.format(Locale.ROOT, "%.0f ms vs %.0f ms", or, sr)));
                    t.add(target(who + "start, wall time for all pods, " + mode + ", N=" + n,
                            (double) o.wallNs() / s.wallNs(), 0.5,
                            String.format(Locale.ROOT, "%.2f s vs %.2f s", o.wallNs() / 1e9, s.wallNs() / 1e9)));
                }
            }
        }
        int max = podCounts.stream().mapToInt(Integer::intValue).max().orElse(0);
        int min = podCounts.stream().mapToInt(Integer::intValue).min().orElse(0);
        for (String mode : modes) {
            MemSample o = mem(OURS, "running", max, mode);
            MemSample s = mem(STOCK, "running", max, mode);
            if (o != null && s != null) {
                t.add(target("management PSS at " + max + " pods (after " + mode + " start)",
                        (double) o.mgmtPssKb() / s.mgmtPssKb(), 0.25,
                        String.format(Locale.ROOT, "%.1f MB vs %.1f MB", o.mgmtPssKb() / 1024.0,
                                s.mgmtPssKb() / 1024.0)));
            }
            if (min != max) {
                for (String h : List.of(OURS, STOCK)) {
                    MemSample a = mem(h, "running", min, mode);
                    MemSample b = mem(h, "running", max, mode);
                    if (a != null && b != null) {
                        double perPod = (b.mgmtPssKb() - a.mgmtPssKb()) / 1024.0 / (max - min);
                        Map<String, Object> m = new LinkedHashMap<>();
                        m.put("target", "marginal management PSS per pod, " + h + ", N=" + min + "→" + max + " ("
                                + mode + ")");
                        m.put("value", perPod);
                        m.put("limit", ours(h) ? 0.3 : null);
                        m.put("met", ours(h) ? perPod <= 0.3 : null);
                        m.put("detail", String.format(Locale.ROOT, "%.3f MB per pod", perPod));
                        t.add(m);
                    }
                }
            }
        }
        return t;
    }

    private static Map<String, Object> target(String what, double value, double limit, String detail) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("target", what);
        m.put("value", value);
        m.put("limit", limit);
        m.put("met", value <= limit);
        m.put("detail", detail);
        return m;
    }

    String report() {
        StringBuilder r = new StringBuilder();
        r.append("## Kuasar (Java) benchmark: ").append(String.join(" vs ", handlers)).append("\n\n");
        r.append(String.format("containerd %s; %s; %s CPUs (%s); kernel %s; runc %s; pod network: %s; "
                        + "%d parallel workers; warm-up %d pods per handler; run took %s s.%n%n",
                machine.get("containerd"), machine.get("os"), machine.get("cpus"), machine.get("cpu"),
                machine.get("kernel"), machine.get("runc") + (machine.containsKey("crun") ? "; " + machine.get("crun")
                        : ""), machine.get("network"), workers, warmup,
                machine.get("seconds")));
        if (machine.containsKey("sandboxerCommand")) {
            r.append("runc-sandboxer: `").append(machine.get("sandboxerCommand")).append("`\n\n");
        }
        if (!label.isEmpty()) {
            r.append("Label: ").append(label).append("\n\n");
        }

        r.append("### Per-pod latency (ms) and wall time for all pods (s)\n\n");
        r.append("Start = RunPodSandbox + CreateContainer + StartContainer; stop+remove = StopContainer (timeout 0) + "
                + "RemoveContainer + StopPodSandbox + RemovePodSandbox. Percentiles are nearest-rank (with N = 20 "
                + "the p99 is the slowest pod).\n\n");
        r.append("| handler | N | mode | start median | p90 | p99 | start wall | stop+rm median | p90 | p99 | "
                + "stop+rm wall |\n");
        r.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for (int n : podCounts) {
            for (String mode : modes) {
                for (String h : handlers) {
                    PhaseResult s = phase(h, n, mode, "start");
                    PhaseResult x = phase(h, n, mode, "stop+remove");
                    if (s == null) {
                        continue;
                    }
                    List<Long> st = s.pods().stream().map(PodTiming::totalNs).toList();
                    List<Long> xt = x == null ? List.of() : x.pods().stream().map(PodTiming::totalNs).toList();
                    r.append(String.format(Locale.ROOT,
                            "| %s | %d | %s | %.0f | %.0f | %.0f | %.2f | %.0f | %.0f | %.0f | %.2f |%n", h, n, mode,
                            pct(st, 50), pct(st, 90), pct(st, 99), s.wallNs() / 1e9, pct(xt, 50), pct(xt, 90),
                            pct(xt, 99), x == null ? Double.NaN : x.wallNs() / 1e9));
                }
            }
        }
        r.append("\n### Median per CRI call (ms)\n\n");
        r.append("| handler | N | mode | RunPodSandbox | CreateContainer | StartContainer | StopContainer | "
                + "RemoveContainer | StopPodSandbox | RemovePodSandbox |\n");
        r.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for (int n : podCounts) {
            for (String mode : modes) {
                for (String h : handlers) {
                    PhaseResult s = phase(h, n, mode, "start");
                    PhaseResult x = phase(h, n, mode, "stop+remove");
                    if (s == null || x == null) {
                        continue;
                    }
                    r.append(String.format("| %s | %d | %s", h, n, mode));
                    for (PhaseResult p : List.of(s, x)) {
                        for (int i = 0; i < p.steps().size(); i++) {
                            int idx = i;
                            r.append(String.format(Locale.ROOT, " | %.0f",
                                    pct(p.pods().stream().map(t -> t.stepsNs()[idx]).toList(), 50)));
                        }
                    }
                    r.append(" |\n");
                }
            }
        }

        if (!floorRuntimes.isEmpty()) {
            r.append("\n### Floor: the OCI runtime alone (ms)\n\n");
            r.append("N containers started straight with `<runtime> create` + `start` on prepared bundles (the same "
                    + "busybox sleep on a shared read-only rootfs, own namespaces, no network set up, no containerd), "
                    + "serially or by the same number of workers: what any handler pays the OCI runtime per "
                    + "container.\n\n");
            r.append("| OCI runtime | N | mode | create+start median | p90 | create median | start median | wall (s) |\n");
            r.append("|---|---:|---|---:|---:|---:|---:|---:|\n");
            for (int n : podCounts) {
                for (String mode : modes) {
                    for (String rt : floorRuntimes) {
                        PhaseResult f = phase(FLOOR + Path.of(rt).getFileName(), n, mode, "start");
                        if (f == null) {
                            continue;
                        }
                        List<Long> tot = f.pods().stream().map(PodTiming::totalNs).toList();
                        r.append(String.format(Locale.ROOT, "| %s | %d | %s | %.0f | %.0f | %.0f | %.0f | %.2f |%n",
                                rt, n, mode, pct(tot, 50), pct(tot, 90),
                                pct(f.pods().stream().map(x -> x.stepsNs()[0]).toList(), 50),
                                pct(f.pods().stream().map(x -> x.stepsNs()[1]).toList(), 50), f.wallNs() / 1e9));
                    }
                }
            }
            r.append("\n### Overhead above the floor (median, ms)\n\n");
            r.append("Each handler's figure as floor + overhead: a pod start runs the OCI runtime for 1 container "
                    + "(kuasar: the pod needs none) or 2 (stock: pause + container); StartContainer is where "
                    + "containerd creates and starts the container's task.\n\n");
            r.append("| handler | N | mode | pod start | floor × containers | overhead | StartContainer | floor | "
                    + "overhead |\n");
            r.append("|---|---:|---|---:|---:|---:|---:|---:|---:|\n");
            for (int n : podCounts) {
                for (String mode : modes) {
                    for (String h : handlers) {
                        PhaseResult s = phase(h, n, mode, "start");
                        PhaseResult f = phase(FLOOR + runtimeOf(h), n, mode, "start");
                        if (s == null || f == null) {
                            continue;
                        }
                        int containers = ours(h) ? 1 : 2;
                        double start = pct(s.pods().stream().map(PodTiming::totalNs).toList(), 50);
                        double sc = pct(s.pods().stream().map(x -> x.stepsNs()[2]).toList(), 50);
                        double fl = pct(f.pods().stream().map(PodTiming::totalNs).toList(), 50);
                        r.append(String.format(Locale.ROOT, "| %s | %d | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f |%n",
                                h, n, mode, start, fl * containers, start - fl * containers, sc, fl, sc - fl));
                    }
                }
            }
        }

        r.append("\n### Memory of management processes (MB)\n\n");
        r.append("PSS from /proc/PID/smaps_rollup (RSS and USS = private pages for reference). kuasar-runc: the "
                + "runc-sandboxer JVM + every process of its libexec helpers (kuasar-holder, one per pod); runc: every containerd-shim-runc-v2 of this containerd + "
                + "every pause process. Container processes and containerd are not counted; containerd is shown on "
                + "its own.\n\n");
        r.append("| handler | when | pods | PSS | made of | PSS per pod | RSS | USS | containerd PSS | "
                + "sandboxer threads |\n");
        r.append("|---|---|---:|---:|---|---:|---:|---:|---:|---:|\n");
        for (MemSample m : memory) {
            String parts;
            if (ours(m.handler())) {
                StringBuilder p = new StringBuilder(String.format(Locale.ROOT, "JVM %.1f",
                        m.components().get("sandboxer").pssKb() / 1024.0));
                for (var e : m.components().entrySet()) {
                    if (e.getKey().startsWith("kuasar-")) {
                        p.append(String.format(Locale.ROOT, " + %d %s %.2f", e.getValue().count(), e.getKey(),
                                e.getValue().pssKb() / 1024.0));
                    }
                }
                parts = p.toString();
            } else {
                Component s = m.components().get("shims");
                Component p = m.components().get("pause");
                parts = String.format(Locale.ROOT, "%d shims %.1f + %d pause %.2f", s.count(), s.pssKb() / 1024.0,
                        p.count(), p.pssKb() / 1024.0);
            }
            String when = m.point().equals("running") ? "after " + m.mode() + " start" : m.point();
            r.append(String.format(Locale.ROOT, "| %s | %s | %d | %.1f | %s | %s | %.1f | %.1f | %.1f | %s |%n",
                    m.handler(), when, m.pods(), m.mgmtPssKb() / 1024.0, parts,
                    m.pods() > 0 ? String.format(Locale.ROOT, "%.2f", m.mgmtPssKb() / 1024.0 / m.pods()) : "–",
                    m.mgmtRssKb() / 1024.0, m.mgmtUssKb() / 1024.0,
                    m.components().get("containerd").pssKb() / 1024.0,
                    ours(m.handler()) ? Long.toString(m.sandboxerThreads()) : "–"));
        }

        List<Map<String, Object>> t = targets();
        if (!t.isEmpty()) {
            r.append("\n### Targets\n\n| target | measured | ratio / value | limit | met |\n|---|---|---:|---:|---|\n");
            for (Map<String, Object> m : t) {
                Object limit = m.get("limit");
                Object met = m.get("met");
                String fmt = String.valueOf(m.get("target")).startsWith("marginal") ? "%.3f" : "%.2f";
                r.append(String.format(Locale.ROOT, "| %s | %s | " + fmt + " | %s | %s |%n", m.get("target"),
                        m.get("detail"), (Double) m.get("value"), limit == null ? "–" : limit.toString(),
                        met == null ? "–" : ((Boolean) met ? "yes" : "**no**")));
            }
        }
        List<String> warn = memory.stream().filter(m -> !m.foreignSharers().isEmpty())
                .map(m -> m.handler() + " (" + m.point() + ", " + m.pods() + " pods): " + m.foreignSharers()).toList();
        if (!warn.isEmpty()) {
            r.append("\n**Warning**: other processes mapped the same binaries while memory was sampled (their "
                    + "share of common pages is not counted above):\n\n");
            warn.forEach(w -> r.append("* ").append(w).append("\n"));
        }
        r.append("\nRaw data: ").append(out.resolve("results.json")).append(", latency.csv, memory.csv\n");
        return r.toString();
    }

    static void log(String msg) {
        System.err.println("[bench " + java.time.LocalTime.now().withNano(0) + "] " + msg);
    }
}
