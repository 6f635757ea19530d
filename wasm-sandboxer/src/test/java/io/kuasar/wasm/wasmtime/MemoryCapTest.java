package io.kuasar.wasm.wasmtime;

import com.dylibso.chicory.wasm.Parser;
import com.dylibso.chicory.wasm.WasmModule;
import com.dylibso.chicory.wasm.types.MemoryLimits;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The rewritten modules are read back by another parser (Chicory's), which validates the whole binary. */
class MemoryCapTest {
    @TempDir
    Path dir;

    byte[] wat(String text) throws Exception {
        Path src = Files.writeString(dir.resolve("m.wat"), text);
        Path out = dir.resolve("m.wasm");
        Process p = new ProcessBuilder("wat2wasm", src.toString(), "-o", out.toString()).inheritIO().start();
        assertThat(p.waitFor()).as("wat2wasm (apt-get install wabt)").isZero();
        return Files.readAllBytes(out);
    }

    static MemoryLimits limits(byte[] wasm) {
        WasmModule m = Parser.parse(wasm);
        return m.memorySection().orElseThrow().getMemory(0).limits();
    }

    static final String FUNCS = "(func (export \"_start\") nop) (data (i32.const 8) \"kept\")";

    @Test
    void aMaximumIsAddedOrLoweredAndNothingElseChanges() throws Exception {
        byte[] open = wat("(module (memory 2) " + FUNCS + ")");
        byte[] capped = MemoryCap.apply(open, 160);
        assertThat(limits(capped).initialPages()).isEqualTo(2);
        assertThat(limits(capped).maximumPages()).isEqualTo(160);
        assertThat(Parser.parse(capped).dataSection().dataSegments()).hasSize(1);

        byte[] ownMax = wat("(module (memory 1 1000) " + FUNCS + ")");
        assertThat(limits(MemoryCap.apply(ownMax, 160)).maximumPages()).isEqualTo(160);
        byte[] lowMax = wat("(module (memory 1 4) " + FUNCS + ")");
        assertThat(limits(MemoryCap.apply(lowMax, 160)).maximumPages()).as("a lower own maximum stays").isEqualTo(4);
        // a cap of several LEB128 bytes (65536 pages) changes the section's length
        assertThat(limits(MemoryCap.apply(open, 65536)).maximumPages()).isEqualTo(65536);
    }

    @Test
    void aModuleWithoutMemoryIsUnchangedAndOneNeedingMoreThanTheCapIsRefused() throws Exception {
        byte[] none = wat("(module (func (export \"_start\") nop))");
        assertThat(MemoryCap.apply(none, 16)).isEqualTo(none);
        byte[] big = wat("(module (memory 10) " + FUNCS + ")");
        assertThatThrownBy(() -> MemoryCap.apply(big, 2)).hasMessageContaining("needs 10 pages");
        assertThatThrownBy(() -> MemoryCap.apply(new byte[]{1, 2, 3, 4, 5, 6, 7, 8}, 2))
                .hasMessageContaining("not a WebAssembly binary");
    }

    @Test
    void paddedSectionSizesAsWasmLdWritesThemAreCopiedAsTheyAre() throws Exception {
        byte[] wasm = wat("(module (memory 2) " + FUNCS + ")");
        // re-encode every section size as 5-byte LEB128, as wasm-ld does
        java.io.ByteArrayOutputStream padded = new java.io.ByteArrayOutputStream();
        padded.write(wasm, 0, 8);
        int[] pos = {8};
        while (pos[0] < wasm.length) {
            int id = wasm[pos[0]++];
            int size = (int) MemoryCap.readU32(wasm, pos);
            padded.write(id);
            padded.write(new byte[]{(byte) (0x80 | (size & 0x7f)), (byte) (0x80 | ((size >> 7) & 0x7f)),
                    (byte) 0x80, (byte) 0x80, 0});
            padded.write(wasm, pos[0], size);
            pos[0] += size;
        }
        byte[] capped = MemoryCap.apply(padded.toByteArray(), 8);
        assertThat(limits(capped).maximumPages()).isEqualTo(8);
        assertThat(Parser.parse(capped).exportSection().exportCount()).isEqualTo(1);
    }
}
