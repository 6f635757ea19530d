package io.kuasar.vmm.hypervisor;

import io.grpc.Status;

import java.nio.file.Files;
import java.nio.file.Path;

/**
 * What every hypervisor's {@link Hypervisor#check()} asks of the host, with errors that name the config key, the path
 * and the remedy (FAILED_PRECONDITION: every RunPodSandbox repeats it until the host is fixed).
 */
public final class Prerequisites {
    private Prerequisites() {
    }

    /** {@code [hypervisor].<key>} must name an existing file. */
    public static void file(String path, String key, String remedy) {
        if (path.isEmpty() || !Files.exists(Path.of(path))) {
            throw Status.FAILED_PRECONDITION.withDescription("[hypervisor]." + key + " " + path + " does not exist ("
                    + remedy + ")").asRuntimeException();
        }
    }

    /** Kuasar's guest: the kernel, and the rootfs image and initrd where the config names them. */
    public static void guestImage(String kernel, String image, String initrd) {
        file(kernel, "kernel_path", "make vmm-image");
        if (!image.isEmpty()) {
            file(image, "image_path", "a rootfs image for the guest");
        }
        if (!initrd.isEmpty()) {
            file(initrd, "initrd_path", "make vmm-image");
        }
    }

    /** A hypervisor that runs guests on KVM only. */
    public static void kvm(String hypervisor) {
        if (!Files.isWritable(Path.of("/dev/kvm"))) {
            throw Status.FAILED_PRECONDITION.withDescription(hypervisor + " needs /dev/kvm (hardware "
                    + "virtualisation); it is missing or not writable here: use QEMU (config_qemu_x86_64.toml, "
                    + "accelerator tcg)").asRuntimeException();
        }
    }
}
