package io.kuasar.ctl;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * The sandboxer daemons kuasar-ctl looks at: by default the four daemons' own defaults (each {@code *SandboxerMain}:
 * {@code --listen}, {@code --dir}); {@code --sandboxer name=socket[,dir]} replaces them. A name's kind is its first
 * word ({@code vmm-virtiofs} is a vmm daemon); a missing dir is the kind's default.
 */
final class Sandboxers {
    /** One daemon: its name (as shown), kind (runc, vmm, wasm, quark), Sandbox API socket and state directory. */
    record Sandboxer(String name, String kind, Path socket, Path dir) {
    }

    static final List<Sandboxer> DEFAULTS = List.of(
            new Sandboxer("runc", "runc", Path.of("/run/runc-sandboxer.sock"), Path.of("/run/kuasar-runc")),
            new Sandboxer("vmm", "vmm", Path.of("/run/vmm-sandboxer.sock"), Path.of("/run/kuasar-vmm")),
            new Sandboxer("wasm", "wasm", Path.of("/run/wasm-sandboxer.sock"), Path.of("/run/kuasar-wasm")),
            new Sandboxer("quark", "quark", Path.of("/run/quark-sandboxer.sock"), Path.of("/run/kuasar-quark")));

    private Sandboxers() {
    }

    /** The daemons named by {@code specs} ({@code name=socket[,dir]}), or the defaults when there are none. */
    static List<Sandboxer> of(List<String> specs) {
        if (specs == null || specs.isEmpty()) {
            return DEFAULTS;
        }
        List<Sandboxer> out = new ArrayList<>();
        for (String spec : specs) {
            int eq = spec.indexOf('=');
            if (eq <= 0 || eq == spec.length() - 1) {
                throw new CtlException("--sandboxer " + spec + ": expected name=socket[,dir], e.g. "
                        + "runc=/run/runc-sandboxer.sock,/run/kuasar-runc");
            }
            String name = spec.substring(0, eq);
            String kind = name.split("[-_.]", 2)[0];
            Sandboxer dflt = DEFAULTS.stream().filter(d -> d.kind().equals(kind)).findFirst().orElseThrow(() ->
                    new CtlException("--sandboxer " + spec + ": the name must start with a kind: runc, vmm, wasm or "
                            + "quark (e.g. vmm-virtiofs=...)"));
            String[] parts = spec.substring(eq + 1).split(",", 2);
            if (parts[0].isEmpty()) {
                throw new CtlException("--sandboxer " + spec + ": no socket");
            }
            Path dir = parts.length > 1 && !parts[1].isEmpty() ? Path.of(parts[1]) : dflt.dir();
            if (out.stream().anyMatch(s -> s.name().equals(name))) {
                throw new CtlException("--sandboxer " + name + " given twice");
            }
            out.add(new Sandboxer(name, kind, Path.of(parts[0]), dir));
        }
        return out;
    }
}
