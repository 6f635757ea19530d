package io.kuasar.vmm.forward;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayDeque;
import java.util.Deque;

/**
 * Kuasar's handler chain with reverse rollback, in small: each step that made something registers how to undo
 * it; when a later step fails, what was made is undone in reverse order. Undo steps must be idempotent.
 */
final class Rollback {
    private static final Logger LOG = LoggerFactory.getLogger(Rollback.class);
    private final Deque<Step> undo = new ArrayDeque<>();

    @FunctionalInterface
    interface Action {
        void run() throws Exception;
    }

    private record Step(String what, Action action) {
    }

    /** Registers how to undo what was just made. */
    void onFailure(String what, Action action) {
        undo.push(new Step(what, action));
    }

    /** Undoes everything registered, newest first; failures are logged and do not stop the others. */
    void run() {
        while (!undo.isEmpty()) {
            Step s = undo.pop();
            try {
                s.action().run();
            } catch (Exception e) {
                LOG.warn("rollback: could not undo {}: {}", s.what(), e.getMessage());
            }
        }
    }

    /** Forgets the steps: what was made is kept (on success, or when someone else now owns it). */
    void commit() {
        undo.clear();
    }
}
