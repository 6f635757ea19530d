package io.kuasar.vmm.hypervisor;

import java.nio.file.Path;
import java.util.List;

/**
 * What to boot for one pod. {@code dir} is the sandbox's own directory (sockets, console log, pid);
 * {@code sharedDir} is shared with the guest (mounted at /run/kuasar/state there); {@code netnsPath} is the pod's
 * network namespace (empty: none), where the VMM runs and {@code nics} (taps) live. {@code templateAllowed}: the
 * VM may start from a VM template, if the hypervisor has one that fits (a pod can ask for a boot of its own).
 */
public record VmSpec(String sandboxId, Path dir, Path sharedDir, int vcpus, int memoryInMb, String netnsPath,
                     List<Nic> nics, boolean templateAllowed) {
    public VmSpec {
        nics = List.copyOf(nics);
    }

    public VmSpec(String sandboxId, Path dir, Path sharedDir, int vcpus, int memoryInMb, String netnsPath,
                  List<Nic> nics) {
        this(sandboxId, dir, sharedDir, vcpus, memoryInMb, netnsPath, nics, true);
    }

    /** A NIC of the VM: a tap in the pod's network namespace, and the MAC the guest's interface gets. */
    public record Nic(String id, String tap, String mac) {
    }
}
