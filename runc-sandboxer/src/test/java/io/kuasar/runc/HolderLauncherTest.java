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
            assertThat(RuncSandboxer.hasHolderName(pid, "holdertest1")).isTrue();
            assertThat(RuncSandboxer.hasHolderName(pid, "someoneelse")).isFalse();
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

    @Test
    void hostIpcPodKeepsTheHostIpcNamespace() throws Exception {
        int pid = launcher.launch("holdertest4", "", "h4", false, false, java.util.List.of(), null);
        var exit = reaper.watch(pid);
        try {
            assertThat(ns(pid, "ipc")).isEqualTo(ns(Linux.getpid(), "ipc"));
            assertThat(ns(pid, "uts")).isNotEqualTo(ns(Linux.getpid(), "uts"));
        } finally {
            Linux.kill(pid, 15);
        }
        assertThat(exit.get(10, TimeUnit.SECONDS).code()).isZero();
    }

    @Test
    void podSysctlsAreSetInThePodsNamespacesOnly() throws Exception {
        String hostShm = Files.readString(Path.of("/proc/sys/kernel/shm_rmid_forced")).trim();
        String hostMq = Files.readString(Path.of("/proc/sys/fs/mqueue/msg_max")).trim();
        var sysctls = Sysctls.validate("holdertest5", java.util.Map.of("kernel.shm_rmid_forced", "1",
                "fs.mqueue.msg_max", "100", "kernel/domainname", "pod.local"), true, false, false);
        int pid = launcher.launch("holdertest5", "", "h5", false, true, sysctls, null);
        var exit = reaper.watch(pid);
        try {
            assertThat(inPod(pid, "-i", "/proc/sys/kernel/shm_rmid_forced")).isEqualTo("1");
            assertThat(inPod(pid, "-i", "/proc/sys/fs/mqueue/msg_max")).isEqualTo("100");
            assertThat(inPod(pid, "-u", "/proc/sys/kernel/domainname")).isEqualTo("pod.local");
        } finally {
            Linux.kill(pid, 15);
        }
        exit.get(10, TimeUnit.SECONDS);
        assertThat(Files.readString(Path.of("/proc/sys/kernel/shm_rmid_forced")).trim()).isEqualTo(hostShm);
        assertThat(Files.readString(Path.of("/proc/sys/fs/mqueue/msg_max")).trim()).isEqualTo(hostMq);
    }

    @Test
    void aSysctlTheKernelRefusesFailsTheLaunchClearly() {
        var sysctls = Sysctls.validate("holdertest6", java.util.Map.of("fs.mqueue.msg_max", "-5"), true, false, true);
        assertThatThrownBy(() -> launcher.launch("holdertest6", "", null, false, true, sysctls, null))
                .isInstanceOf(StatusRuntimeException.class).hasMessageContaining("fs/mqueue/msg_max");
    }

    private static String inPod(int pid, String nsFlag, String file) throws Exception {
        Process p = new ProcessBuilder("nsenter", "-t", Integer.toString(pid), nsFlag, "cat", file).start();
        String out = new String(p.getInputStream().readAllBytes()).trim();
        assertThat(p.waitFor()).isZero();
        return out;
    }

    @Test
    void aStartWhoseDeadlineHasPassedStartsNothing() {
        assertThatThrownBy(() -> launcher.launch("holdertest7", "", "h7", false, true, java.util.List.of(),
                java.time.Instant.now().minusMillis(1)))
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> assertThat(e.getStatus().getCode())
                        .isEqualTo(io.grpc.Status.Code.DEADLINE_EXCEEDED));
        assertThat(noProcessNamed("kuasar-holderte")).isTrue();
    }

    private static boolean noProcessNamed(String comm) {
        return ProcessHandle.allProcesses().noneMatch(h -> {
            try {
                return Files.readString(Path.of("/proc/" + h.pid() + "/comm")).trim().equals(comm);
            } catch (java.io.IOException e) {
                return false;
            }
        });
    }
}
