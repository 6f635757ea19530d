package io.kuasar.vmm.task;

import io.grpc.Status;
import io.kuasar.api.vmm.IPAddress;
import io.kuasar.api.vmm.IPFamily;
import io.kuasar.api.vmm.Interface;
import io.kuasar.api.vmm.Route;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * Applies the pod's interfaces and routes in the guest, as Kuasar's vmm-task does: each NIC is found by its MAC
 * address (the sandboxer gave the VM's NIC the pod veth's MAC), renamed to the pod's interface name, given its
 * addresses and MTU, and brought up; then the routes are replaced. Uses the image's {@code ip} (busybox).
 */
class GuestNetwork {
    private static final Logger LOG = LoggerFactory.getLogger(GuestNetwork.class);
    private static final Path NET = Path.of("/sys/class/net");
    private static final int IFF_NOARP = 0x80;

    void up(String device) throws IOException {
        ip("link", "set", "dev", device, "up");
    }

    void updateInterfaces(List<Interface> interfaces) throws IOException {
        List<List<String>> script = new ArrayList<>();
        interfaces(interfaces, script);
        ipAll(script);
    }

    void updateRoutes(List<Route> routes) throws IOException {
        List<List<String>> script = new ArrayList<>();
        routes(routes, script);
        ipAll(script);
    }

    /** SetupSandbox's network: the interfaces, then the routes, in one shell (see {@link #ipAll}). */
    void setup(List<Interface> interfaces, List<Route> routes) throws IOException {
        ipAll(script(interfaces, routes));
    }

    /** The ip commands that would configure these interfaces and routes; runs nothing. */
    List<List<String>> script(List<Interface> interfaces, List<Route> routes) throws IOException {
        List<List<String>> script = new ArrayList<>();
        interfaces(interfaces, script);
        routes(routes, script);
        return script;
    }

    private void interfaces(List<Interface> interfaces, List<List<String>> script) throws IOException {
        for (Interface i : interfaces) {
            String current = byMac(i.getHwAddr());
            if (current == null) {
                current = adoptNic(interfaces, i.getHwAddr(), script);
            }
            if (current == null) {
                throw Status.NOT_FOUND.withDescription("interface " + i.getName() + ": no NIC in the VM has MAC "
                        + i.getHwAddr()).asRuntimeException();
            }
            String name = i.getName().isEmpty() ? current : i.getName();
            script.add(List.of("link", "set", "dev", current, "down"));
            script.add(List.of("addr", "flush", "dev", current));
            if (!name.equals(current)) {
                if (Files.exists(NET.resolve(name))) {
                    script.add(List.of("link", "set", "dev", name, "name", name + "-tmp"));
                }
                script.add(List.of("link", "set", "dev", current, "name", name));
            }
            if (i.getMtu() > 0) {
                script.add(List.of("link", "set", "dev", name, "mtu", Long.toString(i.getMtu())));
            }
            script.add(List.of("link", "set", "dev", name, "arp", (i.getRawFlags() & IFF_NOARP) != 0 ? "off" : "on"));
            for (IPAddress a : i.getIPAddressesList()) {
                script.add(List.of(a.getFamily() == IPFamily.v6 ? "-6" : "-4", "addr", "add",
                        a.getAddress() + "/" + a.getMask(), "dev", name));
            }
            script.add(List.of("link", "set", "dev", name, "up"));
            LOG.info("interface {} (MAC {}): {} addresses", name, i.getHwAddr(), i.getIPAddressesCount());
        }
    }

    private static void routes(List<Route> routes, List<List<String>> script) {
        // Routes with a gateway need the gateway's subnet route first: apply link routes, then the others.
        List<Route> ordered = new ArrayList<>(routes.stream().filter(r -> r.getGateway().isEmpty()).toList());
        ordered.addAll(routes.stream().filter(r -> !r.getGateway().isEmpty()).toList());
        for (Route r : ordered) {
            List<String> cmd = new ArrayList<>(List.of(r.getFamily() == IPFamily.v6 ? "-6" : "-4", "route",
                    "replace", r.getDest().isEmpty() ? "default" : r.getDest()));
            if (!r.getGateway().isEmpty()) {
                cmd.addAll(List.of("via", r.getGateway()));
            }
            if (!r.getDevice().isEmpty()) {
                cmd.addAll(List.of("dev", r.getDevice()));
            }
            if (!r.getSource().isEmpty()) {
                cmd.addAll(List.of("src", r.getSource()));
            }
            script.add(cmd);
        }
    }

    /**
     * A guest restored from a VM template has the template's NIC, with the template's MAC: the first Ethernet NIC
     * that no requested interface claims by MAC takes this one's (the device learns it through the control
     * queue). Null if there is none.
     */
    private String adoptNic(List<Interface> interfaces, String mac, List<List<String>> script) throws IOException {
        if (!Files.isDirectory(NET)) {
            return null;
        }
        List<String> claimed = interfaces.stream().map(x -> x.getHwAddr().toLowerCase(Locale.ROOT)).toList();
        try (Stream<Path> links = Files.list(NET)) {
            for (Path l : links.sorted().toList()) {
                Path addr = l.resolve("address");
                Path type = l.resolve("type");
                if (!Files.exists(addr) || !Files.exists(type) || !Files.readString(type).trim().equals("1")
                        || l.getFileName().toString().equals("lo")
                        || claimed.contains(Files.readString(addr).trim().toLowerCase(Locale.ROOT))) {
                    continue;
                }
                String name = l.getFileName().toString();
                script.add(List.of("link", "set", "dev", name, "down"));
                script.add(List.of("link", "set", "dev", name, "address", mac));
                LOG.info("NIC {} takes MAC {} (a template's NIC)", name, mac);
                return name;
            }
        }
        return null;
    }

    /** The name of the NIC with this MAC address, or null. */
    String byMac(String mac) throws IOException {
        if (!Files.isDirectory(NET)) {
            return null;
        }
        String want = mac.toLowerCase(Locale.ROOT);
        try (Stream<Path> links = Files.list(NET)) {
            for (Path l : links.toList()) {
                Path addr = l.resolve("address");
                if (Files.exists(addr) && Files.readString(addr).trim().toLowerCase(Locale.ROOT).equals(want)) {
                    return l.getFileName().toString();
                }
            }
        }
        return null;
    }

    /**
     * Runs ip commands in one busybox shell, stopping at the first that fails: busybox runs its applets in a fork
     * without an exec, and under TCG each process the JVM launches costs a few hundred milliseconds.
     */
    void ipAll(List<List<String>> commands) throws IOException {
        if (commands.isEmpty()) {
            return;
        }
        StringBuilder script = new StringBuilder("set -ex\n"); // on failure, the output names the command
        for (List<String> c : commands) {
            script.append("ip");
            for (String a : c) {
                script.append(" '").append(a.replace("'", "'\\''")).append('\'');
            }
            script.append('\n');
        }
        run(List.of("/bin/sh", "-c", script.toString()), "ip: " + commands.size() + " commands");
    }

    void ip(String... args) throws IOException {
        List<String> cmd = new ArrayList<>(List.of("ip"));
        cmd.addAll(List.of(args));
        run(cmd, String.join(" ", cmd));
    }

    private static void run(List<String> cmd, String what) throws IOException {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
        try {
            if (!p.waitFor(10, TimeUnit.SECONDS)) {
                p.destroyForcibly();
                throw new IOException(what + " did not finish within 10 s");
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted: " + what);
        }
        if (p.exitValue() != 0) {
            throw Status.INTERNAL.withDescription(what + " failed: " + out).asRuntimeException();
        }
    }
}
