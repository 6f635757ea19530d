package io.kuasar.tests.e2e;

import io.kuasar.api.cri.v1.ContainerState;
import io.kuasar.api.cri.v1.ContainerStatus;
import io.kuasar.api.cri.v1.PodSandboxState;
import io.kuasar.tests.cri.CriClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.time.Duration;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * containerd stops and starts while pods run on runc-sandboxer: pods and containers come back in their previous
 * states, and exec, stop and removal work afterwards. A container that exited while containerd was down comes back
 * EXITED; containerd 2.1.9 then reports exit code 255 for it, exactly as with its own runc shim (checked: on reload
 * it treats a task without processes as a leaked shim and drops it, so CRI never asks for the real status). containerd re-reads each sandbox through Controller.Status/Wait and re-dials each task's ttrpc
 * address; the containerd-shim-kuasar-runc-v1 helper must resolve, or containerd deletes the task bundles.
 */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class ContainerdRestartTest {
    private static final Duration T = Duration.ofSeconds(30);

    @Test
    void podsAndContainersSurviveAContainerdRestart(E2eEnvironment env, CriClient cri) {
        CriClient.Pod netPod = cri.runPod("restart-net", false);
        String sleeper = cri.runContainer(netPod, "sleeper", "sh", "-c", "echo before; exec sleep 100000");
        CriClient.Pod hostPod = cri.runPod("restart-host", true);
        // exits with 7 while containerd is down
        String quitter = cri.runContainer(hostPod, "quitter", "sh", "-c",
                "while [ ! -e /tmp/go ]; do sleep 0.1; done; sleep 2; exit 7");
        Cri.awaitState(cri, sleeper, ContainerState.CONTAINER_RUNNING, T);
        Cri.awaitState(cri, quitter, ContainerState.CONTAINER_RUNNING, T);
        String ip = cri.podStatus(netPod.id(), false).getStatus().getNetwork().getIp();

        assertThat(cri.execSync(quitter, "touch", "/tmp/go").exitCode()).isZero();
        env.restartContainerd(Duration.ofSeconds(4));

        assertThat(cri.podStatus(netPod.id(), false).getStatus().getState()).isEqualTo(PodSandboxState.SANDBOX_READY);
        assertThat(cri.podStatus(netPod.id(), false).getStatus().getNetwork().getIp()).isEqualTo(ip);
        assertThat(cri.podStatus(hostPod.id(), false).getStatus().getState()).isEqualTo(PodSandboxState.SANDBOX_READY);
        assertThat(cri.containerStatus(sleeper).getState()).isEqualTo(ContainerState.CONTAINER_RUNNING);
        ContainerStatus quit = Cri.awaitState(cri, quitter, ContainerState.CONTAINER_EXITED, T);
        assertThat(quit.getExitCode()).as("containerd's own code for a task it dropped on reload").isEqualTo(255);

        CriClient.ExecResult r = cri.execSync(sleeper, "sh", "-c", "echo after-restart; exit 4");
        assertThat(r.stdout()).isEqualTo("after-restart\n");
        assertThat(r.exitCode()).isEqualTo(4);

        // a new container in an old pod, then a clean stop with the real signal exit code
        String late = cri.runContainer(netPod, "late", "sh", "-c", "exec sleep 100000");
        Cri.awaitState(cri, late, ContainerState.CONTAINER_RUNNING, T);
        cri.stopContainer(sleeper, 0);
        assertThat(Cri.awaitState(cri, sleeper, ContainerState.CONTAINER_EXITED, T).getExitCode()).isEqualTo(137);
        cri.stopAndRemovePod(netPod.id());
        cri.stopAndRemovePod(hostPod.id());
        assertThat(cri.listPods()).extracting(p -> p.getId()).doesNotContain(netPod.id(), hostPod.id());
    }
}
