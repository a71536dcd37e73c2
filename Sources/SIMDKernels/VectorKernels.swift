// Swift SIMD tier: SIMD8<Float> for f32 kernels; for the integer block dots, quant bytes are split into
// even/odd SIMD8<Int16> lanes with 16-bit shifts, multiplied in Int16 (exact) and widened to Int32 before
// any addition. Portable (SSE2 on baseline x86-64, NEON on ARM). No fused multiply-adds (see
// VectorMath.swift for why), no allocation, no model knowledge. Single-threaded: threads belong to the
// C tier.

import Quant

/// Swift-SIMD implementations of every kernel. Contracts are stated per function relative to
/// `ScalarKernels` (the reference tier).
public enum VectorKernels {
    @inline(__always) static func load8(_ p: UnsafePointer<Float>, _ i: Int) -> SIMD8<Float> {
        UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
    }
    @inline(__always) static func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>, _ i: Int) {
        UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: SIMD8<Float>.self)
    }
    /// Lanes i..<i+count (count < 8) of p, the other lanes `fill`.
    @inline(__always) static func loadPartial(_ p: UnsafePointer<Float>, _ i: Int, _ count: Int, fill: Float) -> SIMD8<Float> {
        var v = SIMD8<Float>(repeating: fill)
        for l in 0..<count { v[l] = p[i + l] }
        return v
    }
    @inline(__always) static func storePartial(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>, _ i: Int, _ count: Int) {
        for l in 0..<count { p[i + l] = v[l] }
    }

    /// Σ a[i]·b[i]: two SIMD8 accumulators (lanes i mod 16), combined, reduced by `VectorMath.sum`,
    /// then the tail added sequentially. |Δ vs scalar| ≤ ~n·2⁻²⁴·Σ|a·b| (different summation order).
    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc0 = SIMD8<Float>(repeating: 0), acc1 = SIMD8<Float>(repeating: 0)
        var i = 0
        while i + 16 <= n {
            acc0 = acc0 + load8(a, i) * load8(b, i)
            acc1 = acc1 + load8(a, i + 8) * load8(b, i + 8)
            i += 16
        }
        if i + 8 <= n { acc0 = acc0 + load8(a, i) * load8(b, i); i += 8 }
        var s = VectorMath.sum(acc0 + acc1)
        while i < n { s = s + a[i] * b[i]; i += 1 }
        return s
    }

    /// RMSNorm with the SIMD `dot` for Σx²; the scaling itself is the scalar formula lane by lane, so
    /// |Δ vs scalar| comes only from Σx² (relative ≤ (n + 8)·2⁻²⁴, tested). Vs exact: 4.6 ulp measured
    /// (scalar tier: 17.5 ulp, its sequential sum) for n ≤ 4096.
    public static func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                               out: UnsafeMutablePointer<Float>, n: Int, eps: Float) {
        let inv = 1 / (dot(x, x, n) / Float(n) + eps).squareRoot()
        var i = 0
        while i + 8 <= n { store8((load8(x, i) * inv) * load8(weight, i), out, i); i += 8 }
        while i < n { out[i] = (x[i] * inv) * weight[i]; i += 1 }
    }

    public static func rmsNormRows(_ x: UnsafeMutablePointer<Float>, weight: UnsafePointer<Float>,
                                   out: UnsafeMutablePointer<Float>, rows: Int, n: Int, eps: Float) {
        for r in 0..<rows { rmsNorm(x + r * n, weight: weight, out: out + r * n, n: n, eps: eps) }
    }

    /// a += b (bit-identical to scalar).
    public static func add(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) {
        var i = 0
        while i + 8 <= n { store8(load8(a, i) + load8(b, i), a, i); i += 8 }
        while i < n { a[i] += b[i]; i += 1 }
    }

    /// a *= s (bit-identical to scalar).
    public static func scale(_ a: UnsafeMutablePointer<Float>, _ s: Float, _ n: Int) {
        var i = 0
        while i + 8 <= n { store8(load8(a, i) * s, a, i); i += 8 }
        while i < n { a[i] *= s; i += 1 }
    }

    /// Softmax with `VectorMath.exp` (≤ 1 ulp) and an 8-lane sum; max-subtracted like the scalar
    /// tier. Per element vs exact: ≤ (8 + n + |x − max|)·2⁻²⁴ relative (tested; the |x − max| term is
    /// the f32 rounding of x − max, shared with the scalar tier); measured 66 ulp at n = 4096 with
    /// σ = 4 logits (scalar tier: 263 ulp). All −inf: zeros.
    public static func softmax(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
        let ninf = -Float.infinity
        var mv = SIMD8<Float>(repeating: ninf)
        var i = 0
        while i + 8 <= n { let v = load8(x, i); mv = mv.replacing(with: v, where: v .> mv); i += 8 }
        var m = VectorMath.max(mv)
        while i < n { if x[i] > m { m = x[i] }; i += 1 }
        if m == ninf { for j in 0..<n { x[j] = 0 }; return }
        var acc = SIMD8<Float>(repeating: 0)
        i = 0
        while i + 8 <= n {
            let e = VectorMath.exp(load8(x, i) - m)
            store8(e, x, i)
            acc = acc + e
            i += 8
        }
        if i < n {
            let e = VectorMath.exp(loadPartial(x, i, n - i, fill: ninf) - m)  // padding lanes: exp(−inf) = 0
            storePartial(e, x, i, n - i)
            acc = acc + e
        }
        scale(x, 1 / VectorMath.sum(acc), n)
    }

    /// out = gelu_tanh(gate)·up computed in the stable form x·σ(2u) = x / (1 + e^{−2u}), which equals
    /// 0.5·x·(1 + tanh u) exactly in real arithmetic; u = √(2/π)·(x + 0.044715·x³) is evaluated with
    /// the scalar tier's operation order (bit-identical u). Error vs the exact function of that u:
    /// ≤ 6 ulp relative (tested), 2.9 ulp measured, plus 2⁻¹²⁶·|x·up| absolute where e^{−2u} overflows
    /// (x < −9.9: the result, below |x·up|·2⁻¹²⁷, flushes to ±0). The scalar tier's 1 + tanh u cancels for
    /// x ≪ 0 (203 ulp relative measured) but stays within 4·2⁻²⁴·|x·up| absolute (libm tanhf ≤ 3 ulp, three
    /// roundings), so SIMD vs scalar is bounded by |Δ| ≤ 10·2⁻²⁴·|x·up| (tested; 4.5·2⁻²⁴ seen at x = 2.64).
    public static func geluTanhMul(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>,
                                   out: UnsafeMutablePointer<Float>, n: Int) {
        @inline(__always) func g(_ x: SIMD8<Float>) -> SIMD8<Float> {
            let u = ScalarKernels.geluBeta * (x + ScalarKernels.geluKappa * x * x * x)
            return x / (1 + VectorMath.exp(-2 * u))
        }
        var i = 0
        while i + 8 <= n { store8(g(load8(gate, i)) * load8(up, i), out, i); i += 8 }
        if i < n {
            let r = n - i
            storePartial(g(loadPartial(gate, i, r, fill: 0)) * loadPartial(up, i, r, fill: 0), out, i, r)
        }
    }

    /// Exact GELU: no SIMD erf yet, so this is the scalar tier's loop (bit-identical).
    public static func geluExactMul(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>,
                                    out: UnsafeMutablePointer<Float>, n: Int) {
        ScalarKernels.geluExactMul(gate, up, out: out, n: n)
    }

    /// Rotate-half RoPE, 8 pairs at a time with the scalar formula (bit-identical to scalar).
    public static func ropeRotateHalf(_ x: UnsafeMutablePointer<Float>, cos: UnsafePointer<Float>,
                                      sin: UnsafePointer<Float>, headDim d: Int) {
        let h = d / 2
        var i = 0
        while i + 8 <= h {
            let a = load8(x, i), b = load8(x, i + h), c = load8(cos, i), s = load8(sin, i)
            store8(a * c - b * s, x, i)
            store8(b * c + a * s, x, i + h)
            i += 8
        }
        while i < h {
            let a = x[i], b = x[i + h]
            x[i] = a * cos[i] - b * sin[i]
            x[i + h] = b * cos[i] + a * sin[i]
            i += 1
        }
    }

    /// Y = X·Wᵀ (+ beta·Y) with the SIMD `dot` per output.
    public static func matmulNT(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                m: Int, n: Int, k: Int, ldx: Int, ldw: Int, ldy: Int, beta: Float) {
        for i in 0..<m {
            for j in 0..<n {
                let s = dot(x + i * ldx, w + j * ldw, k)
                y[i * ldy + j] = beta == 0 ? s : s + beta * y[i * ldy + j]
            }
        }
    }

    /// Y = X·W (+ beta·Y): per row of Y, k axpy passes over W's rows (sequential over k per output,
    /// so bit-identical to the scalar tier).
    public static func matmulNN(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                m: Int, n: Int, k: Int, ldx: Int, ldw: Int, ldy: Int, beta: Float) {
        for i in 0..<m {
            let yr = y + i * ldy
            var j = 0
            while j + 8 <= n {
                var s = SIMD8<Float>(repeating: 0)
                for p in 0..<k { s = s + x[i * ldx + p] * load8(w + p * ldw, j) }
                store8(beta == 0 ? s : s + beta * load8(yr, j), yr, j)
                j += 8
            }
            while j < n {
                var s: Float = 0
                for p in 0..<k { s = s + x[i * ldx + p] * w[p * ldw + j] }
                yr[j] = beta == 0 ? s : s + beta * yr[j]
                j += 1
            }
        }
    }
}

// MARK: - Quantized kernels, SIMD tier

extension VectorKernels {
    /// Q8_0 activation quantization; bytes identical to `ScalarKernels.quantizeRowsQ8_0` for finite input.
    public static func quantizeRowsQ8_0(_ x: UnsafePointer<Float>, ldx: Int, rows: Int, k: Int,
                                        out: UnsafeMutableRawPointer) {
        let nb = k / QK.block
        for r in 0..<rows {
            for b in 0..<nb {
                let xb = x + r * ldx + b * QK.block
                let yb = out + (r * nb + b) * QK.q8Bytes
                let v0 = load8(xb, 0), v1 = load8(xb, 8), v2 = load8(xb, 16), v3 = load8(xb, 24)
                let a0 = VectorMath.abs(v0), a1 = VectorMath.abs(v1), a2 = VectorMath.abs(v2), a3 = VectorMath.abs(v3)
                let m01 = a0.replacing(with: a1, where: a1 .> a0), m23 = a2.replacing(with: a3, where: a3 .> a2)
                let m = m01.replacing(with: m23, where: m23 .> m01)
                let amax = VectorMath.max(m)
                let d = amax / 127
                let id: Float = d != 0 ? 1 / d : 0
                yb.storeBytes(of: Float16(d).bitPattern.littleEndian, as: UInt16.self)
                @inline(__always) func q(_ v: SIMD8<Float>, _ off: Int) {
                    var qi = VectorMath.roundHalfAway(v * id)
                    let hi = SIMD8<Int32>(repeating: 127), lo = SIMD8<Int32>(repeating: -127)  // vector operands:
                    qi = qi.replacing(with: hi, where: qi .> hi).replacing(with: lo, where: qi .< lo)  // no lane loop
                    yb.storeBytes(of: SIMD8<Int8>(truncatingIfNeeded: qi), toByteOffset: 2 + off, as: SIMD8<Int8>.self)
                }
                q(v0, 0); q(v1, 8); q(v2, 16); q(v3, 24)
            }
        }
    }

    /// Row dequantization (exact, bit-identical to scalar).
    public static func dequantizeRow(_ type: QuantType, _ src: UnsafeRawPointer,
                                     _ dst: UnsafeMutablePointer<Float>, count k: Int) {
        let bb = type.traits.bytesPerBlock
        for b in 0..<(k / QK.block) {
            let p = src + b * bb
            let (v0, v1, v2, v3) = dequantBlock(type, p, QK.f16(p))
            let yb = dst + b * QK.block
            store8(v0, yb, 0); store8(v1, yb, 8); store8(v2, yb, 16); store8(v3, yb, 24)
        }
    }

    /// A block's 32 signed quants as Int16 lanes, split into even- and odd-indexed elements of each
    /// 16-element half (e0 = 0, 2, …, 14; o0 = 1, 3, …, 15; e1 = 16, 18, …; o1 = 17, 19, …). This
    /// layout needs only 16-bit shifts to unpack bytes (no widening conversions, which the standard
    /// library lowers poorly on baseline x86-64).
    @usableFromInline struct Lanes16 {
        var e0, o0, e1, o1: SIMD8<Int16>
    }

    @inline(__always) static func splitBytes(_ v: SIMD8<Int16>) -> (SIMD8<Int16>, SIMD8<Int16>) {
        let eight = SIMD8<Int16>(repeating: 8)
        return ((v &<< eight) &>> eight, v &>> eight)  // sign-extended low bytes, high bytes
    }

    /// Signed quants of a Q8_0 block (activation or weight) at p.
    @inline(__always) static func lanesQ8(_ p: UnsafeRawPointer) -> Lanes16 {
        let (e0, o0) = splitBytes(p.loadUnaligned(fromByteOffset: 2, as: SIMD8<Int16>.self))
        let (e1, o1) = splitBytes(p.loadUnaligned(fromByteOffset: 18, as: SIMD8<Int16>.self))
        return Lanes16(e0: e0, o0: o0, e1: e1, o1: o1)
    }

    /// Signed quants (nibble − 8) of a Q4_0 block at p: byte j holds element j (low) and j+16 (high).
    @inline(__always) static func lanesQ4(_ p: UnsafeRawPointer) -> Lanes16 {
        let q = p.loadUnaligned(fromByteOffset: 2, as: SIMD8<UInt16>.self)
        let m = SIMD8<UInt16>(repeating: 15)
        @inline(__always) func s(_ v: SIMD8<UInt16>) -> SIMD8<Int16> { SIMD8<Int16>(truncatingIfNeeded: v & m) &- 8 }
        return Lanes16(e0: s(q), o0: s(q &>> SIMD8<UInt16>(repeating: 8)),
                       e1: s(q &>> SIMD8<UInt16>(repeating: 4)), o1: s(q &>> SIMD8<UInt16>(repeating: 12)))
    }

    @inline(__always) static func lanes(_ type: QuantType, _ p: UnsafeRawPointer) -> Lanes16 {
        switch type {
        case .q8_0: return lanesQ8(p)
        case .q4_0: return lanesQ4(p)
        default: preconditionFailure("\(type) is not a 32-value integer block type (Q8_0, Q4_0)")
        }
    }

    /// Σ of the Int16 lanes of p widened exactly to four Int32 lanes (pairs of lanes).
    @inline(__always) static func widenPairs(_ p: SIMD8<Int16>) -> SIMD4<Int32> {
        let u = unsafeBitCast(p, to: SIMD4<Int32>.self), sixteen = SIMD4<Int32>(repeating: 16)
        return ((u &<< sixteen) &>> sixteen) &+ (u &>> sixteen)
    }

    /// Exact Σ w·x of one block: Int16 products (|w·x| <= 128·128 fits), widened to Int32 before adding.
    @inline(__always) static func idot(_ w: Lanes16, _ xb: UnsafeRawPointer) -> Int32 {
        let x = lanesQ8(xb)
        let s = (widenPairs(w.e0 &* x.e0) &+ widenPairs(w.o0 &* x.o0)) &+ (widenPairs(w.e1 &* x.e1) &+ widenPairs(w.o1 &* x.o1))
        return (s[0] &+ s[2]) &+ (s[1] &+ s[3])
    }

    /// The 32 dequantized values of a block as 4 × SIMD8<Float> in element order (exact).
    @inline(__always) static func dequantBlock(_ type: QuantType, _ p: UnsafeRawPointer, _ d: Float)
        -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
        let lo: SIMD16<Int16>, hi: SIMD16<Int16>
        switch type {
        case .q8_0:
            lo = SIMD16<Int16>(truncatingIfNeeded: p.loadUnaligned(fromByteOffset: 2, as: SIMD16<Int8>.self))
            hi = SIMD16<Int16>(truncatingIfNeeded: p.loadUnaligned(fromByteOffset: 18, as: SIMD16<Int8>.self))
        case .q4_0:
            let q = SIMD16<Int16>(truncatingIfNeeded: p.loadUnaligned(fromByteOffset: 2, as: SIMD16<UInt8>.self))
            lo = (q & 15) &- 8
            hi = (q &>> 4) &- 8
        default: preconditionFailure("\(type) is not a 32-value integer block type (Q8_0, Q4_0)")
        }
        @inline(__always) func f(_ v: SIMD8<Int16>) -> SIMD8<Float> { SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: v)) * d }
        return (f(lo.lowHalf), f(lo.highHalf), f(hi.lowHalf), f(hi.highHalf))
    }

    /// Exact integer block dots (same values as `ScalarKernels.blockDots`).
    public static func blockDots(_ type: QuantType, weights w: UnsafeRawPointer, activations xq: UnsafeRawPointer,
                                 out: UnsafeMutablePointer<Int32>, blocks nb: Int) {
        let bb = type.traits.bytesPerBlock
        for b in 0..<nb { out[b] = idot(lanes(type, w + b * bb), xq + b * QK.q8Bytes) }
    }

    /// Integer path, bit-identical to `ScalarKernels.matmulQ8`: same per-block float fold, with the
    /// weight block expanded once per 4 activation rows.
    public static func matmulQ8(_ type: QuantType, weights w: UnsafeRawPointer, activations xq: UnsafeRawPointer,
                                y: UnsafeMutablePointer<Float>, ldy: Int, m: Int, n: Int, k: Int) {
        let bb = type.traits.bytesPerBlock
        let nb = k / QK.block
        let xrow = nb * QK.q8Bytes, wrow = nb * bb
        for j in 0..<n {
            let wr = w + j * wrow
            var i = 0
            while i < m {
                let mt = Swift.min(4, m - i)
                var acc = SIMD4<Float>(repeating: 0)
                for b in 0..<nb {
                    let wb = wr + b * bb
                    let wv = lanes(type, wb)
                    let dw = QK.f16(wb)
                    for r in 0..<mt {
                        let xb = xq + (i + r) * xrow + b * QK.q8Bytes
                        acc[r] = acc[r] + Float(idot(wv, xb)) * (dw * QK.f16(xb))
                    }
                }
                for r in 0..<mt { y[(i + r) * ldy + j] = acc[r] }
                i += mt
            }
        }
    }

    /// f32-activation path: exact dequantized block (4 × SIMD8) times x, 8-lane partial sums per row,
    /// reduced with `VectorMath.sum` at the end. |Δ vs scalar| ≤ ~K·2⁻²⁴·Σ|x·w| (order only).
    public static func matmulF32(_ type: QuantType, weights w: UnsafeRawPointer, x: UnsafePointer<Float>, ldx: Int,
                                 y: UnsafeMutablePointer<Float>, ldy: Int, m: Int, n: Int, k: Int) {
        let bb = type.traits.bytesPerBlock
        let nb = k / QK.block
        let wrow = nb * bb
        for j in 0..<n {
            let wr = w + j * wrow
            var i = 0
            while i < m {
                let mt = Swift.min(4, m - i)
                var tile = RowTile4(rows: mt)
                for b in 0..<nb {
                    let wb = wr + b * bb
                    let (w0, w1, w2, w3) = dequantBlock(type, wb, QK.f16(wb))
                    tile.accumulate { r, a in
                        let xb = x + (i + r) * ldx + b * QK.block
                        a = a + (load8(xb, 0) * w0 + load8(xb, 8) * w1) + (load8(xb, 16) * w2 + load8(xb, 24) * w3)
                    }
                }
                tile.store(y, row: i, column: j, ldy: ldy)
                i += mt
            }
        }
    }
}
