import Foundation

/// UTF-8 and Unicode helpers. The whole tokenizer pipeline works on `[UInt8]` (valid UTF-8) rather than
/// `String`, because Swift `String` comparison uses canonical equivalence ("é" == "e\u{301}"), which would
/// conflate distinct vocabulary entries, and because tokenizers' offsets/lengths are byte based.
enum TokUTF8 {
    /// Offset of the first byte that is not part of a well-formed UTF-8 sequence, or nil.
    static func firstInvalidOffset(_ buf: UnsafeBufferPointer<UInt8>) -> Int? {
        guard let p = buf.baseAddress else { return nil }
        let n = buf.count
        var i = 0
        while i < n {
            // Fast path: 8 ASCII bytes at a time.
            if i + 8 <= n {
                let w = UnsafeRawPointer(p + i).loadUnaligned(as: UInt64.self)
                if w & 0x8080_8080_8080_8080 == 0 { i += 8; continue }
            }
            let c = p[i]
            if c < 0x80 { i += 1; continue }
            var need = 0
            var lo: UInt8 = 0x80, hi: UInt8 = 0xBF
            switch c {
            case 0xC2...0xDF: need = 1
            case 0xE0: need = 2; lo = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: need = 2
            case 0xED: need = 2; hi = 0x9F
            case 0xF0: need = 3; lo = 0x90
            case 0xF1...0xF3: need = 3
            case 0xF4: need = 3; hi = 0x8F
            default: return i
            }
            guard i + need < n else { return i }
            let c1 = p[i + 1]
            if c1 < lo || c1 > hi { return i }
            var k = 2
            while k <= need {
                if p[i + k] & 0xC0 != 0x80 { return i }
                k += 1
            }
            i += need + 1
        }
        return nil
    }

    static func isValid(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBufferPointer { firstInvalidOffset($0) == nil }
    }

    static func append(scalar v: UInt32, to out: inout [UInt8]) {
        switch v {
        case 0..<0x80:
            out.append(UInt8(v))
        case 0x80..<0x800:
            out.append(UInt8(0xC0 | (v >> 6)))
            out.append(UInt8(0x80 | (v & 0x3F)))
        case 0x800..<0x10000:
            out.append(UInt8(0xE0 | (v >> 12)))
            out.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (v & 0x3F)))
        default:
            out.append(UInt8(0xF0 | (v >> 18)))
            out.append(UInt8(0x80 | ((v >> 12) & 0x3F)))
            out.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (v & 0x3F)))
        }
    }


    /// Length of the UTF-8 sequence starting with lead byte `b` (1 for continuation bytes, defensively).
    @inline(__always) static func sequenceLength(_ b: UInt8) -> Int {
        if b < 0xC0 { return 1 }
        if b < 0xE0 { return 2 }
        if b < 0xF0 { return 3 }
        return 4
    }

    /// Decodes the scalar starting at `i` (input must be valid UTF-8).
    @inline(__always) static func decode<C: RandomAccessCollection>(_ s: C, at i: C.Index) -> (scalar: UInt32, length: Int)
    where C.Element == UInt8, C.Index == Int {
        let b0 = UInt32(s[i])
        if b0 < 0x80 { return (b0, 1) }
        if b0 < 0xE0 { return ((b0 & 0x1F) << 6 | UInt32(s[i + 1] & 0x3F), 2) }
        if b0 < 0xF0 {
            return ((b0 & 0x0F) << 12 | UInt32(s[i + 1] & 0x3F) << 6 | UInt32(s[i + 2] & 0x3F), 3)
        }
        return ((b0 & 0x07) << 18 | UInt32(s[i + 1] & 0x3F) << 12 | UInt32(s[i + 2] & 0x3F) << 6 | UInt32(s[i + 3] & 0x3F), 4)
    }

    /// Scalars of a valid UTF-8 byte sequence with their byte offsets.
    static func scalars(_ s: [UInt8]) -> [(scalar: UInt32, start: Int, length: Int)] {
        var out: [(UInt32, Int, Int)] = []
        out.reserveCapacity(s.count)
        var i = 0
        while i < s.count {
            let (v, n) = decode(s, at: i)
            out.append((v, i, n))
            i += n
        }
        return out
    }


    // MARK: character classes

    /// Unicode White_Space (Rust `char::is_whitespace`, regex `\s`).
    @inline(__always) static func isWhitespace(_ v: UInt32) -> Bool {
        if v < 0x80 { return v == 0x20 || (v >= 0x09 && v <= 0x0D) }
        guard let s = Unicode.Scalar(v) else { return false }
        return s.properties.isWhitespace
    }

    /// Rust regex `\w` (Unicode): Alphabetic, M*, Nd, Pc, Join_Control.
    static func isWordCharacter(_ v: UInt32) -> Bool {
        if v < 0x80 {
            return (v >= 0x30 && v <= 0x39) || (v >= 0x41 && v <= 0x5A) || (v >= 0x61 && v <= 0x7A) || v == 0x5F
        }
        guard let s = Unicode.Scalar(v) else { return false }
        let p = s.properties
        if p.isAlphabetic || p.isJoinControl { return true }
        switch p.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
        default: return false
        }
    }

    /// Python `str.isspace` (used by Jinja's `trim`): White_Space plus U+001C...U+001F.
    static func isPythonSpace(_ s: Unicode.Scalar) -> Bool {
        (s.value >= 0x1C && s.value <= 0x1F) || s.properties.isWhitespace
    }

    /// Scalar value just before byte offset `end` (input valid UTF-8), or nil at the start.
    static func scalar(before end: Int, in s: [UInt8]) -> UInt32? {
        guard end > 0 else { return nil }
        var i = end - 1
        while i > 0 && s[i] & 0xC0 == 0x80 { i -= 1 }
        return decode(s, at: i).scalar
    }

    // MARK: byte-level search

    /// Non-overlapping, left-to-right occurrences of `needle` in `hay` as (start, end) byte ranges.
    /// Both must be valid UTF-8, so matches always fall on scalar boundaries. Empty needles never match.
    static func findAll(_ needle: [UInt8], in hay: [UInt8]) -> [(Int, Int)] {
        let m = needle.count
        guard m > 0, hay.count >= m else { return [] }
        var out: [(Int, Int)] = []
        let first = needle[0]
        var i = 0
        let last = hay.count - m
        while i <= last {
            if hay[i] == first {
                var k = 1
                while k < m && hay[i + k] == needle[k] { k += 1 }
                if k == m {
                    out.append((i, i + m))
                    i += m
                    continue
                }
            }
            i += 1
        }
        return out
    }

    static func hasPrefix(_ s: [UInt8], _ p: [UInt8]) -> Bool {
        guard s.count >= p.count else { return false }
        for i in 0..<p.count where s[i] != p[i] { return false }
        return true
    }
}

/// Runs two closures at the same time (used while loading; this box has 2 cores). The closures may
/// capture non-Sendable state: the caller guarantees they touch disjoint memory, and both have finished
/// when `both` returns.
enum TokParallel {
    private struct Unchecked<T>: @unchecked Sendable { let value: T }

    static func both(_ first: () -> Void, _ second: () -> Void) {
        withoutActuallyEscaping(first) { first in
            withoutActuallyEscaping(second) { second in
                let work = Unchecked(value: (first, second))
                DispatchQueue.concurrentPerform(iterations: 2) { i in
                    if i == 0 { work.value.0() } else { work.value.1() }
                }
            }
        }
    }
}
