package io.kuasar.runc;

import io.kuasar.sandbox.oci.OciRuntime;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.kuasar.api.task.v3.CreateTaskRequest;
import io.kuasar.api.types.Mount;
import io.kuasar.sandbox.process.ProcessReaper;
import io.kuasar.sandbox.state.StateStore;
import io.kuasar.sandbox.sys.Linux;
import io.kuasar.sandbox.task.Container;
import io.kuasar.sandbox.ttrpc.CallContext;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * A Create that fails half-way (here: runc hangs after it made the container, and the call times out) leaves
 * nothing behind: no runc state, no `runc init`, no monitor, no zombie, no rootfs mount; and the id can be created
 * again. Real runc, real kuasar-monitor, real mounts (root).
 */
class FailedCreateTest {
    static ProcessReaper reaper;
    @TempDir
    Path dir;
    Path runcRoot;

    @BeforeAll
    static void setUp() {
        ProcessReaper.becomeSubreaper();
        reaper = new ProcessReaper();
    }

    @AfterAll
    static void tearDown() {
        reaper.close();
    }

    @AfterEach
    void cleanUp() throws Exception {
        if (runcRoot != null) {
            new ProcessBuilder("runc", "--root", runcRoot.toString(), "delete", "--force", "fc1").start().waitFor();
        }
        Linux.umount(dir.resolve("bundle/rootfs").toString(), Linux.MNT_DETACH);
    }

    @Test
    void aCreateThatTimesOutLeavesNothingBehind() throws Exception {
        Path layer = dir.resolve("layer");
        Files.createDirectories(layer.resolve("bin"));
        Files.copy(Path.of("/bin/busybox"), layer.resolve("bin/busybox"));
        Files.createSymbolicLink(layer.resolve("bin/sh"), Path.of("busybox"));
        Files.createSymbolicLink(layer.resolve("bin/sleep"), Path.of("busybox"));
        Path bundle = dir.resolve("bundle");
        Files.createDirectories(bundle.resolve("rootfs"));
        Process spec = new ProcessBuilder("runc", "spec", "--bundle", bundle.toString()).start();
        assertThat(spec.waitFor()).isZero();
        String config = Files.readString(bundle.resolve("config.json"))
                .replace("\"terminal\": true", "\"terminal\": false")
                .replace("\"sh\"", "\"sleep\", \"300\"");
        Files.writeString(bundle.resolve("config.json"), config);
        // runc that makes the container, then hangs (as a wedged runc would)
        Path hanging = dir.resolve("runc-hangs");
        Files.writeString(hanging, "#!/bin/sh\nrunc \"$@\"\nrc=$?\ncase \" $* \" in *\" create \"*) sleep 300 ;; esac\n"
                + "exit $rc\n");
        Files.setPosixFilePermissions(hanging, PosixFilePermissions.fromString("rwxr-xr-x"));
        runcRoot = dir.resolve("runc-root");
        StateStore store = new StateStore(dir.resolve("state"));
        Path monitor = RuncSandboxerMain.libexec().resolve("kuasar-monitor");
        CreateTaskRequest req = CreateTaskRequest.newBuilder().setId("fc1").setBundle(bundle.toString())
                .addRootfs(Mount.newBuilder().setType("bind").setSource(layer.toString()).addOptions("rbind"))
                .build();
        CallContext ctx = new CallContext("containerd.task.v3.Task", "Create", Map.of(), null);

        RuncRuntime wedged = new RuncRuntime(new OciRuntime(hanging.toString(), runcRoot).withTimeout(Duration.ofSeconds(3)),
                reaper, store, monitor);
        assertThatThrownBy(() -> wedged.create(ctx, req)).isInstanceOfSatisfying(StatusRuntimeException.class,
                e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.DEADLINE_EXCEEDED));

        assertThat(runcList()).as("runc state of fc1").doesNotContain("fc1");
        assertThat(Files.readString(Path.of("/proc/self/mountinfo"))).doesNotContain(bundle.resolve("rootfs").toString());
        org.awaitility.Awaitility.await().atMost(Duration.ofSeconds(10)).untilAsserted(() ->
                assertThat(ProcessHandle.current().children().filter(h -> h.info().commandLine().orElse("")
                        .contains(bundle.toString()) || isZombie(h.pid())).toList()).isEmpty());

        // the same id can be created again, for real this time
        RuncRuntime healthy = new RuncRuntime(new OciRuntime("runc", runcRoot), reaper, store, monitor);
        Container c = healthy.create(ctx, req);
        try {
            assertThat(c.initPid()).isPositive();
            assertThat(runcList()).contains("fc1");
        } finally {
            c.kill(9, true);
            c.initExit().get(10, TimeUnit.SECONDS);
            c.delete();
        }
        assertThat(runcList()).doesNotContain("fc1");
    }

    private String runcList() throws Exception {
        Process p = new ProcessBuilder("runc", "--root", runcRoot.toString(), "list", "-q").start();
        String out = new String(p.getInputStream().readAllBytes());
        p.waitFor();
        return out;
    }

    private static boolean isZombie(long pid) {
        try {
            String stat = Files.readString(Path.of("/proc/" + pid + "/stat"));
            return stat.substring(stat.lastIndexOf(')') + 2).startsWith("Z");
        } catch (java.io.IOException e) {
            return false;
        }
    }
}
