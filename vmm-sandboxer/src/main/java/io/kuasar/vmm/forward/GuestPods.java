package io.kuasar.vmm.forward;

import io.kuasar.vmm.agent.Agent;

import java.nio.file.Path;

/** How the forwarding runtime finds a running pod VM: its guest agent and its shared directory. */
public interface GuestPods {
    /** The pod's VM; throws NOT_FOUND or FAILED_PRECONDITION (naming the sandbox) when it is not running. */
    Pod pod(String sandboxId);

    /**
     * The pod as recovery after a restart of the sandboxer left it: its VM's agent if the VM was re-attached, else a
     * closed agent ({@link Agent#gone}); never throws, so that the pod's containers can be recovered as exited.
     */
    Pod recovered(String sandboxId);

    record Pod(String id, Agent agent, Path sharedDir) {
    }
}
