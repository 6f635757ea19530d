package io.kuasar.sandbox.tracing;

import org.junit.jupiter.api.Test;

import java.time.Duration;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class TracingSettingsTest {
    private static TracingSettings of(Map<String, String> env) {
        return TracingSettings.from(env::get, "kuasar-runc-sandboxer-service");
    }

    @Test
    void defaultsAreTheSdksWithGrpcAsKuasarsExporter() {
        TracingSettings s = of(Map.of());
        assertThat(s.endpoint().toString()).isEqualTo("http://localhost:4317");
        assertThat(s.protocol()).isEqualTo("grpc");
        assertThat(s.serviceName()).isEqualTo("kuasar-runc-sandboxer-service");
        assertThat(s.scheduleDelay()).isEqualTo(Duration.ofSeconds(5));
        assertThat(s.timeout()).isEqualTo(Duration.ofSeconds(10));
        assertThat(s.sampler()).isEqualTo(new TracingSettings.Sampler(true, 1));
        assertThat(s.sdkDisabled()).isFalse();
    }

    @Test
    void theStandardVariablesOverride() {
        TracingSettings s = of(Map.of(
                "OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/",
                "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf",
                "OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20x, tenant=a",
                "OTEL_SERVICE_NAME", "node-7-runc",
                "OTEL_RESOURCE_ATTRIBUTES", "host.name=node-7,deployment.environment=prod",
                "OTEL_TRACES_SAMPLER", "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG", "0.25",
                "OTEL_BSP_SCHEDULE_DELAY", "200"));
        assertThat(s.endpoint().toString()).isEqualTo("http://collector:4318/v1/traces");
        assertThat(s.headers()).containsEntry("authorization", "Bearer x").containsEntry("tenant", "a");
        assertThat(s.serviceName()).isEqualTo("node-7-runc");
        assertThat(s.resource()).containsEntry("host.name", "node-7");
        assertThat(s.sampler()).isEqualTo(new TracingSettings.Sampler(true, 0.25));
        assertThat(s.scheduleDelay()).isEqualTo(Duration.ofMillis(200));
        // a traces-specific endpoint is taken as is
        assertThat(of(Map.of("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "unix:///run/otel.sock")).endpoint().toString())
                .isEqualTo("unix:///run/otel.sock");
        assertThat(of(Map.of("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-resource")).serviceName())
                .isEqualTo("from-resource");
        assertThat(of(Map.of("OTEL_SDK_DISABLED", "true")).sdkDisabled()).isTrue();
    }

    @Test
    void badValuesNameTheVariableAndTheRemedy() {
        assertThatThrownBy(() -> of(Map.of("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")))
                .hasMessageContaining("OTEL_EXPORTER_OTLP_PROTOCOL=http/json").hasMessageContaining("grpc");
        assertThatThrownBy(() -> of(Map.of("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")))
                .hasMessageContaining("OTEL_EXPORTER_OTLP_ENDPOINT").hasMessageContaining("http://collector:4317");
        assertThatThrownBy(() -> of(Map.of("OTEL_TRACES_SAMPLER", "jaeger_remote")))
                .hasMessageContaining("always_on");
        assertThatThrownBy(() -> of(Map.of("OTEL_BSP_SCHEDULE_DELAY", "5s")))
                .hasMessageContaining("OTEL_BSP_SCHEDULE_DELAY=5s");
        assertThatThrownBy(() -> of(Map.of("OTEL_EXPORTER_OTLP_HEADERS", "novalue")))
                .hasMessageContaining("key=value");
    }

    @Test
    void aRatioSamplerKeepsAboutThatShareOfRoots() {
        TracingSettings.Sampler half = new TracingSettings.Sampler(false, 0.5);
        java.util.Random r = new java.util.Random(7);
        int kept = 0;
        for (int i = 0; i < 4000; i++) {
            kept += half.sampleRoot(String.format("%016x%016x", r.nextLong(), r.nextLong())) ? 1 : 0;
        }
        assertThat(kept).isBetween(1800, 2200);
        assertThat(new TracingSettings.Sampler(false, 0).sampleRoot("4bf92f3577b34da6a3ce929d0e0e4736")).isFalse();
    }
}
