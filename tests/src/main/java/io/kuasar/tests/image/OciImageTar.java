package io.kuasar.tests.image;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** An OCI image layout tarball (what tests/e2e/env.sh builds offline), unpacked into a root filesystem. */
public final class OciImageTar {
    private static final ObjectMapper JSON = new ObjectMapper();

    private OciImageTar() {
    }

    /**
     * Unpacks {@code imageTar} into {@code layout} and the layers of its first manifest, in order, into
     * {@code rootfs}.
     */
    public static void unpack(Path imageTar, Path layout, Path rootfs) throws IOException, InterruptedException {
        Files.createDirectories(layout);
        Files.createDirectories(rootfs);
        tar(layout, imageTar);
        JsonNode index = JSON.readTree(layout.resolve("index.json").toFile());
        JsonNode manifest = JSON.readTree(blob(layout, index.path("manifests").get(0).path("digest").asText()).toFile());
        for (JsonNode layer : manifest.path("layers")) {
            tar(rootfs, blob(layout, layer.path("digest").asText()));
        }
    }

    private static Path blob(Path layout, String digest) {
        return layout.resolve("blobs").resolve("sha256").resolve(digest.substring("sha256:".length()));
    }

    private static void tar(Path into, Path archive) throws IOException, InterruptedException {
        Process p = new ProcessBuilder("tar", "-xf", archive.toString()).directory(into.toFile())
                .redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        if (p.waitFor() != 0) {
            throw new IOException("tar -xf " + archive + " in " + into + " failed: " + out);
        }
    }
}
