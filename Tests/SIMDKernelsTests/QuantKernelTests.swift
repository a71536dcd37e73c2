// Quantized kernels: every tier (scalar reference, Swift SIMD, C on every instruction-set path
// available on this CPU, 1 and 2 threads) against the scalar reference on odd sizes.
// Integer parts must be exact (quantized bytes, int32 block dots) and the integer-path matmul must be
// bit-identical; the f32-activation path must be within its stated bound.

import CKernels
import Foundation
import Testing
import Quant
import SIMDKernels

/// Sizes from the issue: K = 32·{1, 31, 33, 1023} blocks.
let blockCounts = [1, 31, 33, 1023]

struct Q8Shape: CustomStringConvertible, Sendable {
    let m: Int, n: Int, blocks: Int
    var k: Int { blocks * 32 }
    var description: String { "M=\(m) N=\(n) K=32·\(blocks)" }
}

/// Odd M and N for every K; the largest K with fewer combinations to keep the scalar tier quick.
let matmulShapes: [Q8Shape] = {
    var s = [Q8Shape]()
    for b in [1, 31, 33] { for (m, n) in [(1, 1), (1, 33), (3, 7), (7, 3), (33, 33), (5, 17)] { s.append(Q8Shape(m: m, n: n, blocks: b)) } }
    for (m, n) in [(1, 7), (7, 33), (33, 9)] { s.append(Q8Shape(m: m, n: n, blocks: 1023)) }
    return s
}()

/// Every C path this machine runs, plus the tiers, as (label, runner) for the integer matmul.
func cPaths() -> [CKernelISA] { CKernelISA.available }

@Suite("Q8_0 activation quantization")
struct QuantizeTests {
    func quantize(_ x: [Float], rows: Int, k: Int, tier: KernelTier, threads: Int = 1) -> [UInt8] {
        var out = [UInt8](repeating: 0xAA, count: QuantKernels.activationBytes(rows: rows, cols: k))
        x.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBytes {
                QuantKernels.quantizeRows(xp.baseAddress!, rows: rows, cols: k, out: $0.baseAddress!, tier: tier, threads: threads)
            }
        }
        return out
    }

    @Test("tiers produce identical bytes", arguments: blockCounts)
    func tiersIdentical(blocks: Int) {
        let k = blocks * 32
        for rows in [1, 3, 7] {
            var x = activationRows(rows, k, seed: UInt64(blocks * 100 + rows))
            // special blocks: all zero, exact ties after scaling, tiny and huge magnitudes, subnormals
            if blocks >= 31 {
                for j in 0..<32 { x[j] = 0 }
                for j in 0..<32 { x[32 + j] = j == 0 ? 127 : Float(j % 7) - 2.5 }        // d = 1: q = ±x.5 ties
                for j in 0..<32 { x[64 + j] = Float(j - 16) * 1e-30 }
                for j in 0..<32 { x[96 + j] = Float(j - 16) * 3e36 }
                for j in 0..<32 { x[128 + j] = Float(bitPattern: UInt32(j * 37 + 1)) * (j & 1 == 0 ? 1 : -1) }
            }
            let ref = quantize(x, rows: rows, k: k, tier: .scalar)
            #expect(quantize(x, rows: rows, k: k, tier: .simd) == ref, "simd rows=\(rows)")
            #expect(quantize(x, rows: rows, k: k, tier: .c, threads: 1) == ref, "c/1 rows=\(rows)")
            #expect(quantize(x, rows: rows, k: k, tier: .c, threads: 2) == ref, "c/2 rows=\(rows)")
        }
    }

    @Test("rounding is half away from zero, scale is f16(amax/127)")
    func roundingRule() {
        // amax = 127 → d = 1, id = 1: q = round-half-away(x)
        var x = [Float](repeating: 0, count: 32)
        x[0] = 127; x[1] = 2.5; x[2] = -2.5; x[3] = 3.5; x[4] = -0.5; x[5] = 0.49999997; x[6] = 1.5; x[7] = -126.5
        for tier in KernelTier.allCases {
            let q = quantize(x, rows: 1, k: 32, tier: tier)
            #expect(q[0] == 0x00 && q[1] == 0x3C, "\(tier): d = f16(1.0)")
            let qs = q[2..<10].map { Int8(bitPattern: $0) }
            #expect(qs == [127, 3, -3, 4, -1, 0, 2, -127], "\(tier)")
        }
    }

    @Test("C f16 conversions match Swift Float16 (RNE, subnormals, overflow, NaN)")
    func f16Conversions() {
        var rng = TestRNG(seed: 7)
        var bad = 0
        // every f16 bit pattern round-trips through f32 exactly
        for h in 0...UInt16.max {
            let f = ck_f16_to_f32(h)
            let s = Float(Float16(bitPattern: h))
            if f.isNaN ? !s.isNaN : f.bitPattern != s.bitPattern { bad += 1 }
        }
        // f32 → f16 on random bit patterns concentrated in the f16 range, plus all ties near the edges
        var samples: [Float] = [65504, 65519.996, 65520, 65536, 1e-8, 2.9802322e-8, 5.9604645e-8, 6.1035156e-5,
                                6.1032e-5, 1e20, -0.0, .infinity, -.infinity]
        for _ in 0..<2_000_000 {
            let e = UInt32(rng.int(90...145)), m = UInt32(truncatingIfNeeded: rng.next()) & 0x7F_FFFF
            let sign: UInt32 = rng.next() & 1 == 0 ? 0 : 0x8000_0000
            samples.append(Float(bitPattern: sign | (e << 23) | m))
        }
        for v in samples where ck_f32_to_f16(v) != Float16(v).bitPattern { bad += 1 }
        #expect(bad == 0)
        #expect(Float16(bitPattern: ck_f32_to_f16(.nan)).isNaN)
    }
}

@Suite("Dequantization and integer block dots")
struct BlockTests {
    @Test("dequantizeRow: exact on every tier", arguments: QuantKernels.integerBlockTypes)
    func dequantize(type: QuantType) {
        for blocks in blockCounts {
            let raw = randomRawBlocks(type, blocks: blocks, seed: UInt64(blocks) &* 31 &+ UInt64(type.rawValue))
            // expected straight from the block layout
            var expected = [Float]()
            for b in 0..<blocks {
                let p = b * type.traits.bytesPerBlock
                let d = Float(Float16(bitPattern: UInt16(raw[p]) | UInt16(raw[p + 1]) << 8))
                for j in 0..<32 {
                    let q: Int
                    switch type {
                    case .q8_0: q = Int(Int8(bitPattern: raw[p + 2 + j]))
                    case .q4_0: q = Int(j < 16 ? raw[p + 2 + j] & 15 : raw[p + 2 + j - 16] >> 4) - 8
                    default: fatalError("not an integer block type")
                    }
                    expected.append(Float(q) * d)
                }
            }
            for tier in KernelTier.allCases {
                var y = [Float](repeating: .nan, count: blocks * 32)
                raw.withUnsafeBytes { r in
                    y.withUnsafeMutableBufferPointer {
                        QuantKernels.dequantizeRow(type, r.baseAddress!, $0.baseAddress!, count: blocks * 32, tier: tier)
                    }
                }
                #expect(firstMismatch(y, expected) == nil, "\(type) \(tier) blocks=\(blocks)")
            }
        }
    }

    @Test("block dots: exact int32 on every tier and C path", arguments: QuantKernels.integerBlockTypes)
    func blockDots(type: QuantType) {
        let blocks = 1023
        let w = randomRawBlocks(type, blocks: blocks, seed: 11 + UInt64(type.rawValue))
        let x = randomActivationBlocks(blocks: blocks, seed: 12)
        var expected = [Int32]()
        for b in 0..<blocks {
            var s = 0
            for j in 0..<32 {
                let wq: Int
                switch type {
                case .q8_0: wq = Int(Int8(bitPattern: w[b * 34 + 2 + j]))
                case .q4_0: wq = Int(j < 16 ? w[b * 18 + 2 + j] & 15 : w[b * 18 + 2 + j - 16] >> 4) - 8
                default: fatalError("not an integer block type")
                }
                s += wq * Int(Int8(bitPattern: x[b * 34 + 2 + j]))
            }
            expected.append(Int32(s))
        }
        var runs: [(String, KernelTier, CKernelISA?)] = [("scalar", .scalar, nil), ("simd", .simd, nil)]
        for isa in cPaths() { runs.append(("c/\(isa)", .c, isa)) }
        for (label, tier, isa) in runs {
            var out = [Int32](repeating: 0, count: blocks)
            w.withUnsafeBytes { wp in
                x.withUnsafeBytes { xp in
                    out.withUnsafeMutableBufferPointer {
                        QuantKernels.blockDots(type, weights: wp.baseAddress!, activations: xp.baseAddress!,
                                               out: $0.baseAddress!, blocks: blocks, tier: tier, isa: isa)
                    }
                }
            }
            #expect(out == expected, "\(type) \(label)")
        }
        // extreme blocks: all quants at the ends of their ranges
        if type == .q8_0 {
            var wx = [UInt8](repeating: 0x80, count: 34), xx = [UInt8](repeating: 0x81, count: 34)  // −128 · −127
            wx[0] = 0; wx[1] = 0x3C; xx[0] = 0; xx[1] = 0x3C
            for isa in cPaths() {
                var out: Int32 = 0
                wx.withUnsafeBytes { wp in xx.withUnsafeBytes { xp in
                    QuantKernels.blockDots(.q8_0, weights: wp.baseAddress!, activations: xp.baseAddress!, out: &out,
                                           blocks: 1, tier: .c, isa: isa)
                } }
                #expect(out == 32 * 128 * 127, "extreme block c/\(isa)")
            }
        }
    }
}

@Suite("Quantized matmul")
struct MatmulTests {
    struct Case {
        let shape: Q8Shape
        let type: QuantType
        let w: [UInt8]
        let xf: [Float]
        let xq: [UInt8]
        let wf: [Float]  // the original f32 weights
    }

    func makeCase(_ s: Q8Shape, _ type: QuantType, seed: UInt64) -> Case {
        var rng = TestRNG(seed: seed)
        let wf = rng.gaussians(s.n * s.k, scale: 0.05)
        let w = quantizeWeights(wf, rows: s.n, k: s.k, type)
        let xf = activationRows(s.m, s.k, seed: seed &+ 1)
        var xq = [UInt8](repeating: 0, count: QuantKernels.activationBytes(rows: s.m, cols: s.k))
        xf.withUnsafeBufferPointer { xp in
            xq.withUnsafeMutableBytes { QuantKernels.quantizeRows(xp.baseAddress!, rows: s.m, cols: s.k, out: $0.baseAddress!, tier: .scalar) }
        }
        return Case(shape: s, type: type, w: w, xf: xf, xq: xq, wf: wf)
    }

    func runQ8(_ c: Case, tier: KernelTier, isa: CKernelISA? = nil, threads: Int = 1) -> [Float] {
        var y = [Float](repeating: .nan, count: c.shape.m * c.shape.n)
        c.w.withUnsafeBytes { wp in
            c.xq.withUnsafeBytes { xp in
                y.withUnsafeMutableBufferPointer {
                    QuantKernels.matmulQ8(c.type, weights: wp.baseAddress!, activations: xp.baseAddress!, y: $0.baseAddress!,
                                          m: c.shape.m, n: c.shape.n, k: c.shape.k, tier: tier, isa: isa, threads: threads)
                }
            }
        }
        return y
    }

    func runF32(_ c: Case, tier: KernelTier, isa: CKernelISA? = nil, threads: Int = 1) -> [Float] {
        var y = [Float](repeating: .nan, count: c.shape.m * c.shape.n)
        c.w.withUnsafeBytes { wp in
            c.xf.withUnsafeBufferPointer { xp in
                y.withUnsafeMutableBufferPointer {
                    QuantKernels.matmulF32(c.type, weights: wp.baseAddress!, x: xp.baseAddress!, y: $0.baseAddress!,
                                           m: c.shape.m, n: c.shape.n, k: c.shape.k, tier: tier, isa: isa, threads: threads)
                }
            }
        }
        return y
    }

    /// Σ_k |x·ŵ| per output, in Double (the scale of the f32 rounding bound).
    func absDot(_ c: Case) -> [Double] {
        var deq = [Float](repeating: 0, count: c.shape.n * c.shape.k)
        let rb = c.type.kernelRowBytes(cols: c.shape.k)
        c.w.withUnsafeBytes { wp in
            deq.withUnsafeMutableBufferPointer { dp in
                for r in 0..<c.shape.n {
                    QuantKernels.dequantizeRow(c.type, wp.baseAddress! + r * rb, dp.baseAddress! + r * c.shape.k, count: c.shape.k, tier: .scalar)
                }
            }
        }
        var out = [Double]()
        for i in 0..<c.shape.m {
            for j in 0..<c.shape.n {
                var s = 0.0
                for t in 0..<c.shape.k { s += abs(Double(c.xf[i * c.shape.k + t]) * Double(deq[j * c.shape.k + t])) }
                out.append(s)
            }
        }
        return out
    }

    static let allCases: [(Q8Shape, QuantType)] = matmulShapes.flatMap { s in QuantKernels.integerBlockTypes.map { (s, $0) } }

    @Test("integer path: bit-identical across tiers, C paths and thread counts", arguments: allCases)
    func integerPathIdentical(shape: Q8Shape, type: QuantType) {
        let c = makeCase(shape, type, seed: UInt64(shape.m * 1000 + shape.n * 10 + shape.blocks))
        let ref = runQ8(c, tier: .scalar)
        #expect(!ref.contains { $0.isNaN })
        #expect(firstMismatch(runQ8(c, tier: .simd), ref) == nil, "simd \(shape) \(type)")
        for isa in cPaths() {
            for t in [1, 2] {
                #expect(firstMismatch(runQ8(c, tier: .c, isa: isa, threads: t), ref) == nil, "c/\(isa)/\(t)t \(shape) \(type)")
            }
        }
    }

    @Test("f32-activation path: tiers within 2^-17·Σ|x·w|; C threads 1 and 2 identical", arguments: allCases)
    func f32PathWithinBound(shape: Q8Shape, type: QuantType) {
        let c = makeCase(shape, type, seed: UInt64(shape.m * 1000 + shape.n * 10 + shape.blocks) ^ 0xF32)
        let ref = runF32(c, tier: .scalar)
        let scale = absDot(c)
        func check(_ y: [Float], _ label: String) {
            var worst = 0.0
            for i in 0..<y.count { worst = max(worst, abs(Double(y[i]) - Double(ref[i])) / max(scale[i], 1e-30)) }
            #expect(worst <= 0x1p-17, "\(label) \(shape) \(type): \(worst)")
        }
        check(runF32(c, tier: .simd), "simd")
        for isa in cPaths() {
            let y1 = runF32(c, tier: .c, isa: isa, threads: 1)
            check(y1, "c/\(isa)")
            #expect(firstMismatch(runF32(c, tier: .c, isa: isa, threads: 2), y1) == nil, "c/\(isa) threads")
        }
    }

    /// Relative RMS error ‖y_q − y‖/‖y‖ of the quantized products against the f32 product with the
    /// original weights (Gaussian weights, activation rows with 12σ outliers every 97th value),
    /// M=7 N=33 K=1056. Bounds are ~2× the measured values:
    ///   Q8_0 weights: integer path (Q8_0 activations) 1.12% measured → bound 2%;
    ///                 f32-activation path 0.55% → 1.5%.
    ///   Q4_0 weights: integer path 7.9% → 15%; f32-activation path 8.0% → 15%.
    @Test("quantized vs f32 product within per-type bounds", arguments: QuantKernels.integerBlockTypes)
    func accuracyVsF32(type: QuantType) {
        let s = Q8Shape(m: 7, n: 33, blocks: 33)
        let c = makeCase(s, type, seed: 99)
        var exact = [Double]()
        for i in 0..<s.m {
            for j in 0..<s.n {
                var acc = 0.0
                for t in 0..<s.k { acc += Double(c.xf[i * s.k + t]) * Double(c.wf[j * s.k + t]) }
                exact.append(acc)
            }
        }
        func relRMS(_ y: [Float]) -> Double {
            var num = 0.0, den = 0.0
            for i in 0..<y.count { num += (Double(y[i]) - exact[i]) * (Double(y[i]) - exact[i]); den += exact[i] * exact[i] }
            return (num / den).squareRoot()
        }
        let eq = relRMS(runQ8(c, tier: .c)), ef = relRMS(runF32(c, tier: .c))
        let (bq, bf) = type == .q8_0 ? (0.02, 0.015) : (0.15, 0.15)
        #expect(eq <= bq, "\(type) integer path rel RMS \(eq)")
        #expect(ef <= bf, "\(type) f32 path rel RMS \(ef)")
        #expect(eq > 0 && ef > 0)  // a zero error would mean the test is not measuring anything
    }

    @Test("matmul() facade: q8_0 mode equals quantizeRows + matmulQ8; f32 mode equals matmulF32")
    func facade() {
        let s = Q8Shape(m: 3, n: 9, blocks: 4)
        let c = makeCase(s, .q4_0, seed: 5)
        var scratch = [UInt8](repeating: 0, count: QuantKernels.activationBytes(rows: s.m, cols: s.k))
        for mode in ActivationMode.allCases {
            var y = [Float](repeating: .nan, count: s.m * s.n)
            c.w.withUnsafeBytes { wp in c.xf.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in
                scratch.withUnsafeMutableBytes { sp in
                    QuantKernels.matmul(.q4_0, weights: wp.baseAddress!, x: xp.baseAddress!, y: yp.baseAddress!, m: s.m, n: s.n,
                                        k: s.k, scratch: sp.baseAddress!, activation: mode, tier: .c)
                }
            } } }
            let expected = mode == .q8_0 ? runQ8(c, tier: .scalar) : runF32(c, tier: .c)
            #expect(firstMismatch(y, expected) == nil, "\(mode)")
        }
        #expect(scratch == c.xq)
    }

    @Test("output row stride ldy: padding untouched, values equal to the contiguous result")
    func outputStride() {
        let s = Q8Shape(m: 9, n: 13, blocks: 2), ldy = 13 + 5
        let c = makeCase(s, .q8_0, seed: 23)
        let ref = runQ8(c, tier: .scalar), refF = runF32(c, tier: .scalar)
        var runs: [(KernelTier, CKernelISA?)] = [(.scalar, nil), (.simd, nil)]
        for isa in cPaths() { runs.append((.c, isa)) }
        for (tier, isa) in runs {
            for f32 in [false, true] {
                var y = [Float](repeating: -7, count: s.m * ldy)
                c.w.withUnsafeBytes { wp in c.xq.withUnsafeBytes { xp in c.xf.withUnsafeBufferPointer { xf in y.withUnsafeMutableBufferPointer { yp in
                    if f32 {
                        QuantKernels.matmulF32(.q8_0, weights: wp.baseAddress!, x: xf.baseAddress!, y: yp.baseAddress!, m: s.m, n: s.n, k: s.k,
                                               ldy: ldy, tier: tier, isa: isa, threads: 2)
                    } else {
                        QuantKernels.matmulQ8(.q8_0, weights: wp.baseAddress!, activations: xp.baseAddress!, y: yp.baseAddress!,
                                              m: s.m, n: s.n, k: s.k, ldy: ldy, tier: tier, isa: isa, threads: 2)
                    }
                } } } }
                for i in 0..<s.m {
                    for j in 0..<ldy {
                        if j >= s.n { #expect(y[i * ldy + j] == -7, "\(tier) \(String(describing: isa)) f32=\(f32) padding") }
                        else if !f32 { #expect(y[i * ldy + j] == ref[i * s.n + j], "\(tier) \(String(describing: isa))") }
                        else { #expect(abs(y[i * ldy + j] - refF[i * s.n + j]) <= 1e-5 * (abs(refF[i * s.n + j]) + 1)) }
                    }
                }
            }
        }
    }

    @Test("BLAS panel variant of the f32-activation path matches within the f32 bound")
    func blasPanel() {
        let s = Q8Shape(m: 5, n: 37, blocks: 3)
        let c = makeCase(s, .q8_0, seed: 17)
        let ref = runF32(c, tier: .scalar)
        let scale = absDot(c)
        var y = [Float](repeating: .nan, count: s.m * s.n)
        var panel = [Float](repeating: 0, count: 10 * s.k)  // 10 rows per panel: 4 panels, last one partial
        c.w.withUnsafeBytes { wp in c.xf.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in
            panel.withUnsafeMutableBufferPointer { pp in
                QuantKernels.matmulF32Panels(.q8_0, weights: wp.baseAddress!, x: xp.baseAddress!, y: yp.baseAddress!, m: s.m, n: s.n,
                                             k: s.k, panel: pp.baseAddress!, panelFloats: pp.count, threads: 1)
            }
        } } }
        for i in 0..<y.count { #expect(abs(Double(y[i]) - Double(ref[i])) <= 0x1p-17 * scale[i], "\(i)") }
    }
}
