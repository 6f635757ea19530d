package io.kuasar.sandbox.mount;

import org.junit.jupiter.api.Test;

import java.util.List;

import static io.kuasar.sandbox.mount.MountOptions.MS_BIND;
import static io.kuasar.sandbox.mount.MountOptions.MS_NOATIME;
import static io.kuasar.sandbox.mount.MountOptions.MS_NODEV;
import static io.kuasar.sandbox.mount.MountOptions.MS_NOEXEC;
import static io.kuasar.sandbox.mount.MountOptions.MS_NOSUID;
import static io.kuasar.sandbox.mount.MountOptions.MS_PRIVATE;
import static io.kuasar.sandbox.mount.MountOptions.MS_RDONLY;
import static io.kuasar.sandbox.mount.MountOptions.MS_REC;
import static io.kuasar.sandbox.mount.MountOptions.MS_RELATIME;
import static io.kuasar.sandbox.mount.MountOptions.MS_SHARED;
import static io.kuasar.sandbox.mount.MountOptions.MS_SLAVE;
import static io.kuasar.sandbox.mount.MountOptions.MS_STRICTATIME;
import static io.kuasar.sandbox.mount.MountOptions.MS_UNBINDABLE;
import static org.assertj.core.api.Assertions.assertThat;

class MountOptionsTest {
    @Test
    void flagOptionsAreFlagsAndTheRestIsData() {
        MountOptions o = MountOptions.parse(List.of("noatime", "nodev", "nosuid", "noexec", "ro", "rbind",
                "size=64m", "mode=755"));
        assertThat(o.flags()).isEqualTo(MS_NOATIME | MS_NODEV | MS_NOSUID | MS_NOEXEC | MS_RDONLY | MS_BIND | MS_REC);
        assertThat(o.propagation()).isZero();
        assertThat(o.data()).containsExactly("size=64m", "mode=755");
        assertThat(o.dataString()).isEqualTo("size=64m,mode=755");
    }

    @Test
    void atimeOptions() {
        assertThat(MountOptions.parse(List.of("relatime")).flags()).isEqualTo(MS_RELATIME);
        assertThat(MountOptions.parse(List.of("strictatime")).flags()).isEqualTo(MS_STRICTATIME);
        assertThat(MountOptions.parse(List.of("noatime", "atime")).flags()).isZero();
        assertThat(MountOptions.parse(List.of("relatime", "norelatime", "strictatime", "nostrictatime")).flags()).isZero();
    }

    @Test
    void negativeFormsClearAndTheLastOneWins() {
        assertThat(MountOptions.parse(List.of("ro", "rw")).flags()).isZero();
        assertThat(MountOptions.parse(List.of("rw", "ro")).flags()).isEqualTo(MS_RDONLY);
        assertThat(MountOptions.parse(List.of("nodev", "nosuid", "noexec", "dev", "suid", "exec")).flags()).isZero();
        MountOptions d = MountOptions.parse(List.of("defaults", "rw"));
        assertThat(d.flags()).isZero();
        assertThat(d.dataString()).isNull();
    }

    @Test
    void propagationIsKeptApartFromTheFlags() {
        assertThat(MountOptions.parse(List.of("rbind", "rprivate"))).satisfies(o -> {
            assertThat(o.flags()).isEqualTo(MS_BIND | MS_REC);
            assertThat(o.propagation()).isEqualTo(MS_PRIVATE | MS_REC);
            assertThat(o.data()).isEmpty();
        });
        assertThat(MountOptions.parse(List.of("shared")).propagation()).isEqualTo(MS_SHARED);
        assertThat(MountOptions.parse(List.of("rslave")).propagation()).isEqualTo(MS_SLAVE | MS_REC);
        assertThat(MountOptions.parse(List.of("unbindable")).propagation()).isEqualTo(MS_UNBINDABLE);
        assertThat(MountOptions.parse(List.of("runbindable", "private")).propagation()).isEqualTo(MS_PRIVATE);
    }
}
