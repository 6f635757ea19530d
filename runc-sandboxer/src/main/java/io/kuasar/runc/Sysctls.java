package io.kuasar.runc;

import io.grpc.Status;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.regex.Pattern;

/**
 * A pod's {@code linux.sysctls}. containerd sets them on its pause container, whose namespaces the pod's containers
 * join; here the holder owns those namespaces, so it writes them there. Only sysctls of a namespace the pod owns are
 * accepted, with runc's rules: IPC ones ({@code kernel.shm*}, {@code kernel.msg*}, {@code kernel.sem},
 * {@code fs.mqueue.*}) need the pod's own IPC namespace, {@code net.*} its own network namespace,
 * {@code kernel.hostname}/{@code kernel.domainname} its own UTS namespace; anything else would change the node.
 */
public final class Sysctls {
    private static final Pattern KEY = Pattern.compile("^[A-Za-z0-9_-]+([./][A-Za-z0-9_:@%+-]+)*$");
    private static final List<String> IPC = List.of("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
            "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced");

    /** One setting: the key as given, and the file under /proc/sys it is written to. */
    public record Setting(String key, String procPath, String value) {
        /** The holder's command-line form: {@code path=value}. */
        public String argument() {
            return procPath + "=" + value;
        }
    }

    private Sysctls() {
    }

    public static List<Setting> validate(String sandboxId, Map<String, String> sysctls, boolean hostNetwork,
                                  boolean hostIpc, boolean hostUts) {
        List<Setting> out = new ArrayList<>();
        for (var e : new TreeMap<>(sysctls).entrySet()) {
            String key = e.getKey();
            String value = e.getValue();
            if (!KEY.matcher(key).matches() || key.contains("..")) {
                throw invalid(sandboxId, key, "is not a sysctl name");
            }
            if (value.isEmpty() || value.indexOf('\n') >= 0 || value.indexOf('\0') >= 0) {
                throw invalid(sandboxId, key, "has an empty value or one with a newline or NUL");
            }
            // Kubernetes accepts both spellings; a '/' form keeps dots inside names (net/ipv4/conf/eth0.1/...).
            String dotted = key.contains("/") ? key.replace('/', '.') : key;
            String path = key.contains("/") ? key : key.replace('.', '/');
            if (IPC.contains(dotted) || dotted.startsWith("fs.mqueue.")) {
                if (hostIpc) {
                    throw invalid(sandboxId, key, "needs the pod's own IPC namespace, but the pod uses the host's");
                }
            } else if (dotted.startsWith("net.")) {
                if (hostNetwork) {
                    throw invalid(sandboxId, key, "needs the pod's own network namespace, but the pod uses the "
                            + "host's");
                }
            } else if (dotted.equals("kernel.hostname") || dotted.equals("kernel.domainname")) {
                if (hostUts) {
                    throw invalid(sandboxId, key, "needs the pod's own UTS namespace, but the pod uses the host's");
                }
            } else {
                throw invalid(sandboxId, key, "is not in a namespace of the pod; setting it would change the node");
            }
            out.add(new Setting(key, path, value));
        }
        return out;
    }

    /**
     * A microVM pod's sysctls, for its guest: the VM's kernel is the pod's own, so every well-formed sysctl is
     * allowed. The first list must be written inside the pod's IPC namespace (by its holder), the second anywhere
     * in the guest.
     */
    public static List<List<Setting>> forGuest(String sandboxId, Map<String, String> sysctls) {
        List<Setting> ipc = new ArrayList<>();
        List<Setting> other = new ArrayList<>();
        Map<String, String> namespaced = new TreeMap<>();
        for (var e : new TreeMap<>(sysctls).entrySet()) {
            String dotted = e.getKey().replace('/', '.');
            if (IPC.contains(dotted) || dotted.startsWith("fs.mqueue.") || dotted.startsWith("net.")
                    || dotted.equals("kernel.hostname") || dotted.equals("kernel.domainname")) {
                namespaced.put(e.getKey(), e.getValue());
            } else {
                // validated as a namespaced one would be, then written in the guest's own namespaces
                Map<String, String> one = Map.of("net." + e.getKey(), e.getValue());
                Setting s = validate(sandboxId, one, false, false, false).getFirst();
                other.add(new Setting(e.getKey(), e.getKey().contains("/") ? e.getKey()
                        : e.getKey().replace('.', '/'), s.value()));
            }
        }
        for (Setting s : validate(sandboxId, namespaced, false, false, false)) {
            (s.key().replace('/', '.').startsWith("net.") ? other : ipc).add(s);
        }
        return List.of(ipc, other);
    }

    private static RuntimeException invalid(String sandboxId, String key, String why) {
        return Status.INVALID_ARGUMENT.withDescription("sandbox " + sandboxId + ": sysctl " + key + " " + why)
                .asRuntimeException();
    }
}
