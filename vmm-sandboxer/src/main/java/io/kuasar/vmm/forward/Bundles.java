package io.kuasar.vmm.forward;

import io.kuasar.sandbox.mount.Mounts;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;

/** A container's bundle in the pod's shared directory: its rootfs and storages are mounts. */
public final class Bundles {
    private Bundles() {
    }

    /**
     * Unmounts the rootfs and storages of a bundle, then removes it. Never deletes through a mount: if something
     * stays mounted, the directory is left (and the error says so).
     */
    public static void remove(Path dir) throws IOException {
        if (!Files.isDirectory(dir, LinkOption.NOFOLLOW_LINKS)) {
            return;
        }
        try (var entries = Files.list(dir)) {
            for (Path p : entries.toList()) {
                Mounts.unmountAll(p);
            }
        }
        for (String line : Files.readAllLines(Path.of("/proc/self/mounts"))) {
            String[] f = line.split(" ");
            if (f.length > 1 && f[1].startsWith(dir + "/")) {
                throw new IOException(f[1] + " is still mounted; not removing " + dir);
            }
        }
        io.kuasar.sandbox.state.StateStore.deleteTree(dir);
    }

}
