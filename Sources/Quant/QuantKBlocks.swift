// Q4_K, Q6_K and IQ4_NL: ggml byte layouts, exact dequantizers, and importance-weighted quantizers; plus the
// importance-weighted Q4_0 quantizer (a separate function: the Q4_0 *reference* quantizer stays byte-identical
// to ggml's and is in QuantBlocks.swift).
//
// Byte layouts (little-endian, bit-compatible with ggml-common.h; the `gguf` package dequantizes our bytes to
// exactly our values, Tests/QuantTests/QuantFixtureTests.swift):
//
//   Q4_K  256 values, 144 bytes (4.5 bits/weight):
//         [0..2) f16 d   [2..4) f16 dmin   [4..16) 8 × (6-bit scale, 6-bit min) packed   [16..144) 4-bit quants
//         sub-block j (32 values): scale sc_j, min m_j; value = (d·sc_j)·q − (dmin·m_j), q in 0...15
//         packing: j < 4: sc_j = s[j] & 63, m_j = s[j+4] & 63
//                  j ≥ 4: sc_j = (s[j+4] & 15) | (s[j-4] >> 6) << 4,  m_j = (s[j+4] >> 4) | (s[j] >> 6) << 4
//         quants: group g (64 values) = bytes 16+32g ..< 16+32g+32; byte l: low nibble value 64g+l,
//                 high nibble value 64g+32+l
//   Q6_K  256 values, 210 bytes (6.5625 bits/weight):
//         [0..128) ql (low 4 bits)   [128..192) qh (high 2 bits)   [192..208) 16 int8 scales   [208..210) f16 d
//         value v (0..<256) in half h = v / 128, i = v % 128: low 4 bits = ql[64h + i % 64] nibble (i < 64 ? low
//         : high), high 2 bits = qh[32h + i % 32] >> (2·(i / 32)) & 3; q = (low | high << 4) − 32 in −32...31;
//         value = (d·scale[v / 16])·q
//   IQ4_NL 32 values, 18 bytes (4.5 bits/weight): f16 d, then 16 bytes of 4-bit indices with Q4_0's nibble order
//         (byte j: element j low, element j + 16 high); value = d·kIQ4NL[index]
//   Q5_0  32 values, 22 bytes (5.5 bits/weight): f16 d, u32 qh (little-endian; bit j = bit 4 of element j's
//         quant), 16 bytes of low nibbles with Q4_0's order; q = (nibble | bit << 4) in 0...31,
//         value = (q − 16)·d. llama.cpp's Q4_K_M files use it for rows that are not whole 256-blocks.
//
// Dequantization is computed in f32 exactly as ggml / gguf do it (products rounded separately, no FMA):
// Q4_K (d·sc)·q − (dmin·m), Q6_K (d·sc)·q, IQ4_NL d·k, Q5_0 d·(q − 16).
//
// Quantizers (own design; the objective is the issue's: minimise Σ wⱼ (xⱼ − x̂ⱼ)² per block):
//   w = the importance vector (an imatrix column: mean squared input activation of that input channel) when
//   given, else the default wⱼ = σ² + xⱼ² with σ² the block's mean square (large weights matter more, but every
//   weight keeps a floor). Every quantizer is deterministic.
//   - symmetric grids (Q4_0 −8…7, Q6_K sub-blocks −32…31, IQ4_NL's table): the extreme element is mapped to
//     a range of candidate grid positions on either end of the grid; for each candidate scale the quants are the
//     nearest grid points and the scale is then refitted by weighted least squares, s = Σwxq / Σwq², the quants
//     re-assigned with the f16-rounded scale; the candidate with the smallest weighted error wins (Q4_0 ±0.6 grid steps, Q6_K ±0.6, IQ4_NL ±7 table units).
//   - Q4_K sub-blocks (asymmetric, value = s·q − m): candidate ranges [min, max] scaled by 15 ± 0.9, quants by
//     rounding, then a weighted least-squares fit of (s, m) (m ≥ 0); the sub-block scales and mins are then
//     quantized to 6 bits against the super-block's d and dmin, with a ±1 search per sub-block on the stored
//     integers, judged by the same weighted error.

import Foundation

/// Geometry of the K-quant and IQ4_NL blocks.
public enum KQ {
    public static let superBlock = 256
    public static let q4kBytes = 144
    public static let q6kBytes = 210
    public static let iq4Block = 32
    public static let iq4nlBytes = 18
    public static let q5_0Bytes = 22
    /// ggml's `kvalues_iq4nl`: the 16 non-linear levels of IQ4_NL (and IQ4_XS), ascending.
    public static let iq4nlLevels: [Int8] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]
}

@inline(__always) private func loadF16(_ p: UnsafeRawPointer, _ off: Int) -> Float {
    Float(Float16(bitPattern: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: off, as: UInt16.self))))
}

@inline(__always) private func storeF16(_ p: UnsafeMutableRawPointer, _ off: Int, _ v: Float) {
    p.storeBytes(of: Float16(v).bitPattern.littleEndian, toByteOffset: off, as: UInt16.self)
}

/// The f32 value an f32 scale has after the f16 round trip of the file.
@inline(__always) private func viaF16(_ v: Float) -> Float { Float(Float16(v)) }

/// Default per-element weights of one block when no importance is given: σ² + x², σ² = mean(x²).
@inline(__always) private func blockWeights(_ x: UnsafePointer<Float>, _ imp: UnsafePointer<Float>?, _ n: Int,
                                            _ w: UnsafeMutablePointer<Float>) {
    if let imp {
        for j in 0..<n { w[j] = Swift.max(imp[j], 0) }
        // An all-zero importance block (a channel never active) degenerates to plain least squares.
        var s: Float = 0
        for j in 0..<n { s += w[j] }
        if s > 0 { return }
        for j in 0..<n { w[j] = 1 }
        return
    }
    var s2: Float = 0
    for j in 0..<n { s2 += x[j] * x[j] }
    let sigma2 = s2 / Float(n)
    for j in 0..<n { w[j] = sigma2 + x[j] * x[j] }
    if sigma2 == 0 { for j in 0..<n { w[j] = 1 } }
}

// MARK: - Symmetric grid search (Q4_0, Q6_K sub-blocks, IQ4_NL)

/// A sorted grid of levels; `nearest(v)` returns the index of the level nearest to v (ties to the lower).
struct Grid {
    let levels: [Float]
    let mids: [Float]
    /// The first level when the levels are consecutive integers (Q4_0, Q5_0, Q6_K): then `nearest` is
    /// arithmetic instead of a search.
    let uniformFirst: Float?
    init(_ levels: [Float]) {
        self.levels = levels
        mids = (0..<(levels.count - 1)).map { (levels[$0] + levels[$0 + 1]) / 2 }
        let consecutive = levels.indices.dropFirst().allSatisfy { levels[$0] == levels[$0 - 1] + 1 } && levels[0] == levels[0].rounded()
        uniformFirst = consecutive ? levels[0] : nil
    }
    /// Index of the level nearest to v; a tie (v exactly between two levels) and NaN go to the lower index.
    @inline(__always) func nearest(_ v: Float) -> Int {
        if let f = uniformFirst { return Self.nearestUniform(v, first: f, count: levels.count) }
        return nearestSearch(v)
    }
    /// The definition: binary search over the midpoints.
    @inline(__always) func nearestSearch(_ v: Float) -> Int {
        var lo = 0, hi = mids.count  // answer in lo...hi
        while lo < hi {
            let m = (lo + hi) >> 1
            if v > mids[m] { lo = m + 1 } else { hi = m }
        }
        return lo
    }
    /// Levels first, first + 1, …: the same answer as the search (ties down, NaN → 0). ⌊v − first + ½⌋
    /// clamped to 0..<count, then checked against the exact midpoints first + k ± ½ (ties, and the
    /// subtraction rounding onto a midpoint, are off by one; one step corrects them).
    @inline(__always) static func nearestUniform(_ v: Float, first: Float, count: Int) -> Int {
        guard v > first else { return 0 }  // also NaN
        let t = Swift.min(v - first, Float(count))  // in (0, count]: the truncation below is a plain conversion
        var k = Swift.min(Int(t + 0.5), count - 1)  // nearest, ties up (fixed below), no libm call
        if k > 0 && !(v > first + Float(k) - 0.5) {
            k -= 1
        } else if k < count - 1 && v > first + Float(k) + 0.5 {
            k += 1
        }
        return k
    }
}

private let gridQ4_0 = Grid((-8...7).map(Float.init))
private let gridQ6 = Grid((-32...31).map(Float.init))
private let gridIQ4 = Grid(KQ.iq4nlLevels.map(Float.init))
private let gridQ5_0 = Grid((-16...15).map(Float.init))

/// Best scale for x ≈ s·level[q] over n elements with weights w; fills q (level indices). Returns s
/// (0 for an all-zero block). `steps` candidate positions per grid end.
private func searchSymmetric(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ n: Int, grid: Grid, steps: Int, stepSize: Float = 0.1,
                             q: UnsafeMutablePointer<UInt8>, roundScale: (Float) -> Float) -> Float {
    var amax: Float = 0, m: Float = 0
    for j in 0..<n where abs(x[j]) > amax { amax = abs(x[j]); m = x[j] }
    if amax == 0 {
        let z = grid.nearest(0)
        for j in 0..<n { q[j] = UInt8(z) }
        return 0
    }
    let lo = grid.levels.first!, hi = grid.levels.last!
    let uniform = grid.uniformFirst
    @inline(__always) func level(_ k: Int) -> Float { uniform.map { $0 + Float(k) } ?? grid.levels[k] }
    var bestErr = Float.infinity, bestS: Float = 0
    return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: n) { tmpBuf -> Float in
    let tmp = tmpBuf.baseAddress!
    func evaluate(_ s0: Float) {
        guard s0.isFinite, s0 != 0 else { return }
        var s = s0
        for _ in 0..<1 {
            let inv = 1 / s
            var sxq: Float = 0, sqq: Float = 0
            for j in 0..<n {
                let k = grid.nearest(x[j] * inv)
                tmp[j] = UInt8(k)
                let l = level(k)
                sxq += w[j] * x[j] * l
                sqq += w[j] * l * l
            }
            guard sqq > 0, sxq != 0 else { return }
            s = sxq / sqq
        }
        s = roundScale(s)
        guard s.isFinite, s != 0 else { return }
        // Final assignment with the stored scale, and its weighted error.
        let inv = 1 / s
        var err: Float = 0
        for j in 0..<n {
            let k = grid.nearest(x[j] * inv)
            tmp[j] = UInt8(k)
            let e = x[j] - s * level(k)
            err += w[j] * e * e
        }
        if err < bestErr {
            bestErr = err
            bestS = s
            for j in 0..<n { q[j] = tmp[j] }
        }
    }
    // Map the extreme element m onto either end of the grid, ± a few steps inside / outside.
    for t in -steps...steps {
        let f = Float(t) * stepSize
        evaluate(m / (lo + f * (lo < 0 ? -1 : 1)))
        evaluate(m / (hi - f))
    }
    if bestErr == .infinity {  // degenerate: fall back to mapping amax to the largest level
        let s = roundScale(m / lo)
        let inv = s != 0 ? 1 / s : 0
        for j in 0..<n { q[j] = UInt8(grid.nearest(x[j] * inv)) }
        return s
    }
    return bestS
    }
}

// MARK: - Q4_0 (importance-weighted; not the reference quantizer)

func quantizeRowQ4_0Importance(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ n: Int, _ imp: UnsafePointer<Float>?) {
    precondition(n % 32 == 0, "quantizeRowQ4_0Importance: \(n) is not a multiple of 32")
    var w = [Float](repeating: 0, count: 32)
    var q = [UInt8](repeating: 0, count: 32)
    for b in 0..<(n / 32) {
        let xb = x + 32 * b, yb = y + 18 * b
        w.withUnsafeMutableBufferPointer { blockWeights(xb, imp.map { $0 + 32 * b }, 32, $0.baseAddress!) }
        let s = w.withUnsafeBufferPointer { wp in
            q.withUnsafeMutableBufferPointer { searchSymmetric(xb, wp.baseAddress!, 32, grid: gridQ4_0, steps: 6, q: $0.baseAddress!, roundScale: viaF16) }
        }
        storeF16(yb, 0, s)
        // Level index k ↔ nibble k (level k − 8).
        for j in 0..<16 { yb.storeBytes(of: q[j] | (q[j + 16] << 4), toByteOffset: 2 + j, as: UInt8.self) }
    }
}

// MARK: - Q5_0

/// Pack 32 grid indices (0...31 = q) into one Q5_0 block after its f16 scale.
@inline(__always) private func packQ5_0(_ q: UnsafePointer<UInt8>, _ yb: UnsafeMutableRawPointer) {
    var qh: UInt32 = 0
    for j in 0..<32 { qh |= UInt32((q[j] >> 4) & 1) << UInt32(j) }
    yb.storeBytes(of: qh.littleEndian, toByteOffset: 2, as: UInt32.self)
    for j in 0..<16 { yb.storeBytes(of: (q[j] & 15) | ((q[j + 16] & 15) << 4), toByteOffset: 6 + j, as: UInt8.self) }
}

/// ggml's `quantize_row_q5_0_ref` (byte-identical to `gguf.quants.quantize(x, Q5_0)`): m = the first element of
/// largest |x| (sign kept), d = m / −16, q = min(31, trunc(x/d + 16.5)).
func quantizeRowQ5_0Reference(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ n: Int) {
    precondition(n % 32 == 0, "quantizeRowQ5_0Reference: \(n) is not a multiple of 32")
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { qb in
        let q = qb.baseAddress!
        for b in 0..<(n / 32) {
            let xb = x + 32 * b, yb = y + KQ.q5_0Bytes * b
            var amax = abs(xb[0]), m = xb[0]
            for j in 1..<32 where abs(xb[j]) > amax { amax = abs(xb[j]); m = xb[j] }
            let d = m / -16
            let id: Float = d != 0 ? 1 / d : 0
            for j in 0..<32 {
                let v = xb[j] * id + 16.5
                q[j] = v.isNaN ? 0 : UInt8(Swift.max(0, Swift.min(31, v.rounded(.towardZero))))
            }
            storeF16(yb, 0, d)
            packQ5_0(q, yb)
        }
    }
}

/// Importance-weighted Q5_0 (the symmetric grid search of Q4_0 on −16…15).
func quantizeRowQ5_0Importance(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ n: Int, _ imp: UnsafePointer<Float>?) {
    precondition(n % 32 == 0, "quantizeRowQ5_0Importance: \(n) is not a multiple of 32")
    var w = [Float](repeating: 0, count: 32)
    var q = [UInt8](repeating: 0, count: 32)
    for b in 0..<(n / 32) {
        let xb = x + 32 * b, yb = y + KQ.q5_0Bytes * b
        w.withUnsafeMutableBufferPointer { blockWeights(xb, imp.map { $0 + 32 * b }, 32, $0.baseAddress!) }
        let s = w.withUnsafeBufferPointer { wp in
            q.withUnsafeMutableBufferPointer { searchSymmetric(xb, wp.baseAddress!, 32, grid: gridQ5_0, steps: 6, q: $0.baseAddress!, roundScale: viaF16) }
        }
        storeF16(yb, 0, s)
        q.withUnsafeBufferPointer { packQ5_0($0.baseAddress!, yb) }
    }
}

func dequantizeRowQ5_0(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    precondition(n % 32 == 0, "dequantizeRowQ5_0: \(n) is not a multiple of 32")
    for b in 0..<(n / 32) {
        let p = x + KQ.q5_0Bytes * b, yb = y + 32 * b
        let d = loadF16(p, 0)
        let qh = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
        for j in 0..<16 {
            let byte = p.load(fromByteOffset: 6 + j, as: UInt8.self)
            let q0 = Int(byte & 15) | Int((qh >> UInt32(j)) & 1) << 4
            let q1 = Int(byte >> 4) | Int((qh >> UInt32(j + 16)) & 1) << 4
            yb[j] = d * Float(q0 - 16)
            yb[j + 16] = d * Float(q1 - 16)
        }
    }
}

// MARK: - IQ4_NL

func quantizeRowIQ4_NL(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ n: Int, _ imp: UnsafePointer<Float>?) {
    precondition(n % 32 == 0, "quantizeRowIQ4_NL: \(n) is not a multiple of 32")
    var w = [Float](repeating: 0, count: 32)
    var q = [UInt8](repeating: 0, count: 32)
    for b in 0..<(n / 32) {
        let xb = x + 32 * b, yb = y + KQ.iq4nlBytes * b
        w.withUnsafeMutableBufferPointer { blockWeights(xb, imp.map { $0 + 32 * b }, 32, $0.baseAddress!) }
        let s = w.withUnsafeBufferPointer { wp in
            q.withUnsafeMutableBufferPointer { searchSymmetric(xb, wp.baseAddress!, 32, grid: gridIQ4, steps: 7, stepSize: 1, q: $0.baseAddress!, roundScale: viaF16) }
        }
        storeF16(yb, 0, s)
        for j in 0..<16 { yb.storeBytes(of: q[j] | (q[j + 16] << 4), toByteOffset: 2 + j, as: UInt8.self) }
    }
}

func dequantizeRowIQ4_NL(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    precondition(n % 32 == 0, "dequantizeRowIQ4_NL: \(n) is not a multiple of 32")
    KQ.iq4nlLevels.withUnsafeBufferPointer { lv in
        for b in 0..<(n / 32) {
            let p = x + KQ.iq4nlBytes * b, yb = y + 32 * b
            let d = loadF16(p, 0)
            for j in 0..<16 {
                let byte = p.load(fromByteOffset: 2 + j, as: UInt8.self)
                yb[j] = d * Float(lv[Int(byte & 15)])
                yb[j + 16] = d * Float(lv[Int(byte >> 4)])
            }
        }
    }
}

// MARK: - Q6_K

func quantizeRowQ6_K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ n: Int, _ imp: UnsafePointer<Float>?) {
    precondition(n % KQ.superBlock == 0, "quantizeRowQ6_K: \(n) is not a multiple of 256")
    var w = [Float](repeating: 0, count: 256)
    var q = [UInt8](repeating: 0, count: 256)   // grid index 0..63 = q + 32
    var scales = [Float](repeating: 0, count: 16)
    for sb in 0..<(n / 256) {
        let xs = x + 256 * sb, ys = y + KQ.q6kBytes * sb
        w.withUnsafeMutableBufferPointer { wp in
            for j in 0..<16 { blockWeights(xs + 16 * j, imp.map { $0 + 256 * sb + 16 * j }, 16, wp.baseAddress! + 16 * j) }
        }
        // Float scale per sub-block of 16.
        w.withUnsafeBufferPointer { wp in
            q.withUnsafeMutableBufferPointer { qp in
                for j in 0..<16 {
                    scales[j] = searchSymmetric(xs + 16 * j, wp.baseAddress! + 16 * j, 16, grid: gridQ6, steps: 6,
                                                q: qp.baseAddress! + 16 * j, roundScale: { $0 })
                }
            }
        }
        // Super-block scale: the sub-block scale of largest magnitude maps to int8 −128 (sign kept).
        var smax: Float = 0, sm: Float = 0
        for j in 0..<16 where abs(scales[j]) > smax { smax = abs(scales[j]); sm = scales[j] }
        var sc = [Int8](repeating: 0, count: 16)
        var d: Float = 0
        if smax > 0 {
            d = viaF16(sm / -128)
            if d == 0 || !d.isFinite { d = 0 }
        }
        if d != 0 {
            for j in 0..<16 {
                let xb = xs + 16 * j
                let r = Int((scales[j] / d).rounded())
                var bestErr = Float.infinity, bestSc = 0
                var bestQ = [UInt8](repeating: 32, count: 16)
                var tq = [UInt8](repeating: 32, count: 16)
                for c in (r - 1)...(r + 1) where c >= -128 && c <= 127 && c != 0 {
                    let dl = d * Float(c)
                    let inv = 1 / dl
                    var err: Float = 0
                    for i in 0..<16 {
                        let k = gridQ6.nearest(xb[i] * inv)
                        tq[i] = UInt8(k)
                        let e = xb[i] - dl * Float(k - 32)
                        err += w[16 * j + i] * e * e
                    }
                    if err < bestErr { bestErr = err; bestSc = c; bestQ = tq }
                }
                if bestErr == .infinity { bestSc = 0; bestQ = [UInt8](repeating: 32, count: 16) }
                sc[j] = Int8(bestSc)
                for i in 0..<16 { q[16 * j + i] = bestQ[i] }
            }
        } else {
            for i in 0..<256 { q[i] = 32 }
        }
        // Pack.
        for i in 0..<192 { ys.storeBytes(of: UInt8(0), toByteOffset: i, as: UInt8.self) }
        for v in 0..<256 {
            let h = v / 128, i = v % 128
            let qv = q[v]
            let lo = qv & 15, hi = qv >> 4
            let lOff = 64 * h + i % 64
            let old = ys.load(fromByteOffset: lOff, as: UInt8.self)
            ys.storeBytes(of: old | (i < 64 ? lo : lo << 4), toByteOffset: lOff, as: UInt8.self)
            let hOff = 128 + 32 * h + i % 32
            let oh = ys.load(fromByteOffset: hOff, as: UInt8.self)
            ys.storeBytes(of: oh | (hi << UInt8(2 * (i / 32))), toByteOffset: hOff, as: UInt8.self)
        }
        for j in 0..<16 { ys.storeBytes(of: sc[j], toByteOffset: 192 + j, as: Int8.self) }
        storeF16(ys, 208, d)
    }
}

func dequantizeRowQ6_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    precondition(n % KQ.superBlock == 0, "dequantizeRowQ6_K: \(n) is not a multiple of 256")
    for sb in 0..<(n / 256) {
        let p = x + KQ.q6kBytes * sb, ys = y + 256 * sb
        let d = loadF16(p, 208)
        for v in 0..<256 {
            let h = v / 128, i = v % 128
            let l = p.load(fromByteOffset: 64 * h + i % 64, as: UInt8.self)
            let lo = i < 64 ? l & 15 : l >> 4
            let hi = (p.load(fromByteOffset: 128 + 32 * h + i % 32, as: UInt8.self) >> UInt8(2 * (i / 32))) & 3
            let qv = Int(lo | hi << 4) - 32
            let dl = d * Float(p.load(fromByteOffset: 192 + v / 16, as: Int8.self))
            ys[v] = dl * Float(qv)
        }
    }
}

// MARK: - Q4_K

/// Weighted least-squares fit of x ≈ s·q − m (m ≥ 0) for fixed q; returns (s, m, weighted error).
@inline(__always) private func fitAffine(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ q: UnsafePointer<UInt8>,
                                         _ n: Int) -> (Float, Float, Float) {
    var sw: Float = 0, sq: Float = 0, sqq: Float = 0, sx: Float = 0, sqx: Float = 0
    for j in 0..<n {
        let qf = Float(q[j])
        sw += w[j]; sq += w[j] * qf; sqq += w[j] * qf * qf; sx += w[j] * x[j]; sqx += w[j] * qf * x[j]
    }
    let det = sw * sqq - sq * sq
    var s: Float, b: Float
    if det > 0 {
        s = (sw * sqx - sq * sx) / det
        b = (sqq * sx - sq * sqx) / det
    } else { s = 0; b = sw > 0 ? sx / sw : 0 }
    if b > 0 {  // the offset must be −m with m ≥ 0
        b = 0
        s = sqq > 0 ? sqx / sqq : 0
    }
    if s < 0 { s = 0; b = Swift.min(0, sw > 0 ? sx / sw : 0) }
    var err: Float = 0
    for j in 0..<n { let e = x[j] - (s * Float(q[j]) + b); err += w[j] * e * e }
    return (s, -b, err)
}

func quantizeRowQ4_K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, _ n: Int, _ imp: UnsafePointer<Float>?) {
    precondition(n % KQ.superBlock == 0, "quantizeRowQ4_K: \(n) is not a multiple of 256")
    var w = [Float](repeating: 0, count: 256)
    var q = [UInt8](repeating: 0, count: 256)
    var tq = [UInt8](repeating: 0, count: 32)
    var subS = [Float](repeating: 0, count: 8), subM = [Float](repeating: 0, count: 8)
    for sb in 0..<(n / 256) {
        let xs = x + 256 * sb, ys = y + KQ.q4kBytes * sb
        w.withUnsafeMutableBufferPointer { wp in
            for j in 0..<8 { blockWeights(xs + 32 * j, imp.map { $0 + 256 * sb + 32 * j }, 32, wp.baseAddress! + 32 * j) }
        }
        // 1. Float (scale, min) per sub-block.
        w.withUnsafeBufferPointer { wp in
            tq.withUnsafeMutableBufferPointer { tqp in
                for j in 0..<8 {
                    let xb = xs + 32 * j, wb = wp.baseAddress! + 32 * j
                    var lo: Float = 0, hi: Float = xb[0]
                    for i in 0..<32 { lo = Swift.min(lo, xb[i]); hi = Swift.max(hi, xb[i]) }
                    if hi <= lo { subS[j] = 0; subM[j] = -lo; continue }
                    var bestErr = Float.infinity, bs: Float = 0, bm: Float = -lo
                    for t in -6...6 {
                        let iscale = (15 + Float(t) * 0.15) / (hi - lo)
                        for i in 0..<32 {
                            let v = ((xb[i] - lo) * iscale).rounded()
                            tqp[i] = UInt8(Swift.max(0, Swift.min(15, v)))
                        }
                        let (s, m, err) = fitAffine(xb, wb, tqp.baseAddress!, 32)
                        if err < bestErr { bestErr = err; bs = s; bm = m }
                    }
                    subS[j] = bs; subM[j] = bm
                }
            }
        }
        // 2. Super-block d, dmin; 6-bit integers with a ±1 search per sub-block.
        let maxS = subS.max()!, maxM = subM.max()!
        let d = maxS > 0 ? viaF16(maxS / 63) : 0
        let dmin = maxM > 0 ? viaF16(maxM / 63) : 0
        var sc = [UInt8](repeating: 0, count: 8), mn = [UInt8](repeating: 0, count: 8)
        for j in 0..<8 {
            let xb = xs + 32 * j
            let rs = d > 0 ? Int((subS[j] / d).rounded()) : 0
            let rm = dmin > 0 ? Int((subM[j] / dmin).rounded()) : 0
            var bestErr = Float.infinity
            var bestQ = [UInt8](repeating: 0, count: 32)
            for cs in (rs - 1)...(rs + 1) where cs >= 0 && cs <= 63 {
                for cm in (rm - 1)...(rm + 1) where cm >= 0 && cm <= 63 {
                    let dl = d * Float(cs), ml = dmin * Float(cm)
                    let inv: Float = dl > 0 ? 1 / dl : 0
                    var err: Float = 0
                    for i in 0..<32 {
                        let v = ((xb[i] + ml) * inv).rounded()
                        let qi = UInt8(Swift.max(0, Swift.min(15, v)))
                        tq[i] = qi
                        let e = xb[i] - (dl * Float(qi) - ml)
                        err += w[32 * j + i] * e * e
                    }
                    if err < bestErr { bestErr = err; sc[j] = UInt8(cs); mn[j] = UInt8(cm); bestQ = tq }
                }
            }
            for i in 0..<32 { q[32 * j + i] = bestQ[i] }
        }
        // 3. Pack.
        storeF16(ys, 0, d)
        storeF16(ys, 2, dmin)
        var s = [UInt8](repeating: 0, count: 12)
        for j in 0..<4 {
            s[j] = sc[j] | ((sc[j + 4] >> 4) << 6)
            s[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6)
            s[j + 8] = (sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4)
        }
        for i in 0..<12 { ys.storeBytes(of: s[i], toByteOffset: 4 + i, as: UInt8.self) }
        for g in 0..<4 {
            for l in 0..<32 {
                ys.storeBytes(of: q[64 * g + l] | (q[64 * g + 32 + l] << 4), toByteOffset: 16 + 32 * g + l, as: UInt8.self)
            }
        }
    }
}

/// The 6-bit (scale, min) of sub-block j (0..<8) from the 12 packed bytes at p.
@inline(__always) func q4kScaleMin(_ p: UnsafeRawPointer, _ j: Int) -> (UInt8, UInt8) {
    @inline(__always) func b(_ i: Int) -> UInt8 { p.load(fromByteOffset: i, as: UInt8.self) }
    if j < 4 { return (b(j) & 63, b(j + 4) & 63) }
    return ((b(j + 4) & 15) | ((b(j - 4) >> 6) << 4), (b(j + 4) >> 4) | ((b(j) >> 6) << 4))
}

func dequantizeRowQ4_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    precondition(n % KQ.superBlock == 0, "dequantizeRowQ4_K: \(n) is not a multiple of 256")
    for sb in 0..<(n / 256) {
        let p = x + KQ.q4kBytes * sb, ys = y + 256 * sb
        let d = loadF16(p, 0), dmin = loadF16(p, 2)
        for j in 0..<8 {
            let (sc, m) = q4kScaleMin(p + 4, j)
            let dl = d * Float(sc), ml = dmin * Float(m)
            let g = j / 2, high = j % 2 == 1
            for l in 0..<32 {
                let byte = p.load(fromByteOffset: 16 + 32 * g + l, as: UInt8.self)
                let qv = high ? byte >> 4 : byte & 15
                ys[32 * j + l] = dl * Float(qv) - ml
            }
        }
    }
}

// MARK: - Checked API

extension QuantType {
    /// Quantize rows with the type's importance-weighted quantizer (the reference quantizer for types without
    /// one). `importance`, if given, has `width` entries (one per input channel / column) and is applied to
    /// every row. Same checks as `quantizeRows`.
    public func quantizeRowsImportance(_ src: UnsafeBufferPointer<Float>, width: Int, importance: UnsafePointer<Float>?,
                                       into dst: UnsafeMutableRawBufferPointer) throws {
        let t = traits
        guard let f = t.quantizeRowImportance else {
            try quantizeRows(src, width: width, into: dst)
            return
        }
        let rowBytes = try rowByteCount(width: width)
        guard src.count % width == 0 else { throw QuantError.countNotMultipleOfWidth(type: self, count: src.count, width: width) }
        let rows = src.count / width
        guard dst.count == rows * rowBytes else {
            throw QuantError.bufferSizeMismatch(type: self, expectedBytes: rows * rowBytes, gotBytes: dst.count)
        }
        for i in 0..<src.count where !src[i].isFinite {
            throw QuantError.nonFiniteValue(type: self, index: i, value: src[i])
        }
        for r in 0..<rows { f(src.baseAddress! + r * width, dst.baseAddress! + r * rowBytes, width, importance) }
    }

    /// Array convenience of `quantizeRowsImportance`.
    public func quantizeImportance(_ values: [Float], width: Int, importance: [Float]? = nil) throws -> [UInt8] {
        if let imp = importance, imp.count != width {
            throw QuantError.bufferSizeMismatch(type: self, expectedBytes: width * 4, gotBytes: imp.count * 4)
        }
        let rowBytes = try rowByteCount(width: width)
        var out = [UInt8](repeating: 0, count: values.count / width * rowBytes)
        try values.withUnsafeBufferPointer { src in
            try out.withUnsafeMutableBytes { dst in
                if let imp = importance {
                    try imp.withUnsafeBufferPointer { try quantizeRowsImportance(src, width: width, importance: $0.baseAddress, into: dst) }
                } else {
                    try quantizeRowsImportance(src, width: width, importance: nil, into: dst)
                }
            }
        }
        return out
    }
}
