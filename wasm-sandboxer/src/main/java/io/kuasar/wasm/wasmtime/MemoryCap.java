package io.kuasar.wasm.wasmtime;

import java.io.ByteArrayOutputStream;
import java.io.IOException;

/**
 * Caps a module's own memory in its binary: the maximum of its first defined memory is lowered to the container's
 * limit (or set, if the module declares none). wasmtime-java has no API to limit a store's memory, but Wasmtime
 * honours a module's declared maximum, so the capped module is what runs: {@code memory.grow} past the limit
 * answers -1, as it does past any declared maximum. Only the memory section (id 5) is rewritten; every other byte is
 * copied as it is.
 */
final class MemoryCap {
    private static final int MEMORY_SECTION = 5;
    private static final int HAS_MAX = 0x01;

    private MemoryCap() {
    }

    /** The module with its first memory's maximum at most {@code capPages}; the module itself if it has no memory. */
    static byte[] apply(byte[] wasm, long capPages) throws IOException {
        if (wasm.length < 8 || wasm[0] != 0 || wasm[1] != 'a' || wasm[2] != 's' || wasm[3] != 'm') {
            throw new IOException("not a WebAssembly binary (no \\0asm header)");
        }
        ByteArrayOutputStream out = new ByteArrayOutputStream(wasm.length + 8);
        out.write(wasm, 0, 8);
        int[] pos = {8};
        while (pos[0] < wasm.length) {
            int header = pos[0]; // the size may be padded LEB128 (wasm-ld writes 5 bytes): copy it as it is
            int id = wasm[pos[0]++] & 0xff;
            long size = readU32(wasm, pos);
            int start = pos[0];
            if (size > wasm.length - start) {
                throw new IOException("section " + id + " runs past the end of the module");
            }
            if (id == MEMORY_SECTION) {
                byte[] section = capSection(wasm, start, (int) size, capPages);
                out.write(id);
                writeU32(out, section.length);
                out.write(section, 0, section.length);
            } else {
                out.write(wasm, header, start + (int) size - header);
            }
            pos[0] = start + (int) size;
        }
        return out.toByteArray();
    }

    private static byte[] capSection(byte[] wasm, int start, int size, long capPages) throws IOException {
        int[] pos = {start};
        long count = readU32(wasm, pos);
        ByteArrayOutputStream s = new ByteArrayOutputStream(size + 8);
        writeU32(s, count);
        for (long i = 0; i < count; i++) {
            int flags = wasm[pos[0]++] & 0xff;
            long min = readU32(wasm, pos);
            long max = (flags & HAS_MAX) != 0 ? readU32(wasm, pos) : -1;
            if (i == 0 && (flags & ~HAS_MAX) == 0) { // shared or 64-bit memories are left alone
                if (min > capPages) {
                    throw new IOException("the module needs " + min + " pages (" + min * 65536
                            + " bytes) of memory at start, more than its memory limit of " + capPages * 65536
                            + " bytes");
                }
                flags |= HAS_MAX;
                max = max < 0 ? capPages : Math.min(max, capPages);
            }
            s.write(flags);
            writeU32(s, min);
            if ((flags & HAS_MAX) != 0) {
                writeU32(s, max);
            }
        }
        if (pos[0] != start + size) {
            throw new IOException("the memory section has " + (start + size - pos[0]) + " unexpected bytes");
        }
        return s.toByteArray();
    }

    static long readU32(byte[] b, int[] pos) throws IOException {
        long v = 0;
        for (int shift = 0; shift < 35; shift += 7) {
            if (pos[0] >= b.length) {
                throw new IOException("truncated LEB128 number");
            }
            int x = b[pos[0]++] & 0xff;
            v |= (long) (x & 0x7f) << shift;
            if ((x & 0x80) == 0) {
                return v;
            }
        }
        throw new IOException("LEB128 number longer than 5 bytes");
    }

    static void writeU32(ByteArrayOutputStream out, long v) {
        do {
            int x = (int) (v & 0x7f);
            v >>>= 7;
            out.write(v != 0 ? x | 0x80 : x);
        } while (v != 0);
    }
}
