package io.kuasar.sandbox.task;

import io.kuasar.api.events.TaskCreate;
import io.kuasar.api.events.TaskDelete;
import io.kuasar.api.events.TaskExecAdded;
import io.kuasar.api.events.TaskExecStarted;
import io.kuasar.api.events.TaskExit;
import io.kuasar.api.events.TaskIO;
import io.kuasar.api.events.TaskOOM;
import io.kuasar.api.events.TaskPaused;
import io.kuasar.api.events.TaskResumed;
import io.kuasar.api.events.TaskStart;
import io.kuasar.api.task.v3.CreateTaskRequest;
import io.kuasar.sandbox.events.EventPublisher;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.state.Times;

/**
 * The task events containerd's runc shim publishes, with its topics and fields, for {@link TaskService}. The
 * publisher queues them; none of these calls blocks.
 */
final class TaskEvents {
    private final EventPublisher publisher;

    TaskEvents(EventPublisher publisher) {
        this.publisher = publisher;
    }

    void created(String ns, CreateTaskRequest r, int pid) {
        publisher.publish(ns, "/tasks/create", TaskCreate.newBuilder().setContainerId(r.getId())
                .setBundle(r.getBundle()).addAllRootfs(r.getRootfsList())
                .setIo(TaskIO.newBuilder().setStdin(r.getStdin()).setStdout(r.getStdout()).setStderr(r.getStderr())
                        .setTerminal(r.getTerminal()))
                .setPid(pid).build());
    }

    void started(String ns, String containerId, int pid) {
        publisher.publish(ns, "/tasks/start", TaskStart.newBuilder().setContainerId(containerId).setPid(pid).build());
    }

    void execAdded(String ns, String containerId, String execId) {
        publisher.publish(ns, "/tasks/exec-added", TaskExecAdded.newBuilder().setContainerId(containerId)
                .setExecId(execId).build());
    }

    void execStarted(String ns, String containerId, String execId, int pid) {
        publisher.publish(ns, "/tasks/exec-started", TaskExecStarted.newBuilder().setContainerId(containerId)
                .setExecId(execId).setPid(pid).build());
    }

    /** {@code processId}: the container id for its init, else the exec id. */
    void exited(String ns, String containerId, String processId, int pid, ExitStatus st) {
        publisher.publish(ns, "/tasks/exit", TaskExit.newBuilder().setContainerId(containerId).setId(processId)
                .setPid(pid).setExitStatus(st.code()).setExitedAt(Times.timestamp(st.exitedAt())).build());
    }

    /** {@code processId}: the container id for the container, else the exec id. */
    void deleted(String ns, String containerId, String processId, int pid, ExitStatus st) {
        publisher.publish(ns, "/tasks/delete", TaskDelete.newBuilder().setContainerId(containerId).setId(processId)
                .setPid(pid).setExitStatus(st.code()).setExitedAt(Times.timestamp(st.exitedAt())).build());
    }

    void paused(String ns, String containerId) {
        publisher.publish(ns, "/tasks/paused", TaskPaused.newBuilder().setContainerId(containerId).build());
    }

    void resumed(String ns, String containerId) {
        publisher.publish(ns, "/tasks/resumed", TaskResumed.newBuilder().setContainerId(containerId).build());
    }

    void oom(String ns, String containerId) {
        publisher.publish(ns, "/tasks/oom", TaskOOM.newBuilder().setContainerId(containerId).build());
    }
}
