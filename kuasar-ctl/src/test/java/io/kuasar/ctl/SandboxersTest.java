package io.kuasar.ctl;

import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class SandboxersTest {
    @Test
    void defaultsAreEachDaemonsOwn() {
        assertThat(Sandboxers.of(List.of())).extracting(Sandboxers.Sandboxer::socket).containsExactly(
                Path.of("/run/runc-sandboxer.sock"), Path.of("/run/vmm-sandboxer.sock"),
                Path.of("/run/wasm-sandboxer.sock"), Path.of("/run/quark-sandboxer.sock"));
        assertThat(Sandboxers.of(null).get(1).dir()).isEqualTo(Path.of("/run/kuasar-vmm"));
    }

    @Test
    void specsReplaceTheDefaults() {
        List<Sandboxers.Sandboxer> l = Sandboxers.of(List.of("runc=/tmp/r.sock,/tmp/r", "vmm-virtiofs=/tmp/v.sock"));
        assertThat(l).containsExactly(
                new Sandboxers.Sandboxer("runc", "runc", Path.of("/tmp/r.sock"), Path.of("/tmp/r")),
                new Sandboxers.Sandboxer("vmm-virtiofs", "vmm", Path.of("/tmp/v.sock"), Path.of("/run/kuasar-vmm")));
        assertThatThrownBy(() -> Sandboxers.of(List.of("kata=/x"))).hasMessageContaining("runc, vmm, wasm or quark");
        assertThatThrownBy(() -> Sandboxers.of(List.of("runc"))).hasMessageContaining("name=socket");
        assertThatThrownBy(() -> Sandboxers.of(List.of("runc=/a", "runc=/b"))).hasMessageContaining("twice");
    }
}
