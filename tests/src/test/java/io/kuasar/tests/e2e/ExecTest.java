package io.kuasar.tests.e2e;

import io.grpc.StatusRuntimeException;
import io.kuasar.tests.cri.CriClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

/** ExecSync: both streams, the exit code, and CRI's timeout. */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class ExecTest {

    @Test
    void execSyncReturnsStdoutStderrAndExitCode(CriClient cri) {
        CriClient.Pod pod = cri.runPod("execsync", true);
        String c = cri.runContainer(pod, "c1", "sleep", "1000");

        CriClient.ExecResult r = cri.execSync(c, "sh", "-c", "echo out; echo err >&2; exit 3");
        assertThat(r.exitCode()).isEqualTo(3);
        assertThat(r.stdout()).isEqualTo("out\n");
        assertThat(r.stderr()).isEqualTo("err\n");

        CriClient.ExecResult ok = cri.execSync(c, "cat", "/proc/1/cmdline");
        assertThat(ok.exitCode()).isZero();
        assertThat(ok.stdout()).isEqualTo("sleep\u00001000\u0000"); // runs in the container, not on the host
        assertThat(ok.stderr()).isEmpty();

        // Larger output than one pipe buffer arrives whole.
        CriClient.ExecResult big = cri.execSync(c, "sh", "-c", "seq 1 20000");
        assertThat(big.exitCode()).isZero();
        assertThat(big.stdout().lines().count()).isEqualTo(20000);
        assertThat(big.stdout()).endsWith("\n20000\n");

        // As with containerd's own runc shim, an exec that cannot start is an error, not an exit code.
        StatusRuntimeException missing = catchThrowableOfType(StatusRuntimeException.class,
                () -> cri.execSync(c, "/no/such/binary"));
        assertThat(missing).isNotNull();
        assertThat(missing.getStatus().getDescription()).contains("/no/such/binary", "no such file or directory");
        assertThat(cri.execSync(c, "true").exitCode()).isZero();
    }

    @Test
    void execSyncTimeoutEndsTheCallAndTheProcess(CriClient cri) {
        CriClient.Pod pod = cri.runPod("exectimeout", true);
        String c = cri.runContainer(pod, "c1", "sleep", "1000");

        long t0 = System.nanoTime();
        StatusRuntimeException e = catchThrowableOfType(StatusRuntimeException.class,
                () -> cri.execSync(c, 2, "sleep", "37"));
        long ms = (System.nanoTime() - t0) / 1_000_000;
        assertThat(e).as("ExecSync past its timeout must fail").isNotNull();
        assertThat(e.getStatus().getDescription()).contains("timeout");
        assertThat(ms).isBetween(1_900L, 20_000L);

        // The timed-out process does not linger in the container.
        long end = System.nanoTime() + 10_000_000_000L;
        String ps;
        do {
            ps = cri.execSync(c, "ps", "-o", "args").stdout();
        } while (ps.contains("sleep 37") && System.nanoTime() < end && sleep(100));
        assertThat(ps).doesNotContain("sleep 37").contains("sleep 1000");
    }

    private static boolean sleep(long ms) {
        Cri.sleep(ms);
        return true;
    }
}
