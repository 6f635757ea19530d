package io.kuasar.tests.e2e;

import io.grpc.StatusRuntimeException;
import io.kuasar.api.cri.v1.ContainerState;
import io.kuasar.api.cri.v1.LinuxContainerResources;
import io.kuasar.tests.cri.CriClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

/** Bad requests that travel through CRI: clear errors, and nothing half-made left behind. */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class BadInputTest {

    @Test
    void unknownRuntimeHandlerIsNamedInTheError(CriClient cri) {
        StatusRuntimeException e = catchThrowableOfType(StatusRuntimeException.class,
                () -> cri.runPod(cri.podConfig("badhandler", true, io.kuasar.api.cri.v1.NamespaceMode.CONTAINER),
                        "no-such-handler"));
        assertThat(e).isNotNull();
        assertThat(e.getStatus().getDescription()).contains("no-such-handler");
        assertThat(cri.listPods()).isEmpty();
    }

    @Test
    void rejectedResourceUpdateLeavesTheContainerRunning(CriClient cri) {
        CriClient.Pod pod = cri.runPod("badupdate", true);
        String c = cri.runContainer(pod, "c1", "sleep", "1000");

        // No such CPU on a 2-core machine: runc update fails inside runc-sandboxer's Task.Update.
        StatusRuntimeException e = catchThrowableOfType(StatusRuntimeException.class,
                () -> cri.updateResources(c, LinuxContainerResources.newBuilder().setCpusetCpus("63").build()));
        assertThat(e).as("cpuset 63 on this machine").isNotNull();
        assertThat(e.getStatus().getDescription()).containsIgnoringCase("cpuset");

        assertThat(cri.containerStatus(c).getState()).isEqualTo(ContainerState.CONTAINER_RUNNING);
        assertThat(cri.execSync(c, "echo", "still-here").stdout()).isEqualTo("still-here\n");
        assertThat(cri.containerStatus(c).getResources().getLinux().getCpusetCpus()).isNotEqualTo("63");
    }

    @Test
    void startingAnExitedContainerAgainFails(CriClient cri) {
        CriClient.Pod pod = cri.runPod("restart", true);
        String c = cri.runContainer(pod, "c1", "sh", "-c", "exit 0");
        Cri.awaitState(cri, c, ContainerState.CONTAINER_EXITED, java.time.Duration.ofSeconds(20));
        StatusRuntimeException e = catchThrowableOfType(StatusRuntimeException.class, () -> cri.startContainer(c));
        assertThat(e).isNotNull();
        assertThat(e.getStatus().getDescription()).contains(c);
        assertThat(cri.containerStatus(c).getState()).isEqualTo(ContainerState.CONTAINER_EXITED);
    }
}
