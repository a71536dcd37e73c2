import Foundation
import SIMDKernels

/// The arithmetic of Gemma 3 decoder blocks over a set of rows, shared by the one-sequence
/// `Gemma3Session` and the many-sequence `Gemma3Batch`: scratch buffers for up to `maxRows` rows, the
/// RoPE tables of those rows, the linear layers (one fused packed call where possible), each block's
/// norms, projections, RoPE, residual adds and MLP, the final norm and the lm_head. Where a block's keys
/// and values are stored and which of them each query sees belongs to the caller: `block` hands that
/// step back through its `attention` closure, which reads `q`, `k`, `v` and writes `attn`.
///
/// Every row is computed by the same code whichever caller runs it, so the two paths give the same bits
/// for the same row inputs and keys.
final class DecoderBlocks {
    let model: Gemma3Model
    let cfg: Gemma3Config
    let maxRows: Int
    /// Row buffers, each (maxRows, width): the residual stream `x`, the normed input `xn`, the projections,
    /// the attention output `attn`, the output projection / MLP result `o`, the MLP's gate and up.
    let x, xn, q, k, v, attn, o, gate, up: UnsafeMutablePointer<Float>
    let attnScratch = AttentionScratch()
    /// Quantized activations of the integer matmul paths, (maxRows, max width).
    let actScratch: ActivationScratch
    /// Called with every linear layer's weight and input rows before the product (`nla imatrix`); nil = off.
    var linearInputObserver: ((WeightMatrix, UnsafePointer<Float>, Int) -> Void)?
    // RoPE tables of the rows, (maxRows, headDim/2), for sliding and for global blocks.
    private let cosS, sinS, cosF, sinF: UnsafeMutablePointer<Float>
    private let invFreqFull, invFreqSliding: [Float]

    init(model: Gemma3Model, rows: Int) {
        let cfg = model.config
        self.model = model
        self.cfg = cfg
        maxRows = rows
        func alloc(_ n: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(n, 1))
            p.initialize(repeating: 0, count: max(n, 1))
            return p
        }
        x = alloc(rows * cfg.hiddenSize); xn = alloc(rows * cfg.hiddenSize); o = alloc(rows * cfg.hiddenSize)
        q = alloc(rows * cfg.qDim); attn = alloc(rows * cfg.qDim)
        k = alloc(rows * cfg.kvDim); v = alloc(rows * cfg.kvDim)
        gate = alloc(rows * cfg.intermediateSize); up = alloc(rows * cfg.intermediateSize)
        let half = cfg.headDim / 2
        cosS = alloc(rows * half); sinS = alloc(rows * half); cosF = alloc(rows * half); sinF = alloc(rows * half)
        actScratch = ActivationScratch(rows: rows, maxCols: max(cfg.hiddenSize, cfg.qDim, cfg.intermediateSize))
        invFreqFull = DecoderBlocks.inverseFrequencies(cfg.ropeFull, headDim: cfg.headDim)
        invFreqSliding = DecoderBlocks.inverseFrequencies(cfg.ropeSliding, headDim: cfg.headDim)
    }

    deinit {
        for p in [x, xn, q, k, v, attn, o, gate, up, cosS, sinS, cosF, sinF] { p.deallocate() }
    }

    /// inv_freq[i] = 1 / (θ ^ (2i / headDim)) / factor, in f32 as transformers computes it
    /// (`_compute_default_rope_parameters`; linear scaling divides by the factor).
    static func inverseFrequencies(_ rope: RopeParams, headDim: Int) -> [Float] {
        (0..<headDim / 2).map { i in
            let expo = Float(2 * i) / Float(headDim)
            var f = 1 / powf(Float(rope.theta), expo)
            if rope.linearFactor != 1 { f = f / Float(rope.linearFactor) }
            return f
        }
    }

    /// The RoPE tables of rows `row ..< row + count`, at absolute positions `position ..< position + count`
    /// (f32: angle = pos · inv_freq, then cos / sin).
    func setPositions(row: Int, count: Int, position: Int) {
        let half = cfg.headDim / 2
        for r in 0..<count {
            let pos = Float(position + r), base = (row + r) * half
            for i in 0..<half {
                let fs = pos * invFreqSliding[i], ff = pos * invFreqFull[i]
                cosS[base + i] = cosf(fs); sinS[base + i] = sinf(fs)
                cosF[base + i] = cosf(ff); sinF[base + i] = sinf(ff)
            }
        }
    }

    /// y[rows, w.rows] = x[rows, w.cols] · wᵀ, for any weight type.
    func linear(_ w: WeightMatrix, _ x: UnsafePointer<Float>, rows m: Int, into y: UnsafeMutablePointer<Float>) {
        linearInputObserver?(w, x, m)
        if let f = w.floats {
            Kernels.matmulNT(x, f, y, m: m, n: w.rows, k: w.cols)
        } else {
            QuantLinear.apply(w, x, rows: m, into: y, scratch: actScratch)
        }
    }

    /// Several matrices over the same rows x (q/k/v; gate/up): one fused packed call when possible.
    func linears(_ ws: [WeightMatrix], _ x: UnsafePointer<Float>, rows m: Int, into ys: [UnsafeMutablePointer<Float>]) {
        if linearInputObserver != nil || ws.contains(where: { $0.floats != nil }) {
            for (w, y) in zip(ws, ys) { linear(w, x, rows: m, into: y) }
        } else {
            QuantLinear.applyFused(ws, x, rows: m, into: ys, scratch: actScratch)
        }
    }

    /// Decoder block `l` over rows 0..<t of `x` (RoPE tables set by `setPositions`). `attention(sliding)`
    /// stores the rows' keys / values (`k`, `v`, after norm and RoPE) where the caller keeps them and
    /// writes the attention output of every row's queries (`q`) to `attn`.
    ///
    /// `outputRows` (ascending row indices): only these rows' block outputs are needed (the last block
    /// of a pass that returns the last row of each sequence). Every row's keys and values are still
    /// stored; then the kept rows move to rows 0..<outputRows.count of `attn` and `x` and the output
    /// projection and MLP run over them alone. Each kept row gets the values it would get in the full
    /// block on the integer paths (their per-row arithmetic does not depend on the other rows).
    func block(_ l: Int, rows: Int, outputRows: [Int]? = nil, attention: (_ sliding: Bool) -> Void) {
        var t = rows
        let w = model.layers[l]
        let d = cfg.hiddenSize, hd = cfg.headDim, half = hd / 2
        let nH = cfg.numAttentionHeads, nKV = cfg.numKeyValueHeads
        let qDim = cfg.qDim, kvDim = cfg.kvDim, ff = cfg.intermediateSize
        let eps = cfg.rmsNormEps
        let sliding = cfg.layerTypes[l] == .sliding
        let cosT = sliding ? cosS : cosF, sinT = sliding ? sinS : sinF

        // --- attention ---
        w.inputNorm.withUnsafeBufferPointer { Kernels.rmsNormRows(x, weight: $0.baseAddress!, out: xn, rows: t, n: d, eps: eps) }
        linears([w.qProj, w.kProj, w.vProj], xn, rows: t, into: [q, k, v])
        w.qNorm.withUnsafeBufferPointer { qn in
            w.kNorm.withUnsafeBufferPointer { kn in
                for r in 0..<t {
                    for h in 0..<nH {
                        let ptr = q + r * qDim + h * hd
                        Kernels.rmsNorm(ptr, weight: qn.baseAddress!, out: ptr, n: hd, eps: eps)
                        Kernels.ropeRotateHalf(ptr, cos: cosT + r * half, sin: sinT + r * half, headDim: hd)
                    }
                    for g in 0..<nKV {
                        let ptr = k + r * kvDim + g * hd
                        Kernels.rmsNorm(ptr, weight: kn.baseAddress!, out: ptr, n: hd, eps: eps)
                        Kernels.ropeRotateHalf(ptr, cos: cosT + r * half, sin: sinT + r * half, headDim: hd)
                    }
                }
            }
        }
        attention(sliding)
        if let keep = outputRows {
            for (i, r) in keep.enumerated() where i != r {  // i < r: no source row is overwritten before it is read
                (attn + i * qDim).update(from: attn + r * qDim, count: qDim)
                (x + i * d).update(from: x + r * d, count: d)
            }
            t = keep.count
            if t == 0 { return }
        }
        linear(w.oProj, attn, rows: t, into: o)
        w.postAttentionNorm.withUnsafeBufferPointer { Kernels.rmsNormRows(o, weight: $0.baseAddress!, out: o, rows: t, n: d, eps: eps) }
        Kernels.add(x, o, t * d)

        // --- MLP ---
        w.preFeedforwardNorm.withUnsafeBufferPointer { Kernels.rmsNormRows(x, weight: $0.baseAddress!, out: xn, rows: t, n: d, eps: eps) }
        linears([w.gateProj, w.upProj], xn, rows: t, into: [gate, up])
        switch cfg.activation {
        case .geluTanh: Kernels.geluTanhMul(gate, up, out: gate, n: t * ff)
        case .geluExact: Kernels.geluExactMul(gate, up, out: gate, n: t * ff)
        }
        linear(w.downProj, gate, rows: t, into: o)
        w.postFeedforwardNorm.withUnsafeBufferPointer { Kernels.rmsNormRows(o, weight: $0.baseAddress!, out: o, rows: t, n: d, eps: eps) }
        Kernels.add(x, o, t * d)
    }

    /// The final norm of `rows` rows of h, in place (the model must have one).
    func finalNorm(_ h: UnsafeMutablePointer<Float>, rows n: Int) {
        model.finalNorm!.withUnsafeBufferPointer { w in
            Kernels.rmsNormRows(h, weight: w.baseAddress!, out: h, rows: n, n: cfg.hiddenSize, eps: cfg.rmsNormEps)
        }
    }

    /// lm_head and soft-capping of rows already through the final norm: dst [rows, vocab].
    func headLogits(_ h: UnsafePointer<Float>, rows n: Int, into dst: UnsafeMutablePointer<Float>) {
        linear(model.lmHead, h, rows: n, into: dst)
        softcap(dst, count: n * cfg.vocabSize)
    }

    /// Final logit soft-capping in place (when the config has it).
    func softcap(_ logits: UnsafeMutablePointer<Float>, count: Int) {
        guard let cap = cfg.finalLogitSoftcapping else { return }
        for i in 0..<count { logits[i] = tanhf(logits[i] / cap) * cap }
    }
}
