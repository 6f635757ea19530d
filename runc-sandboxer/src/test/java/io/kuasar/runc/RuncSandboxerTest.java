package io.kuasar.runc;

import io.kuasar.sandbox.process.ProcessReaper;
import io.kuasar.sandbox.process.ProcessReaperTest;
import io.kuasar.sandbox.process.ProcessRef;
import io.kuasar.sandbox.state.SandboxRecord;
import io.kuasar.sandbox.state.StateStore;
import io.kuasar.sandbox.state.Times;
import io.kuasar.sandbox.task.TaskService;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.time.Instant;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/** How a pod's holder is recognised after a restart: by pid and start time, never by a pid or a name alone. */
class RuncSandboxerTest {
    static ProcessReaper reaper;
    @TempDir
    Path dir;

    @BeforeAll
    static void setUp() {
        ProcessReaper.becomeSubreaper();
        reaper = new ProcessReaper();
    }

    @AfterAll
    static void tearDown() {
        reaper.close();
    }

    static SandboxRecord running(String id, int pid, long startedAt, Map<String, String> backend) {
        return new SandboxRecord(id, "runc", SandboxRecord.Phase.CREATED, "", null, null, Map.of(), Map.of(),
                Map.of(), null, null, "", 0, "", startedAt, 0, 0, 0, Map.of())
                .running(pid, "ttrpc+unix:///x", startedAt, backend);
    }

    @Test
    void aReusedPidIsNeverAdoptedNorSignalled() throws Exception {
        // A process that carries the holder's name for this pod (kuasar- + 8 characters of the id): what a
        // reused pid can look like. Only its start time tells it apart from the holder that had the pid before.
        Path exe = dir.resolve("kuasar-reuse123");
        Files.copy(Path.of("/bin/sleep"), exe);
        Files.setPosixFilePermissions(exe, PosixFilePermissions.fromString("rwxr-xr-x"));
        int pid = ProcessReaperTest.orphan("exec " + exe + " 300"); // our child, as a holder is
        org.awaitility.Awaitility.await().atMost(Duration.ofSeconds(10))
                .until(() -> RuncSandboxer.hasHolderName(pid, "reuse1234567")); // exec'd
        ProcessRef actual = ProcessRef.of(pid);
        RuncSandboxer sandboxer = new RuncSandboxer(new StateStore(dir.resolve("state")),
                new HolderLauncher(RuncSandboxerMain.libexec().resolve("kuasar-holder")), reaper,
                new TaskService((ctx, req) -> null, (ns, t, e) -> { }), "ttrpc+unix:///x");
        long now = Times.nanos(Instant.now());
        try {
            Map<String, String> other = new HashMap<>(Map.of(RuncSandboxer.HOLDER_PID, Integer.toString(pid),
                    RuncSandboxer.HOLDER_START_TIME, Long.toString(actual.startTime() - 1)));
            SandboxRecord reused = running("reuse1234567", pid, now, other);
            assertThat(sandboxer.recover(reused)).isNull();
            sandboxer.stop(reused, Duration.ZERO);
            // A record of an earlier version (no start time) of a pod started an hour ago: not this process.
            SandboxRecord legacy = running("reuse1234567", pid, now - TimeUnit.HOURS.toNanos(1),
                    Map.of(RuncSandboxer.HOLDER_PID, Integer.toString(pid)));
            assertThat(sandboxer.recover(legacy)).isNull();
            sandboxer.stop(legacy, Duration.ZERO);
            assertThat(actual.isAlive()).as("the other process survives").isTrue();

            // The very process recorded is recognised, adopted and stopped.
            SandboxRecord ours = running("reuse1234567", pid, now, Map.of(RuncSandboxer.HOLDER_PID,
                    Integer.toString(pid), RuncSandboxer.HOLDER_START_TIME, Long.toString(actual.startTime())));
            var recovered = sandboxer.recover(ours);
            assertThat(recovered).isNotNull();
            sandboxer.stop(ours, Duration.ZERO);
            assertThat(recovered.exit().get(10, TimeUnit.SECONDS).code()).isEqualTo(137);
        } finally {
            actual.signal(9);
        }
    }
}
