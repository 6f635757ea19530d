package io.kuasar.tests.e2e;

import io.kuasar.api.cri.v1.Container;
import io.kuasar.api.cri.v1.ContainerState;
import io.kuasar.api.cri.v1.ContainerStats;
import io.kuasar.api.cri.v1.LinuxContainerResources;
import io.kuasar.api.cri.v1.PodSandbox;
import io.kuasar.api.cri.v1.PodSandboxState;
import io.kuasar.tests.cri.CriClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/** UpdateContainerResources, ContainerStats, and the List calls. cgroup v1 on this machine kind. */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class ResourcesTest {
    private static final long MI = 1024 * 1024;

    @Test
    void updateContainerResourcesChangesTheCgroup(CriClient cri) {
        CriClient.Pod pod = cri.runPod("resources", true);
        String c = cri.runContainer(pod, "c1", CriClient.ContainerOptions.defaults().memoryLimit(128 * MI),
                "sleep", "1000");
        Path memCg = hostCgroup(Cri.containerPid(cri, c), "memory");
        assertThat(Host.read(memCg.resolve("memory.limit_in_bytes")).trim()).isEqualTo(Long.toString(128 * MI));
        assertThat(inside(cri, c, "/sys/fs/cgroup/memory/memory.limit_in_bytes")).isEqualTo(Long.toString(128 * MI));

        cri.updateResources(c, LinuxContainerResources.newBuilder().setMemoryLimitInBytes(64 * MI)
                .setCpuPeriod(100_000).setCpuQuota(50_000).setCpuShares(512).build());

        assertThat(inside(cri, c, "/sys/fs/cgroup/memory/memory.limit_in_bytes")).isEqualTo(Long.toString(64 * MI));
        assertThat(Host.read(memCg.resolve("memory.limit_in_bytes")).trim()).isEqualTo(Long.toString(64 * MI));
        Path cpuCg = hostCgroup(Cri.containerPid(cri, c), "cpu");
        assertThat(Host.read(cpuCg.resolve("cpu.cfs_quota_us")).trim()).isEqualTo("50000");
        assertThat(Host.read(cpuCg.resolve("cpu.shares")).trim()).isEqualTo("512");
        // containerd records the new values too.
        LinuxContainerResources reported = cri.containerStatus(c).getResources().getLinux();
        assertThat(reported.getMemoryLimitInBytes()).isEqualTo(64 * MI);
        assertThat(reported.getCpuQuota()).isEqualTo(50_000);

        // The limit is enforced (no swap on this machine kind): a shell holding 100 MiB is OOM-killed.
        CriClient.ExecResult hog = cri.execSync(c, 60, "sh", "-c",
                "x=$(head -c 100m /dev/zero | tr '\\0' a); echo ${#x}");
        assertThat(hog.stdout()).doesNotContain("104857600");
        assertThat(hog.exitCode()).as("100 MiB under a 64 MiB limit: %s", hog).isNotZero();
        assertThat(cri.containerStatus(c).getState()).isEqualTo(ContainerState.CONTAINER_RUNNING);
    }

    @Test
    void containerStatsReportCpuAndMemory(CriClient cri) {
        CriClient.Pod pod = cri.runPod("stats", true);
        String c = cri.runContainer(pod, "busy", "sh", "-c",
                "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; echo warmed; exec sleep 1000");
        Cri.awaitLog(pod, "busy", l -> l.contains("warmed"), Duration.ofSeconds(30));

        ContainerStats s = cri.containerStats(c);
        assertThat(s.getAttributes().getId()).isEqualTo(c);
        assertThat(s.getAttributes().getMetadata().getName()).isEqualTo("busy");
        assertThat(s.getCpu().getUsageCoreNanoSeconds().getValue()).as("cpu ns").isGreaterThan(1_000_000L);
        assertThat(s.getMemory().getWorkingSetBytes().getValue()).as("working set").isPositive();
        assertThat(s.getMemory().getUsageBytes().getValue()).as("usage").isPositive();
        assertThat(s.getCpu().getTimestamp()).isPositive();
    }

    @Test
    void listCallsShowWhatWasMade(CriClient cri) {
        CriClient.Pod a = cri.runPod("list-a", true);
        CriClient.Pod b = cri.runPod("list-b", true);
        String a1 = cri.runContainer(a, "a1", "sleep", "1000");
        String a2 = cri.createContainer(a, "a2", "sleep", "1000");
        String b1 = cri.runContainer(b, "b1", "sh", "-c", "exit 0");
        Cri.awaitState(cri, b1, ContainerState.CONTAINER_EXITED, Duration.ofSeconds(20));

        List<PodSandbox> pods = cri.listPods();
        assertThat(pods).extracting(PodSandbox::getId).containsExactlyInAnyOrder(a.id(), b.id());
        assertThat(pods).allSatisfy(p -> {
            assertThat(p.getState()).isEqualTo(PodSandboxState.SANDBOX_READY);
            assertThat(p.getRuntimeHandler()).isEqualTo(E2eEnvironment.HANDLER);
            assertThat(p.getLabelsMap()).containsEntry("io.kuasar.e2e", "true");
        });
        assertThat(pods).extracting(p -> p.getMetadata().getName()).containsExactlyInAnyOrder("list-a", "list-b");

        List<Container> inA = cri.listContainers(a.id());
        assertThat(inA).extracting(Container::getId).containsExactlyInAnyOrder(a1, a2);
        assertThat(inA).filteredOn(x -> x.getId().equals(a1)).singleElement()
                .satisfies(x -> assertThat(x.getState()).isEqualTo(ContainerState.CONTAINER_RUNNING));
        assertThat(inA).filteredOn(x -> x.getId().equals(a2)).singleElement()
                .satisfies(x -> assertThat(x.getState()).isEqualTo(ContainerState.CONTAINER_CREATED));
        assertThat(cri.listContainers()).extracting(Container::getId).containsExactlyInAnyOrder(a1, a2, b1);
        assertThat(cri.listContainers(b.id())).singleElement()
                .satisfies(x -> assertThat(x.getState()).isEqualTo(ContainerState.CONTAINER_EXITED));

        cri.stopAndRemovePod(b.id());
        assertThat(cri.listPods()).extracting(PodSandbox::getId).containsExactly(a.id());
        assertThat(cri.listContainers()).extracting(Container::getId).containsExactlyInAnyOrder(a1, a2);
    }

    /** The host directory of a process's cgroup v1 controller. */
    static Path hostCgroup(long pid, String controller) {
        for (String line : Host.read(Path.of("/proc/" + pid + "/cgroup")).lines().toList()) {
            String[] f = line.split(":", 3);
            if (f.length == 3 && List.of(f[1].split(",")).contains(controller)) {
                return Path.of("/sys/fs/cgroup", f[1], f[2]);
            }
        }
        throw new AssertionError("no " + controller + " cgroup for pid " + pid);
    }

    private static String inside(CriClient cri, String c, String file) {
        CriClient.ExecResult r = cri.execSync(c, "cat", file);
        assertThat(r.exitCode()).as(r.stderr()).isZero();
        return r.stdout().trim();
    }
}
