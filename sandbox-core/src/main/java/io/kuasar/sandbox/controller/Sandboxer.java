package io.kuasar.sandbox.controller;

import io.kuasar.api.types.Metric;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.state.SandboxRecord;

import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CompletableFuture;

/**
 * What an isolation technique (runc, Wasm, microVM, Quark) implements. {@link SandboxController} does the rest:
 * id validation, locking, persistence, Wait, idempotence and the mapping to containerd's Controller API.
 * Methods throw {@link io.grpc.StatusRuntimeException} for errors a caller should see with a specific code;
 * anything else becomes INTERNAL with its message.
 */
public interface Sandboxer {
    /** The name containerd knows this sandboxer by ({@code proxy_plugins.<name>}). */
    String name();

    /** Prepares a sandbox that was just recorded; starts no process. */
    void create(SandboxRecord record) throws Exception;

    /**
     * Starts the sandbox. The exit future completes when the sandbox's main process ends. {@code deadline} is the
     * caller's (containerd's RPC deadline; null: none): a sandboxer whose start can take long (a VM boot) gives up
     * with DEADLINE_EXCEEDED when it passes, and cleans up what it made; the controller then removes the sandbox. A
     * start whose caller merely went away runs to the end: the sandbox is kept, and a retried Start answers it. A
     * Shutdown of the sandbox interrupts the thread running its start: give up, undo what was made, and throw.
     */
    Started start(SandboxRecord record, java.time.Instant deadline) throws Exception;

    /** Stops every process of the sandbox; must succeed when they are already gone. */
    void stop(SandboxRecord record, Duration timeout) throws Exception;

    /** Releases everything the sandbox holds (mounts, namespaces, sockets, files but its state directory). */
    void shutdown(SandboxRecord record) throws Exception;

    /** Re-attaches to a sandbox found running after a daemon restart; null if its processes are gone. */
    Started recover(SandboxRecord record) throws Exception;

    /**
     * Called once at start, after {@link #recover} ran for every sandbox found running: what depends on the
     * sandboxes being back (a microVM's containers reach their guest through the recovered VM) is recovered now.
     */
    default void recovered() throws Exception {
    }

    /** Resource usage of the sandbox as a containerd Metric; null if it has none to report. */
    Metric metrics(SandboxRecord record) throws Exception;

    /** The platform the sandbox's containers run on; the host's by default (a VM's guest may differ). */
    default io.kuasar.api.types.Platform platform(SandboxRecord record) {
        return ControllerService.hostPlatform();
    }

    /** Called after Update stored a new task list ({@code extensions.tasks}); the default keeps it only. */
    default void tasksUpdated(SandboxRecord record, TaskResources.Diff diff) throws Exception {
    }

    /** The result of starting (or recovering) a sandbox. */
    record Started(int pid, String taskAddress, CompletableFuture<ExitStatus> exit, Map<String, String> facts) {
    }
}
