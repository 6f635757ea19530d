package io.kuasar.tests.e2e;

import io.kuasar.api.cri.v1.ContainerState;
import io.kuasar.api.cri.v1.ContainerStatus;
import io.kuasar.api.cri.v1.NamespaceMode;
import io.kuasar.api.cri.v1.PodSandboxState;
import io.kuasar.tests.cri.CriClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.time.Duration;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * kill -9 of runc-sandboxer while pods run, then a new runc-sandboxer on the same --dir: every pod is still READY
 * and every container RUNNING through CRI; exec, logs, stop and removal work; a container that exits after the
 * restart reports its real exit code. containerd never re-dials a task connection, so the ttrpc proxy keeps them
 * open across the restart and replays the idempotent calls that were in flight (every running container has a Wait
 * pending); others are answered UNAVAILABLE.
 */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class SandboxerRestartTest {
    private static final Duration T = Duration.ofSeconds(30);

    @Test
    void podsSurviveAKill9OfTheSandboxer(E2eEnvironment env, CriClient cri) {
        CriClient.Pod netPod = cri.runPod("kill9-net", false, NamespaceMode.POD);
        String talker = cri.runContainer(netPod, "talker", "sh", "-c",
                "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done");
        String quitter = cri.runContainer(netPod, "quitter", "sh", "-c",
                "while [ ! -e /tmp/go ]; do sleep 0.1; done; exit 7");
        CriClient.Pod hostPod = cri.runPod("kill9-host", true);
        String sleeper = cri.runContainer(hostPod, "sleeper", "sleep", "100000");
        for (String c : new String[]{talker, quitter, sleeper}) {
            Cri.awaitState(cri, c, ContainerState.CONTAINER_RUNNING, T);
        }
        String ip = cri.podStatus(netPod.id(), false).getStatus().getNetwork().getIp();
        Cri.awaitLog(netPod, "talker", l -> l.contains("tick-3"), T);
        long oldPid = env.sandboxerPid();

        env.killAndRestartSandboxer();
        assertThat(env.sandboxerPid()).isNotEqualTo(oldPid);
        Cri.awaitControllerReachable(cri, netPod.id());

        assertThat(cri.podStatus(netPod.id(), false).getStatus().getState()).isEqualTo(PodSandboxState.SANDBOX_READY);
        assertThat(cri.podStatus(netPod.id(), false).getStatus().getNetwork().getIp()).isEqualTo(ip);
        assertThat(cri.podStatus(hostPod.id(), false).getStatus().getState()).isEqualTo(PodSandboxState.SANDBOX_READY);
        for (String c : new String[]{talker, quitter, sleeper}) {
            assertThat(cri.containerStatus(c).getState()).as(c).isEqualTo(ContainerState.CONTAINER_RUNNING);
        }
        // logs keep flowing, exec works, a real exit code arrives after the restart
        String mark = "tick-" + (countTicks(netPod) + 5);
        Cri.awaitLog(netPod, "talker", l -> l.contains(mark), T);
        CriClient.ExecResult r = cri.execSync(sleeper, "sh", "-c", "echo after-kill; exit 3");
        assertThat(r.stdout()).isEqualTo("after-kill\n");
        assertThat(r.exitCode()).isEqualTo(3);
        assertThat(cri.execSync(quitter, "touch", "/tmp/go").exitCode()).isZero();
        ContainerStatus quit = Cri.awaitState(cri, quitter, ContainerState.CONTAINER_EXITED, T);
        assertThat(quit.getExitCode()).isEqualTo(7);

        // a new container in an old pod, stop with the real signal code, clean removal
        String late = cri.runContainer(hostPod, "late", "sleep", "100000");
        Cri.awaitState(cri, late, ContainerState.CONTAINER_RUNNING, T);
        cri.stopContainer(sleeper, 0);
        assertThat(Cri.awaitState(cri, sleeper, ContainerState.CONTAINER_EXITED, T).getExitCode()).isEqualTo(137);
        cri.stopAndRemovePod(netPod.id());
        cri.stopAndRemovePod(hostPod.id());
        assertThat(cri.listPods()).isEmpty();
        assertThat(Host.pidsWithComm(Host.holderComm(netPod.id()))).isEmpty();
        assertThat(Host.pidsWithComm(Host.holderComm(hostPod.id()))).isEmpty();
    }

    /** containerd backs off up to 3 s after its connection to the sandboxer broke; its next dial succeeds. */
    private static int countTicks(CriClient.Pod pod) {
        return (int) Cri.awaitLog(pod, "talker", l -> true, T).lines().filter(l -> l.contains("tick-")).count();
    }
}
