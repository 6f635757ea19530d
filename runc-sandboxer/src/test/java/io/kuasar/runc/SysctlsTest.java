package io.kuasar.runc;

import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import org.junit.jupiter.api.Test;

import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Which pod sysctls are accepted, with runc's namespace rules, and how they map to /proc/sys. */
class SysctlsTest {
    @Test
    void namespacedSysctlsMapToTheirProcFiles() {
        var s = Sysctls.validate("sb", Map.of("kernel.shm_rmid_forced", "1", "net.ipv4.ip_forward", "1",
                "net/ipv4/conf/eth0.1/forwarding", "1", "fs.mqueue.msg_max", "100"), false, false, false);
        assertThat(s).extracting(Sysctls.Setting::argument).containsExactlyInAnyOrder(
                "kernel/shm_rmid_forced=1", "net/ipv4/ip_forward=1", "net/ipv4/conf/eth0.1/forwarding=1",
                "fs/mqueue/msg_max=100");
    }

    @Test
    void sysctlsOfAHostNamespaceOrNoNamespaceAreRefused() {
        refused(Map.of("net.ipv4.ip_forward", "1"), true, false, false, "network namespace");
        refused(Map.of("kernel.shm_rmid_forced", "1"), false, true, false, "IPC namespace");
        refused(Map.of("kernel.hostname", "x"), false, false, true, "UTS namespace");
        refused(Map.of("vm.swappiness", "1"), false, false, false, "would change the node");
        refused(Map.of("../../etc/passwd", "1"), false, false, false, "is not a sysctl name");
        refused(Map.of("net/../../kernel/x", "1"), false, false, false, "is not a sysctl name");
        refused(Map.of("net.ipv4.ip_forward", "1\nkernel.x=2"), false, false, false, "newline");
    }

    private static void refused(Map<String, String> sysctls, boolean hostNet, boolean hostIpc, boolean hostUts,
                                String why) {
        assertThatThrownBy(() -> Sysctls.validate("sb1", sysctls, hostNet, hostIpc, hostUts))
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT);
                    assertThat(e.getStatus().getDescription()).contains("sandbox sb1").contains(why);
                });
    }
}
