package io.kuasar.vmm.task;

import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class TaskConfigTest {
    @Test
    void readsKuasarsKeysAndIgnoresTheRest() {
        TaskConfig c = TaskConfig.parse("console=ttyS0 quiet task.log_level=debug task.sharefs_type=virtiofs "
                + "task.debug task.enable_tracing=false task.unknown=1 task.agent_port=agent.x\n");
        assertThat(c.logLevel()).isEqualTo("debug");
        assertThat(c.sharefsType()).isEqualTo("virtiofs");
        assertThat(c.debug()).isTrue();
        assertThat(c.tracing()).isFalse();
        assertThat(c.agentPort()).isEqualTo("agent.x");
    }

    @Test
    void defaultsAreKuasars() {
        TaskConfig c = TaskConfig.parse("console=ttyS0");
        assertThat(c.sharefsType()).isEqualTo("9p");
        assertThat(c.logLevel()).isEqualTo("info");
        assertThat(c.debug()).isFalse();
        assertThat(c.agentPort()).isEqualTo(TaskConfig.DEFAULT_AGENT_PORT);
        assertThat(c.template()).isFalse();
        assertThat(TaskConfig.parse("console=ttyS0 task.template").template()).isTrue();
    }

    @Test
    void anUnknownShareFsIsRefused() {
        assertThatThrownBy(() -> TaskConfig.parse("task.sharefs_type=nfs")).hasMessageContaining("nfs");
    }

    @Test
    void streamIdsAreFoundInKuasarsAndContainerdsForms() {
        assertThat(StreamedRuntime.streamId("ttrpc+hvsock:///run/kuasar-vmm/s/task.vsock:1024?streaming_id=c1-stdout"))
                .isEqualTo("c1-stdout");
        assertThat(StreamedRuntime.streamId("stream://x?stream_id=e1-stdin&x=1")).isEqualTo("e1-stdin");
        assertThat(StreamedRuntime.streamId("/run/fifo/c1-stdout")).isNull();
        assertThat(StreamedRuntime.streamId("")).isNull();
    }
}
