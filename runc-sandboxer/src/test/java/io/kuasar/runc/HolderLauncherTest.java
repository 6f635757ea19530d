package io.kuasar.runc;

import io.grpc.StatusRuntimeException;
import io.kuasar.sandbox.process.ExitStatus;
import io.kuasar.sandbox.process.ProcessReaper;
import io.kuasar.sandbox.sys.Linux;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The real kuasar-holder (built by Maven into target/libexec); needs root for namespaces. */
class HolderLauncherTest {
    static ProcessReaper reaper;
    static HolderLauncher launcher;

    @BeforeAll
    static void setUp() {
        ProcessReaper.becomeSubreaper();
        reaper = new ProcessReaper();
        launcher = new HolderLauncher(RuncSandboxerMain.libexec().resolve("kuasar-holder"));
    }

    @AfterAll
    static void tearDown() {
        reaper.close();
    }

    static String ns(int pid, String kind) throws Exception {
        return Files.readSymbolicLink(Path.of("/proc/" + pid + "/ns/" + kind)).toString();
    }

    @Test
    void podWithItsOwnNamespacesAndHostname() throws Exception {
        int pid = launcher.launch("holdertest1", "", "podname", true);
        var exit = reaper.watch(pid);
        try {
            int self = Linux.getpid();
            assertThat(ns(pid, "pid")).isNotEqualTo(ns(self, "pid"));
            assertThat(ns(pid, "ipc")).isNotEqualTo(ns(self, "ipc"));
            assertThat(ns(pid, "uts")).isNotEqualTo(ns(self, "uts"));
            assertThat(ns(pid, "net")).isEqualTo(ns(self, "net"));
            assertThat(RuncSandboxer.isOurHolder(pid, "holdertest1")).isTrue();
            assertThat(RuncSandboxer.isOurHolder(pid, "someoneelse")).isFalse();
            Process p = new ProcessBuilder("nsenter", "-t", Integer.toString(pid), "-u", "hostname").start();
            assertThat(new String(p.getInputStream().readAllBytes()).trim()).isEqualTo("podname");
        } finally {
            Linux.kill(pid, 9);
        }
        ExitStatus st = exit.get(10, TimeUnit.SECONDS);
        assertThat(st.code()).isEqualTo(137);
    }

    @Test
    void hostNetworkPodKeepsTheHostUtsAndPid() throws Exception {
        int pid = launcher.launch("holdertest2", "", null, false);
        var exit = reaper.watch(pid);
        try {
            int self = Linux.getpid();
            assertThat(ns(pid, "uts")).isEqualTo(ns(self, "uts"));
            assertThat(ns(pid, "pid")).isEqualTo(ns(self, "pid"));
            assertThat(ns(pid, "ipc")).isNotEqualTo(ns(self, "ipc"));
        } finally {
            Linux.kill(pid, 15); // the holder ends cleanly on SIGTERM
        }
        assertThat(exit.get(10, TimeUnit.SECONDS).code()).isZero();
    }

    @Test
    void aMissingNetnsIsAClearError() {
        assertThatThrownBy(() -> launcher.launch("holdertest3", "/nonexistent/netns", "x", false))
                .isInstanceOf(StatusRuntimeException.class).hasMessageContaining("open netns");
    }
}
