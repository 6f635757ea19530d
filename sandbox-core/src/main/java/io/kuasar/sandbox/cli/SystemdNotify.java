package io.kuasar.sandbox.cli;

import io.kuasar.sandbox.sys.UnixSockets;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.nio.charset.StandardCharsets;

/**
 * sd_notify(3) without libsystemd: one datagram to {@code $NOTIFY_SOCKET}. A no-op where the daemon was not started
 * by systemd with {@code Type=notify}; a failure is logged, never fatal.
 */
public final class SystemdNotify {
    private static final Logger LOG = LoggerFactory.getLogger(SystemdNotify.class);

    private SystemdNotify() {
    }

    public static boolean notify(String state) {
        String socket = System.getenv("NOTIFY_SOCKET");
        if (socket == null || socket.isEmpty()) {
            return false;
        }
        try {
            UnixSockets.sendDatagram(socket, state.getBytes(StandardCharsets.UTF_8));
            return true;
        } catch (RuntimeException e) {
            LOG.warn("could not notify systemd ({}): {}", socket, e.getMessage());
            return false;
        }
    }
}
