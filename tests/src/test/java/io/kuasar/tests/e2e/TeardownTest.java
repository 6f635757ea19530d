package io.kuasar.tests.e2e;

import io.kuasar.api.cri.v1.ContainerState;
import io.kuasar.api.cri.v1.NamespaceMode;
import io.kuasar.tests.cri.CriClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * StopPodSandbox + RemovePodSandbox leave nothing behind: no holder or container process, no mount, no runc state,
 * no netns, no sandbox directory, and no file descriptor in runc-sandboxer.
 */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class TeardownTest {
    private static final int FD_SLACK = 2;

    /** Everything a pod leaves on the host while it runs. */
    record Traces(String podId, long holderPid, String netns, Path stateDir, Map<String, Long> containerPids) {
    }

    @Test
    void podTeardownLeavesNothing(E2eEnvironment env, CriClient cri) {
        // Warm up once, so that lazily opened descriptors (event connection, thread pools) are in the baseline.
        tearDown(cri, make(cri, "warmup", false, NamespaceMode.CONTAINER), true);
        long sandboxer = env.sandboxerPid();
        int baseline = Host.fdCount(sandboxer);
        List<String> baselineFds = Host.fds(sandboxer);
        assertThat(baseline).isPositive();

        // A CNI pod torn down the kubelet way (containers first), and a host-network pod with a shared PID
        // namespace torn down with its containers still running.
        List<Traces> all = new ArrayList<>();
        all.add(make(cri, "td-cni", false, NamespaceMode.CONTAINER));
        all.add(make(cri, "td-host", true, NamespaceMode.POD));
        all.add(make(cri, "td-cni2", false, NamespaceMode.POD));
        for (Traces t : all) {
            assertThat(Host.alive(t.holderPid())).isTrue();
            assertThat(Host.comm(t.holderPid())).isEqualTo(Host.holderComm(t.podId()));
            assertThat(t.containerPids().values()).allMatch(Host::alive);
            assertThat(Cri.exists(t.stateDir())).isTrue();
            assertThat(env.runcList()).contains(t.containerPids().keySet());
            for (String c : t.containerPids().keySet()) {
                assertThat(Host.mountsMentioning(c)).as("rootfs of " + c).isNotEmpty();
            }
            if (!t.netns().isEmpty()) {
                assertThat(Cri.exists(Path.of(t.netns()))).isTrue();
                assertThat(Host.mountsMentioning(t.netns())).isNotEmpty();
            }
        }
        assertThat(Host.fdCount(sandboxer)).isGreaterThan(baseline);

        tearDown(cri, all.get(0), true);
        tearDown(cri, all.get(1), false);
        tearDown(cri, all.get(2), false);

        for (Traces t : all) {
            assertGone(env, t);
        }
        assertThat(cri.listPods()).isEmpty();
        assertThat(cri.listContainers()).isEmpty();

        // Descriptors may be closed a little after the RPCs return (connection teardown).
        long end = System.nanoTime() + Duration.ofSeconds(10).toNanos();
        int now = Host.fdCount(sandboxer);
        while (now > baseline + FD_SLACK && System.nanoTime() < end) {
            Cri.sleep(200);
            now = Host.fdCount(sandboxer);
        }
        List<String> extra = new ArrayList<>(Host.fds(sandboxer));
        extra.removeAll(baselineFds);
        assertThat(now).as("runc-sandboxer fds: baseline %d, now %d; new ones: %s", baseline, now, extra)
                .isLessThanOrEqualTo(baseline + FD_SLACK);
    }

    private static Traces make(CriClient cri, String name, boolean hostNetwork, NamespaceMode pid) {
        CriClient.Pod pod = cri.runPod(name, hostNetwork, pid);
        String c1 = cri.runContainer(pod, "c1", "sleep", "1001");
        String c2 = cri.runContainer(pod, "c2", "sh", "-c", "echo hi; exec sleep 1002");
        assertThat(cri.execSync(c1, "sh", "-c", "echo exec-ok").stdout()).isEqualTo("exec-ok\n");
        Cri.awaitLog(pod, "c2", l -> l.contains("hi"), Duration.ofSeconds(20));
        Map<String, String> info = Cri.podInfo(cri, pod.id());
        String netns = info.getOrDefault("netns", "");
        assertThat(netns).isNotEmpty();
        assertThat(netns.equals("host")).isEqualTo(hostNetwork); // runc-sandboxer reports "host" for NODE
        if (hostNetwork) {
            netns = "";
        }
        return new Traces(pod.id(), Cri.podPid(cri, pod.id()), netns, Path.of(info.get("stateDir")),
                Map.of(c1, Cri.containerPid(cri, c1), c2, Cri.containerPid(cri, c2)));
    }

    private static void tearDown(CriClient cri, Traces t, boolean containersFirst) {
        if (containersFirst) {
            for (String c : t.containerPids().keySet()) {
                cri.stopContainer(c, 2);
                assertThat(cri.containerStatus(c).getState()).isEqualTo(ContainerState.CONTAINER_EXITED);
                cri.removeContainer(c);
            }
        }
        cri.stopPod(t.podId());
        cri.removePod(t.podId());
    }

    private static void assertGone(E2eEnvironment env, Traces t) {
        assertThat(Host.alive(t.holderPid()) && Host.comm(t.holderPid()).equals(Host.holderComm(t.podId())))
                .as("holder %d of %s", t.holderPid(), t.podId()).isFalse();
        assertThat(Host.pidsWithComm(Host.holderComm(t.podId()))).isEmpty();
        t.containerPids().forEach((c, pid) ->
                assertThat(Host.alive(pid) && Host.read(Path.of("/proc/" + pid + "/cmdline")).startsWith("sleep"))
                        .as("process %d of container %s", pid, c).isFalse());
        assertThat(Host.mountsMentioning(t.podId())).isEmpty();
        for (String c : t.containerPids().keySet()) {
            assertThat(Host.mountsMentioning(c)).isEmpty();
            assertThat(Cri.exists(Path.of(E2eEnvironment.RUNC_ROOT, c))).as("runc state of " + c).isFalse();
        }
        assertThat(env.runcList()).doesNotContain(t.containerPids().keySet());
        if (!t.netns().isEmpty()) {
            assertThat(Cri.exists(Path.of(t.netns()))).as("netns " + t.netns()).isFalse();
            assertThat(Host.mountsMentioning(t.netns())).isEmpty();
        }
        assertThat(Cri.exists(t.stateDir())).as("sandbox dir " + t.stateDir()).isFalse();
        assertThat(Cri.exists(env.stateDir().resolve("sandboxes").resolve(t.podId()))).isFalse();
    }
}
