package io.kuasar.tests.e2e;

import io.kuasar.api.cri.v1.ContainerState;
import io.kuasar.api.cri.v1.NamespaceMode;
import io.kuasar.tests.cri.CriClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.stream.Stream;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * 100 pods created and removed (a third serially, the rest five at a time), each with two containers and an exec;
 * then the sandboxer's fds, threads and heap are back near their baseline and nothing of those pods remains.
 * Also: 100 concurrent ExecSync calls leave at most 5 extra fds.
 */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class ChurnTest {
    private static final int PODS = 100;
    private static final int SERIAL = 34;
    private static final int WORKERS = 5;
    private static final Duration T = Duration.ofSeconds(30);

    record Made(String pod, List<String> containers) {
    }

    private static Made cycle(CriClient cri, int i) {
        CriClient.Pod pod = cri.runPod("churn-" + i, i % 3 == 0, i % 2 == 0 ? NamespaceMode.POD : NamespaceMode.CONTAINER);
        String a = cri.runContainer(pod, "a", "sleep", "1000");
        String b = cri.runContainer(pod, "b", "sh", "-c", "echo started; exec sleep 1000");
        assertThat(cri.execSync(a, "sh", "-c", "echo " + i).stdout()).isEqualTo(i + "\n");
        cri.stopContainer(b, 0);
        assertThat(Cri.awaitState(cri, b, ContainerState.CONTAINER_EXITED, T).getExitCode()).isEqualTo(137);
        cri.stopAndRemovePod(pod.id());
        return new Made(pod.id(), List.of(a, b));
    }

    @Test
    void hundredPodsLeaveNothingBehind(E2eEnvironment env, CriClient cri) throws Exception {
        long pid = env.sandboxerPid();
        for (int i = 0; i < 3; i++) {
            cycle(cri, 1000 + i); // warm-up: thread pools, connections, JIT
        }
        env.gcSandboxer();
        int fds0 = Host.fdCount(pid);
        long threads0 = unpooledThreads(env);
        long heap0 = env.metric("kuasar_process_heap_used_bytes");

        List<Made> made = Collections.synchronizedList(new ArrayList<>());
        for (int i = 0; i < SERIAL; i++) {
            made.add(cycle(cri, i));
        }
        try (ExecutorService pool = Executors.newFixedThreadPool(WORKERS)) {
            List<Future<Made>> fs = new ArrayList<>();
            for (int i = SERIAL; i < PODS; i++) {
                int n = i;
                fs.add(pool.submit(() -> cycle(cri, n)));
            }
            for (Future<Made> f : fs) {
                made.add(f.get());
            }
        }
        assertThat(made).hasSize(PODS);
        assertThat(cri.listPods()).isEmpty();
        assertThat(cri.listContainers()).isEmpty();

        for (Made m : made) {
            assertThat(Host.pidsWithComm(Host.holderComm(m.pod()))).as("holder of " + m.pod()).isEmpty();
            assertThat(Host.mountsMentioning(m.pod())).isEmpty();
            assertThat(Cri.exists(env.stateDir().resolve("sandboxes").resolve(m.pod()))).isFalse();
            for (String c : m.containers()) {
                assertThat(Host.mountsMentioning(c)).isEmpty();
                assertThat(Cri.exists(Path.of(E2eEnvironment.RUNC_ROOT, c))).isFalse();
                assertThat(cgroupsOf(c)).as("cgroups of " + c).isEmpty();
            }
        }
        try (Stream<Path> left = Files.list(env.stateDir())) {
            assertThat(left.map(p -> p.getFileName().toString()))
                    .allMatch(n -> List.of("task.sock", "task-backend.sock", "task-proxy.pid", "task-proxy.log",
                            ".lock", "tty", "tasks", "sandboxes").contains(n));
        }
        try (Stream<Path> sandboxes = Files.list(env.stateDir().resolve("sandboxes"))) {
            assertThat(sandboxes).as("sandbox directories").isEmpty();
        }
        if (Files.isDirectory(env.stateDir().resolve("tasks"))) {
            try (Stream<Path> records = Files.list(env.stateDir().resolve("tasks"))) {
                assertThat(records).as("container records").isEmpty();
            }
        }
        if (Files.isDirectory(env.stateDir().resolve("tty"))) {
            try (Stream<Path> tty = Files.list(env.stateDir().resolve("tty"))) {
                assertThat(tty).as("console sockets").isEmpty();
            }
        }

        awaitAtMost(() -> zombieChildren(pid), 0, "zombie children of runc-sandboxer (unreaped monitors or holders)");
        env.gcSandboxer();
        awaitAtMost(() -> Host.fdCount(pid), fds0 + 3, "fds");
        // The JDK's pooled threads (process reaper, virtual-thread carriers) linger up to their keep-alive
        // (60 s / 30 s) after a burst; every other thread must be back to the baseline.
        awaitAtMost(() -> unpooledThreads(env), threads0 + 1, "threads other than JDK pools: " + threadNames(env));
        assertThat(threads(pid)).as("all threads, pools included").isLessThan(threads0 + 40);
        long heap = env.metric("kuasar_process_heap_used_bytes");
        assertThat(heap).as("heap after churn vs %d before", heap0).isLessThan(heap0 + (8L << 20));
    }

    @Test
    void hundredConcurrentExecsLeaveAtMostFiveFds(E2eEnvironment env, CriClient cri) throws Exception {
        long pid = env.sandboxerPid();
        CriClient.Pod pod = cri.runPod("execs", true);
        String c = cri.runContainer(pod, "target", "sleep", "1000");
        for (int i = 0; i < 3; i++) {
            cri.execSync(c, "true");
        }
        int fds0 = Host.fdCount(pid);
        try (ExecutorService pool = Executors.newVirtualThreadPerTaskExecutor()) {
            List<Future<CriClient.ExecResult>> fs = new ArrayList<>();
            for (int i = 0; i < 100; i++) {
                int n = i;
                fs.add(pool.submit(() -> cri.execSync(c, 60, "sh", "-c", "echo " + n)));
            }
            for (int i = 0; i < 100; i++) {
                CriClient.ExecResult r = fs.get(i).get();
                assertThat(r.exitCode()).isZero();
                assertThat(r.stdout()).isEqualTo(i + "\n");
            }
        }
        awaitAtMost(() -> Host.fdCount(pid), fds0 + 5, "fds after 100 concurrent execs");
        cri.stopAndRemovePod(pod.id());
    }

    private static long zombieChildren(long parent) {
        try (Stream<Path> procs = Files.list(Path.of("/proc"))) {
            return procs.filter(p -> p.getFileName().toString().chars().allMatch(Character::isDigit))
                    .map(p -> Host.read(p.resolve("stat")))
                    .filter(st -> !st.isEmpty())
                    .map(st -> st.substring(st.lastIndexOf(')') + 2).split(" "))
                    .filter(f -> f[0].equals("Z") && Long.parseLong(f[1]) == parent).count();
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    private static long threads(long pid) {
        return Host.read(Path.of("/proc/" + pid + "/status")).lines().filter(l -> l.startsWith("Threads:"))
                .map(l -> Long.parseLong(l.substring("Threads:".length()).trim())).findFirst().orElse(-1L);
    }

    private static List<String> threadList(E2eEnvironment env) {
        Path jcmd = Path.of(System.getProperty("java.home"), "bin", "jcmd");
        String dump = Host.run(Duration.ofSeconds(20), java.util.Map.of(), null, jcmd.toString(),
                Long.toString(env.sandboxerPid()), "Thread.print").output();
        return dump.lines().filter(l -> l.startsWith("\"")).map(l -> l.substring(1, l.indexOf('"', 1))).toList();
    }

    private static long unpooledThreads(E2eEnvironment env) {
        return threadList(env).stream().filter(n -> !n.equals("process reaper")
                && !n.startsWith("ForkJoinPool-1-worker-") && !n.equals("Attach Listener")).count();
    }

    private static String threadNames(E2eEnvironment env) {
        return String.join(", ", threadList(env));
    }

    private static List<Path> cgroupsOf(String containerId) {
        List<Path> found = new ArrayList<>();
        for (String ctl : List.of("memory", "cpu", "pids", "cpuacct", "blkio", "devices", "freezer", "unified")) {
            Path p = Path.of("/sys/fs/cgroup", ctl, "k8s.io", containerId);
            if (Files.exists(p)) {
                found.add(p);
            }
        }
        return found;
    }

    private static void awaitAtMost(java.util.function.LongSupplier value, long max, String what) {
        long end = System.nanoTime() + Duration.ofSeconds(15).toNanos();
        long v = value.getAsLong();
        while (v > max && System.nanoTime() < end) {
            Cri.sleep(250);
            v = value.getAsLong();
        }
        assertThat(v).as(what + " (limit " + max + ")").isLessThanOrEqualTo(max);
    }
}
