package io.kuasar.wasm.engine;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * What a container's instance gets, in Kuasar's terms: WASI arguments ({@code argv[0]} included) and environment
 * from the OCI process, directories preopened at guest paths (the rootfs at {@code /}, bind mounts at their
 * destinations), stdio from files (containerd's FIFOs; null for none) and a cap on linear memory in bytes (0: the
 * module's own limits).
 */
public record WasiRun(String id, List<String> argv, Map<String, String> env, Map<String, Path> preopens,
                      Path stdin, Path stdout, Path stderr, long memoryLimitBytes) {
    public WasiRun {
        argv = List.copyOf(argv);
        env = Map.copyOf(env);
        preopens = java.util.Collections.unmodifiableMap(new LinkedHashMap<>(preopens));
    }
}
