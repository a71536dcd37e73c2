// Quantized linear layers: y = x · Wᵀ with W in Q8_0 / Q4_0 blocks, through the SIMDKernels dispatch
// table (default: activations quantized to Q8_0 per 32 values, integer block dots, C tier).

import Foundation
import Quant
import SIMDKernels

/// Scratch for quantized activations: room for `rows` rows of up to `maxCols` values as Q8_0.
final class ActivationScratch {
    let rows: Int
    let maxCols: Int
    let bytes: UnsafeMutableRawPointer

    init(rows: Int, maxCols: Int) {
        self.rows = rows
        self.maxCols = maxCols
        let n = QuantKernels.activationBytes(rows: rows, cols: (maxCols + 31) / 32 * 32)
        bytes = UnsafeMutableRawPointer.allocate(byteCount: max(n, 64), alignment: 64)
    }

    deinit { bytes.deallocate() }
}

enum QuantLinear {
    static func apply(_ w: WeightMatrix, _ x: UnsafePointer<Float>, rows m: Int, into y: UnsafeMutablePointer<Float>,
                      scratch: ActivationScratch) {
        precondition(m <= scratch.rows && w.cols <= scratch.maxCols, "activation scratch too small")
        let type = QuantWeightType(rawValue: Int32(w.type.rawValue))!
        QuantKernels.matmul(type, weights: w.blocks!, x: x, y: y, m: m, n: w.rows, k: w.cols, scratch: scratch.bytes)
    }
}
