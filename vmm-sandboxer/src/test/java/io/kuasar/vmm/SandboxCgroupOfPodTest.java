package io.kuasar.vmm;

import io.grpc.StatusRuntimeException;
import io.kuasar.api.cri.v1.LinuxContainerResources;
import io.kuasar.api.cri.v1.LinuxPodSandboxConfig;
import io.kuasar.api.cri.v1.PodSandboxConfig;
import io.kuasar.sandbox.cgroup.SandboxCgroup;
import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Where a pod's VMM cgroup goes and what limits it gets (Kuasar's merge of resources and overhead). */
class SandboxCgroupOfPodTest {
    private static PodSandboxConfig pod(String parent, LinuxContainerResources res, LinuxContainerResources over) {
        return PodSandboxConfig.newBuilder().setLinux(LinuxPodSandboxConfig.newBuilder().setCgroupParent(parent)
                .setResources(res).setOverhead(over)).build();
    }

    @Test
    void theCgroupIsUnderThePodsParentOrKuasarVmm() {
        assertThat(VmmSandboxer.cgroupPath("abc", null)).isEqualTo("kuasar-vmm/abc");
        assertThat(VmmSandboxer.cgroupPath("abc", pod("", LinuxContainerResources.getDefaultInstance(),
                LinuxContainerResources.getDefaultInstance()))).isEqualTo("kuasar-vmm/abc");
        assertThat(VmmSandboxer.cgroupPath("abc", pod("/kubepods/burstable/pod1", LinuxContainerResources
                .getDefaultInstance(), LinuxContainerResources.getDefaultInstance())))
                .isEqualTo("kubepods/burstable/pod1/abc");
        assertThatThrownBy(() -> VmmSandboxer.cgroupPath("abc", pod("/kubepods/../../etc", LinuxContainerResources
                .getDefaultInstance(), LinuxContainerResources.getDefaultInstance())))
                .isInstanceOf(StatusRuntimeException.class).hasMessageContaining("INVALID_ARGUMENT")
                .hasMessageContaining("sandbox abc").hasMessageContaining("cgroup_parent");
    }

    @Test
    void limitsAreThePodsResourcesPlusItsOverhead() {
        var res = LinuxContainerResources.newBuilder().setCpuPeriod(100_000).setCpuQuota(150_000).setCpuShares(1024)
                .setMemoryLimitInBytes(256L << 20).setCpusetCpus("0-1").build();
        var over = LinuxContainerResources.newBuilder().setCpuPeriod(50_000).setCpuQuota(10_000).setCpuShares(100)
                .setMemoryLimitInBytes(300L << 20).build();
        SandboxCgroup.Limits l = VmmSandboxer.cgroupLimits(pod("", res, over));
        assertThat(l.cpuPeriod()).isEqualTo(100_000);
        assertThat(l.cpuQuota()).isEqualTo(150_000 + 20_000); // the overhead's quota at the pod's period
        assertThat(l.cpuShares()).isEqualTo(1124);
        assertThat(l.memoryBytes()).isEqualTo(556L << 20);
        assertThat(l.cpusetCpus()).isEqualTo("0-1");
    }

    @Test
    void memoryIsNotCappedWithoutAnOverheadSinceTheVmsRamAlreadyBoundsTheGuest() {
        var res = LinuxContainerResources.newBuilder().setMemoryLimitInBytes(256L << 20).build();
        SandboxCgroup.Limits l = VmmSandboxer.cgroupLimits(pod("", res, LinuxContainerResources.getDefaultInstance()));
        assertThat(l.memoryBytes()).isZero();
        assertThat(l.cpuQuota()).isZero();
        assertThat(l.cpuPeriod()).isZero();
        assertThat(VmmSandboxer.cgroupLimits(null)).isEqualTo(SandboxCgroup.Limits.NONE);
    }
}
