// Large, long-lived weight buffers (packed matrices): mapped in 2 MB-aligned regions and offered to the
// kernel as transparent huge pages (madvise MADV_HUGEPAGE; a no-op where THP is off or unsupported).
// A packed matrix is streamed end to end by every matmul, so 2 MB pages cut the TLB misses of those
// streams and the page faults of filling them (one per 2 MB instead of one per 4 KB) when the system
// allows it. Small buffers, and any buffer whose mapping fails, stay on the allocator.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

struct LargeBuffer {
    /// Below this, `allocate` uses the allocator (a huge page would mostly be padding).
    static let threshold = 4 << 20
    private static let huge = 2 << 20

    /// 64-byte aligned (2 MB aligned when mapped).
    let pointer: UnsafeMutableRawPointer
    let byteCount: Int
    /// Whether `pointer` is a mapping of its own (else it came from the allocator).
    let mapped: Bool

    /// A buffer of `byteCount` bytes; give it back with `free()`.
    static func allocate(byteCount: Int) -> LargeBuffer {
        #if os(Linux)
        if byteCount >= threshold {
            let len = (byteCount + huge - 1) / huge * huge
            // Map one huge page more than needed, then trim to a 2 MB-aligned region of len bytes.
            if let raw = mmap(nil, len + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), raw != MAP_FAILED {
                let base = UInt(bitPattern: raw)
                let aligned = (base + UInt(huge) - 1) / UInt(huge) * UInt(huge)
                let head = Int(aligned - base), tail = huge - head
                if head > 0 { munmap(raw, head) }
                if tail > 0 { munmap(UnsafeMutableRawPointer(bitPattern: aligned + UInt(len))!, tail) }
                let p = UnsafeMutableRawPointer(bitPattern: aligned)!
                _ = madvise(p, len, 14 /* MADV_HUGEPAGE */)
                return LargeBuffer(pointer: p, byteCount: len, mapped: true)
            }
        }
        #endif
        return LargeBuffer(pointer: UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64),
                           byteCount: byteCount, mapped: false)
    }

    func free() {
        #if os(Linux)
        if mapped {
            munmap(pointer, byteCount)
            return
        }
        #endif
        pointer.deallocate()
    }
}
