package io.kuasar.ctl;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class ResolverTest {
    @TempDir
    Path tmp;

    @Test
    void anIdOrAUniquePrefixNamesOneSandboxAcrossDaemons() throws Exception {
        Sandboxers.Sandboxer runc = daemon("runc", "abc123", "abd999");
        Sandboxers.Sandboxer vmm = daemon("vmm", "ffee01", "abc");
        List<Sandboxers.Sandboxer> both = List.of(runc, vmm);
        assertThat(Resolver.resolve(both, "ffe").id()).isEqualTo("ffee01");
        assertThat(Resolver.resolve(both, "ffe").sandboxer()).isEqualTo(vmm);
        assertThat(Resolver.resolve(both, "abc123").id()).isEqualTo("abc123");
        // an exact id wins over the ids it is a prefix of
        assertThat(Resolver.resolve(both, "abc").id()).isEqualTo("abc");
        assertThat(Resolver.resolve(both, "abc").sandboxer()).isEqualTo(vmm);
        assertThatThrownBy(() -> Resolver.resolve(both, "ab")).hasMessageContaining("ambiguous")
                .hasMessageContaining("abc123 (runc)").hasMessageContaining("abd999 (runc)")
                .hasMessageContaining("abc (vmm)");
        assertThatThrownBy(() -> Resolver.resolve(both, "zz")).hasMessageContaining("no sandbox zz")
                .hasMessageContaining("4 sandboxes");
        assertThatThrownBy(() -> Resolver.resolve(List.of(runc), "zz"))
                .hasMessageContaining(runc.dir() + "/sandboxes");
        // a daemon that never ran: no state directory, no sandboxes, nothing created
        Sandboxers.Sandboxer none = new Sandboxers.Sandboxer("wasm", "wasm", tmp.resolve("w.sock"), tmp.resolve("w"));
        assertThatThrownBy(() -> Resolver.resolve(List.of(none), "a")).hasMessageContaining("0 sandboxes");
        assertThat(tmp.resolve("w")).doesNotExist();
    }

    private Sandboxers.Sandboxer daemon(String name, String... ids) throws Exception {
        Path dir = tmp.resolve(name);
        for (String id : ids) {
            Files.createDirectories(dir.resolve("sandboxes").resolve(id));
        }
        return new Sandboxers.Sandboxer(name, name, tmp.resolve(name + ".sock"), dir);
    }
}
