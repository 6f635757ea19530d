package io.kuasar.sandbox.pod;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.kuasar.api.cri.v1.DNSConfig;
import io.kuasar.api.cri.v1.NamespaceMode;
import io.kuasar.api.cri.v1.PodSandboxConfig;
import io.kuasar.sandbox.state.AtomicFiles;
import io.kuasar.sandbox.state.SandboxRecord;
import io.kuasar.sandbox.sys.Linux;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

/**
 * The files a pod's containers share: {@code /etc/hostname}, {@code /etc/hosts}, {@code /etc/resolv.conf} and a
 * pod-wide {@code /dev/shm}. containerd's own pause-container controller writes these into its sandbox directory and
 * CRI mounts them into every container; for an external sandboxer CRI mounts them only if they exist in *its*
 * directory, which a sandboxer cannot know. So they live in the sandbox's state directory and are added to each
 * container's spec at Task.Create, unless the spec already mounts something there (e.g. kubelet's own /etc/hosts).
 */
public final class PodFiles {
    public static final String HOSTNAME = "hostname";
    public static final String HOSTS = "hosts";
    public static final String RESOLV = "resolv.conf";
    public static final String SHM = "shm";
    private static final long SHM_SIZE = 64L << 20;

    private PodFiles() {
    }

    /** Writes the pod's files and mounts its shm (a tmpfs; IPC=NODE pods use the host's /dev/shm instead). */
    public static void prepare(Path dir, PodSandboxConfig cfg, String hostname) throws IOException {
        String name = hostname != null ? hostname : hostHostname();
        AtomicFiles.write(dir.resolve(HOSTNAME), (name + "\n").getBytes(StandardCharsets.UTF_8));
        AtomicFiles.write(dir.resolve(HOSTS), hosts(name));
        AtomicFiles.write(dir.resolve(RESOLV), resolvConf(cfg == null ? null : cfg.getDnsConfig()));
        if (!hostIpc(cfg)) {
            mountShm(dir.resolve(SHM));
        }
    }

    /** IPC=NODE pods use the host's /dev/shm: no tmpfs of their own. */
    public static boolean hostIpc(PodSandboxConfig cfg) {
        return cfg != null && cfg.getLinux().getSecurityContext().getNamespaceOptions().getIpc() == NamespaceMode.NODE;
    }

    /** A pod's /dev/shm: a 64 MiB tmpfs (nosuid, nodev, noexec), as containerd makes it; done if already mounted. */
    public static void mountShm(Path shm) throws IOException {
        Files.createDirectories(shm);
        if (!isMountPoint(shm)) {
            Linux.mount("shm", shm.toString(), "tmpfs", 2 | 4 | 8, "mode=1777,size=" + SHM_SIZE);
        }
    }

    /** Unmounts the pod's shm; harmless if it is not mounted. */
    public static void release(Path dir) {
        Linux.umount(dir.resolve(SHM).toString(), Linux.MNT_DETACH);
    }

    /**
     * Adds the pod's files to a container spec (in place). Returns false if the spec needed nothing.
     */
    public static boolean inject(ObjectNode spec, Path dir) {
        if (!Files.exists(dir.resolve(HOSTNAME))) {
            return false;
        }
        ArrayNode mounts = spec.withArray("mounts");
        Set<String> taken = new HashSet<>();
        boolean changed = false;
        for (JsonNode m : mounts) {
            String dest = m.path("destination").asText();
            if (dest.equals("/dev/shm") && Files.isDirectory(dir.resolve(SHM)) && isMountPoint(dir.resolve(SHM))
                    && "tmpfs".equals(m.path("type").asText())) {
                ObjectNode om = (ObjectNode) m;
                om.put("type", "bind");
                om.put("source", dir.resolve(SHM).toString());
                om.set("options", om.arrayNode().add("rbind").add("nosuid").add("nodev").add("noexec"));
                changed = true;
            }
            taken.add(dest);
        }
        boolean readOnly = spec.path("root").path("readonly").asBoolean(false);
        for (String[] f : List.of(new String[]{"/etc/hostname", HOSTNAME}, new String[]{"/etc/hosts", HOSTS},
                new String[]{"/etc/resolv.conf", RESOLV})) {
            if (taken.contains(f[0])) {
                continue;
            }
            ObjectNode m = mounts.addObject();
            m.put("destination", f[0]);
            m.put("type", "bind");
            m.put("source", dir.resolve(f[1]).toString());
            m.set("options", m.arrayNode().add("rbind").add("rprivate").add(readOnly ? "ro" : "rw"));
            changed = true;
        }
        return changed;
    }

    /** The PodSandboxConfig containerd sent with the sandbox (its options); null if it sent none. */
    public static PodSandboxConfig config(SandboxRecord r) {
        if (r.podConfig() == null || r.podConfigType() == null || !r.podConfigType().endsWith("PodSandboxConfig")) {
            return null;
        }
        try {
            return PodSandboxConfig.parseFrom(r.podConfig());
        } catch (com.google.protobuf.InvalidProtocolBufferException e) {
            throw io.grpc.Status.INVALID_ARGUMENT.withDescription("sandbox " + r.id()
                    + ": options is not a valid PodSandboxConfig").asRuntimeException();
        }
    }

    public static byte[] hosts(String hostname) {
        String s = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                + "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
                + "127.0.1.1\t" + hostname + "\n";
        return s.getBytes(StandardCharsets.UTF_8);
    }

    /** The pod's DNS config as containerd writes it; the host's resolv.conf when the pod has none. */
    public static byte[] resolvConf(DNSConfig dns) throws IOException {
        if (dns == null || (dns.getServersCount() == 0 && dns.getSearchesCount() == 0 && dns.getOptionsCount() == 0)) {
            Path host = Path.of("/etc/resolv.conf");
            return Files.exists(host) ? Files.readAllBytes(host) : new byte[0];
        }
        StringBuilder b = new StringBuilder();
        if (dns.getSearchesCount() > 0) {
            b.append("search ").append(String.join(" ", dns.getSearchesList())).append('\n');
        }
        for (String s : dns.getServersList()) {
            b.append("nameserver ").append(s).append('\n');
        }
        if (dns.getOptionsCount() > 0) {
            b.append("options ").append(String.join(" ", dns.getOptionsList())).append('\n');
        }
        return b.toString().getBytes(StandardCharsets.UTF_8);
    }

    public static String hostHostname() throws IOException {
        return Files.readString(Path.of("/proc/sys/kernel/hostname")).trim();
    }

    public static boolean isMountPoint(Path p) {
        try {
            String target = p.toAbsolutePath().toString();
            for (String line : Files.readAllLines(Path.of("/proc/self/mounts"))) {
                String[] f = line.split(" ");
                if (f.length > 1 && f[1].equals(target)) {
                    return true;
                }
            }
        } catch (IOException e) {
            return false;
        }
        return false;
    }
}
