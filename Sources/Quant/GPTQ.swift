// Error-feedback quantization with a layer Hessian (GPTQ, Frantar et al. 2022, in its block form), for every
// block type of the table.
//
// For a linear layer y = W x with calibration inputs X, the output error of a quantized Ŵ is
// tr((W − Ŵ) H (W − Ŵ)ᵀ) with H = E[x xᵀ] (the imatrix is diag H). The quantizers of QuantKBlocks.swift
// minimise each block's error with a diagonal weighting only; GPTQ also lets later columns absorb the error of
// earlier ones through the off-diagonal correlations of H: columns are quantized group by group (one type
// block: 32 or 256 values of every row), and after each group S the not-yet-quantized columns R are updated by
// the optimal compensation  W_R −= (W_S − Ŵ_S) · U_SS⁻¹ · U_SR,  where U is the upper Cholesky factor of H⁻¹
// (H⁻¹ = UᵀU). Inside a group the type's importance-weighted search picks the block parameters and quants,
// weighting column j by diag((U_SSᵀU_SS)⁻¹)_j: the variance of input j that the later columns cannot explain, the
// diagonal of the group's loss once they compensate (for an uncorrelated H it is the imatrix column).
//
// Rows are independent given U, so the work is parallel over rows. Deterministic (no thread-count dependence).
// U is computed in Double: with V = J·chol(J H J)·J (J reverses the index order), V is upper triangular with
// H = V Vᵀ, so U = V⁻¹. H is damped first: H + λ·mean(diag H)·I (λ = 0.01 as in GPTQ), and channels never
// active (H_jj = 0) get diag 1, so H is positive definite even with fewer calibration tokens than columns.

import Foundation

public enum GPTQ {
    public enum Failure: Error, CustomStringConvertible {
        case notPositiveDefinite(pivot: Int)
        case shape(String)
        public var description: String {
            switch self {
            case .notPositiveDefinite(let p): return "GPTQ: the damped Hessian is not positive definite (pivot \(p))"
            case .shape(let s): return "GPTQ: \(s)"
            }
        }
    }

    /// The upper Cholesky factor U of (H + damping)⁻¹ (row-major n×n, f32), from a symmetric n×n H (row-major).
    public static func inverseCholeskyUpper(_ h: [Float], n: Int, damp: Double = 0.01) throws -> [Float] {
        guard h.count == n * n, n > 0 else { throw Failure.shape("Hessian has \(h.count) values, expected \(n)×\(n)") }
        var meanDiag = 0.0
        for i in 0..<n { meanDiag += Double(h[i * n + i]) }
        meanDiag /= Double(n)
        if !(meanDiag > 0) { meanDiag = 1 }
        let lambda = damp * meanDiag
        // A = J H J (reversed order), damped; lower Cholesky in place (row-major, lower triangle used).
        var a = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            let ri = n - 1 - i
            for j in 0...i {
                var v = Double(h[ri * n + (n - 1 - j)])
                if i == j { v = (v > 0 ? v : (v == 0 ? 1 : v)) + lambda }
                a[i * n + j] = v
            }
        }
        var bad = -1
        a.withUnsafeMutableBufferPointer { ap in
            let p = ap.baseAddress!
            for j in 0..<n {
                let rj = p + j * n
                var s = rj[j]
                for k in 0..<j { s -= rj[k] * rj[k] }
                guard s > 0, s.isFinite else { bad = j; return }
                let d = s.squareRoot()
                rj[j] = d
                let inv = 1 / d
                let pAddr = Int(bitPattern: p)
                let rows = n - j - 1
                let chunk = 64
                DispatchQueue.concurrentPerform(iterations: (rows + chunk - 1) / chunk) { c in
                    let p = UnsafeMutablePointer<Double>(bitPattern: pAddr)!
                    let rj = p + j * n
                    for i in (j + 1 + c * chunk)..<min(n, j + 1 + (c + 1) * chunk) {
                        let ri = p + i * n
                        var t = ri[j]
                        for k in 0..<j { t -= ri[k] * rj[k] }
                        ri[j] = t * inv
                    }
                }
            }
        }
        if bad >= 0 { throw Failure.notPositiveDefinite(pivot: n - 1 - bad) }
        // M = L⁻¹ (lower), column by column (columns independent): M[c][c] = 1/L[c][c],
        // M[i][c] = −(Σ_{k=c}^{i−1} L[i][k]·M[k][c]) / L[i][i]. Stored transposed (mt[c][i]) for contiguous access.
        var mt = [Double](repeating: 0, count: n * n)
        a.withUnsafeBufferPointer { lp in
            mt.withUnsafeMutableBufferPointer { mp in
                let lAddr = Int(bitPattern: lp.baseAddress!), mAddr = Int(bitPattern: mp.baseAddress!)
                DispatchQueue.concurrentPerform(iterations: n) { c in
                    let l = UnsafePointer<Double>(bitPattern: lAddr)!
                    let col = UnsafeMutablePointer<Double>(bitPattern: mAddr)! + c * n
                    col[c] = 1 / l[c * n + c]
                    for i in (c + 1)..<max(n, c + 1) where i < n {
                        let li = l + i * n
                        var t = 0.0
                        for k in c..<i { t += li[k] * col[k] }
                        col[i] = -t / li[i]
                    }
                }
            }
        }
        // U = V⁻¹ = J M J: U[i][j] = M[n−1−i][n−1−j] = mt[n−1−j][n−1−i].
        var u = [Float](repeating: 0, count: n * n)
        for i in 0..<n {
            for j in i..<n { u[i * n + j] = Float(mt[(n - 1 - j) * n + (n - 1 - i)]) }
        }
        return u
    }

    /// Quantize `rows` rows of `cols` values (row-major f32 `w`, clobbered: it holds the compensated values on
    /// return) into `dst` (rows of `type`), with the upper factor `u` (cols×cols) from `inverseCholeskyUpper`.
    public static func quantize(_ w: UnsafeMutablePointer<Float>, rows: Int, cols: Int, type: QuantType, u: [Float],
                                into dst: UnsafeMutableRawPointer) throws {
        let t = type.traits
        guard let f = t.quantizeRowImportance, t.isQuantized else { throw Failure.shape("\(t.name) has no importance-weighted quantizer") }
        guard cols % t.blockSize == 0, cols > 0 else { throw Failure.shape("\(cols) columns are not whole \(t.name) blocks") }
        guard u.count == cols * cols else { throw Failure.shape("factor has \(u.count) values, expected \(cols)×\(cols)") }
        let b = t.blockSize, bb = t.bytesPerBlock, groups = cols / b
        let rowBytes = groups * bb
        // U_SS⁻¹ for each group is upper triangular; precompute it (b×b per group).
        var uinv = [Float](repeating: 0, count: groups * b * b)
        for g in 0..<groups {
            let o = g * b
            for c in 0..<b {  // column c of the inverse of the upper block: solve U_SS x = e_c
                var x = [Double](repeating: 0, count: b)
                for i in stride(from: c, through: 0, by: -1) {
                    var s = i == c ? 1.0 : 0.0
                    for k in (i + 1)..<max(b, i + 1) where k <= c { s -= Double(u[(o + i) * cols + o + k]) * x[k] }
                    x[i] = s / Double(u[(o + i) * cols + o + i])
                }
                for i in 0...c { uinv[g * b * b + i * b + c] = Float(x[i]) }
            }
        }
        // Per-column weights of the in-group search: the diagonal of (U_SSᵀU_SS)⁻¹ = U_SS⁻¹U_SS⁻ᵀ, i.e. the variance
        // of x_j left once the later groups' inputs have compensated (the Schur complement of H on the group).
        var wt = [Float](repeating: 1, count: cols)
        for g in 0..<groups {
            for i in 0..<b {
                var s: Float = 0
                for c in i..<b { let v = uinv[g * b * b + i * b + c]; s += v * v }
                wt[g * b + i] = s
            }
        }
        let wAddr = Int(bitPattern: w), dAddr = Int(bitPattern: dst)
        let failed = LockedFlag()
        u.withUnsafeBufferPointer { up in
            uinv.withUnsafeBufferPointer { ip in
                wt.withUnsafeBufferPointer { wp in
                    let uAddr = Int(bitPattern: up.baseAddress!), iAddr = Int(bitPattern: ip.baseAddress!), wtAddr = Int(bitPattern: wp.baseAddress!)
                    DispatchQueue.concurrentPerform(iterations: rows) { r in
                        let u = UnsafePointer<Float>(bitPattern: uAddr)!, uinv = UnsafePointer<Float>(bitPattern: iAddr)!
                        let wt = UnsafePointer<Float>(bitPattern: wtAddr)!
                        let row = UnsafeMutablePointer<Float>(bitPattern: wAddr)! + r * cols
                        let out = UnsafeMutableRawPointer(bitPattern: dAddr)! + r * rowBytes
                        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * b) { tmp in
                            let q = tmp.baseAddress!, g = tmp.baseAddress! + b
                            for gi in 0..<groups {
                                let o = gi * b
                                for j in 0..<b where !row[o + j].isFinite { failed.set(); return }
                                f(row + o, out + gi * bb, b, wt + o)
                                t.dequantizeRow(out + gi * bb, q, b)
                                guard o + b < cols else { continue }
                                // g = (w − q) · U_SS⁻¹  (row vector times upper triangular)
                                let ui = uinv + gi * b * b
                                for c in 0..<b {
                                    var s: Float = 0
                                    for k in 0...c { s += (row[o + k] - q[k]) * ui[k * b + c] }
                                    g[c] = s
                                }
                                // w_R −= g · U_SR
                                let rest = row + o + b, n = cols - o - b
                                for s in 0..<b {
                                    let gs = g[s]
                                    if gs == 0 { continue }
                                    let us = u + (o + s) * cols + o + b
                                    for k in 0..<n { rest[k] -= gs * us[k] }
                                }
                            }
                        }
                    }
                }
            }
        }
        if failed.value { throw Failure.shape("non-finite value after error feedback") }
    }
}

final class LockedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var v = false
    func set() { lock.lock(); v = true; lock.unlock() }
    var value: Bool { lock.lock(); defer { lock.unlock() }; return v }
}
