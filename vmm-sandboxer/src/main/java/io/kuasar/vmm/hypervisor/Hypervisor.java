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

    /** Called once the daemon serves: prepare what makes later launches faster (a VM template), off this thread. */
    default void warmUp() {
    }

    /** Launches a VM; it is booting when this returns. Throws if it cannot start before {@code deadline}. */
    Vm launch(VmSpec spec, Instant deadline) throws IOException;

    /**
     * Re-attaches to the VM an earlier run of the sandboxer launched for {@code spec}'s pod, from the facts it
     * recorded ({@link Vm#facts()}); null if the VM is gone (what is left of it is stopped). Its processes are not
     * this daemon's children: {@code watcher} gives their exit.
     */
    Vm recover(VmSpec spec, java.util.Map<String, String> facts, ExitWatcher watcher);

    /** Watches a process that is not this daemon's child (a pidfd); the status is unknown (255). */
    @FunctionalInterface
    interface ExitWatcher {
        java.util.concurrent.CompletableFuture<io.kuasar.sandbox.process.ExitStatus> watch(int pid);
    }
}
