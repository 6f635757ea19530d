package io.kuasar.sandbox.cli;

import ch.qos.logback.classic.Level;
import ch.qos.logback.classic.LoggerContext;
import ch.qos.logback.classic.encoder.PatternLayoutEncoder;
import ch.qos.logback.classic.spi.Configurator;
import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.core.ConsoleAppender;
import ch.qos.logback.core.spi.ContextAwareBase;

/**
 * Every daemon's logging, set up in code: to stderr (like Kuasar's env_logger; journald or the caller's redirect keeps
 * it), one line per event with the sandbox and container ids when known. Code, not logback.xml: parsing XML loads a
 * SAX parser and hundreds of classes at each start, which a microVM's agent pays in seconds under TCG.
 * <p>
 * A {@code -Dlogback.configurationFile} or a {@code logback-test.xml} on the class path still wins (tests, the
 * benchmark): then this configurator steps aside.
 */
public final class LogConfigurator extends ContextAwareBase implements Configurator {
    static final String PATTERN = "%d{yyyy-MM-dd'T'HH:mm:ss.SSSXXX} %-5level [%thread] %logger{0}"
            + "%replace( sandbox=%X{sandbox}){' sandbox=$', ''}%replace( container=%X{container}){' container=$', ''}"
            + " - %msg%n";

    @Override
    public ExecutionStatus configure(LoggerContext context) {
        if (System.getProperty("logback.configurationFile") != null
                || LogConfigurator.class.getClassLoader().getResource("logback-test.xml") != null) {
            return ExecutionStatus.INVOKE_NEXT_IF_ANY;
        }
        PatternLayoutEncoder encoder = new PatternLayoutEncoder();
        encoder.setContext(context);
        encoder.setPattern(PATTERN);
        encoder.start();
        ConsoleAppender<ILoggingEvent> stderr = new ConsoleAppender<>();
        stderr.setContext(context);
        stderr.setName("STDERR");
        stderr.setTarget("System.err");
        stderr.setEncoder(encoder);
        stderr.start();
        ch.qos.logback.classic.Logger root = context.getLogger(org.slf4j.Logger.ROOT_LOGGER_NAME);
        root.setLevel(Level.INFO);
        root.addAppender(stderr);
        context.getLogger("io.netty").setLevel(Level.WARN);
        // "Unknown channel option SO_KEEPALIVE" on Unix sockets is harmless noise
        context.getLogger("io.netty.bootstrap").setLevel(Level.ERROR);
        context.getLogger("io.grpc").setLevel(Level.WARN);
        return ExecutionStatus.DO_NOT_INVOKE_NEXT_IF_ANY;
    }
}
