package io.kuasar.tests.e2e;

import io.kuasar.api.cri.v1.ContainerState;
import io.kuasar.api.cri.v1.PodSandboxState;
import io.kuasar.tests.cri.CriClient;
import io.kuasar.tests.cri.StreamClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * microVM pods on the {@code kuasar-vmm} handler: real QEMU (TCG on machines without hardware virtualisation),
 * the project's guest kernel and initrd, vmm-task as the guest's PID 1, driven by containerd's CRI. Each pod boots a
 * VM, so the cases are few and each checks much.
 */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class VmmPodTest {
    private static final Duration STREAM = Duration.ofSeconds(30);

    @Test
    void aPodIsAVmWithExecLogsNetworkAndSharedNamespacesAndLeavesNothingBehind(E2eEnvironment env) throws Exception {
        CriClient cri = env.vmmCri();
        long t0 = System.nanoTime();
        CriClient.Pod pod = cri.runPod("vmpod", false);
        long bootMs = (System.nanoTime() - t0) / 1_000_000;
        E2eEnvironment.log("kuasar-vmm RunPodSandbox took " + bootMs + " ms");
        // the boot and the guest setup are steps in the daemon's metrics (and spans when tracing is on)
        assertThat(MetricsTest.sample(env.scrapeMetrics("vmm"), "kuasar_step_duration_seconds_count{step=\"vm.boot\"}"))
                .isPositive();
        assertThat(MetricsTest.sample(env.scrapeMetrics("vmm"), "kuasar_step_duration_seconds_count{step=\"vm.setup\"}"))
                .isPositive();
        String c1 = cri.runContainer(pod, "web", CriClient.ContainerOptions.defaults().logPath("web.log"), "sh", "-c",
                "echo started on $(uname -r); mkdir -p /www; echo hello-from-the-vm > /www/index.html; "
                        + "exec httpd -f -p 8080 -h /www");

        // The container runs on the guest's kernel, not the host's.
        String hostKernel = Files.readString(Path.of("/proc/sys/kernel/osrelease")).trim();
        CriClient.ExecResult uname = cri.execSync(c1, "uname", "-r");
        assertThat(uname.exitCode()).isZero();
        assertThat(uname.stdout().trim()).isNotEmpty().isNotEqualTo(hostKernel);

        // Exec: both streams and the real exit code.
        CriClient.ExecResult r = cri.execSync(c1, "sh", "-c", "echo out; echo err >&2; exit 7");
        assertThat(r.exitCode()).isEqualTo(7);
        assertThat(r.stdout()).isEqualTo("out\n");
        assertThat(r.stderr()).isEqualTo("err\n");

        // Logs: the container's stdout reaches CRI's log file.
        Path log = pod.logDirectory().resolve("web.log");
        Cri.awaitFileContains(log, "started on " + uname.stdout().trim(), Duration.ofSeconds(20));

        // Network: the pod IP answers from the host, served by the container inside the VM.
        String ip = cri.podStatus(pod.id(), false).getStatus().getNetwork().getIp();
        assertThat(ip).startsWith(env.subnet().substring(0, env.subnet().lastIndexOf('.')));
        String body = Cri.httpGet("http://" + ip + ":8080/", Duration.ofSeconds(30));
        assertThat(body).isEqualTo("hello-from-the-vm\n");

        // A second container shares the pod's IPC and UTS namespaces (pinned in the guest at SetupSandbox).
        String c2 = cri.runContainer(pod, "side", "sleep", "1000");
        String ns1 = cri.execSync(c1, "sh", "-c", "readlink /proc/self/ns/ipc /proc/self/ns/uts; hostname").stdout();
        String ns2 = cri.execSync(c2, "sh", "-c", "readlink /proc/self/ns/ipc /proc/self/ns/uts; hostname").stdout();
        assertThat(ns2).isEqualTo(ns1).contains("vmpod");

        // Exec with a terminal, resized from the client: the guest's pty gets the size. CRI resizes only after Start
        // returns, and the shell may already have read this line by then (a TCG guest's Start takes seconds): so the
        // line waits for the size to arrive rather than racing it.
        try (StreamClient.Session s = StreamClient.open(cri.execUrl(c2, true, true, "sh"), STREAM)) {
            s.resize(100, 30);
            s.sendStdin("i=0; while [ \"$(stty size 2>&1)\" != '30 100' ] && [ $i -lt 100 ]; do i=$((i+1)); "
                    + "sleep 0.1; done; tty; stty size; exit 4\n");
            StreamClient.Result tty = s.await(STREAM);
            assertThat(tty.stdout()).contains("/dev/pts/").contains("30 100");
            assertThat(tty.exitCode()).as(tty.status()).isEqualTo(4);
        }

        // Stats come from the container's cgroup in the guest.
        var stats = cri.containerStats(c1);
        assertThat(stats.getMemory().getWorkingSetBytes().getValue()).isPositive();
        assertThat(stats.getCpu().getUsageCoreNanoSeconds().getValue()).isPositive();

        // The VMM runs in the pod's own host cgroup (Kuasar's <cgroup_parent or kuasar-vmm>/<id>).
        Path sandboxDir = env.vmmStateDir().resolve("sandboxes").resolve(pod.id());
        List<Long> qemu = Host.pidsWithCmdline(sandboxDir + "/qmp.sock");
        assertThat(qemu).hasSize(1);
        String cgroupPath = "/kuasar-vmm/" + pod.id();
        assertThat(Host.read(Path.of("/proc/" + qemu.getFirst() + "/cgroup"))).contains(cgroupPath + "\n");

        // Stop and remove: no VMM, tap, mount, cgroup, socket or file of the pod is left.
        assertThat(sandboxDir.resolve("console.log")).exists();
        cri.stopAndRemovePod(pod.id());
        assertThat(Host.pidsWithCmdline(sandboxDir.toString())).as("QEMU of the pod").isEmpty();
        assertThat(Host.mountsMentioning(sandboxDir.toString())).isEmpty();
        assertThat(sandboxDir).doesNotExist();
        assertThat(Host.read(Path.of("/proc/net/dev"))).doesNotContain("tap_kua_");
        try (var hierarchies = Files.list(Path.of("/sys/fs/cgroup"))) {
            assertThat(hierarchies.map(h -> h.resolve(cgroupPath.substring(1))).filter(Files::exists).toList())
                    .as("cgroups of the pod").isEmpty();
        }
        assertThat(env.vmmSandboxerAlive()).isTrue();
    }

    @Test
    void aVmKilledUnderARunningPodMakesItNotReadyAndItCanStillBeRemoved(E2eEnvironment env) throws Exception {
        CriClient cri = env.vmmCri();
        CriClient.Pod pod = cri.runPod("vmkill", false);
        String c = cri.runContainer(pod, "c", "sleep", "1000");
        Path sandboxDir = env.vmmStateDir().resolve("sandboxes").resolve(pod.id());
        List<Long> qemu = Host.pidsWithCmdline(sandboxDir + "/qmp.sock");
        assertThat(qemu).hasSize(1);
        ProcessHandle.of(qemu.getFirst()).orElseThrow().destroyForcibly();

        long end = System.nanoTime() + Duration.ofSeconds(30).toNanos();
        while (cri.podStatus(pod.id(), false).getStatus().getState() != PodSandboxState.SANDBOX_NOTREADY
                || cri.containerStatus(c).getState() != ContainerState.CONTAINER_EXITED) {
            assertThat(System.nanoTime()).as("pod NOTREADY and container EXITED within 30 s").isLessThan(end);
            Thread.sleep(200);
        }
        cri.stopAndRemovePod(pod.id());
        assertThat(sandboxDir).doesNotExist();
        assertThat(Host.mountsMentioning(sandboxDir.toString())).isEmpty();
        assertThat(Path.of("/sys/fs/cgroup/memory/kuasar-vmm", pod.id())).doesNotExist();
        assertThat(env.vmmSandboxerAlive()).isTrue();
    }

    /**
     * kill -9 of vmm-sandboxer under two running pods, one of whose VMs dies while the daemon is away; then a
     * restart of containerd. The surviving pod stays READY, its container RUNNING with its output still reaching
     * CRI's log (the guest kept the stream, kuasar-fifo-keeper containerd's FIFO), exec works; the other pod is
     * reported NOTREADY with its container EXITED, not dropped. Removal leaves nothing of either.
     */
    @Test
    void podsSurviveARestartOfTheSandboxerAndOfContainerd(E2eEnvironment env) throws Exception {
        CriClient cri = env.vmmCri();
        CriClient.Pod pod = cri.runPod("vmrestart", false);
        CriClient.Pod doomed = cri.runPod("vmdoomed", false);
        String ticker = cri.runContainer(pod, "ticker", CriClient.ContainerOptions.defaults().logPath("ticker.log"),
                "sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done");
        String lost = cri.runContainer(doomed, "lost", "sleep", "1000");
        Path log = pod.logDirectory().resolve("ticker.log");
        Cri.awaitFileContains(log, "tick 3", Duration.ofSeconds(30));
        Path doomedDir = env.vmmStateDir().resolve("sandboxes").resolve(doomed.id());
        List<Long> doomedQemu = Host.pidsWithCmdline(doomedDir + "/qmp.sock");
        assertThat(doomedQemu).hasSize(1);

        env.killAndRestartVmmSandboxer(() -> {
            ProcessHandle.of(doomedQemu.getFirst()).ifPresent(ProcessHandle::destroyForcibly);
            int before = lastTick(log);
            sleepMs(1500); // the guest goes on writing while nobody bridges its output
            assertThat(lastTick(log)).as("ticks logged while the sandboxer is down").isLessThanOrEqualTo(before + 1);
        });
        Cri.awaitControllerReachable(cri, pod.id());

        assertThat(cri.podStatus(pod.id(), false).getStatus().getState()).isEqualTo(PodSandboxState.SANDBOX_READY);
        assertThat(cri.containerStatus(ticker).getState()).isEqualTo(ContainerState.CONTAINER_RUNNING);
        awaitMoreTicks(log, 5);
        CriClient.ExecResult r = cri.execSync(ticker, "sh", "-c", "echo after restart; exit 3");
        assertThat(r.exitCode()).isEqualTo(3);
        assertThat(r.stdout()).isEqualTo("after restart\n");
        long end = System.nanoTime() + Duration.ofSeconds(30).toNanos();
        while (cri.podStatus(doomed.id(), false).getStatus().getState() != PodSandboxState.SANDBOX_NOTREADY
                || cri.containerStatus(lost).getState() != ContainerState.CONTAINER_EXITED) {
            assertThat(System.nanoTime()).as("the pod whose VM died: NOTREADY, its container EXITED").isLessThan(end);
            Thread.sleep(200);
        }

        env.restartContainerd(Duration.ofSeconds(1));
        assertThat(cri.podStatus(pod.id(), false).getStatus().getState()).isEqualTo(PodSandboxState.SANDBOX_READY);
        awaitMoreTicks(log, 5);
        assertThat(cri.execSync(ticker, "echo", "after containerd").stdout()).isEqualTo("after containerd\n");

        Path podDir = env.vmmStateDir().resolve("sandboxes").resolve(pod.id());
        cri.stopAndRemovePod(pod.id());
        cri.stopAndRemovePod(doomed.id());
        for (Path dir : List.of(podDir, doomedDir)) {
            assertThat(Host.pidsWithCmdline(dir.toString())).as("processes of " + dir).isEmpty();
            assertThat(Host.mountsMentioning(dir.toString())).isEmpty();
            assertThat(dir).doesNotExist();
        }
        assertThat(Host.read(Path.of("/proc/net/dev"))).doesNotContain("tap_kua_");
        for (long keeper : Host.pidsWithCmdline(env.vmmStateDir() + "/fifo-keeper.sock")) {
            try (var fds = Files.list(Path.of("/proc/" + keeper + "/fd"))) {
                assertThat(fds.map(fd -> {
                    try {
                        return Files.readSymbolicLink(fd).toString();
                    } catch (java.io.IOException e) {
                        return "";
                    }
                }).filter(t -> t.contains(ticker) || t.contains(lost)).toList()).as("FIFOs still kept").isEmpty();
            }
        }
        assertThat(env.vmmSandboxerAlive()).isTrue();
    }

    private static int lastTick(Path log) {
        int last = -1;
        for (String line : Host.read(log).lines().toList()) {
            int i = line.indexOf("tick ");
            if (i >= 0) {
                last = Math.max(last, Integer.parseInt(line.substring(i + 5).trim()));
            }
        }
        return last;
    }

    private static void awaitMoreTicks(Path log, int more) throws InterruptedException {
        int from = lastTick(log);
        long end = System.nanoTime() + Duration.ofSeconds(30).toNanos();
        while (lastTick(log) < from + more) {
            assertThat(System.nanoTime()).as("the container's output reaches the log again (from tick " + from + ")")
                    .isLessThan(end);
            Thread.sleep(200);
        }
    }

    private static void sleepMs(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
