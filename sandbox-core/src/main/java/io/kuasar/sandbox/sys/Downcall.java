package io.kuasar.sandbox.sys;

import java.lang.foreign.FunctionDescriptor;
import java.lang.invoke.MethodHandle;

/**
 * A libc function bound on first use. Linking a downcall spins classes and a stub: a few milliseconds on a host,
 * about a hundred in a TCG guest, where the agent uses a handful of the ~30 functions this package declares. Bound
 * eagerly, they cost a microVM's agent seconds of its boot.
 */
final class Downcall {
    private final String name;
    private final FunctionDescriptor descriptor;
    private final int firstVariadic;
    private volatile MethodHandle handle;

    Downcall(String name, FunctionDescriptor descriptor, int firstVariadic) {
        this.name = name;
        this.descriptor = descriptor;
        this.firstVariadic = firstVariadic;
    }

    /** The bound handle; it takes the errno capture segment first, then the function's arguments. */
    MethodHandle mh() {
        MethodHandle h = handle;
        if (h == null) {
            synchronized (this) {
                h = handle;
                if (h == null) {
                    h = Linux.bind(name, descriptor, firstVariadic);
                    handle = h;
                }
            }
        }
        return h;
    }
}
