// Element-wise kernels and vector math: the SIMD tier against the scalar reference tier and against
// Double-precision references, on odd sizes (tails of every length 0..7 are exercised).

import Foundation
import Testing
import SIMDKernels
import CKernels

let oddSizes = [1, 3, 7, 8, 15, 16, 17, 31, 33, 255, 256, 1023, 2560]

@Suite("Element-wise kernels, SIMD vs scalar")
struct ElementwiseTests {
    @Test("add, scale, rope: bit-identical", arguments: oddSizes)
    func exactKernels(n: Int) {
        var rng = TestRNG(seed: UInt64(n))
        let a = rng.gaussians(n), b = rng.gaussians(n)
        var s1 = a, s2 = a
        ScalarKernels.add(&s1, b, n); VectorKernels.add(&s2, b, n)
        #expect(firstMismatch(s1, s2) == nil)
        ScalarKernels.scale(&s1, 0.37, n); VectorKernels.scale(&s2, 0.37, n)
        #expect(firstMismatch(s1, s2) == nil)
        let d = 2 * n
        let x = rng.gaussians(d)
        let angles = (0..<n).map { Float($0) * 0.37 }
        let cs = angles.map { Foundation.cos($0) }, sn = angles.map { Foundation.sin($0) }
        var r1 = x, r2 = x
        ScalarKernels.ropeRotateHalf(&r1, cos: cs, sin: sn, headDim: d)
        VectorKernels.ropeRotateHalf(&r2, cos: cs, sin: sn, headDim: d)
        #expect(firstMismatch(r1, r2) == nil)
    }

    @Test("dot and rmsNorm: within the summation-order bound", arguments: oddSizes)
    func reductions(n: Int) {
        var rng = TestRNG(seed: 100 + UInt64(n))
        let a = rng.gaussians(n), b = rng.gaussians(n)
        let absSum = zip(a, b).reduce(0.0) { $0 + abs(Double($1.0) * Double($1.1)) }
        let ds = ScalarKernels.dot(a, b, n), dv = VectorKernels.dot(a, b, n)
        // both differ from the exact sum by ≤ (n−1)·2⁻²⁴·Σ|ab|; typical far less
        #expect(abs(Double(ds) - Double(dv)) <= Double(n) * 0x1p-23 * absSum)

        let w = rng.gaussians(n).map { 1 + 0.1 * $0 }
        var o1 = [Float](repeating: 0, count: n), o2 = o1
        ScalarKernels.rmsNorm(a, weight: w, out: &o1, n: n, eps: 1e-6)
        VectorKernels.rmsNorm(a, weight: w, out: &o2, n: n, eps: 1e-6)
        // Σx² of positive terms: relative error ≤ n·2⁻²⁴ each way; inv = rsqrt halves it
        let rel = Float(n + 8) * 0x1p-24
        for i in 0..<n { #expect(abs(o1[i] - o2[i]) <= rel * abs(o1[i]) + 1e-30, "i=\(i)") }
        // against a Double reference both tiers must be within 4 ulp + n·2⁻²⁵ relative
        let ss = a.reduce(0.0) { $0 + Double($1) * Double($1) }
        let inv = 1 / (ss / Double(n) + 1e-6).squareRoot()
        for i in 0..<n {
            let exact = Double(a[i]) * inv * Double(w[i])
            #expect(abs(Double(o2[i]) - exact) <= (4 * 0x1p-24 + Double(n) * 0x1p-25) * abs(exact) + 1e-30)
        }
    }

    @Test("rmsNormRows with out aliasing x")
    func rmsNormRowsAliased() {
        let rows = 5, n = 33
        var rng = TestRNG(seed: 3)
        var x = rng.gaussians(rows * n)
        let w = rng.gaussians(n)
        var expected = [Float](repeating: 0, count: rows * n)
        for r in 0..<rows {
            let row = Array(x[(r * n)..<(r * n + n)])
            var o = [Float](repeating: 0, count: n)
            VectorKernels.rmsNorm(row, weight: w, out: &o, n: n, eps: 1e-6)
            expected.replaceSubrange((r * n)..<(r * n + n), with: o)
        }
        x.withUnsafeMutableBufferPointer { VectorKernels.rmsNormRows($0.baseAddress!, weight: w, out: $0.baseAddress!, rows: rows, n: n, eps: 1e-6) }
        #expect(firstMismatch(x, expected) == nil)
    }

    /// Softmax: relative error per element vs Double ≤ (8 + n + |x − max|)·2⁻²⁴ (SIMD and scalar alike;
    /// the last term is the f32 rounding of x − max, inherent to an f32 softmax), and SIMD vs scalar
    /// relative difference ≤ twice that.
    @Test("softmax within bounds", arguments: oddSizes)
    func softmax(n: Int) {
        var rng = TestRNG(seed: 200 + UInt64(n))
        var x = rng.gaussians(n, scale: 6)
        if n > 4 { x[2] = -.infinity; x[3] = -80 }  // masked and far-below-max entries
        var s1 = x, s2 = x
        ScalarKernels.softmax(&s1, n); VectorKernels.softmax(&s2, n)
        let m = Double(x.max()!)
        let es = x.map { Foundation.exp(Double($0) - m) }
        let sum = es.reduce(0, +)
        for i in 0..<n {
            let exact = es[i] / sum
            // the f32 rounding of x − max (shared by both tiers) adds |x − max|·2⁻²⁴ relative
            let bound = exact == 0 ? 0 : (8 + Double(n) + abs(Double(x[i]) - m)) * 0x1p-24
            #expect(abs(Double(s2[i]) - exact) <= bound * exact + 8e-45, "simd i=\(i)")
            #expect(abs(Double(s1[i]) - exact) <= bound * exact + 8e-45, "scalar i=\(i)")
            #expect(abs(Double(s1[i]) - Double(s2[i])) <= 2 * bound * exact + 8e-45)
        }
        if n > 4 { #expect(s2[2] == 0) }
        var allMasked = [Float](repeating: -.infinity, count: n)
        VectorKernels.softmax(&allMasked, n)
        #expect(allMasked.allSatisfy { $0 == 0 })
    }

    /// GELU-tanh · up. The SIMD tier uses the stable x·σ(2u) form; u is bit-identical to the scalar
    /// tier's. Bounds: SIMD vs Double reference of the same f32 u ≤ 6 ulp relative + 2⁻¹²⁶·|x·up| absolute
    /// (where e^{−2u} overflows, x < −9.9, the result flushes to ±0); scalar vs Double ≤ 4·2⁻²⁴·|x·up| (libm tanhf ≤ 3 ulp of
    /// tanh, 1 + t and two products rounded); so SIMD vs scalar ≤ (6 + 4)·2⁻²⁴·|x·up| (an earlier 2⁻²²
    /// was exceeded at x = 2.639, up = 1.079 by 4.5·2⁻²⁴·|x·up|, each tier within 2 ulp of exact there).
    @Test("geluTanhMul within bounds", arguments: oddSizes)
    func gelu(n: Int) {
        var rng = TestRNG(seed: 300 + UInt64(n))
        var g = rng.gaussians(n, scale: 3)
        if n >= 7 { g[0] = 0; g[1] = -12; g[2] = 12; g[3] = 1e-20; g[4] = -1e-20; g[5] = 40; g[6] = -40 }
        let up = rng.gaussians(n)
        var o1 = [Float](repeating: 0, count: n), o2 = o1
        ScalarKernels.geluTanhMul(g, up, out: &o1, n: n)
        VectorKernels.geluTanhMul(g, up, out: &o2, n: n)
        for i in 0..<n {
            let x = g[i]
            let uf = ScalarKernels.geluBeta * (x + ScalarKernels.geluKappa * x * x * x)  // the f32 u both tiers use
            let exact = Double(x) / (1 + Foundation.exp(-2 * Double(uf))) * Double(up[i])
            let y = Double(o2[i])
            #expect(abs(y - exact) <= 6 * 0x1p-24 * abs(exact) + 0x1p-126 * abs(Double(x) * Double(up[i])) + 1e-44,
                    "simd vs exact i=\(i) x=\(x)")
            #expect(abs(Double(o1[i]) - exact) <= 4 * 0x1p-24 * abs(Double(x) * Double(up[i])) + 1e-44, "scalar vs exact i=\(i) x=\(x)")
            #expect(abs(Double(o1[i]) - y) <= 10 * 0x1p-24 * abs(Double(x) * Double(up[i])) + 1e-44, "simd vs scalar i=\(i) x=\(x)")
        }
    }

    @Test("in-place gelu (out aliases gate)")
    func geluInPlace() {
        var rng = TestRNG(seed: 9)
        var g = rng.gaussians(37)
        let up = rng.gaussians(37)
        var expected = [Float](repeating: 0, count: 37)
        VectorKernels.geluTanhMul(g, up, out: &expected, n: 37)
        g.withUnsafeMutableBufferPointer { VectorKernels.geluTanhMul($0.baseAddress!, up, out: $0.baseAddress!, n: 37) }
        #expect(firstMismatch(g, expected) == nil)
    }

    @Test("f32 matmulNT/NN: simd and scalar tiers vs OpenBLAS, with beta and strides")
    func f32Matmuls() {
        let m = 5, n = 11, k = 37
        var rng = TestRNG(seed: 77)
        let x = rng.gaussians(m * (k + 3)), wt = rng.gaussians(n * k), wn = rng.gaussians(k * n)
        let y0 = rng.gaussians(m * n)
        for beta: Float in [0, 0.5] {
            var results: [KernelTier: ([Float], [Float])] = [:]
            for tier in KernelTier.allCases {
                var ynt = y0, ynn = y0
                switch tier {
                case .scalar:
                    ScalarKernels.matmulNT(x, wt, &ynt, m: m, n: n, k: k, ldx: k + 3, ldw: k, ldy: n, beta: beta)
                    ScalarKernels.matmulNN(x, wn, &ynn, m: m, n: n, k: k, ldx: k + 3, ldw: n, ldy: n, beta: beta)
                case .simd:
                    VectorKernels.matmulNT(x, wt, &ynt, m: m, n: n, k: k, ldx: k + 3, ldw: k, ldy: n, beta: beta)
                    VectorKernels.matmulNN(x, wn, &ynn, m: m, n: n, k: k, ldx: k + 3, ldw: n, ldy: n, beta: beta)
                case .c:  // the default dispatch routes f32 matmuls to OpenBLAS
                    Kernels.matmulNT(x, wt, &ynt, m: m, n: n, k: k, ldx: k + 3, beta: beta)
                    Kernels.matmulNN(x, wn, &ynn, m: m, n: n, k: k, ldx: k + 3, beta: beta)
                }
                results[tier] = (ynt, ynn)
            }
            let (rnt, rnn) = results[.scalar]!
            for tier in [KernelTier.simd, .c] {
                let (ynt, ynn) = results[tier]!
                for i in 0..<(m * n) {
                    #expect(abs(ynt[i] - rnt[i]) <= 1e-5 * Float(k), "NT \(tier) beta=\(beta)")
                    #expect(abs(ynn[i] - rnn[i]) <= 1e-5 * Float(k), "NN \(tier) beta=\(beta)")
                }
            }
            #expect(firstMismatch(results[.simd]!.1, rnn) == nil, "NN simd is sequential over k like scalar")
        }
    }
}

/// The element-wise C tier (CKernels/elementwise_kernels.c) on every instruction-set path this CPU has.
///
/// Bound, derived: 0 ulp against the Swift SIMD tier. Each path evaluates, per element, the same
/// sequence of IEEE f32 operations as VectorKernels / VectorMath (separate mul / add / div / sqrt, no
/// FMA contraction, no fast-math; bit tricks on the same integers), and the one reduction (Σx² of
/// RMSNorm, `dot`) keeps the SIMD tier's 16 lane sums, its fixed reduction order and its sequential
/// tail. So every output is bit-identical to the SIMD tier's (NaN lanes: NaN, payload unspecified),
/// whatever the path, the thread count or the tail length; the SIMD-vs-scalar bounds of
/// `ElementwiseTests` then hold for the C tier unchanged, and are asserted here as well.
@Suite("Element-wise kernels, C tier per instruction-set path")
struct ElementwiseCTests {
    /// Odd sizes (every tail length 0...15 of the 16-lane paths and of the 8-block step of `dot`), model
    /// sizes (640, 1152, 2048) and sizes past CK_EW_PAR_MIN (65536), which run on several threads.
    static let sizes = [1, 2, 7, 8, 9, 15, 16, 17, 23, 24, 31, 33, 47, 255, 256, 640, 1000, 1023, 1152, 2048, 70_001]

    static var paths: [CKernelISA] { CKernelISA.available }

    /// Same bits, or NaN on both sides.
    func sameOrBothNaN(_ a: [Float], _ b: [Float]) -> Int? {
        for i in 0..<a.count where a[i].bitPattern != b[i].bitPattern && !(a[i].isNaN && b[i].isNaN) { return i }
        return nil
    }

    @Test("every available path is the one that runs")
    func pathsResolve() {
        #expect(Self.paths.contains(.generic))
        for isa in Self.paths { #expect(ck_ew_isa(isa.rawValue) == isa.rawValue, "\(isa)") }
        #expect(ck_ew_isa(-1) == CKernelISA.selected.rawValue)
    }

    @Test("add, scale, rope: bit-identical to SIMD and scalar", arguments: sizes)
    func exactKernels(n: Int) {
        var rng = TestRNG(seed: 500 + UInt64(n))
        let a = rng.gaussians(n), b = rng.gaussians(n)
        var ref = a
        VectorKernels.add(&ref, b, n)
        var refS = a
        ScalarKernels.add(&refS, b, n)
        var scaled = ref
        VectorKernels.scale(&scaled, 0.37, n)
        let d = 2 * min(n, 4096)
        let x = rng.gaussians(d)
        let angles = (0..<(d / 2)).map { Float($0) * 0.37 }
        let cs = angles.map { Foundation.cos($0) }, sn = angles.map { Foundation.sin($0) }
        var rope = x
        VectorKernels.ropeRotateHalf(&rope, cos: cs, sin: sn, headDim: d)
        for isa in Self.paths {
            var c = a
            ck_ew_add(&c, b, Int64(n), isa.rawValue)
            #expect(firstMismatch(c, ref) == nil, "add \(isa) n=\(n)")
            #expect(firstMismatch(c, refS) == nil, "add vs scalar \(isa) n=\(n)")
            ck_ew_scale(&c, 0.37, Int64(n), isa.rawValue)
            #expect(firstMismatch(c, scaled) == nil, "scale \(isa) n=\(n)")
            var r = x
            ck_ew_rope_rotate_half(&r, cs, sn, Int64(d), isa.rawValue)
            #expect(firstMismatch(r, rope) == nil, "rope \(isa) d=\(d)")
        }
    }

    @Test("dot and rmsNorm: bit-identical to SIMD; within the summation-order bound of scalar", arguments: sizes)
    func reductions(n: Int) {
        var rng = TestRNG(seed: 600 + UInt64(n))
        let a = rng.gaussians(n, scale: 3), b = rng.gaussians(n)
        let w = rng.gaussians(n).map { 1 + 0.1 * $0 }
        let dv = VectorKernels.dot(a, b, n), ds = ScalarKernels.dot(a, b, n)
        let absSum = zip(a, b).reduce(0.0) { $0 + abs(Double($1.0) * Double($1.1)) }
        var ref = [Float](repeating: 0, count: n), refS = ref
        VectorKernels.rmsNorm(a, weight: w, out: &ref, n: n, eps: 1e-6)
        ScalarKernels.rmsNorm(a, weight: w, out: &refS, n: n, eps: 1e-6)
        let rel = Float(n + 8) * 0x1p-24
        for isa in Self.paths {
            let dc = ck_ew_dot(a, b, Int64(n), isa.rawValue)
            #expect(dc.bitPattern == dv.bitPattern, "dot \(isa) n=\(n): \(dc) vs \(dv)")
            #expect(abs(Double(dc) - Double(ds)) <= Double(n) * 0x1p-23 * absSum, "dot vs scalar \(isa)")
            var o = [Float](repeating: 0, count: n)
            ck_ew_rmsnorm_rows(a, w, &o, 1, Int64(n), 1e-6, isa.rawValue)
            #expect(firstMismatch(o, ref) == nil, "rmsNorm \(isa) n=\(n)")
            for i in 0..<n where abs(o[i] - refS[i]) > rel * abs(refS[i]) + 1e-30 {
                Issue.record("rmsNorm vs scalar \(isa) n=\(n) i=\(i)"); break
            }
        }
    }

    /// Rows: a single-threaded call (3 × 33, 4 per-head rows of 256) and a threaded one (128 × 640 ≥
    /// CK_EW_PAR_MIN), out aliasing x like the model's in-place norms.
    @Test("rmsNormRows in place, one and several threads", arguments: [(3, 33), (4, 256), (128, 640), (103, 1152)])
    func rmsNormRows(rows: Int, n: Int) {
        var rng = TestRNG(seed: 700 + UInt64(rows))
        let x0 = activationRows(rows, n, seed: UInt64(n))
        let w = rng.gaussians(n).map { 1 + 0.2 * $0 }
        var ref = x0
        ref.withUnsafeMutableBufferPointer {
            VectorKernels.rmsNormRows($0.baseAddress!, weight: w, out: $0.baseAddress!, rows: rows, n: n, eps: 1e-6)
        }
        for isa in Self.paths {
            var x = x0
            x.withUnsafeMutableBufferPointer { ck_ew_rmsnorm_rows($0.baseAddress!, w, $0.baseAddress!, Int64(rows), Int64(n), 1e-6, isa.rawValue) }
            #expect(firstMismatch(x, ref) == nil, "\(isa) \(rows)×\(n)")
        }
    }

    /// GELU-tanh · up: bit-identical to SIMD; vs the Double reference of the same f32 u ≤ 6 ulp relative
    /// + 2⁻¹²⁶·|x·up| (x < −9.9: e^{−2u} overflows and a result below 2⁻¹²⁷·|x·up| flushes to ±0; the
    /// sizes here reach x ≈ −10 with scale 3) + 1e-44; vs the scalar formula ≤ 10·2⁻²⁴·|x·up| (the
    /// bounds of `ElementwiseTests.gelu`).
    @Test("geluTanhMul: bit-identical to SIMD, within the bounds of exact and scalar", arguments: sizes)
    func gelu(n: Int) {
        var rng = TestRNG(seed: 800 + UInt64(n))
        var g = rng.gaussians(n, scale: 3)
        if n >= 9 { g[0] = 0; g[1] = -12; g[2] = 12; g[3] = 1e-20; g[4] = -1e-20; g[5] = 40; g[6] = -40; g[7] = -0.0; g[8] = 9 }
        let up = rng.gaussians(n)
        var ref = [Float](repeating: 0, count: n), refS = ref
        VectorKernels.geluTanhMul(g, up, out: &ref, n: n)
        ScalarKernels.geluTanhMul(g, up, out: &refS, n: n)
        for isa in Self.paths {
            var o = [Float](repeating: 0, count: n)
            ck_ew_gelu_tanh_mul(g, up, &o, Int64(n), isa.rawValue)
            #expect(firstMismatch(o, ref) == nil, "gelu \(isa) n=\(n)")
            var bad = 0
            for i in 0..<n {
                let x = g[i]
                let uf = ScalarKernels.geluBeta * (x + ScalarKernels.geluKappa * x * x * x)
                let exact = Double(x) / (1 + Foundation.exp(-2 * Double(uf))) * Double(up[i])
                let y = Double(o[i])
                if abs(y - exact) > 6 * 0x1p-24 * abs(exact) + 0x1p-126 * abs(Double(x) * Double(up[i])) + 1e-44 {
                    bad += 1
                    if bad <= 3 { Issue.record("vs exact \(isa) i=\(i) x=\(x) up=\(up[i]) y=\(y) exact=\(exact) rel=\(abs(y - exact) / abs(exact) / 0x1p-24) ulp") }
                }
                if abs(Double(refS[i]) - y) > 10 * 0x1p-24 * abs(Double(x) * Double(up[i])) + 1e-44 {
                    bad += 1
                    if bad <= 3 { Issue.record("vs scalar \(isa) i=\(i) x=\(x) up=\(up[i]) y=\(y) scalar=\(refS[i])") }
                }
            }
            #expect(bad == 0, "gelu \(isa) n=\(n): \(bad) outside the bounds")
            // in place (out aliases gate), the model's call
            var inPlace = g
            inPlace.withUnsafeMutableBufferPointer { ck_ew_gelu_tanh_mul($0.baseAddress!, up, $0.baseAddress!, Int64(n), isa.rawValue) }
            #expect(firstMismatch(inPlace, ref) == nil, "gelu in place \(isa) n=\(n)")
        }
    }

    /// NaN and ±inf go where the SIMD tier sends them (NaN in → NaN out; gelu(+inf)·1 = NaN as inf/inf,
    /// gelu(−inf) = −inf / inf = NaN, add inf + (−inf) = NaN, and so on), in the vector body and the tail.
    @Test("NaN / inf propagation as the SIMD tier")
    func specials() {
        let specials: [Float] = [.nan, .infinity, -.infinity, 0, -0.0, 1, -1, 100, -100, .greatestFiniteMagnitude,
                                 -.greatestFiniteMagnitude, .leastNonzeroMagnitude, 88.7, -87, 1e30, -1e30]
        for n in [16, 21, 37] {
            var rng = TestRNG(seed: UInt64(n))
            var a = (0..<n).map { _ in specials[rng.int(0...(specials.count - 1))] }
            var b = (0..<n).map { _ in specials[rng.int(0...(specials.count - 1))] }
            a[0] = .nan; a[1] = .infinity; a[2] = -.infinity; a[n - 1] = .nan; a[n - 2] = -.infinity  // body and tail
            b[3] = .infinity; b[4] = .nan; b[n - 3] = .nan
            var refAdd = a
            VectorKernels.add(&refAdd, b, n)
            var refGelu = [Float](repeating: 0, count: n)
            VectorKernels.geluTanhMul(a, b, out: &refGelu, n: n)
            var refNorm = [Float](repeating: 0, count: n)
            VectorKernels.rmsNorm(a, weight: b, out: &refNorm, n: n, eps: 1e-6)
            #expect(refGelu.contains { $0.isNaN } && refGelu.contains { $0.isInfinite || $0 == 0 })
            for isa in Self.paths {
                var c = a
                ck_ew_add(&c, b, Int64(n), isa.rawValue)
                #expect(sameOrBothNaN(c, refAdd) == nil, "add \(isa) n=\(n)")
                var o = [Float](repeating: 0, count: n)
                ck_ew_gelu_tanh_mul(a, b, &o, Int64(n), isa.rawValue)
                #expect(sameOrBothNaN(o, refGelu) == nil, "gelu \(isa) n=\(n)")
                ck_ew_rmsnorm_rows(a, b, &o, 1, Int64(n), 1e-6, isa.rawValue)
                #expect(sameOrBothNaN(o, refNorm) == nil, "rmsNorm \(isa) n=\(n)")
            }
        }
    }

    /// The facade: by default `Kernels.*` runs the C tier, and every dispatch tier gives the same bits
    /// for the kernels that are exact across tiers.
    @Test("Kernels facade: default element-wise tier is C, same bits as SIMD")
    func facade() {
        #expect(KernelDispatch.standard.elementwise == .c)
        let n = 1000
        var rng = TestRNG(seed: 11)
        let g = rng.gaussians(n, scale: 2), up = rng.gaussians(n), w = rng.gaussians(n)
        var ref = [Float](repeating: 0, count: n), viaFacade = ref, refN = ref, viaFacadeN = ref
        VectorKernels.geluTanhMul(g, up, out: &ref, n: n)
        VectorKernels.rmsNorm(g, weight: w, out: &refN, n: n, eps: 1e-6)
        let saved = Kernels.dispatch
        Kernels.dispatch = .standard
        Kernels.geluTanhMul(g, up, out: &viaFacade, n: n)
        Kernels.rmsNorm(g, weight: w, out: &viaFacadeN, n: n, eps: 1e-6)
        Kernels.dispatch = saved
        #expect(firstMismatch(viaFacade, ref) == nil)
        #expect(firstMismatch(viaFacadeN, refN) == nil)
    }
}

@Suite("Vector math accuracy")
struct VectorMathTests {
    /// Max ulp error of a SIMD function over `count` points spread over [lo, hi] (plus libm's for scale).
    func sweep(_ lo: Float, _ hi: Float, count: Int, _ f: (SIMD8<Float>) -> SIMD8<Float>, _ exact: (Double) -> Double,
               _ libm: (Float) -> Float) -> (ours: Double, libm: Double, worstX: Float) {
        var worst = 0.0, worstLibm = 0.0, wx: Float = 0
        var i = 0
        var rng = TestRNG(seed: 1)
        while i < count {
            var v = SIMD8<Float>()
            for l in 0..<8 { v[l] = lo + (hi - lo) * Float(rng.uniform()) }
            let r = f(v)
            for l in 0..<8 {
                let e = exact(Double(v[l]))
                let u = ulpDistance(r[l], e)
                if u > worst { worst = u; wx = v[l] }
                worstLibm = max(worstLibm, ulpDistance(libm(v[l]), e))
            }
            i += 8
        }
        return (worst, worstLibm, wx)
    }

    @Test("exp: ≤ 1 ulp on [-87, 88.7], sane at the edges")
    func exp() {
        let r = sweep(-87, 88.7, count: 1 << 20, VectorMath.exp, Foundation.exp, expf)
        print("vexp max ulp \(r.ours) at \(r.worstX); expf \(r.libm)"); #expect(r.ours <= 1, "exp max ulp \(r.ours) at \(r.worstX) (expf: \(r.libm))")
        let small = sweep(-1, 1, count: 1 << 18, VectorMath.exp, Foundation.exp, expf)
        #expect(small.ours <= 1, "exp small args max ulp \(small.ours)")
        let edge = VectorMath.exp(SIMD8<Float>(-.infinity, .infinity, 89, -104, -100, .nan, 0, 88.72))
        #expect(edge[0] == 0 && edge[1] == .infinity && edge[2] == .infinity && edge[3] == 0)
        #expect(abs(Double(edge[4]) - Foundation.exp(-100.0)) <= Double(Float.leastNonzeroMagnitude))  // subnormal
        #expect(edge[5].isNaN && edge[6] == 1 && edge[7].isFinite)
    }

    @Test("tanh: ≤ 2 ulp")
    func tanh() {
        let r = sweep(-10, 10, count: 1 << 20, VectorMath.tanh, Foundation.tanh, tanhf)
        print("vtanh max ulp \(r.ours) at \(r.worstX); tanhf \(r.libm)"); #expect(r.ours <= 2, "tanh max ulp \(r.ours) at \(r.worstX) (tanhf: \(r.libm))")
        let near0 = sweep(-0.7, 0.7, count: 1 << 18, VectorMath.tanh, Foundation.tanh, tanhf)
        #expect(near0.ours <= 2, "tanh |x|<0.7 max ulp \(near0.ours) at \(near0.worstX)")
        let edge = VectorMath.tanh(SIMD8<Float>(0, -0.0, 50, -50, .infinity, -.infinity, 1e-30, .nan))
        #expect(edge[0] == 0 && edge[1] == 0 && edge[2] == 1 && edge[3] == -1 && edge[4] == 1 && edge[5] == -1)
        #expect(edge[6] == 1e-30 && edge[7].isNaN)
    }

    @Test("sigmoid: ≤ 3 ulp where the result is normal")
    func sigmoid() {
        let r = sweep(-80, 30, count: 1 << 19, VectorMath.sigmoid, { 1 / (1 + Foundation.exp(-$0)) }, { 1 / (1 + expf(-$0)) })
        print("vsigmoid max ulp \(r.ours) at \(r.worstX); libm form \(r.libm)"); #expect(r.ours <= 3, "sigmoid max ulp \(r.ours) at \(r.worstX)")
    }

    @Test("roundHalfAway matches Float.rounded(.toNearestOrAwayFromZero)")
    func rounding() {
        var rng = TestRNG(seed: 4)
        var bad = 0
        for _ in 0..<(1 << 16) {
            var v = SIMD8<Float>()
            for l in 0..<8 {
                let base = Float(rng.int(-200...200))
                v[l] = rng.next() & 1 == 0 ? base + 0.5 : rng.uniform(-130, 130)
                if rng.next() % 16 == 0 { v[l] = Float(rng.int(-127...127)) + 0.49999997 }
            }
            let q = VectorMath.roundHalfAway(v)
            for l in 0..<8 where Int32(v[l].rounded(.toNearestOrAwayFromZero)) != q[l] { bad += 1 }
        }
        #expect(bad == 0)
    }
}

@Suite("Dispatch table")
struct DispatchTests {
    @Test("NLA_KERNELS grammar")
    func parse() {
        #expect(KernelDispatch.parse("scalar") == .all(.scalar))
        #expect(KernelDispatch.parse("c")?.elementwise == .c)
        #expect(KernelDispatch.parse("elementwise=simd")?.elementwise == .simd)
        #expect(KernelDispatch.parse("c")?.matmul == .c)
        let d = KernelDispatch.parse("matmul=simd, elementwise=scalar,act=f32")
        #expect(d == KernelDispatch(matmul: .simd, quantize: .simd, elementwise: .scalar, activation: .f32))
        #expect(KernelDispatch.parse("matmul=gpu") == nil)
        #expect(KernelDispatch.parse("fast") == nil)
        #expect(KernelDispatch.standard == KernelDispatch(matmul: .c, quantize: .simd, elementwise: .c, activation: nil))
    }

    @Test("C instruction-set paths: generic always available, selection clamps to available")
    func isa() {
        #expect(CKernelISA.generic.isAvailable)
        #expect(CKernelISA.available.contains(CKernelISA.selected))
    }
}
