package io.kuasar.sandbox.tracing;

import java.net.URI;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.function.Function;

/**
 * Where and how spans go, from the standard OpenTelemetry SDK environment (the variables containerd reads too):
 * {@code OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT} (default {@code http://localhost:4317}),
 * {@code OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL} ({@code grpc}, the default here as in Kuasar's exporter, or
 * {@code http/protobuf}), {@code OTEL_EXPORTER_OTLP_[TRACES_]HEADERS}, {@code OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT}
 * (ms), {@code OTEL_SERVICE_NAME}, {@code OTEL_RESOURCE_ATTRIBUTES}, {@code OTEL_TRACES_SAMPLER} and its
 * {@code _ARG}, {@code OTEL_BSP_SCHEDULE_DELAY} (ms), {@code OTEL_BSP_MAX_QUEUE_SIZE},
 * {@code OTEL_BSP_MAX_EXPORT_BATCH_SIZE} and {@code OTEL_SDK_DISABLED}.
 */
public record TracingSettings(String serviceName, Map<String, String> resource, URI endpoint, String protocol,
                              Map<String, String> headers, Duration timeout, Sampler sampler, Duration scheduleDelay,
                              int maxQueue, int maxBatch, boolean sdkDisabled) {

    /** OTEL_TRACES_SAMPLER: whether a trace is recorded; a parent-based sampler follows a caller's decision. */
    public record Sampler(boolean parentBased, double ratio) {
        boolean sampleRoot(String traceId) {
            if (ratio >= 1) {
                return true;
            }
            if (ratio <= 0) {
                return false;
            }
            // the SDK's TraceIdRatioBased: the low 8 bytes of the trace id against the ratio
            long low = Long.parseUnsignedLong(traceId.substring(16), 16) & Long.MAX_VALUE;
            return low < (long) (ratio * Long.MAX_VALUE);
        }
    }

    /** These settings, with {@code name} as the service name unless the environment named one. */
    public TracingSettings withDefaultServiceName(String name) {
        return serviceName != null ? this : new TracingSettings(name, resource, endpoint, protocol, headers, timeout,
                sampler, scheduleDelay, maxQueue, maxBatch, sdkDisabled);
    }

    public static TracingSettings fromEnvironment(String defaultServiceName) {
        return from(System::getenv, defaultServiceName);
    }

    /** Reads the settings through {@code env}; a malformed value fails with the variable's name and the remedy. */
    public static TracingSettings from(Function<String, String> env, String defaultServiceName) {
        Function<String, String> get = k -> {
            String v = env.apply(k);
            return v == null || v.isBlank() ? null : v.trim();
        };
        String protocol = first(get, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
        if (!protocol.equals("grpc") && !protocol.equals("http/protobuf")) {
            throw new IllegalArgumentException("OTEL_EXPORTER_OTLP_PROTOCOL=" + protocol
                    + " is not supported; use grpc or http/protobuf");
        }
        String endpoint = get.apply("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        URI uri;
        if (endpoint != null) {
            uri = uri(endpoint, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); // used as is, as the spec says
        } else {
            String base = first(get, "OTEL_EXPORTER_OTLP_ENDPOINT", null,
                    protocol.equals("grpc") ? "http://localhost:4317" : "http://localhost:4318");
            if (protocol.equals("http/protobuf")) {
                base = (base.endsWith("/") ? base.substring(0, base.length() - 1) : base) + "/v1/traces";
            }
            uri = uri(base, "OTEL_EXPORTER_OTLP_ENDPOINT");
        }
        Map<String, String> resource = pairs(get.apply("OTEL_RESOURCE_ATTRIBUTES"), "OTEL_RESOURCE_ATTRIBUTES");
        String service = get.apply("OTEL_SERVICE_NAME");
        if (service == null) {
            service = resource.getOrDefault("service.name", defaultServiceName);
        }
        Map<String, String> headers = pairs(first(get, "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "OTEL_EXPORTER_OTLP_HEADERS", null), "OTEL_EXPORTER_OTLP_HEADERS");
        long timeout = number(first(get, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT", "10000"),
                "OTEL_EXPORTER_OTLP_TIMEOUT");
        long delay = number(first(get, "OTEL_BSP_SCHEDULE_DELAY", null, "5000"), "OTEL_BSP_SCHEDULE_DELAY");
        long queue = number(first(get, "OTEL_BSP_MAX_QUEUE_SIZE", null, "2048"), "OTEL_BSP_MAX_QUEUE_SIZE");
        long batch = number(first(get, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", null, "512"), "OTEL_BSP_MAX_EXPORT_BATCH_SIZE");
        return new TracingSettings(service, resource, uri, protocol, headers, Duration.ofMillis(timeout),
                sampler(get), Duration.ofMillis(Math.max(1, delay)), (int) Math.max(1, queue),
                (int) Math.max(1, Math.min(batch, queue)), "true".equalsIgnoreCase(get.apply("OTEL_SDK_DISABLED")));
    }

    private static Sampler sampler(Function<String, String> get) {
        String name = first(get, "OTEL_TRACES_SAMPLER", null, "parentbased_always_on").toLowerCase(Locale.ROOT);
        String arg = get.apply("OTEL_TRACES_SAMPLER_ARG");
        double ratio = 1.0;
        if (name.endsWith("traceidratio")) {
            try {
                ratio = arg == null ? 1.0 : Double.parseDouble(arg);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("OTEL_TRACES_SAMPLER_ARG=" + arg + " is not a number in [0, 1]");
            }
        }
        return switch (name) {
            case "always_on" -> new Sampler(false, 1);
            case "always_off" -> new Sampler(false, 0);
            case "traceidratio" -> new Sampler(false, ratio);
            case "parentbased_always_on" -> new Sampler(true, 1);
            case "parentbased_always_off" -> new Sampler(true, 0);
            case "parentbased_traceidratio" -> new Sampler(true, ratio);
            default -> throw new IllegalArgumentException("OTEL_TRACES_SAMPLER=" + name + " is not supported; use "
                    + "always_on, always_off, traceidratio or their parentbased_ forms");
        };
    }

    private static String first(Function<String, String> get, String a, String b, String dflt) {
        String v = get.apply(a);
        if (v == null && b != null) {
            v = get.apply(b);
        }
        return v == null ? dflt : v;
    }

    private static URI uri(String value, String name) {
        try {
            URI u = URI.create(value);
            if (u.getScheme() == null || !(u.getScheme().equals("http") || u.getScheme().equals("https")
                    || u.getScheme().equals("unix"))) {
                throw new IllegalArgumentException("no http, https or unix scheme");
            }
            return u;
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(name + "=" + value + " is not a valid endpoint ("
                    + e.getMessage() + "); e.g. http://collector:4317 or unix:///run/otel.sock");
        }
    }

    /** {@code k1=v1,k2=v2}, values percent-decoded as the spec asks. */
    private static Map<String, String> pairs(String value, String name) {
        Map<String, String> m = new LinkedHashMap<>();
        if (value == null) {
            return m;
        }
        for (String item : value.split(",")) {
            if (item.isBlank()) {
                continue;
            }
            int eq = item.indexOf('=');
            if (eq <= 0) {
                throw new IllegalArgumentException(name + ": \"" + item.trim() + "\" is not key=value");
            }
            m.put(item.substring(0, eq).trim(),
                    java.net.URLDecoder.decode(item.substring(eq + 1).trim(), java.nio.charset.StandardCharsets.UTF_8));
        }
        return m;
    }

    private static long number(String value, String name) {
        try {
            return Long.parseLong(value);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(name + "=" + value + " is not a whole number");
        }
    }
}
