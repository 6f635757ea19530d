package io.kuasar.vmm.task;

import io.kuasar.api.vmm.IPAddress;
import io.kuasar.api.vmm.IPFamily;
import io.kuasar.api.vmm.Interface;
import io.kuasar.api.vmm.Route;
import io.kuasar.api.vmm.SyncClockPacket;
import io.kuasar.sandbox.sys.Linux;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * Runs, in a VM template's guest before it is saved, the agent code each copy runs when its pod's SetupSandbox
 * arrives, so that the template is saved with it loaded, linked and resolved: under TCG a JVM's first run of a code
 * path (class loading, constant pool and lambda resolution, FFM downcall linking, the first process launch) costs
 * seconds, and every copy would pay it again. Nothing here changes the guest: the config is only parsed, the network
 * script only built, the syscalls fail on purpose (a mount on a missing directory, an ioctl on no descriptor).
 */
final class TemplateWarmUp {
    private static final Logger LOG = LoggerFactory.getLogger(TemplateWarmUp.class);
    /** A PodSandboxConfig as the sandboxer sends it (protobuf JSON with the proto field names). */
    private static final String SAMPLE = "{\"metadata\":{\"name\":\"warm\",\"uid\":\"0000-warm\",\"namespace\":\"d\"},"
            + "\"hostname\":\"warm\",\"log_directory\":\"/var/log/pods/warm\",\"dns_config\":{\"servers\":[\"10.0.0.10\"]},"
            + "\"labels\":{\"a\":\"b\"},\"annotations\":{\"c\":\"d\"},\"linux\":{\"cgroup_parent\":\"/kubepods/warm\","
            + "\"sysctls\":{\"net.ipv4.ip_unprivileged_port_start\":\"0\",\"kernel.shm_rmid_forced\":\"1\"},"
            + "\"security_context\":{\"namespace_options\":{\"network\":\"POD\",\"pid\":\"CONTAINER\",\"ipc\":\"POD\"}}}}";
    private static final int ROUNDS = 3;

    private TemplateWarmUp() {
    }

    static void run(SandboxService sandbox) {
        long t0 = System.nanoTime();
        byte[] sample = SAMPLE.getBytes(StandardCharsets.UTF_8);
        List<Interface> interfaces = List.of(Interface.newBuilder().setName("eth0").setDevice("eth0")
                .setHwAddr("0a:58:0a:f4:00:02").setMtu(1500).addIPAddresses(IPAddress.newBuilder()
                        .setFamily(IPFamily.v4).setAddress("10.244.0.2").setMask("24")).build());
        List<Route> routes = List.of(Route.newBuilder().setDest("10.244.0.0/24").setDevice("eth0").build(),
                Route.newBuilder().setGateway("10.244.0.1").setDevice("eth0").build());
        GuestNetwork network = new GuestNetwork();
        for (int i = 0; i < ROUNDS; i++) {
            quietly("config", () -> sandbox.parse("PodSandboxConfig", sample));
            quietly("network script", () -> network.script(interfaces, routes));
            quietly("clock", () -> SandboxService.syncClock(SyncClockPacket.newBuilder().setClientSendTime(1).build()));
            quietly("mount", () -> Linux.mount(GuestInit.SHARE_TAG, "/nonexistent/warm-up", "9p", 0, "trans=virtio"));
            quietly("ioctl", () -> Linux.ioctl(-1, 0x5207));
            quietly("files", () -> {
                Files.readString(Path.of("/proc/self/mounts"));
                try (var in = Files.newInputStream(Path.of("/proc/uptime"))) {
                    in.readNBytes(64);
                }
                Files.write(Path.of("/dev/null"), new byte[64]);
                int fd = Linux.open("/dev/null", Linux.O_RDONLY | Linux.O_CLOEXEC);
                Linux.close(fd);
            });
            quietly("process", () -> new ProcessBuilder("/bin/sh", "-c", "true").redirectErrorStream(true).start()
                    .waitFor());
        }
        LOG.info("template warm-up in {} ms", (System.nanoTime() - t0) / 1_000_000);
    }

    @FunctionalInterface
    private interface Step {
        void run() throws Exception;
    }

    private static void quietly(String what, Step step) {
        try {
            step.run();
        } catch (Exception | Error e) {
            LOG.trace("warm-up {}: {}", what, e.getMessage()); // expected for the calls that fail on purpose
        }
    }
}
