package io.kuasar.sandbox.logging;

import org.slf4j.ILoggerFactory;
import org.slf4j.IMarkerFactory;
import org.slf4j.Logger;
import org.slf4j.event.Level;
import org.slf4j.helpers.BasicMDCAdapter;
import org.slf4j.helpers.BasicMarkerFactory;
import org.slf4j.spi.MDCAdapter;
import org.slf4j.spi.SLF4JServiceProvider;

import java.util.Locale;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Every daemon's SLF4J backend: one line per event on stderr (like Kuasar's env_logger; journald or the caller's
 * redirect keeps it), with the sandbox and container ids when the MDC has them:
 * {@code 2026-12-03T17:40:11.836Z INFO  [thread] Class sandbox=<id> container=<id> - message}. A backend of a few
 * classes instead of Logback's hundreds: each class costs the daemon's fixed memory (~7 KB of metaspace) and the
 * microVM agent's boot under TCG (docs/benchmark.md).
 *
 * <p>Levels: the root level ({@link #setLevel(String)}; {@code -Dkuasar.log.level} before that, else info) and, under
 * it, quieter defaults for gRPC and Netty's own chatter. Loggers may be configured by name prefix
 * ({@link #setLevel(String, String)}).
 */
public final class StderrLogging implements SLF4JServiceProvider, ILoggerFactory {
    private static volatile StderrLogging instance;

    private final Map<String, LineLogger> loggers = new ConcurrentHashMap<>();
    /** Levels by logger-name prefix ("" is the root), as SLF4J level ints (TRACE 0 ... ERROR 40). */
    private final Map<String, Integer> levels = new ConcurrentHashMap<>();
    private final BasicMarkerFactory markers = new BasicMarkerFactory();
    private final BasicMDCAdapter mdc = new BasicMDCAdapter();

    public StderrLogging() {
        levels.put("", parse(System.getProperty("kuasar.log.level", "info")));
        levels.put("io.netty", Level.WARN.toInt());
        // "Unknown channel option SO_KEEPALIVE" on Unix sockets is harmless noise
        levels.put("io.netty.bootstrap", Level.ERROR.toInt());
        levels.put("io.grpc", Level.WARN.toInt());
        instance = this;
    }

    /** Sets the root level: off, error, warn, info, debug or trace (case-insensitive); anything else is info. */
    public static void setLevel(String level) {
        setLevel("", level);
    }

    /** Sets the level of the loggers named {@code prefix} or below it ("" is the root). */
    public static void setLevel(String prefix, String level) {
        StderrLogging s = instance;
        if (s == null) {
            org.slf4j.LoggerFactory.getILoggerFactory(); // initializes SLF4J, and with it this backend
            s = instance;
        }
        if (s != null) {
            StderrLogging backend = s;
            backend.levels.put(prefix, parse(level));
            backend.loggers.values().forEach(l -> l.threshold = backend.threshold(l.getName()));
        }
    }

    /** As an SLF4J level int; "off" is above ERROR, so nothing passes. */
    static int parse(String level) {
        String l = level == null ? "" : level.trim().toUpperCase(Locale.ROOT);
        if (l.equals("OFF")) {
            return Level.ERROR.toInt() + 10;
        }
        if (l.equals("WARNING")) {
            return Level.WARN.toInt();
        }
        try {
            return Level.valueOf(l).toInt();
        } catch (IllegalArgumentException e) {
            return Level.INFO.toInt();
        }
    }

    /** The level of the longest configured prefix of {@code name} (a prefix ends at a dot or is the whole name). */
    int threshold(String name) {
        String best = "";
        for (String p : levels.keySet()) {
            if (p.length() > best.length() && (name.equals(p) || name.startsWith(p + "."))) {
                best = p;
            }
        }
        return levels.get(best);
    }

    @Override
    public Logger getLogger(String name) {
        return loggers.computeIfAbsent(name, n -> new LineLogger(n, threshold(n), mdc));
    }

    @Override
    public ILoggerFactory getLoggerFactory() {
        return this;
    }

    @Override
    public IMarkerFactory getMarkerFactory() {
        return markers;
    }

    @Override
    public MDCAdapter getMDCAdapter() {
        return mdc;
    }

    @Override
    public String getRequestedApiVersion() {
        return "2.0.99";
    }

    @Override
    public void initialize() {
    }
}
