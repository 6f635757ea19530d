package io.kuasar.ctl;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.dataformat.toml.TomlMapper;
import io.kuasar.vmm.config.ClhConfig;
import io.kuasar.vmm.config.QemuConfig;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermission;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;

/**
 * {@code kuasar-ctl check}: one line per check, OK, WARN or FAIL, with the fix. Everything is read below {@code root}
 * ("/" on a node; a fake tree in the tests), except the daemons, which are asked through {@code probe}.
 */
final class Checks {
    enum Level { OK, WARN, FAIL }

    record Result(Level level, String name, String message, String fix) {
        static Result ok(String name, String message) {
            return new Result(Level.OK, name, message, null);
        }

        @Override
        public String toString() {
            return String.format("%-4s %s: %s", level, name, message) + (fix == null ? "" : " (fix: " + fix + ")");
        }
    }

    /** Whether a daemon answers: null if it does, else why not. */
    interface Probe {
        String down(Sandboxers.Sandboxer s);
    }

    /** What a node needs for one kind of sandboxer: a check per item, given the context. */
    record Need(String kind, String name, Function<Checks, Result> check) {
    }

    private static final List<String> PATH = List.of("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin",
            "/sbin", "/bin");
    private static final int CAP_SYS_RESOURCE = 24;

    private final Path root;
    private final List<Sandboxers.Sandboxer> sandboxers;
    private final Path containerdConfig;
    private final Path vmmConfig;
    private final Probe probe;

    Checks(Path root, List<Sandboxers.Sandboxer> sandboxers, Path containerdConfig, Path vmmConfig, Probe probe) {
        this.root = root;
        this.sandboxers = sandboxers;
        this.containerdConfig = containerdConfig;
        this.vmmConfig = vmmConfig;
        this.probe = probe;
    }

    /** A host path under the root this run looks at. */
    Path at(String abs) {
        return root.resolve(abs.startsWith("/") ? abs.substring(1) : abs);
    }

    Path at(Path abs) {
        return at(abs.toString());
    }

    static final List<Need> NEEDS = List.of(
            new Need("runc", "runc", c -> c.onPath("runc", "apt-get install runc")),
            new Need("vmm", "QEMU", c -> c.vmm(v -> v.qemu() == null ? null
                    : c.executable(v.qemu(), "qemu_path", "apt-get install qemu-system-x86"))),
            new Need("vmm", "guest kernel", c -> c.vmm(v -> c.file(v.kernel(), "kernel_path", "make vmm-image"))),
            new Need("vmm", "guest initrd", c -> c.vmm(v -> v.initrd().isEmpty() ? null
                    : c.file(v.initrd(), "initrd_path", "make vmm-image"))),
            new Need("vmm", "accelerator", Checks::accelerator),
            new Need("vmm", "tun", c -> Files.exists(c.at("/dev/net/tun")) ? Result.ok("tun", "/dev/net/tun (pod "
                    + "networks reach the VM through a tap)") : new Result(Level.FAIL, "tun", "/dev/net/tun missing: "
                    + "a pod with a network cannot get a tap", "modprobe tun")),
            new Need("vmm", "vsock", Checks::vsock),
            new Need("vmm", "debug console", c -> c.vmm(v -> Result.ok("debug console", v.debugConsole()
                    ? "on ([hypervisor.task] debug): a root shell in every new VM, for root on this host "
                    + "(kuasar-ctl exec)" : "off (kuasar-ctl exec needs [hypervisor.task] debug = true)"))),
            new Need("quark", "runsc", c -> Files.isExecutable(c.at("/var/lib/kuasar/runsc/runsc"))
                    ? Result.ok("runsc", "/var/lib/kuasar/runsc/runsc (gvisor backend)")
                    : c.onPath("runsc", "make runsc (gVisor's runsc for quark-sandboxer --backend gvisor)")),
            new Need("wasm", "engines", c -> Files.isExecutable(c.at("/var/lib/kuasar/wasmedge/wasmedge"))
                    ? Result.ok("engines", "chicory and wasmtime built in; wasmedge at /var/lib/kuasar/wasmedge/wasmedge")
                    : new Result(Level.WARN, "engines", "chicory and wasmtime built in; no wasmedge at "
                    + "/var/lib/kuasar/wasmedge/wasmedge (only containers that ask for it need it)", "make wasm-engines")));

    List<Result> run() {
        List<Result> out = new ArrayList<>();
        List<Sandboxers.Sandboxer> running = new ArrayList<>();
        for (Sandboxers.Sandboxer s : sandboxers) {
            Result r = socket(s);
            out.add(r);
            if (r.level() == Level.OK) {
                running.add(s);
            }
        }
        out.addAll(containerd(running));
        out.add(cgroups());
        for (Sandboxers.Sandboxer s : sandboxers) {
            boolean up = running.contains(s);
            for (Need n : NEEDS) {
                if (!n.kind().equals(s.kind()) || sandboxers.stream().filter(o -> o.kind().equals(s.kind()))
                        .findFirst().orElseThrow() != s) {
                    continue; // one check per kind
                }
                Result r;
                try {
                    r = n.check().apply(this);
                } catch (RuntimeException e) {
                    r = new Result(Level.FAIL, n.name(), e.getMessage(), null);
                }
                if (r == null) {
                    continue;
                }
                // a daemon that is not running here needs nothing yet: what it would miss is a warning
                Level level = r.level() == Level.FAIL && !up ? Level.WARN : r.level();
                out.add(new Result(level, s.kind() + ": " + r.name(), r.message(), r.fix()));
            }
        }
        return out;
    }

    Result socket(Sandboxers.Sandboxer s) {
        String name = s.name() + ": socket";
        Path sock = at(s.socket());
        if (!Files.exists(sock)) {
            return new Result(Level.WARN, name, "not running (no " + s.socket() + ")", "start it (systemctl start "
                    + "kuasar-" + s.kind() + "), or name its socket with --sandboxer " + s.name() + "=<socket>[,<dir>]");
        }
        try {
            int uid = (Integer) Files.getAttribute(sock, "unix:uid");
            if (uid != 0) {
                return new Result(Level.FAIL, name, s.socket() + " is owned by uid " + uid + ", not root",
                        "run the daemon as root");
            }
            Set<PosixFilePermission> perms = Files.getPosixFilePermissions(sock);
            if (perms.contains(PosixFilePermission.OTHERS_WRITE)) {
                return new Result(Level.FAIL, name, s.socket() + " is world-writable: any user can drive the daemon",
                        "restart the daemon (it makes its sockets 0600), or chmod 0600 " + s.socket());
            }
        } catch (IOException e) {
            return new Result(Level.FAIL, name, "cannot stat " + s.socket() + ": " + e.getMessage(), null);
        }
        String down = probe.down(s);
        if (down != null) {
            return new Result(Level.FAIL, name, down, "restart the daemon; its log says why it does not answer");
        }
        return Result.ok(name, s.socket() + " answers, root-owned, not world-writable");
    }

    List<Result> containerd(List<Sandboxers.Sandboxer> running) {
        List<Result> out = new ArrayList<>();
        Path file = at(containerdConfig);
        if (!Files.exists(file)) {
            out.add(new Result(Level.WARN, "containerd", "no config at " + containerdConfig, "write one that "
                    + "registers each sandboxer (docs/containerd.md), or name it with --containerd-config"));
            return out;
        }
        JsonNode config;
        try {
            config = new TomlMapper().readTree(file.toFile());
        } catch (IOException e) {
            out.add(new Result(Level.FAIL, "containerd", containerdConfig + " is not valid TOML: " + e.getMessage(),
                    null));
            return out;
        }
        List<Map.Entry<String, JsonNode>> runtimes = new ArrayList<>();
        collectRuntimes(config.path("plugins"), runtimes);
        for (Sandboxers.Sandboxer s : running) {
            String name = "containerd: " + s.name();
            String shimType = "io.containerd.kuasar-" + s.kind() + ".v2";
            String shim = runtimes.stream().filter(r -> r.getValue().path("runtime_type").asText().equals(shimType))
                    .map(Map.Entry::getKey).findFirst().orElse(null);
            if (shim != null) {
                out.add(Result.ok(name, "runtime " + shim + " runs " + shimType + " (containerd 1.7 shim mode)"));
                continue;
            }
            String plugin = null;
            for (Iterator<Map.Entry<String, JsonNode>> it = config.path("proxy_plugins").fields(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> p = it.next();
                if (p.getValue().path("type").asText().equals("sandbox")
                        && p.getValue().path("address").asText().equals(s.socket().toString())) {
                    plugin = p.getKey();
                }
            }
            if (plugin == null) {
                out.add(new Result(Level.FAIL, name, "no proxy_plugins entry of type \"sandbox\" at " + s.socket()
                        + " in " + containerdConfig, "add [proxy_plugins." + s.kind() + "] type = \"sandbox\" address = \""
                        + s.socket() + "\" and restart containerd"));
                continue;
            }
            String p = plugin;
            List<String> users = runtimes.stream().filter(r -> r.getValue().path("sandboxer").asText().equals(p))
                    .map(Map.Entry::getKey).toList();
            if (users.isEmpty()) {
                out.add(new Result(Level.FAIL, name, "proxy plugin " + plugin + " -> " + s.socket()
                        + ", but no runtime has sandboxer = \"" + plugin + "\"", "add a CRI runtime kuasar-" + s.kind()
                        + " with runtime_type = \"io.containerd.kuasar-" + s.kind() + ".v1\" and sandboxer = \"" + plugin
                        + "\" (docs/containerd.md)"));
            } else {
                out.add(Result.ok(name, "proxy plugin " + plugin + " -> " + s.socket() + ", runtime "
                        + String.join(", ", users)));
            }
        }
        out.add(oomScoreAdj(config));
        return out;
    }

    /** Every {@code runtimes.<name>} table under {@code node}, any depth (containerd 2.x and 1.7 CRI layouts). */
    private static void collectRuntimes(JsonNode node, List<Map.Entry<String, JsonNode>> out) {
        for (Iterator<Map.Entry<String, JsonNode>> it = node.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            if (e.getKey().equals("runtimes") && e.getValue().isObject()) {
                e.getValue().fields().forEachRemaining(out::add);
            } else if (e.getValue().isObject()) {
                collectRuntimes(e.getValue(), out);
            }
        }
    }

    Result oomScoreAdj(JsonNode config) {
        String name = "containerd: oom_score_adj";
        if (hasCapability(CAP_SYS_RESOURCE)) {
            return Result.ok(name, "CAP_SYS_RESOURCE held: containers may get a lower oom_score_adj");
        }
        if (findTrue(config, "restrict_oom_score_adj")) {
            return Result.ok(name, "no CAP_SYS_RESOURCE (a container or user namespace), and restrict_oom_score_adj "
                    + "= true");
        }
        return new Result(Level.FAIL, name, "no CAP_SYS_RESOURCE here: containerd cannot lower a container's "
                + "oom_score_adj and pods fail", "set restrict_oom_score_adj = true in containerd's CRI plugin config");
    }

    private static boolean findTrue(JsonNode node, String key) {
        if (node.path(key).asBoolean(false)) {
            return true;
        }
        for (Iterator<JsonNode> it = node.elements(); it.hasNext(); ) {
            JsonNode child = it.next();
            if (child.isObject() && findTrue(child, key)) {
                return true;
            }
        }
        return false;
    }

    boolean hasCapability(int cap) {
        try {
            for (String line : Files.readAllLines(at("/proc/self/status"))) {
                if (line.startsWith("CapEff:")) {
                    return (Long.parseUnsignedLong(line.substring(7).trim(), 16) & (1L << cap)) != 0;
                }
            }
        } catch (IOException | NumberFormatException e) {
            return false;
        }
        return false;
    }

    Result cgroups() {
        String fs = null;
        boolean unified = false;
        try {
            for (String line : Files.readAllLines(at("/proc/self/mounts"))) {
                String[] f = line.split(" ");
                if (f.length > 2 && f[1].equals("/sys/fs/cgroup")) {
                    fs = f[2];
                }
                if (f.length > 2 && f[1].equals("/sys/fs/cgroup/unified") && f[2].equals("cgroup2")) {
                    unified = true;
                }
            }
        } catch (IOException e) {
            return new Result(Level.WARN, "cgroups", "cannot read /proc/self/mounts: " + e.getMessage(), null);
        }
        if (fs == null) {
            return new Result(Level.FAIL, "cgroups", "nothing mounted on /sys/fs/cgroup", "mount cgroup2 (or the v1 "
                    + "hierarchies) on /sys/fs/cgroup");
        }
        if (fs.equals("cgroup2")) {
            return Result.ok("cgroups", "v2 (unified): limits, stats and OOM events from one tree");
        }
        if (unified) {
            return Result.ok("cgroups", "hybrid: v1 hierarchies for limits and stats, a v2 tree with no controllers "
                    + "(the sandboxers use v1 here)");
        }
        return Result.ok("cgroups", "v1: one hierarchy per controller (the sandboxers use each)");
    }

    Result onPath(String binary, String fix) {
        for (String dir : PATH) {
            if (Files.isExecutable(at(dir + "/" + binary))) {
                return Result.ok(binary, dir + "/" + binary);
            }
        }
        return new Result(Level.FAIL, binary, binary + " is not on the PATH (" + String.join(":", PATH) + ")", fix);
    }

    Result executable(String path, String key, String fix) {
        return Files.isExecutable(at(path)) ? Result.ok(key, path)
                : new Result(Level.FAIL, key, path + " is missing or not executable ([hypervisor]." + key + ")", fix);
    }

    Result file(String path, String key, String fix) {
        return Files.isRegularFile(at(path)) ? Result.ok(key, path)
                : new Result(Level.FAIL, key, path + " is missing ([hypervisor]." + key + ")", fix);
    }

    /** The vmm config's facts this check needs, Kuasar's QEMU or Cloud Hypervisor config. */
    record Vmm(String qemu, String kernel, String initrd, String accelerator, boolean useVsock, String vhostUserVsock,
               boolean debugConsole, boolean clh) {
    }

    Vmm vmmConfig() {
        Path file = at(vmmConfig);
        JsonNode h;
        try {
            h = Files.exists(file) ? new TomlMapper().readTree(file.toFile()).path("hypervisor")
                    : com.fasterxml.jackson.databind.node.MissingNode.getInstance();
        } catch (IOException e) {
            throw new IllegalArgumentException(vmmConfig + " is not valid TOML: " + e.getMessage());
        }
        String source = vmmConfig.toString();
        if (ClhConfig.isClh(h)) {
            ClhConfig c = ClhConfig.from(h, source);
            return new Vmm(null, c.kernelPath(), c.initrdPath(), "kvm", true, null,
                    c.kernelParams().contains("task.debug"), true);
        }
        QemuConfig q = QemuConfig.from(h, source);
        return new Vmm(q.qemuPath(), q.kernelPath(), q.initrdPath(), q.accelerator(), q.useVsock(),
                q.vhostUserVsockPath(), q.debugConsole(), false);
    }

    private Result vmm(Function<Vmm, Result> f) {
        return f.apply(vmmConfig());
    }

    private static Result accelerator(Checks c) {
        Vmm v = c.vmmConfig();
        boolean kvm = Files.exists(c.at("/dev/kvm"));
        boolean vmx = false;
        try {
            vmx = Files.readAllLines(c.at("/proc/cpuinfo")).stream()
                    .anyMatch(l -> l.startsWith("flags") && (l.contains(" vmx") || l.contains(" svm")));
        } catch (IOException e) {
            // no cpuinfo: no hardware virtualisation known
        }
        if (kvm && vmx) {
            return Result.ok("accelerator", "KVM (/dev/kvm, vmx/svm)");
        }
        String why = !kvm ? "no /dev/kvm" : "/dev/kvm but a CPU without vmx/svm (PVM?)";
        if (v.accelerator().equals("kvm") || v.clh()) {
            return new Result(Level.FAIL, "accelerator", why + ", and the config needs KVM", v.clh()
                    ? "Cloud Hypervisor needs KVM: use the QEMU config" : "set [hypervisor].accelerator = \"auto\"");
        }
        return new Result(Level.WARN, "accelerator", why + ": QEMU runs guests with TCG, 20-30x slower",
                "a machine with hardware virtualisation, for speed");
    }

    private static Result vsock(Checks c) {
        Vmm v = c.vmmConfig();
        if (!v.useVsock()) {
            return Result.ok("agent channel", "virtio-serial (use_vsock = false)");
        }
        if (Files.exists(c.at("/dev/vhost-vsock"))) {
            return Result.ok("agent channel", "vsock, /dev/vhost-vsock");
        }
        if (v.vhostUserVsock() != null && Files.isExecutable(c.at(v.vhostUserVsock()))) {
            return Result.ok("agent channel", "vsock through vhost-user-vsock (" + v.vhostUserVsock() + ")");
        }
        return new Result(Level.FAIL, "agent channel", "use_vsock = true, but neither /dev/vhost-vsock nor "
                + (v.vhostUserVsock() == null ? "a vhost-user-vsock daemon" : v.vhostUserVsock()),
                "modprobe vhost_vsock, or make vmm-image (vhost-device-vsock), or use_vsock = false");
    }
}
