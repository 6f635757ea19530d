package io.kuasar.sandbox.logging;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.slf4j.MDC;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;

import static org.assertj.core.api.Assertions.assertThat;

/** The daemons' log lines: the format operators and the e2e suite read, levels, and the ids from the MDC. */
class StderrLoggingTest {
    private final PrintStream original = System.err;

    @AfterEach
    void restore() {
        System.setErr(original);
        StderrLogging.setLevel("info");
        StderrLogging.setLevel("io.kuasar.test", "info");
    }

    private String capture(Runnable r) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        System.setErr(new PrintStream(out, true, StandardCharsets.UTF_8));
        try {
            r.run();
        } finally {
            System.setErr(original);
        }
        return out.toString(StandardCharsets.UTF_8);
    }

    @Test
    void oneLinePerEventWithTheIdsOfTheMdc() {
        assertThat(LoggerFactory.getILoggerFactory()).isInstanceOf(StderrLogging.class);
        Logger log = LoggerFactory.getLogger("io.kuasar.test.Widget");
        String out = capture(() -> {
            log.info("plain {} and {}", 1, "two");
            MDC.put("sandbox", "sb1");
            MDC.put("container", "c1");
            try {
                log.warn("with ids");
            } finally {
                MDC.remove("sandbox");
                MDC.remove("container");
            }
            log.error("failed", new IllegalStateException("boom"));
        });
        String[] lines = out.split("\n");
        assertThat(lines[0]).matches("\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}(Z|[+-]\\d\\d:\\d\\d) INFO  "
                + "\\[" + java.util.regex.Pattern.quote(Thread.currentThread().getName()) + "] Widget - plain 1 and two");
        assertThat(lines[1]).endsWith(" WARN  [" + Thread.currentThread().getName() + "] Widget sandbox=sb1 container=c1 - with ids");
        assertThat(lines[2]).endsWith("] Widget - failed");
        assertThat(lines[3]).isEqualTo("java.lang.IllegalStateException: boom");
        assertThat(lines[4]).startsWith("\tat ");
    }

    @Test
    void levelsByRootAndPrefix() {
        Logger log = LoggerFactory.getLogger("io.kuasar.test.Levels");
        Logger other = LoggerFactory.getLogger("io.kuasar.testing.Other");
        assertThat(log.isDebugEnabled()).isFalse();
        StderrLogging.setLevel("DEBUG");
        assertThat(log.isDebugEnabled()).isTrue();
        assertThat(log.isTraceEnabled()).isFalse();
        StderrLogging.setLevel("io.kuasar.test", "error");
        assertThat(log.isWarnEnabled()).isFalse();
        assertThat(other.isDebugEnabled()).as("a prefix ends at a dot").isTrue();
        assertThat(capture(() -> log.warn("hidden"))).isEmpty();
        StderrLogging.setLevel("io.kuasar.test", "off");
        assertThat(log.isErrorEnabled()).isFalse();
        StderrLogging.setLevel("nonsense");
        assertThat(other.isInfoEnabled()).isTrue();
        assertThat(other.isDebugEnabled()).isFalse();
        // gRPC's and Netty's own chatter stays quiet at the default levels
        assertThat(LoggerFactory.getLogger("io.grpc.internal.Foo").isInfoEnabled()).isFalse();
        assertThat(LoggerFactory.getLogger("io.netty.bootstrap.Bootstrap").isWarnEnabled()).isFalse();
    }
}
