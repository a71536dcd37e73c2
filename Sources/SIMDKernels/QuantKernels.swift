// Quantized kernels, public entry points: Q8_0 activation quantization, row dequantization, and the
// Q8_0 / Q4_0 weight matmuls (decode M = 1 and prefill M > 1). Each call runs the tier chosen by
// `Kernels.dispatch` unless a `tier:` is passed explicitly (tests, benchmarks). No model knowledge:
// a weight matrix is just raw ggml blocks, [n rows (out), k cols (in)], each row k/32 blocks.
//
// Numerical contracts (tested in Tests/SIMDKernelsTests):
// - quantizeRows: bytes identical on every tier (round half away from zero, f16 scale by RNE — the
//   same bytes as ggml's quantize_row_q8_0_ref and Quant's reference quantizer).
// - matmulQ8 (integer path): every tier, C instruction-set path and thread count returns bit-identical
//   floats: y = fold over blocks b of acc = acc + Float(isum_b)·(Float(d_w)·Float(d_x)) with exact
//   int32 block sums (see CKernels/include/quant_kernels.h).
// - matmulF32 (f32-activation path): dequantized weights are exact; only the summation order differs
//   between tiers: |Δ| ≤ K·2⁻²⁴·Σ|x·w| worst case (the tests enforce 2⁻¹⁷·Σ|x·w|).
// - Against the f32 product with the *original* (unquantized) weights, the error is the weight
//   quantization error (plus, on the integer path, the activation quantization error); see the
//   per-type bounds in QuantKernelTests.

// Weight types: the Quant type table (`QuantType`) is the one identity; block geometry comes from its rows
// (`type.traits.blockSize` / `bytesPerBlock`), the C tier receives the ggml id. Every entry point classifies
// the type with an exhaustive switch (`WeightKernelKind`): a type without weight kernels traps with its name,
// and a new table row is a compile error here until it is classified.

import CKernels
import Quant

/// How the kernels handle a weight type.
public enum WeightKernelKind: Sendable {
    /// 32-value blocks with integer block dots (Q8_0 activations) and the f32-activation path: Q8_0, Q4_0.
    case integerBlocks
    /// Dequantized exactly on the fly, f32 activations only: Q4_K, Q6_K, IQ4_NL, Q5_0.
    case dequantF32

    /// The kind of `type`; traps for types that are not weight block types (the float types).
    public static func of(_ type: QuantType) -> WeightKernelKind {
        switch type {
        case .q8_0, .q4_0: return .integerBlocks
        case .q4_k, .q6_k, .iq4_nl, .q5_0: return .dequantF32
        case .f32, .f16, .bf16: preconditionFailure("\(type) is not a quantized weight type of the kernels")
        }
    }
}

extension QuantType {
    /// Bytes of one row of `cols` values (cols a multiple of the block size), from the type table.
    @inlinable public func kernelRowBytes(cols: Int) -> Int { cols / traits.blockSize * traits.bytesPerBlock }
    /// The ggml id as the C kernels take it.
    var ckID: Int32 { Int32(rawValue) }
}

@inline(__always) func checkC(_ rc: Int32, _ what: String, _ type: QuantType) {
    kernelRequire(rc == 0, "\(what): the C kernels rejected \(type) (error \(rc))")
}

/// Entry points of the quantized kernels.
public enum QuantKernels {
    /// Weight types with 32-value integer block kernels.
    public static let integerBlockTypes: [QuantType] = [.q4_0, .q8_0]
    /// Weight types dequantized on the fly (f32 activations).
    public static let dequantTypes: [QuantType] = [.q4_k, .q6_k, .iq4_nl, .q5_0]
    /// Every weight type the kernels run.
    public static var weightTypes: [QuantType] { integerBlockTypes + dequantTypes }

    /// Shortcut over `Kernels.dispatch`: reading gives the matmul tier; setting puts every kernel
    /// family on that tier (element-wise `.c` → `.simd`), keeping the activation mode.
    public static var tier: KernelTier {
        get { Kernels.dispatch.matmul }
        set { Kernels.dispatch = .all(newValue, activation: Kernels.dispatch.activation) }
    }

    /// Bytes of the Q8_0 activation buffer for `rows` rows of `cols` values (the `scratch` of `matmul`).
    public static func activationBytes(rows: Int, cols: Int) -> Int { rows * (cols / 32) * 34 }

    /// Quantize `rows` f32 rows (cols % 32 == 0, row stride ldx, default cols) to contiguous Q8_0 rows
    /// in `out` (`activationBytes(rows:cols:)` bytes). Bytes identical on every tier; input must be finite.
    public static func quantizeRows(_ x: UnsafePointer<Float>, rows: Int, cols: Int, ldx: Int? = nil,
                                    out: UnsafeMutableRawPointer, tier: KernelTier? = nil, threads: Int = 0) {
        kernelCheckBlocks("quantizeRows", k: cols, rows: rows)
        let ld = ldx ?? cols
        kernelRequire(ld >= cols, "quantizeRows: ldx \(ld) < cols \(cols)")
        switch tier ?? Kernels.dispatch.quantize {
        case .scalar: ScalarKernels.quantizeRowsQ8_0(x, ldx: ld, rows: rows, k: cols, out: out)
        case .simd: VectorKernels.quantizeRowsQ8_0(x, ldx: ld, rows: rows, k: cols, out: out)
        case .c: ck_quantize_rows_q8_0(x, Int64(ld), out, Int64(rows), Int64(cols), Int32(threads))
        }
    }

    /// Dequantize one row of `count` values (a multiple of the type's block size), e.g. an embedding row.
    /// Exact on every tier.
    public static func dequantizeRow(_ type: QuantType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>,
                                     count: Int, tier: KernelTier? = nil) {
        let kind = WeightKernelKind.of(type)
        kernelCheckBlocks("dequantizeRow", k: count, block: type.traits.blockSize)
        switch (tier ?? Kernels.dispatch.quantize, kind) {
        case (.scalar, .integerBlocks): ScalarKernels.dequantizeRow(type, src, dst, count: count)
        case (.scalar, .dequantF32): type.traits.dequantizeRow(src, dst, count)
        case (.simd, .integerBlocks): VectorKernels.dequantizeRow(type, src, dst, count: count)
        case (.simd, .dequantF32): VectorKernels.dequantizeRowDequant(type, src, dst, count: count)
        case (.c, .integerBlocks): checkC(ck_dequantize_row(type.ckID, src, dst, Int64(count)), "dequantizeRow", type)
        case (.c, .dequantF32): checkC(ck_kq_dequantize_row(type.ckID, src, dst, Int64(count)), "dequantizeRow", type)
        }
    }

    /// Exact int32 block dot products of one weight row and one Q8_0 activation row (`blocks` blocks).
    /// For tests of the integer core; `isa` picks the C path (nil = selected).
    public static func blockDots(_ type: QuantType, weights: UnsafeRawPointer, activations: UnsafeRawPointer,
                                 out: UnsafeMutablePointer<Int32>, blocks: Int, tier: KernelTier, isa: CKernelISA? = nil) {
        kernelRequire(WeightKernelKind.of(type) == .integerBlocks, "blockDots: \(type) has no integer block kernel")
        kernelRequire(blocks >= 0, "blockDots: negative blocks \(blocks)")
        switch tier {
        case .scalar: ScalarKernels.blockDots(type, weights: weights, activations: activations, out: out, blocks: blocks)
        case .simd: VectorKernels.blockDots(type, weights: weights, activations: activations, out: out, blocks: blocks)
        case .c: checkC(ck_block_dots(type.ckID, weights, activations, out, Int64(blocks), isa?.rawValue ?? -1), "blockDots", type)
        }
    }

    /// Integer path: Y[m,n] (row stride ldy, default n) = Xq[m,k] · W[n,k]ᵀ, with Xq the Q8_0 rows made
    /// by `quantizeRows`. Bit-identical on every tier / C path / thread count (contract above).
    /// `threads` (C tier): 0 = `Kernels.threads`; the split is over n only.
    public static func matmulQ8(_ type: QuantType, weights: UnsafeRawPointer, activations xq: UnsafeRawPointer,
                                y: UnsafeMutablePointer<Float>, m: Int, n: Int, k: Int, ldy: Int? = nil,
                                tier: KernelTier? = nil, isa: CKernelISA? = nil, threads: Int = 0) {
        kernelRequire(WeightKernelKind.of(type) == .integerBlocks, "matmulQ8: \(type) has no integer block kernel (use matmulF32)")
        kernelCheckBlocks("matmulQ8", k: k, rows: m, n)
        let ld = ldy ?? n
        kernelRequire(ld >= n, "matmulQ8: ldy \(ld) < n \(n)")
        switch tier ?? Kernels.dispatch.matmul {
        case .scalar: ScalarKernels.matmulQ8(type, weights: weights, activations: xq, y: y, ldy: ld, m: m, n: n, k: k)
        case .simd: VectorKernels.matmulQ8(type, weights: weights, activations: xq, y: y, ldy: ld, m: m, n: n, k: k)
        case .c:
            checkC(ck_matmul_q8act(type.ckID, weights, xq, y, Int64(ld), Int64(m), Int64(n), Int64(k),
                                   isa?.rawValue ?? -1, Int32(threads)), "matmulQ8", type)
        }
    }

    /// f32-activation path: Y[m,n] = X[m,k] (row stride ldx) · dequant(W)[n,k]ᵀ, weights dequantized
    /// exactly on the fly, f32 accumulation (order differs per tier; contract above).
    public static func matmulF32(_ type: QuantType, weights: UnsafeRawPointer, x: UnsafePointer<Float>,
                                 y: UnsafeMutablePointer<Float>, m: Int, n: Int, k: Int, ldx: Int? = nil, ldy: Int? = nil,
                                 tier: KernelTier? = nil, isa: CKernelISA? = nil, threads: Int = 0) {
        let kind = WeightKernelKind.of(type)
        kernelCheckBlocks("matmulF32", k: k, block: type.traits.blockSize, rows: m, n)
        let lx = ldx ?? k, ly = ldy ?? n
        kernelRequire(lx >= k && ly >= n, "matmulF32: ldx \(lx) < k \(k) or ldy \(ly) < n \(n)")
        switch (tier ?? Kernels.dispatch.matmul, kind) {
        case (.scalar, .integerBlocks): ScalarKernels.matmulF32(type, weights: weights, x: x, ldx: lx, y: y, ldy: ly, m: m, n: n, k: k)
        case (.scalar, .dequantF32): ScalarKernels.matmulF32Dequant(type, weights: weights, x: x, ldx: lx, y: y, ldy: ly, m: m, n: n, k: k)
        case (.simd, .integerBlocks): VectorKernels.matmulF32(type, weights: weights, x: x, ldx: lx, y: y, ldy: ly, m: m, n: n, k: k)
        case (.simd, .dequantF32): VectorKernels.matmulF32Dequant(type, weights: weights, x: x, ldx: lx, y: y, ldy: ly, m: m, n: n, k: k)
        case (.c, .integerBlocks):
            checkC(ck_matmul_f32act(type.ckID, weights, x, Int64(lx), y, Int64(ly), Int64(m), Int64(n), Int64(k),
                                    isa?.rawValue ?? -1, Int32(threads)), "matmulF32", type)
        case (.c, .dequantF32):
            checkC(ck_kq_matmul_f32act(type.ckID, weights, x, Int64(lx), y, Int64(ly), Int64(m), Int64(n), Int64(k),
                                       isa?.rawValue ?? -1, Int32(threads)), "matmulF32", type)
        }
    }

    /// f32-activation path for prefill, C tier only: dequantize panels of `panelFloats / k` weight rows
    /// into `panel` (caller-owned, at least k floats) and multiply each with OpenBLAS sgemm (OpenBLAS's
    /// threads, `Kernels.setThreads`). Same contract as `matmulF32` (f32, OpenBLAS's summation order).
    /// Close to sgemm speed for large m; for m = 1 use `matmulF32` or the integer path.
    public static func matmulF32Panels(_ type: QuantType, weights: UnsafeRawPointer, x: UnsafePointer<Float>,
                                       y: UnsafeMutablePointer<Float>, m: Int, n: Int, k: Int, ldx: Int? = nil, ldy: Int? = nil,
                                       panel: UnsafeMutablePointer<Float>, panelFloats: Int, threads: Int = 0) {
        let kind = WeightKernelKind.of(type)
        kernelCheckBlocks("matmulF32Panels", k: k, block: type.traits.blockSize, rows: m, n)
        kernelRequire(panelFloats >= k && (ldx ?? k) >= k && (ldy ?? n) >= n,
                      "matmulF32Panels: panel \(panelFloats) < k \(k) floats, or ldx/ldy smaller than the rows")
        switch kind {
        case .integerBlocks:
            checkC(ck_matmul_f32act_blas(type.ckID, weights, x, Int64(ldx ?? k), y, Int64(ldy ?? n), Int64(m), Int64(n), Int64(k),
                                         panel, Int64(panelFloats), Int32(threads)), "matmulF32Panels", type)
        case .dequantF32:
            checkC(ck_kq_matmul_f32act_blas(type.ckID, weights, x, Int64(ldx ?? k), y, Int64(ldy ?? n), Int64(m), Int64(n), Int64(k),
                                            panel, Int64(panelFloats), Int32(threads)), "matmulF32Panels", type)
        }
    }

    /// The model-facing call: Y[m,n] = X[m,k] · W[n,k]ᵀ for quantized W, in the activation mode of the
    /// dispatch table (or `activation`). With `.q8_0`, X is first quantized into `scratch`
    /// (`activationBytes(rows: m, cols: k)` bytes, caller-owned); with `.f32`, `scratch` is unused.
    /// Callers that reuse one input for several projections (q/k/v, gate/up) can instead call
    /// `quantizeRows` once and `matmulQ8` per weight.
    /// Types without an integer path (`WeightKernelKind.dequantF32`) always run with f32 activations.
    public static func matmul(_ type: QuantType, weights: UnsafeRawPointer, x: UnsafePointer<Float>,
                              y: UnsafeMutablePointer<Float>, m: Int, n: Int, k: Int, scratch: UnsafeMutableRawPointer,
                              activation: ActivationMode? = nil, tier: KernelTier? = nil) {
        let requested = activation ?? Kernels.dispatch.activation ?? .q8_0
        switch WeightKernelKind.of(type) == .integerBlocks ? requested : .f32 {
        case .q8_0:
            quantizeRows(x, rows: m, cols: k, out: scratch)
            matmulQ8(type, weights: weights, activations: scratch, y: y, m: m, n: n, k: k, tier: tier)
        case .f32:
            matmulF32(type, weights: weights, x: x, y: y, m: m, n: n, k: k, tier: tier)
        }
    }
}
