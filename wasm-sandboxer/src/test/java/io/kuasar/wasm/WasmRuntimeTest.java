package io.kuasar.wasm;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.grpc.StatusRuntimeException;
import io.kuasar.api.task.v3.CreateTaskRequest;
import io.kuasar.wasm.engine.WasiRun;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Kuasar's mapping of an OCI spec onto a WASI run, checked at the edge. */
class WasmRuntimeTest {
    @TempDir
    Path dir;

    @Test
    void theModuleIsArgs0InsideTheRootfsAndNothingOutsideIt() throws Exception {
        Path rootfs = Files.createDirectories(dir.resolve("rootfs"));
        Files.writeString(rootfs.resolve("app.wasm"), "");
        assertThat(WasmRuntime.modulePath("c1", rootfs, "/app.wasm")).isEqualTo(rootfs.resolve("app.wasm"));
        assertThat(WasmRuntime.modulePath("c1", rootfs, "app.wasm")).isEqualTo(rootfs.resolve("app.wasm"));
        Files.writeString(dir.resolve("outside.wasm"), "");
        assertThatThrownBy(() -> WasmRuntime.modulePath("c1", rootfs, "/../outside.wasm"))
                .isInstanceOf(StatusRuntimeException.class).hasMessageContaining("INVALID_ARGUMENT")
                .hasMessageContaining("container c1").hasMessageContaining("leaves the rootfs");
        assertThatThrownBy(() -> WasmRuntime.modulePath("c1", rootfs, "/nope.wasm"))
                .hasMessageContaining("no module at /nope.wasm");
    }

    @Test
    void argsEnvPreopensStdioAndTheMemoryCapComeFromTheSpec() throws Exception {
        Path data = Files.createDirectories(dir.resolve("data"));
        var spec = new ObjectMapper().readTree("""
                {"process":{"args":["/app.wasm","x"],"env":["A=1","B=two=2","NOEQUALS"]},
                 "mounts":[{"destination":"/data","type":"bind","source":"%s","options":["rbind","ro"]},
                           {"destination":"/proc","type":"proc","source":"proc"}],
                 "linux":{"resources":{"memory":{"limit":33554432}}}}
                """.formatted(data));
        WasiRun r = WasmRuntime.wasiRun("c1", spec, dir.resolve("rootfs"), CreateTaskRequest.newBuilder()
                .setStdout("/run/fifo/out").setStderr("file:///run/fifo/err").build());
        assertThat(r.argv()).containsExactly("/app.wasm", "x");
        assertThat(r.env()).containsEntry("A", "1").containsEntry("B", "two=2").doesNotContainKey("NOEQUALS");
        assertThat(r.preopens()).containsOnlyKeys("/", "/data").containsEntry("/data", data);
        assertThat(r.stdin()).isNull();
        assertThat(r.stdout()).isEqualTo(Path.of("/run/fifo/out"));
        assertThat(r.stderr()).isEqualTo(Path.of("/run/fifo/err"));
        assertThat(r.memoryLimitBytes()).isEqualTo(32L << 20);

        var unlimited = new ObjectMapper().readTree("{\"process\":{\"args\":[\"/a.wasm\"]}}");
        assertThat(WasmRuntime.wasiRun("c2", unlimited, dir, CreateTaskRequest.getDefaultInstance())
                .memoryLimitBytes()).isEqualTo(WasmRuntime.DEFAULT_MEMORY_LIMIT);
    }
}
