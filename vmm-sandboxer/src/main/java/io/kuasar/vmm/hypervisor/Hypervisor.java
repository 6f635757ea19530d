package io.kuasar.vmm.hypervisor;

import java.io.IOException;
import java.time.Instant;

/**
 * One virtual machine monitor (QEMU here; Cloud Hypervisor and StratoVirt plug in the same way). It launches the
 * VM of one pod; everything else (the guest agent, networking, the Task API) is the sandboxer's and the same for
 * every hypervisor.
 */
public interface Hypervisor {
    String name();

    /**
     * Checks that what a VM needs (the hypervisor binary, kernel, initrd) is there; the error names the missing path
     * and how to get it. Called once when the daemon starts, and again before each launch.
     */
    void check();

    /** Launches a VM; it is booting when this returns. Throws if it cannot start before {@code deadline}. */
    Vm launch(VmSpec spec, Instant deadline) throws IOException;
}
