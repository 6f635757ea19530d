package io.kuasar.tests.e2e;

import io.kuasar.tests.cri.CriClient;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.nio.file.Path;
import java.time.Duration;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Pods started from a VM template ({@code enable_template = true} on the 9p vmm-sandboxer): the daemon saves one
 * booted guest at start, and each pod of the default size is a copy of it. Each copy must still be its own pod:
 * its share (the container's rootfs and files), its NIC with the pod's MAC and IP, its hostname, its clock, and a
 * random generator reseeded from its own virtio-rng.
 */
@Tag("e2e")
@ExtendWith(E2eExtension.class)
class VmmTemplateTest {
    @Test
    void podsStartFromTheTemplateEachWithItsOwnShareNetworkHostnameAndRandomness(E2eEnvironment env)
            throws Exception {
        CriClient cri = env.vmmCri();
        Path log = env.vmmLog();
        long end = System.nanoTime() + Duration.ofMinutes(5).toNanos();
        while (!Host.read(log).contains("VM template made") && !Host.read(log).contains("matches this QEMU")) {
            assertThat(System.nanoTime()).as("the VM template is made within 5 minutes").isLessThan(end);
            Thread.sleep(500);
        }

        long t0 = System.nanoTime();
        CriClient.Pod a = cri.runPod("tmpla", false);
        long ms = (System.nanoTime() - t0) / 1_000_000;
        E2eEnvironment.log("kuasar-vmm RunPodSandbox from the template took " + ms + " ms");
        assertThat(Host.read(log)).contains("sandbox " + a.id() + ": VM started from the template");
        assertThat(ms).as("RunPodSandbox from a template (a cold boot takes ~15 s here)").isLessThan(8000);
        CriClient.Pod b = cri.runPod("tmplb", false);
        assertThat(Host.read(log)).contains("sandbox " + b.id() + ": VM started from the template");

        String web = cri.runContainer(a, "web", CriClient.ContainerOptions.defaults().logPath("web.log"), "sh", "-c",
                "echo started on $(hostname); mkdir -p /www; echo hello-from-a-copy > /www/index.html; "
                        + "exec httpd -f -p 8080 -h /www");
        String other = cri.runContainer(b, "other", "sleep", "1000");
        Cri.awaitFileContains(a.logDirectory().resolve("web.log"), "started on tmpla", Duration.ofSeconds(30));
        assertThat(cri.execSync(other, "hostname").stdout().trim()).isEqualTo("tmplb");

        // the pod's NIC: its IP answers, served from inside the copy
        String ip = cri.podStatus(a.id(), false).getStatus().getNetwork().getIp();
        assertThat(Cri.httpGet("http://" + ip + ":8080/", Duration.ofSeconds(30))).isEqualTo("hello-from-a-copy\n");

        // the clock was set from the host's, not left at the template's
        long guestNow = Long.parseLong(cri.execSync(other, "date", "+%s").stdout().trim());
        assertThat(Math.abs(guestNow - System.currentTimeMillis() / 1000)).isLessThan(30);

        // each copy reseeded its random generator from its own virtio-rng
        for (CriClient.Pod p : new CriClient.Pod[]{a, b}) {
            Path console = env.vmmStateDir().resolve("sandboxes").resolve(p.id()).resolve("console.log");
            assertThat(Host.read(console)).contains("random generator reseeded");
            Host.read(console).lines().filter(l -> l.contains("sandbox set up in"))
                    .forEach(l -> E2eEnvironment.log("guest " + p.id().substring(0, 8) + ": " + l));
        }
        assertThat(cri.execSync(web, "sh", "-c", "head -c 16 /dev/urandom | od -An -tx1").stdout())
                .isNotEqualTo(cri.execSync(other, "sh", "-c", "head -c 16 /dev/urandom | od -An -tx1").stdout());

        for (CriClient.Pod p : new CriClient.Pod[]{a, b}) {
            Path dir = env.vmmStateDir().resolve("sandboxes").resolve(p.id());
            cri.stopAndRemovePod(p.id());
            assertThat(Host.pidsWithCmdline(dir.toString())).as("QEMU of " + p.id()).isEmpty();
            assertThat(dir).doesNotExist();
        }
        assertThat(env.vmmSandboxerAlive()).isTrue();
    }
}
