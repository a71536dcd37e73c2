// GPTQ error feedback (Sources/Quant/GPTQ.swift): the factor is the upper Cholesky factor of the damped inverse
// Hessian, and on correlated inputs the layer output error beats the diagonal (imatrix-weighted) search.

import Foundation
import Testing
@testable import Quant

@Suite struct GPTQTests {
    /// Calibration inputs with strongly correlated channels (a few latent factors plus noise), tokens × cols.
    static func inputs(tokens: Int, cols: Int, seed: UInt64) -> [Float] {
        var r = QuantTestRNG(seed: seed)
        let factors = 8
        let mix = (0..<(factors * cols)).map { _ in r.normal() }
        let scale = (0..<cols).map { _ in exp(r.normal()) }
        var x = [Float](repeating: 0, count: tokens * cols)
        for t in 0..<tokens {
            let z = (0..<factors).map { _ in r.normal() }
            for c in 0..<cols {
                var v = 0.3 * r.normal()
                for f in 0..<factors { v += z[f] * mix[f * cols + c] }
                x[t * cols + c] = v * scale[c]
            }
        }
        return x
    }

    static func hessian(_ x: [Float], tokens: Int, cols: Int) -> [Float] {
        var h = [Float](repeating: 0, count: cols * cols)
        for t in 0..<tokens {
            for i in 0..<cols {
                let xi = x[t * cols + i]
                for j in 0..<cols { h[i * cols + j] += xi * x[t * cols + j] }
            }
        }
        return h.map { $0 / Float(tokens) }
    }

    /// Σ over tokens and rows of ((W − Ŵ) x)².
    static func outputError(_ w: [Float], _ q: [Float], _ x: [Float], rows: Int, cols: Int, tokens: Int) -> Double {
        var e = 0.0
        for r in 0..<rows {
            for t in 0..<tokens {
                var s = 0.0
                for c in 0..<cols { s += Double(w[r * cols + c] - q[r * cols + c]) * Double(x[t * cols + c]) }
                e += s * s
            }
        }
        return e
    }

    @Test func factorIsTheUpperCholeskyOfTheDampedInverse() throws {
        let n = 48, tokens = 200
        let x = Self.inputs(tokens: tokens, cols: n, seed: 11)
        let h = Self.hessian(x, tokens: tokens, cols: n)
        let u = try GPTQ.inverseCholeskyUpper(h, n: n, damp: 0.01)
        var meanDiag: Double = 0
        for i in 0..<n { meanDiag += Double(h[i * n + i]) }
        meanDiag /= Double(n)
        // (UᵀU)(H + λI) = I, and U is upper triangular with a positive diagonal.
        var worst = 0.0
        for i in 0..<n {
            #expect(u[i * n + i] > 0)
            for j in 0..<i { #expect(u[i * n + j] == 0) }
            for j in 0..<n {
                var s = 0.0
                for k in 0..<n {
                    var hinv = 0.0  // (UᵀU)[i][k]
                    for m in 0...min(i, k) { hinv += Double(u[m * n + i]) * Double(u[m * n + k]) }
                    s += hinv * (Double(h[k * n + j]) + (k == j ? 0.01 * meanDiag : 0))
                }
                worst = max(worst, abs(s - (i == j ? 1 : 0)))
            }
        }
        print("[gptq] max |(UᵀU)(H+λI) − I| = \(worst)")
        #expect(worst < 1e-3)
        #expect(throws: GPTQ.Failure.self) { try GPTQ.inverseCholeskyUpper([1, 2, 3], n: 2) }
    }

    /// On correlated inputs GPTQ lowers the layer's output error well below the imatrix-weighted search (which
    /// sees only diag H), for a 32-value type and for a 256-value super-block type.
    @Test(arguments: [QuantType.iq4_nl, .q4_k, .q5_0])
    func beatsTheDiagonalSearchOnCorrelatedInputs(type: QuantType) throws {
        let cols = 512, rows = 24, tokens = 600
        let x = Self.inputs(tokens: tokens, cols: cols, seed: 21)
        let h = Self.hessian(x, tokens: tokens, cols: cols)
        let imp = (0..<cols).map { h[$0 * cols + $0] }
        var r = QuantTestRNG(seed: 22)
        let w = (0..<(rows * cols)).map { _ in 0.02 * r.normal() }
        let diag = try type.dequantize(try type.quantizeImportance(w, width: cols, importance: imp), width: cols)
        let u = try GPTQ.inverseCholeskyUpper(h, n: cols)
        var work = w
        var bytes = [UInt8](repeating: 0, count: rows * (try type.rowByteCount(width: cols)))
        try work.withUnsafeMutableBufferPointer { wp in
            try bytes.withUnsafeMutableBytes { try GPTQ.quantize(wp.baseAddress!, rows: rows, cols: cols, type: type, u: u, into: $0.baseAddress!) }
        }
        let g = try type.dequantize(bytes, width: cols)
        let eDiag = Self.outputError(w, diag, x, rows: rows, cols: cols, tokens: tokens)
        let eG = Self.outputError(w, g, x, rows: rows, cols: cols, tokens: tokens)
        print("[gptq] \(type): output error GPTQ / diagonal search = \(eG / eDiag)")
        #expect(eG < 0.8 * eDiag)
        // Still a quantization of W (not of something else): the plain weight error stays of the same order.
        var se = 0.0, sx = 0.0
        for i in w.indices { se += Double(g[i] - w[i]) * Double(g[i] - w[i]); sx += Double(w[i]) * Double(w[i]) }
        #expect((se / sx).squareRoot() < 0.5)
    }
}
