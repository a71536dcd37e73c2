// Block formats and the reference (scalar, deterministic) row functions of the type table.
//
// Bit-compatible with ggml (ggml/src/ggml-common.h `block_q8_0`, `block_q4_0`; ggml/src/ggml-quants.c
// `quantize_row_q8_0_ref`, `quantize_row_q4_0_ref`, `dequantize_row_*`) and byte-identical to the `gguf`
// PyPI package's `gguf.quants.quantize(x, Q8_0 / Q4_0)` (checked against fixtures from
// scripts/gen_quant_fixtures.py). The rounding rules that byte-identity depends on, all in f32:
//
//   Q8_0   amax = max|x|;  d = amax / 127;  id = d != 0 ? 1/d : 0
//          q = round-half-away-from-zero(x * id)        (C roundf; gguf's np_roundf — NOT np.round, which is
//                                                       half-to-even)
//          stored d = f16(d), round-to-nearest-even; the q use the unrounded f32 d.
//   Q4_0   m = the element with the largest |x|, sign kept; the FIRST one on ties (argmax)
//          d = m / -8;  id = d != 0 ? 1/d : 0
//          q = min(15, trunc(x * id + 8.5))             (x*id in [-8, 8], so q in 0...15; q = 16 clips to 15)
//          nibbles: byte j = q[j] | q[j + 16] << 4;  value = (q - 8) * f16(d)
//          (so the max-|x| element maps exactly to q = 0, i.e. -8 * d = m, and -m clips to 7 * d.)
//          An all-zero block whose first element is +0 stores d = -0.0 (0 / -8), as ggml and gguf do.
//
// Non-finite inputs: the checked API (`QuantType.quantizeRows`) rejects them for the block types. The raw
// row functions never trap on them; the bytes they produce then are unspecified (numpy's float→int casts of
// NaN / inf are platform-defined, so there is nothing to be byte-identical to). The same holds for blocks
// with 0 < amax < ~1e-36, where 1/d overflows f32.

import Foundation

// MARK: - Block structs
//
// `d` is stored as the raw f16 bits (`UInt16`, which is also what ggml's `ggml_half` is), not as `Float16`:
// Swift 6.3.1 on x86_64 Linux miscompiles a struct holding a `Float16` next to a byte tuple at -Onone (its
// initializer returns through garbage offsets and crashes with SIGBUS). Use `scale` for the value.

/// ggml `block_q8_0`: 32 weights, one f16 scale. 2 + 32 = 34 bytes, 8.5 bits per weight.
/// value[j] = Float(qs[j]) * scale.
@frozen public struct BlockQ8_0: Sendable {
    public static let count = 32
    /// Scale, f16 bits.
    public var d: UInt16
    /// Quants, int8.
    public var qs: (Int8, Int8, Int8, Int8, Int8, Int8, Int8, Int8, Int8, Int8, Int8, Int8, Int8, Int8, Int8, Int8,
                    Int8, Int8, Int8, Int8, Int8, Int8, Int8, Int8, Int8, Int8, Int8, Int8, Int8, Int8, Int8, Int8)

    public init() {
        d = 0
        qs = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    }

    /// The scale as f32.
    public var scale: Float { Float(Float16(bitPattern: d)) }

    /// Quant `j` (0..<32).
    @inline(__always) public func q(_ j: Int) -> Int8 {
        withUnsafeBytes(of: qs) { Int8(bitPattern: $0[j]) }
    }
}

/// ggml `block_q4_0`: 32 weights, one f16 scale, 4-bit quants packed in 16 bytes. 2 + 16 = 18 bytes, 4.5 bits per
/// weight. Byte j holds element j in its low nibble and element j + 16 in its high nibble;
/// value = (nibble - 8) * scale.
@frozen public struct BlockQ4_0: Sendable {
    public static let count = 32
    /// Scale, f16 bits.
    public var d: UInt16
    /// Nibbles.
    public var qs: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)

    public init() {
        d = 0
        qs = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    }

    /// The scale as f32.
    public var scale: Float { Float(Float16(bitPattern: d)) }

    /// Quant of element `j` (0..<32), 0...15 (subtract 8 for the signed value).
    @inline(__always) public func q(_ j: Int) -> UInt8 {
        withUnsafeBytes(of: qs) { j < 16 ? $0[j] & 0x0F : $0[j - 16] >> 4 }
    }
}

// MARK: - Q8_0

/// Saturating, trap-free f32 → int8 for already-rounded values (NaN → 0).
@inline(__always) private func int8Saturating(_ v: Float) -> Int8 {
    if v.isNaN { return 0 }
    return Int8(Swift.max(-128, Swift.min(127, v)))
}

func quantizeRowQ8_0Reference(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ n: Int) {
    precondition(n % BlockQ8_0.count == 0, "quantizeRowQ8_0Reference: \(n) is not a multiple of 32")
    let nb = n / BlockQ8_0.count
    y.withMemoryRebound(to: BlockQ8_0.self, capacity: nb) { blocks in
        for i in 0..<nb {
            let xb = x + i * BlockQ8_0.count
            var amax: Float = 0
            for j in 0..<BlockQ8_0.count { amax = Swift.max(amax, abs(xb[j])) }
            let d = amax / 127
            let id: Float = d != 0 ? 1 / d : 0
            var b = BlockQ8_0()
            b.d = Float16(d).bitPattern
            withUnsafeMutableBytes(of: &b.qs) { q in
                for j in 0..<BlockQ8_0.count {
                    q[j] = UInt8(bitPattern: int8Saturating((xb[j] * id).rounded(.toNearestOrAwayFromZero)))
                }
            }
            blocks[i] = b
        }
    }
}

func dequantizeRowQ8_0(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    precondition(n % BlockQ8_0.count == 0, "dequantizeRowQ8_0: \(n) is not a multiple of 32")
    let nb = n / BlockQ8_0.count
    x.withMemoryRebound(to: BlockQ8_0.self, capacity: nb) { blocks in
        for i in 0..<nb {
            let d = blocks[i].scale
            let yb = y + i * BlockQ8_0.count
            withUnsafeBytes(of: blocks[i].qs) { q in
                for j in 0..<BlockQ8_0.count { yb[j] = Float(Int8(bitPattern: q[j])) * d }
            }
        }
    }
}

// MARK: - Q4_0

/// trunc(v) clamped to 0...15, trap-free (NaN → 0).
@inline(__always) private func nibbleSaturating(_ v: Float) -> UInt8 {
    if v.isNaN { return 0 }
    return UInt8(Swift.max(0, Swift.min(15, v.rounded(.towardZero))))
}

func quantizeRowQ4_0Reference(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ n: Int) {
    precondition(n % BlockQ4_0.count == 0, "quantizeRowQ4_0Reference: \(n) is not a multiple of 32")
    let nb = n / BlockQ4_0.count
    let half = BlockQ4_0.count / 2
    y.withMemoryRebound(to: BlockQ4_0.self, capacity: nb) { blocks in
        for i in 0..<nb {
            let xb = x + i * BlockQ4_0.count
            // Signed value of the first element with the largest magnitude (starting from element 0, so an
            // all-zero block keeps the sign of its first zero, like argmax).
            var amax = abs(xb[0])
            var m = xb[0]
            for j in 1..<BlockQ4_0.count where abs(xb[j]) > amax {
                amax = abs(xb[j])
                m = xb[j]
            }
            let d = m / -8
            let id: Float = d != 0 ? 1 / d : 0
            var b = BlockQ4_0()
            b.d = Float16(d).bitPattern
            withUnsafeMutableBytes(of: &b.qs) { q in
                for j in 0..<half {
                    let lo = nibbleSaturating(xb[j] * id + 8.5)
                    let hi = nibbleSaturating(xb[j + half] * id + 8.5)
                    q[j] = lo | (hi << 4)
                }
            }
            blocks[i] = b
        }
    }
}

func dequantizeRowQ4_0(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    precondition(n % BlockQ4_0.count == 0, "dequantizeRowQ4_0: \(n) is not a multiple of 32")
    let nb = n / BlockQ4_0.count
    let half = BlockQ4_0.count / 2
    x.withMemoryRebound(to: BlockQ4_0.self, capacity: nb) { blocks in
        for i in 0..<nb {
            let d = blocks[i].scale
            let yb = y + i * BlockQ4_0.count
            withUnsafeBytes(of: blocks[i].qs) { q in
                for j in 0..<half {
                    yb[j] = Float(Int(q[j] & 0x0F) - 8) * d
                    yb[j + half] = Float(Int(q[j] >> 4) - 8) * d
                }
            }
        }
    }
}

// MARK: - Float rows (block size 1)

func quantizeRowF32(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ n: Int) {
    y.copyMemory(from: x, byteCount: n * 4)
}

func dequantizeRowF32(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    UnsafeMutableRawPointer(y).copyMemory(from: x, byteCount: n * 4)
}

/// f32 → f16, round to nearest even (numpy's `astype(np.float16)`); overflow → ±inf, NaN → quiet NaN.
func quantizeRowF16(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ n: Int) {
    for i in 0..<n { y.storeBytes(of: Float16(x[i]).bitPattern.littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
}

func dequantizeRowF16(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    for i in 0..<n {
        y[i] = Float(Float16(bitPattern: UInt16(littleEndian: x.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))))
    }
}

/// f32 → bf16, round to nearest even, NaN → quiet NaN (`floatToBF16`, same as ggml_compute_fp32_to_bf16
/// and gguf's BF16.quantize).
func quantizeRowBF16(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ n: Int) {
    for i in 0..<n { y.storeBytes(of: floatToBF16(x[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
}

func dequantizeRowBF16(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    for i in 0..<n { y[i] = bf16ToFloat(UInt16(littleEndian: x.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
}
