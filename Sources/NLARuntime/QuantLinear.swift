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
    /// Dequantized weight panel for the f32-activation prefill path.
    let panel: UnsafeMutablePointer<Float>
    let panelFloats: Int

    init(rows: Int, maxCols: Int) {
        self.rows = rows
        self.maxCols = maxCols
        let cols = (maxCols + 31) / 32 * 32
        let n = max(QuantKernels.activationBytes(rows: rows, cols: cols),
                    rows * GemvActivation.q16.rowBytes(cols: cols))
        bytes = UnsafeMutableRawPointer.allocate(byteCount: max(n, 64), alignment: 64)
        panelFloats = 256 * maxCols
        panel = UnsafeMutablePointer<Float>.allocate(capacity: panelFloats)
    }

    deinit { bytes.deallocate(); panel.deallocate() }
}

enum QuantLinear {
    /// Calls with fewer rows than this (decode, small batches) take the gemv kernels.
    static let gemvMaxRows = 16

    static func apply(_ w: WeightMatrix, _ x: UnsafePointer<Float>, rows m: Int, into y: UnsafeMutablePointer<Float>,
                      scratch: ActivationScratch) {
        precondition(m <= scratch.rows && w.cols <= scratch.maxCols, "activation scratch too small")
        let type = w.type
        // NLA_KERNELS act=… overrides. Otherwise Q4_0 and Q8_0 run the packed kernels (AVX-512 VNNI, AVX2) or the
        // integer gemv, for every row count, so a row's result never depends on the rows batched with it;
        // NLA_Q8_ACT=f32 keeps Q8_0 on f32 activations (f32 kernel for decode, dequantized panels + sgemm
        // for prefill) (README, "Kernels").
        let partner: ActivationMode = w.type.traits.activationType == .f32 ? .f32 : .q8_0
        let integerPath = isIntegerPath(type)
        if let p = w.packed, integerPath {
            // AVX-512 VNNI / AVX2: packed 16-row tiles, integer activations of the type's partner, every m.
            p.matmul(x: x, y: y, m: m, scratch: scratch.bytes)
            return
        }
        if integerPath {
            // The type's integer partner (Q4_0 → int8; Q8_0 → int16), gemv tiles of 4 activation rows.
            QuantKernels.gemv(type, act: .partner(of: type), weights: w.blocks!, x: x, y: y, m: m, n: w.rows, k: w.cols,
                              scratch: scratch.bytes)
            return
        }
        let mode = Kernels.dispatch.activation ?? (m < gemvMaxRows ? .f32 : partner)
        if mode == .f32 && m >= 16 && Kernels.dispatch.matmul == .c {
            // Prefill: dequantize panels of W and run sgemm (much faster than the per-row f32 kernel).
            QuantKernels.matmulF32Panels(type, weights: w.blocks!, x: x, y: y, m: m, n: w.rows, k: w.cols,
                                         panel: scratch.panel, panelFloats: scratch.panelFloats)
        } else {
            QuantKernels.matmul(type, weights: w.blocks!, x: x, y: y, m: m, n: w.rows, k: w.cols,
                                scratch: scratch.bytes, activation: mode)
        }
    }

    /// Q4_0 / Q8_0 weights on the integer kernels (no NLA_KERNELS act=… override, C tier).
    static func isIntegerPath(_ type: QuantType) -> Bool {
        Kernels.dispatch.activation == nil && Kernels.dispatch.matmul == .c && GemvActivation.modelTypes.contains(type)
    }

    /// NLA_FUSE=0 turns the fused calls off (a call per matrix; for measuring what fusing gains).
    static let fuse: Bool = getenv("NLA_FUSE").map { String(cString: $0) } != "0"
    /// Largest group (total weights) that `applyFused` runs as one call.
    static let fuseMaxWeights = 8 << 20

    /// Several matrices over the same input rows (a layer's q/k/v projections, gate and up): one
    /// packed call when they are all packed for the integer path (one activation quantization and one
    /// parallel region instead of one per matrix; every output bit-identical to `apply`), else `apply`
    /// per matrix. `ys[i]` has row stride `ws[i].rows`.
    static func applyFused(_ ws: [WeightMatrix], _ x: UnsafePointer<Float>, rows m: Int, into ys: [UnsafeMutablePointer<Float>],
                           scratch: ActivationScratch) {
        let packed = ws.compactMap(\.packed)
        // Only small matrices gain (the 270M's: a region's start-up is a visible share of a 1 MB matrix);
        // on 12B/27B-sized ones alternating runs showed no gain (27B q8_0 prefill medians 52.5 fused vs
        // 58.1 per matrix, within the noise), so those keep a call per matrix.
        let weights = ws.reduce(0) { $0 + $1.rows * $1.cols }
        if fuse, weights <= fuseMaxWeights, packed.count == ws.count, isIntegerPath(ws[0].type), PackedWeights.canFuse(packed) {
            precondition(m <= scratch.rows && ws[0].cols <= scratch.maxCols, "activation scratch too small")
            PackedWeights.matmul(parts: packed, x: x, ys: ys, m: m, scratch: scratch.bytes)
            return
        }
        for (w, y) in zip(ws, ys) { apply(w, x, rows: m, into: y, scratch: scratch) }
    }
}
