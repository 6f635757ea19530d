package io.kuasar.vmm.hypervisor;

import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.ttrpc.TtrpcClient;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CompletableFuture;

/** A running VM as the sandboxer sees it. */
public interface Vm {
    /** The VMM's host pid. */
    int pid();

    /** Completes when the VMM process ends. */
    CompletableFuture<ExitStatus> exit();

    /**
     * Opens the host end of the channel to the guest agent, one ttrpc connection that carries every call. Fails
     * fast if the channel cannot be opened now; the caller retries while the guest boots.
     */
    TtrpcClient connectAgent() throws IOException;

    /**
     * The guest agent's own Task API address, for clients that dial it themselves (Kuasar's containerd fork,
     * iSulad): {@code ttrpc+hvsock://<uds>:1024} where the channel takes more than one connection; null where it
     * does not (a virtio-serial port carries one).
     */
    default String guestTaskAddress() {
        return null;
    }

    /** The guest's console output, kept for diagnosis. */
    Path consoleLog();

    /** Asks the VMM to quit, waits up to {@code grace}, then kills it. Returns once the process is gone. */
    void stop(Duration grace);

    /** Helper processes of this VM (e.g. virtiofsd): they go into the pod's cgroup with the VMM. */
    default java.util.List<Long> affiliatedPids() {
        return java.util.List.of();
    }

    /** What identifies the VM's processes after a restart of the sandboxer (pid and start time, sockets). */
    Map<String, String> facts();
}
