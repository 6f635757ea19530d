package io.kuasar.vmm.forward;

import io.kuasar.vmm.agent.Agent;

import java.nio.file.Path;

/** How the forwarding runtime finds a running pod VM: its guest agent and its shared directory. */
public interface GuestPods {
    /** The pod's VM; throws NOT_FOUND or FAILED_PRECONDITION (naming the sandbox) when it is not running. */
    Pod pod(String sandboxId);

    record Pod(String id, Agent agent, Path sharedDir) {
    }
}
