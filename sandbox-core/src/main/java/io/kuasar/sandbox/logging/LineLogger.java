package io.kuasar.sandbox.logging;

import org.slf4j.Marker;
import org.slf4j.event.Level;
import org.slf4j.helpers.LegacyAbstractLogger;
import org.slf4j.helpers.MessageFormatter;
import org.slf4j.spi.MDCAdapter;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.time.ZoneId;
import java.time.ZonedDateTime;
import java.time.format.DateTimeFormatter;

/** One logger of {@link StderrLogging}: formats an event into one line (and its stack trace) on stderr. */
final class LineLogger extends LegacyAbstractLogger {
    private static final DateTimeFormatter TIME = DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss.SSSXXX");
    private static final ZoneId ZONE = ZoneId.systemDefault();

    private final String shortName;
    private final transient MDCAdapter mdc;
    volatile int threshold;

    LineLogger(String name, int threshold, MDCAdapter mdc) {
        this.name = name;
        this.shortName = name.substring(name.lastIndexOf('.') + 1);
        this.threshold = threshold;
        this.mdc = mdc;
    }

    @Override
    public boolean isTraceEnabled() {
        return threshold <= Level.TRACE.toInt();
    }

    @Override
    public boolean isDebugEnabled() {
        return threshold <= Level.DEBUG.toInt();
    }

    @Override
    public boolean isInfoEnabled() {
        return threshold <= Level.INFO.toInt();
    }

    @Override
    public boolean isWarnEnabled() {
        return threshold <= Level.WARN.toInt();
    }

    @Override
    public boolean isErrorEnabled() {
        return threshold <= Level.ERROR.toInt();
    }

    @Override
    protected String getFullyQualifiedCallerName() {
        return null;
    }

    @Override
    protected void handleNormalizedLoggingCall(Level level, Marker marker, String pattern, Object[] args,
                                               Throwable t) {
        StringBuilder b = new StringBuilder(160);
        TIME.formatTo(ZonedDateTime.now(ZONE), b);
        String lv = level.name();
        b.append(' ').append(lv).append(" ".repeat(Math.max(0, 5 - lv.length())));
        b.append(" [").append(Thread.currentThread().getName()).append("] ").append(shortName);
        String sandbox = mdc.get("sandbox");
        if (sandbox != null && !sandbox.isEmpty()) {
            b.append(" sandbox=").append(sandbox);
        }
        String container = mdc.get("container");
        if (container != null && !container.isEmpty()) {
            b.append(" container=").append(container);
        }
        b.append(" - ").append(MessageFormatter.basicArrayFormat(pattern, args)).append('\n');
        if (t != null) {
            StringWriter w = new StringWriter();
            t.printStackTrace(new PrintWriter(w));
            b.append(w);
        }
        System.err.print(b); // one write per event: lines of concurrent threads do not interleave
    }
}
