package io.kuasar.vmm.network;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.grpc.Status;
import io.kuasar.api.vmm.IPAddress;
import io.kuasar.api.vmm.IPFamily;
import io.kuasar.api.vmm.Interface;
import io.kuasar.api.vmm.Route;
import io.kuasar.vmm.hypervisor.VmSpec;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * A pod's network as CNI left it in the pod's network namespace, carried into its VM the way Kuasar does: for
 * each veth, a tap {@code tap_kua_<ifindex>} in the same namespace, and tc {@code mirred} redirects between the
 * two in both directions, so whatever reaches the veth goes to the VM's NIC and back. The guest's NIC gets the
 * veth's MAC, addresses and routes (sent with SetupSandbox), so the pod IP answers from the VM.
 * Uses iproute2's {@code ip -j} and {@code tc} through {@code nsenter}.
 */
public final class PodNetwork {
    private static final Logger LOG = LoggerFactory.getLogger(PodNetwork.class);
    private static final int IFF_NOARP = 0x80;
    private final String netns;
    private final List<Link> links;
    private final List<Route> routes;
    private final List<String> taps = new ArrayList<>();

    /** One interface of the pod to carry into the VM. */
    record Link(int index, String name, String mac, int mtu, boolean noArp, List<IPAddress> addresses) {
        String tap() {
            return "tap_kua_" + index;
        }
    }

    private PodNetwork(String netns, List<Link> links, List<Route> routes) {
        this.netns = netns;
        this.links = links;
        this.routes = routes;
    }

    /** Reads the veths, their addresses and the main table's routes of the namespace at {@code netns}. */
    public static PodNetwork scan(String netns) throws IOException {
        ObjectMapper json = new ObjectMapper();
        JsonNode linkList = json.readTree(run(netns, "ip", "-j", "-d", "link", "show"));
        JsonNode addrList = json.readTree(run(netns, "ip", "-j", "addr", "show"));
        List<Link> links = new ArrayList<>();
        List<String> names = new ArrayList<>();
        for (JsonNode l : linkList) {
            String kind = l.path("linkinfo").path("info_kind").asText("");
            if (!kind.equals("veth")) {
                continue; // loopback and anything else stays in the namespace (Kuasar also takes physical NICs)
            }
            int index = l.path("ifindex").asInt();
            List<IPAddress> addrs = new ArrayList<>();
            for (JsonNode a : addrList) {
                if (a.path("ifindex").asInt() != index) {
                    continue;
                }
                for (JsonNode ai : a.path("addr_info")) {
                    boolean v6 = ai.path("family").asText().equals("inet6");
                    if (v6 && ai.path("scope").asText().equals("link")) {
                        continue; // the guest makes its own link-local address
                    }
                    addrs.add(IPAddress.newBuilder().setFamily(v6 ? IPFamily.v6 : IPFamily.v4)
                            .setAddress(ai.path("local").asText()).setMask(Integer.toString(ai.path("prefixlen").asInt()))
                            .build());
                }
            }
            boolean noArp = false;
            for (JsonNode f : l.path("flags")) {
                noArp |= f.asText().equals("NOARP");
            }
            String name = l.path("ifname").asText();
            links.add(new Link(index, name, l.path("address").asText(), l.path("mtu").asInt(1500), noArp, addrs));
            names.add(name);
        }
        List<Route> routes = new ArrayList<>();
        for (String family : new String[]{"-4", "-6"}) {
            for (JsonNode r : json.readTree(run(netns, "ip", "-j", family, "route", "show", "table", "main"))) {
                String dev = r.path("dev").asText("");
                String dst = r.path("dst").asText("");
                if (!names.contains(dev) || (family.equals("-6") && dst.startsWith("fe80"))) {
                    continue; // routes through interfaces that stay behind mean nothing in the guest
                }
                routes.add(Route.newBuilder().setDest(dst.equals("default") ? "" : dst)
                        .setGateway(r.path("gateway").asText("")).setDevice(dev)
                        .setSource(r.path("prefsrc").asText(""))
                        .setFamily(family.equals("-6") ? IPFamily.v6 : IPFamily.v4).build());
            }
        }
        return new PodNetwork(netns, links, routes);
    }

    /** The network of a pod whose VM outlived a restart of the sandboxer: its taps and redirects are in place. */
    public static PodNetwork recover(String netns) throws IOException {
        PodNetwork n = scan(netns);
        n.links.forEach(l -> n.taps.add(l.tap()));
        return n;
    }

    /** Creates the taps and the redirects; returns the VM's NICs. Undoes what it made if a step fails. */
    public List<VmSpec.Nic> attach() throws IOException {
        List<VmSpec.Nic> nics = new ArrayList<>();
        try {
            for (Link l : links) {
                String tap = l.tap();
                run(netns, "ip", "tuntap", "add", "dev", tap, "mode", "tap");
                taps.add(tap);
                run(netns, "ip", "link", "set", "dev", tap, "mtu", Integer.toString(l.mtu()), "up");
                run(netns, "tc", "qdisc", "add", "dev", tap, "ingress");
                run(netns, "tc", "qdisc", "replace", "dev", l.name(), "ingress");
                run(netns, "tc", "filter", "add", "dev", tap, "parent", "ffff:", "protocol", "all", "u32", "match", "u8",
                        "0", "0", "action", "mirred", "egress", "redirect", "dev", l.name());
                run(netns, "tc", "filter", "add", "dev", l.name(), "parent", "ffff:", "protocol", "all", "u32", "match",
                        "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev", tap);
                nics.add(new VmSpec.Nic("intf-" + l.index(), tap, l.mac()));
            }
        } catch (IOException | RuntimeException e) {
            detach();
            throw e;
        }
        return nics;
    }

    /** Removes the taps and redirects (they would also go with the namespace). Idempotent. */
    public void detach() {
        for (Link l : links) {
            try {
                run(netns, "tc", "qdisc", "del", "dev", l.name(), "ingress");
            } catch (IOException | RuntimeException e) {
                LOG.debug("tc qdisc del dev {}: {}", l.name(), e.getMessage());
            }
        }
        for (String tap : List.copyOf(taps)) {
            try {
                run(netns, "ip", "link", "del", "dev", tap);
            } catch (IOException | RuntimeException e) {
                LOG.debug("ip link del {}: {}", tap, e.getMessage());
            }
            taps.remove(tap);
        }
    }

    /** Removes taps left by an earlier run (e.g. a start that was cut short), by name. */
    public static void removeStaleTaps(String netns) {
        try {
            for (JsonNode l : new ObjectMapper().readTree(run(netns, "ip", "-j", "link", "show"))) {
                String name = l.path("ifname").asText();
                if (name.startsWith("tap_kua_")) {
                    run(netns, "ip", "link", "del", "dev", name);
                }
            }
        } catch (IOException | RuntimeException e) {
            LOG.debug("no stale taps removed in {}: {}", netns, e.getMessage());
        }
    }

    public List<Interface> interfaces() {
        return links.stream().map(l -> Interface.newBuilder().setDevice(l.name()).setName(l.name())
                .addAllIPAddresses(l.addresses()).setMtu(l.mtu()).setHwAddr(l.mac())
                .setRawFlags(l.noArp() ? IFF_NOARP : 0).build()).toList();
    }

    public List<Route> routes() {
        return routes;
    }

    static String run(String netns, String... args) throws IOException {
        List<String> cmd = new ArrayList<>(List.of("nsenter", "--net=" + netns, "--"));
        cmd.addAll(List.of(args));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        try {
            if (!p.waitFor(10, TimeUnit.SECONDS)) {
                p.destroyForcibly();
                throw new IOException(String.join(" ", args) + " did not finish within 10 s");
            }
        } catch (InterruptedException e) {
            p.destroyForcibly();
            Thread.currentThread().interrupt();
            throw new IOException("interrupted: " + String.join(" ", args));
        }
        if (p.exitValue() != 0) {
            throw Status.INTERNAL.withDescription("in network namespace " + netns + ": " + String.join(" ", args)
                    + " failed: " + out.trim()).asRuntimeException();
        }
        return out;
    }
}
