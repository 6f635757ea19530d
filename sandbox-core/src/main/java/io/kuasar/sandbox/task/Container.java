package io.kuasar.sandbox.task;

import com.google.protobuf.Any;
import io.kuasar.api.task.v3.ExecProcessRequest;
import io.kuasar.api.types.task.ProcessInfo;
import io.kuasar.sandbox.process.ExitStatus;

import java.util.List;
import java.util.concurrent.CompletableFuture;

/** One container as its runtime sees it. Status bookkeeping lives in {@link TaskService}, not here. */
public interface Container {
    /** The sandbox this container belongs to (empty if unknown). */
    String sandboxId();

    int initPid();

    /** Completes when the init process ends, with its real exit status. */
    CompletableFuture<ExitStatus> initExit();

    void start() throws Exception;

    /** Prepares an exec process; it runs on {@link Exec#start()}. */
    Exec exec(ExecProcessRequest request) throws Exception;

    /** Signals the init process, or with {@code all} every process of the container. */
    void kill(int signal, boolean all) throws Exception;

    /** Removes the container and everything it holds (runtime state, rootfs mount). Runs after init exited. */
    void delete() throws Exception;

    List<ProcessInfo> pids() throws Exception;

    /** cgroup metrics packed as containerd expects (io.containerd.cgroups.v1.Metrics or v2). */
    Any stats() throws Exception;

    /** Applies OCI LinuxResources (JSON) to the running container. */
    void update(Any resources) throws Exception;

    void pause() throws Exception;

    void resume() throws Exception;

    void resizePty(int width, int height) throws Exception;

    void closeStdin() throws Exception;

    /**
     * Calls {@code onOom} each time the container's processes are killed for lack of memory, from a thread that may
     * only hand off; false if this runtime cannot tell (no OOM events are published then). A runtime reports OOM
     * its own way: the host's memory cgroup (runc), a guest agent's events (microVM), an engine's limit (Wasm).
     */
    default boolean watchOom(Runnable onOom) {
        return false;
    }

    /** Runtime facts to keep in the container's {@link TaskRecord}, so the runtime can recover it after a restart. */
    default java.util.Map<String, String> facts() {
        return java.util.Map.of();
    }

    /** Re-attaches to an exec'd process found in a record after a daemon restart. */
    default Exec recoverExec(TaskRecord.ExecRecord record) throws Exception {
        throw new UnsupportedOperationException("this runtime cannot recover exec processes");
    }

    /** An exec'd process. */
    interface Exec {
        /** Starts it; returns its pid. */
        int start() throws Exception;

        CompletableFuture<ExitStatus> exit();

        /**
         * Signals the process; false if it has already finished. The runtime knows what its process is (a host
         * process checked by pid and start time, a process inside a VM's guest), so no caller signals a bare pid.
         */
        boolean kill(int signal) throws Exception;

        void resizePty(int width, int height) throws Exception;

        void closeStdin() throws Exception;

        /** Releases what the process held (its IO, files). Runs after it exited. */
        void delete() throws Exception;

        default java.util.Map<String, String> facts() {
            return java.util.Map.of();
        }
    }
}
