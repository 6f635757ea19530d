package io.kuasar.wasm.chicory;

import com.dylibso.chicory.runtime.Instance;
import com.dylibso.chicory.runtime.Memory;
import com.dylibso.chicory.wasm.types.DataSegment;

/**
 * A module's linear memory under its container's memory limit. Growing past the limit is an out-of-memory kill, as
 * the kernel's OOM killer would end a runc container over its cgroup limit: {@code onOom} runs (it raises the
 * container's OOM event and ends the instance) and the guest unwinds by the {@link OutOfMemory} thrown here. Growing
 * past the module's own declared maximum stays what WebAssembly defines: {@code memory.grow} answers -1.
 * <p>
 * Every other call goes straight to the engine's own memory (one implementation class, so the JIT inlines them).
 */
final class CappedMemory implements Memory {
    private final Memory delegate;
    private final int capPages;
    private final int declaredMaxPages;
    private final Runnable onOom;

    /**
     * @param delegate         the memory, its maximum already the lower of the module's and the cap
     * @param declaredMaxPages the module's own maximum (what memory.grow is refused beyond)
     */
    CappedMemory(Memory delegate, int capPages, int declaredMaxPages, Runnable onOom) {
        this.delegate = delegate;
        this.capPages = capPages;
        this.declaredMaxPages = declaredMaxPages;
        this.onOom = onOom;
    }

    /** Thrown out of memory.grow when the container's limit is reached; the guest cannot catch it. */
    static final class OutOfMemory extends com.dylibso.chicory.wasm.ChicoryException {
        OutOfMemory(String message) {
            super(message);
        }
    }

    @Override
    public int grow(int pages) {
        long want = (long) delegate.pages() + Integer.toUnsignedLong(pages);
        if (want > capPages && want <= declaredMaxPages) {
            onOom.run();
            throw new OutOfMemory("out of memory: growing linear memory to " + want * PAGE_SIZE
                    + " bytes exceeds the container's memory limit of " + (long) capPages * PAGE_SIZE + " bytes");
        }
        return delegate.grow(pages);
    }

    @Override
    public Object lock(int a0) {
        return delegate.lock(a0);
    }

    @Override
    public int waitOn(int a0, int a1, long a2) {
        return delegate.waitOn(a0, a1, a2);
    }

    @Override
    public int waitOn(int a0, long a1, long a2) {
        return delegate.waitOn(a0, a1, a2);
    }

    @Override
    public int notify(int a0, int a1) {
        return delegate.notify(a0, a1);
    }

    @Override
    public int pages() {
        return delegate.pages();
    }

    @Override
    public int initialPages() {
        return delegate.initialPages();
    }

    @Override
    public int maximumPages() {
        return delegate.maximumPages();
    }

    @Override
    public boolean shared() {
        return delegate.shared();
    }

    @Override
    public void initialize(Instance a0, DataSegment[] a1) {
        delegate.initialize(a0, a1);
    }

    @Override
    public void initialize(Instance a0, DataSegment[] a1, int a2) {
        delegate.initialize(a0, a1, a2);
    }

    @Override
    public void initPassiveSegment(int a0, int a1, int a2, int a3) {
        delegate.initPassiveSegment(a0, a1, a2, a3);
    }

    @Override
    public void write(int a0, byte[] a1, int a2, int a3) {
        delegate.write(a0, a1, a2, a3);
    }

    @Override
    public byte read(int a0) {
        return delegate.read(a0);
    }

    @Override
    public byte[] readBytes(int a0, int a1) {
        return delegate.readBytes(a0, a1);
    }

    @Override
    public void writeI32(int a0, int a1) {
        delegate.writeI32(a0, a1);
    }

    @Override
    public int readInt(int a0) {
        return delegate.readInt(a0);
    }

    @Override
    public void writeLong(int a0, long a1) {
        delegate.writeLong(a0, a1);
    }

    @Override
    public long readLong(int a0) {
        return delegate.readLong(a0);
    }

    @Override
    public void writeShort(int a0, short a1) {
        delegate.writeShort(a0, a1);
    }

    @Override
    public short readShort(int a0) {
        return delegate.readShort(a0);
    }

    @Override
    public long readU16(int a0) {
        return delegate.readU16(a0);
    }

    @Override
    public void writeByte(int a0, byte a1) {
        delegate.writeByte(a0, a1);
    }

    @Override
    public void writeF32(int a0, float a1) {
        delegate.writeF32(a0, a1);
    }

    @Override
    public long readF32(int a0) {
        return delegate.readF32(a0);
    }

    @Override
    public float readFloat(int a0) {
        return delegate.readFloat(a0);
    }

    @Override
    public void writeF64(int a0, double a1) {
        delegate.writeF64(a0, a1);
    }

    @Override
    public double readDouble(int a0) {
        return delegate.readDouble(a0);
    }

    @Override
    public long readF64(int a0) {
        return delegate.readF64(a0);
    }

    @Override
    public void zero() {
        delegate.zero();
    }

    @Override
    public void fill(byte a0, int a1, int a2) {
        delegate.fill(a0, a1, a2);
    }

    @Override
    public void copy(int a0, int a1, int a2) {
        delegate.copy(a0, a1, a2);
    }

    @Override
    public void drop(int a0) {
        delegate.drop(a0);
    }
}
