package io.kuasar.vmm.hypervisor;

/**
 * What every hypervisor's config gives the sandboxer: a pod's default vCPUs and memory (its own limits may raise
 * them), and how long a booting guest's agent has to answer.
 */
public record VmSizing(int vcpus, int memoryInMb, int agentTimeoutSecs) {
}
