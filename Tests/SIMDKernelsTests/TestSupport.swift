// Deterministic data and small helpers for the kernel tests. The tests cannot see the Quant module
// (the target depends on SIMDKernels and CKernels only), so the Q4_0 weight quantizer needed to make
// realistic 4-bit weights is written out here from ggml's reference semantics.

import Foundation
import Quant
import struct NLARuntime.SplitMix64
import SIMDKernels

/// SplitMix64: reproducible across platforms.
struct TestRNG {
    private var generator: SplitMix64
    init(seed: UInt64) { generator = SplitMix64(seed: seed) }
    mutating func next() -> UInt64 { generator.next() }
    /// Uniform in [0, 1).
    mutating func uniform() -> Double { Double(next() >> 11) * 0x1p-53 }
    mutating func uniform(_ lo: Float, _ hi: Float) -> Float { lo + (hi - lo) * Float(uniform()) }
    /// Standard normal (Box–Muller).
    mutating func gaussian() -> Float {
        let u1 = max(uniform(), 1e-300), u2 = uniform()
        return Float((-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2))
    }
    mutating func gaussians(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in gaussian() * scale } }
    mutating func int(_ range: ClosedRange<Int>) -> Int { range.lowerBound + Int(next() % UInt64(range.count)) }
}

/// Activation-like rows: Gaussian with a few large outliers per row (as in transformer residuals).
func activationRows(_ rows: Int, _ k: Int, seed: UInt64) -> [Float] {
    var rng = TestRNG(seed: seed)
    var x = rng.gaussians(rows * k)
    for i in stride(from: 0, to: x.count, by: 97) { x[i] *= 12 }
    return x
}

/// ggml-reference Q4_0 quantization of one row (test helper; the production quantizer lives in Quant).
func quantizeQ4_0(_ x: [Float]) -> [UInt8] {
    precondition(x.count % 32 == 0)
    var out = [UInt8]()
    for b in 0..<(x.count / 32) {
        let xb = Array(x[(b * 32)..<(b * 32 + 32)])
        var amax: Float = 0, m: Float = 0
        for v in xb where abs(v) > amax { amax = abs(v); m = v }
        let d = m / -8
        let id: Float = d != 0 ? 1 / d : 0
        let dh = Float16(d).bitPattern
        out.append(UInt8(dh & 0xFF)); out.append(UInt8(dh >> 8))
        for j in 0..<16 {
            let lo = UInt8(min(15, max(0, (xb[j] * id + 8.5).rounded(.towardZero))))
            let hi = UInt8(min(15, max(0, (xb[j + 16] * id + 8.5).rounded(.towardZero))))
            out.append(lo | (hi << 4))
        }
    }
    return out
}

/// Quantize a [rows, k] matrix to weight blocks of `type`.
func quantizeWeights(_ w: [Float], rows: Int, k: Int, _ type: QuantType) -> [UInt8] {
    switch type {
    case .q8_0:
        var out = [UInt8](repeating: 0, count: QuantKernels.activationBytes(rows: rows, cols: k))
        w.withUnsafeBufferPointer { wp in
            out.withUnsafeMutableBytes { QuantKernels.quantizeRows(wp.baseAddress!, rows: rows, cols: k, out: $0.baseAddress!, tier: .scalar) }
        }
        return out
    case .q4_0:
        var out = [UInt8]()
        for r in 0..<rows { out += quantizeQ4_0(Array(w[(r * k)..<(r * k + k)])) }
        return out
    default:
        return try! type.quantize(w, width: k)  // the type table's reference quantizer
    }
}

/// Random raw weight blocks: every quant byte value possible (Q8_0 includes −128), f16 scales in
/// [2^-12, 2^-4] with random sign.
func randomRawBlocks(_ type: QuantType, blocks: Int, seed: UInt64) -> [UInt8] {
    var rng = TestRNG(seed: seed)
    var out = [UInt8]()
    for _ in 0..<blocks {
        let d = Float16(rng.uniform(-12, -4).exp2 * (rng.next() & 1 == 0 ? 1 : -1)).bitPattern
        out.append(UInt8(d & 0xFF)); out.append(UInt8(d >> 8))
        for _ in 0..<(type.traits.bytesPerBlock - 2) { out.append(UInt8(truncatingIfNeeded: rng.next())) }
    }
    return out
}

/// Random Q8_0 activation blocks with quants in [−127, 127] (the quantizer's range).
func randomActivationBlocks(blocks: Int, seed: UInt64) -> [UInt8] {
    var rng = TestRNG(seed: seed)
    var out = [UInt8]()
    for _ in 0..<blocks {
        let d = Float16(rng.uniform(-10, 0).exp2).bitPattern
        out.append(UInt8(d & 0xFF)); out.append(UInt8(d >> 8))
        for _ in 0..<32 { out.append(UInt8(bitPattern: Int8(rng.int(-127...127)))) }
    }
    return out
}

extension Float {
    var exp2: Float { Foundation.exp2(self) }
}

/// Distance in units of the last place of `exact` (rounded to Float); 0 when both are equal.
func ulpDistance(_ got: Float, _ exact: Double) -> Double {
    let r = Float(exact)
    if got == r { return 0 }
    let ulp = Double(r == 0 ? Float.leastNonzeroMagnitude : r.ulp)
    return abs(Double(got) - exact) / ulp
}

/// Index of the first element whose bit pattern differs (nil: bit-identical).
func firstMismatch(_ a: [Float], _ b: [Float]) -> Int? {
    for i in 0..<a.count where a[i].bitPattern != b[i].bitPattern { return i }
    return nil
}
