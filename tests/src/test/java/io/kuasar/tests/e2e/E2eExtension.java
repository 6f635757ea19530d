package io.kuasar.tests.e2e;

import io.kuasar.tests.cri.CriClient;
import org.junit.jupiter.api.extension.AfterEachCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;
import org.junit.jupiter.api.extension.ParameterContext;
import org.junit.jupiter.api.extension.ParameterResolver;
import org.junit.jupiter.api.extension.TestWatcher;

import java.util.List;

/**
 * Gives every e2e test class the one shared {@link E2eEnvironment}: started by the first class that needs it,
 * closed when the whole run ends (JUnit closes AutoCloseable values of the root store; a JVM shutdown hook is
 * the fallback). A start failure is remembered, so later classes fail at once with the same cause.
 *
 * <p>After each test, every pod and container still known to containerd is removed (a test that leaves something
 * behind, or whose cleanup fails, fails). Injects {@link E2eEnvironment} and {@link CriClient} parameters.
 */
public final class E2eExtension implements BeforeAllCallback, AfterEachCallback, ParameterResolver, TestWatcher {
    private static final ExtensionContext.Namespace NS = ExtensionContext.Namespace.create(E2eExtension.class);

    /** The environment, or why it could not be started. */
    private record Holder(E2eEnvironment env, RuntimeException failure) implements AutoCloseable {
        @Override
        public void close() {
            if (env != null) {
                env.close();
            }
        }
    }

    static E2eEnvironment environment(ExtensionContext context) {
        Holder h = context.getRoot().getStore(NS).computeIfAbsent(Holder.class, k -> {
            try {
                return new Holder(E2eEnvironment.start(), null);
            } catch (RuntimeException e) {
                return new Holder(null, e);
            }
        }, Holder.class);
        if (h.failure() != null) {
            throw new IllegalStateException("e2e environment could not be started: " + h.failure().getMessage(),
                    h.failure());
        }
        return h.env();
    }

    @Override
    public void beforeAll(ExtensionContext context) {
        environment(context);
    }

    @Override
    public void afterEach(ExtensionContext context) {
        E2eEnvironment env = environment(context);
        if (!env.sandboxerAlive()) {
            env.markFailed();
            throw new AssertionError("runc-sandboxer died during " + context.getDisplayName() + "\n" + env.logTails());
        }
        List<String> errors = env.cri().cleanupAll();
        if (!errors.isEmpty()) {
            env.markFailed();
            throw new AssertionError("cleanup after " + context.getDisplayName() + " failed:\n  "
                    + String.join("\n  ", errors));
        }
    }

    @Override
    public void testFailed(ExtensionContext context, Throwable cause) {
        E2eEnvironment env = environmentIfStarted(context);
        if (env != null) {
            env.markFailed();
        }
    }

    private static E2eEnvironment environmentIfStarted(ExtensionContext context) {
        Holder h = context.getRoot().getStore(NS).get(Holder.class, Holder.class);
        return h == null ? null : h.env();
    }

    @Override
    public boolean supportsParameter(ParameterContext p, ExtensionContext e) {
        Class<?> t = p.getParameter().getType();
        return t == E2eEnvironment.class || t == CriClient.class;
    }

    @Override
    public Object resolveParameter(ParameterContext p, ExtensionContext e) {
        E2eEnvironment env = environment(e);
        return p.getParameter().getType() == CriClient.class ? env.cri() : env;
    }
}
