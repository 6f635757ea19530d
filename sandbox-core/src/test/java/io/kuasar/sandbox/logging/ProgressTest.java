package io.kuasar.sandbox.logging;

import org.junit.jupiter.api.Test;
import org.slf4j.Marker;
import org.slf4j.event.Level;
import org.slf4j.helpers.LegacyAbstractLogger;
import org.slf4j.helpers.MessageFormatter;

import java.time.Duration;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

import static org.assertj.core.api.Assertions.assertThat;

class ProgressTest {
    /** Keeps what is logged at INFO. */
    static final class Captured extends LegacyAbstractLogger {
        final List<String> lines = new CopyOnWriteArrayList<>();

        @Override
        protected String getFullyQualifiedCallerName() {
            return null;
        }

        @Override
        protected void handleNormalizedLoggingCall(Level level, Marker marker, String msg, Object[] args, Throwable t) {
            lines.add(MessageFormatter.basicArrayFormat(msg, args));
        }

        @Override
        public boolean isTraceEnabled() {
            return false;
        }

        @Override
        public boolean isDebugEnabled() {
            return false;
        }

        @Override
        public boolean isInfoEnabled() {
            return true;
        }

        @Override
        public boolean isWarnEnabled() {
            return true;
        }

        @Override
        public boolean isErrorEnabled() {
            return true;
        }
    }

    @Test
    void aLongOperationSaysWhenItStartsAndEnds() {
        Captured log = new Captured();
        try (Progress p = Progress.start(log, "making the VM template", Duration.ZERO)) {
            assertThat(log.lines).containsExactly("making the VM template ...");
        }
        assertThat(log.lines).hasSize(2);
        assertThat(log.lines.get(1)).matches("making the VM template: done after \\d+ ms");
    }

    @Test
    void aQuickOperationWithAQuietPeriodLogsNothingAndASlowOneSaysItIsStillRunning() throws Exception {
        Captured log = new Captured();
        try (Progress p = Progress.start(log, "compiling m.wasm", Duration.ofSeconds(2))) {
            Thread.sleep(10);
        }
        assertThat(log.lines).isEmpty();
        try (Progress p = Progress.start(log, "compiling big.wasm", Duration.ofMillis(100))) {
            Thread.sleep(400);
            p.failed();
        }
        assertThat(log.lines).hasSize(2);
        assertThat(log.lines.get(0)).isEqualTo("compiling big.wasm: still running after 0 s");
        assertThat(log.lines.get(1)).matches("compiling big.wasm: failed after \\d+ ms");
    }
}
