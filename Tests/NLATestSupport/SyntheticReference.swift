// A naive Float64 reference of the Gemma 3 text forward, for the synthetic-model tests.
//
// Written from the math of transformers `models/gemma3/modeling_gemma3.py` (Gemma3TextScaledWordEmbedding,
// Gemma3RMSNorm, Gemma3RotaryEmbedding, eager_attention_forward, Gemma3Attention, Gemma3MLP,
// Gemma3DecoderLayer, Gemma3TextModel, Gemma3ForCausalLM), NOT from Sources/NLARuntime/Gemma3.swift:
// it reads the hyperparameters from `SyntheticSpec` (not from the decoded config) and the weights from
// `SyntheticWeights` (not from the checkpoint), and shares no code with the runtime.
//
//   x0      = E[id] · f32(√hidden)                          (the scale is an f32 buffer in transformers)
//   rms(x,w)= x / √(mean(x²) + eps) · (1 + w)
//   block:  h  = x + rms(o(attn(rms(x, in))), post_attn)
//           x' = h + rms(down(act(gate(u)) · up(u)), post_ff),  u = rms(h, pre_ff)
//   attn:   q, k per head → rms(·, q_norm / k_norm) → RoPE rotate-half with
//           inv_freq[i] = 1 / θ^(2i/hd) / factor, angle = pos · inv_freq[i];
//           s = q·k · query_pre_attn_scalar^-0.5; s = tanh(s/c)·c if attn softcapping;
//           key j visible to query i iff j ≤ i, and on sliding layers also i − W < j;
//           softmax; GQA: query head h reads KV head h / (heads / kv_heads)
//   output: logits = rms(x_L, norm) · Eᵀ (tied), then tanh(l/c)·c if final softcapping.
// Everything is computed in Double (inputs are the exact bf16/f32 weight values).

import Foundation

/// Deliberate mistakes the reference can make, to prove that the comparisons have teeth.
package enum SyntheticReferenceMistake: String, Sendable, CaseIterable {
    case none
    /// scores · head_dim^-0.5 instead of query_pre_attn_scalar^-0.5
    case scaleByHeadDim
    /// a sliding window one key wider (i − W ≤ j)
    case windowOneWider
    /// linear RoPE scaling also on sliding layers
    case ropeScalingEverywhere
    /// RMSNorm multiplies by w instead of (1 + w)
    case normWithoutPlusOne
    /// no √hidden embedding scale
    case noEmbedScale
    /// GQA: query head h reads KV head h % kv_heads instead of h / group
    case gqaInterleaved
}

package struct SyntheticReference {
    package struct Output {
        /// Input embeddings (scaled), [T, d].
        package var embeddings: [Double]
        /// Raw output of every block, [T, d] each.
        package var blocks: [[Double]]
        /// Output of the last block after the final norm, [T, d].
        package var finalNorm: [Double]
        /// [T, vocab].
        package var logits: [Double]
    }

    package let spec: SyntheticSpec
    package let weights: SyntheticWeights
    package var mistake: SyntheticReferenceMistake = .none

    package init(_ spec: SyntheticSpec, weights: SyntheticWeights? = nil, mistake: SyntheticReferenceMistake = .none) {
        self.spec = spec
        self.weights = weights ?? SyntheticWeights(spec: spec)
        self.mistake = mistake
    }

    private func w(_ name: String) -> [Double] { weights[name].map(Double.init) }

    /// Scaled embeddings of `ids`, [T, d].
    package func embed(_ ids: [Int]) -> [Double] {
        let d = spec.hiddenSize
        let e = weights["embed_tokens.weight"]
        let scale = mistake == .noEmbedScale ? 1 : Double(Float(Double(d).squareRoot()))
        var out: [Double] = []
        out.reserveCapacity(ids.count * d)
        for id in ids { for c in 0..<d { out.append(Double(e[id * d + c]) * scale) } }
        return out
    }

    package func forward(ids: [Int]) -> Output { forward(embeddings: embed(ids), rows: ids.count) }

    /// `blocks`: run only the first `blocks` decoder blocks (no final norm / logits then).
    package func forward(embeddings x0: [Double], rows t: Int, blocks: Int? = nil) -> Output {
        let s = spec, d = s.hiddenSize, hd = s.headDim
        let nBlocks = blocks ?? s.numLayers
        var x = x0
        var blockOuts: [[Double]] = []
        for l in 0..<nBlocks {
            x = block(l, x, rows: t)
            blockOuts.append(x)
        }
        guard nBlocks == s.numLayers else {
            return Output(embeddings: x0, blocks: blockOuts, finalNorm: [], logits: [])
        }
        let fw = w("norm.weight")
        var h = [Double](repeating: 0, count: t * d)
        for r in 0..<t { rmsNorm(x, r * d, d, fw, into: &h, r * d) }
        let e = weights["embed_tokens.weight"]
        var logits = [Double](repeating: 0, count: t * s.vocabSize)
        for r in 0..<t {
            for v in 0..<s.vocabSize {
                var acc = 0.0
                for c in 0..<d { acc += h[r * d + c] * Double(e[v * d + c]) }
                if let cap = s.finalLogitSoftcapping { acc = tanh(acc / cap) * cap }
                logits[r * s.vocabSize + v] = acc
            }
        }
        _ = hd
        return Output(embeddings: x0, blocks: blockOuts, finalNorm: h, logits: logits)
    }

    // MARK: - pieces

    private func rmsNorm(_ x: [Double], _ off: Int, _ n: Int, _ w: [Double], into y: inout [Double], _ yoff: Int) {
        var ss = 0.0
        for i in 0..<n { ss += x[off + i] * x[off + i] }
        let inv = 1 / (ss / Double(n) + spec.rmsNormEps).squareRoot()
        for i in 0..<n {
            let g = mistake == .normWithoutPlusOne ? w[i] : 1 + w[i]
            y[yoff + i] = x[off + i] * inv * g
        }
    }

    /// y[t, out] = x[t, in] · Wᵀ with W [out, in].
    private func linear(_ x: [Double], rows t: Int, _ wName: String, out: Int, in k: Int) -> [Double] {
        let wt = weights[wName]
        precondition(wt.count == out * k)
        var y = [Double](repeating: 0, count: t * out)
        for r in 0..<t {
            for o in 0..<out {
                var acc = 0.0
                for i in 0..<k { acc += x[r * k + i] * Double(wt[o * k + i]) }
                y[r * out + o] = acc
            }
        }
        return y
    }

    private func activation(_ x: Double) -> Double {
        switch spec.hiddenActivation {
        case "gelu":
            return 0.5 * x * (1 + erf(x / 2.0.squareRoot()))
        case "gelu_pytorch_tanh", "gelu_new":
            return 0.5 * x * (1 + tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x)))
        default:
            preconditionFailure("reference: activation \(spec.hiddenActivation)")
        }
    }

    /// cos/sin of the RoPE angles for position `pos` on layer `l` (hd/2 values each).
    private func ropeAngles(layer l: Int, pos: Int) -> [Double] {
        let s = spec, hd = s.headDim
        let full = s.isFullLayer[l]
        let theta = full ? s.ropeTheta : s.ropeLocalBaseFreq
        var factor = (full ? s.ropeLinearFactor : s.ropeLocalLinearFactor) ?? 1
        if mistake == .ropeScalingEverywhere { factor = s.ropeLinearFactor ?? 1 }
        return (0..<hd / 2).map { i in
            let invFreq = 1 / pow(theta, Double(2 * i) / Double(hd)) / factor
            return Double(pos) * invFreq
        }
    }

    private func rope(_ v: inout [Double], _ off: Int, angles: [Double]) {
        let half = spec.headDim / 2
        for i in 0..<half {
            let a = v[off + i], b = v[off + i + half]
            let c = cos(angles[i]), sn = sin(angles[i])
            v[off + i] = a * c - b * sn
            v[off + i + half] = b * c + a * sn
        }
    }

    private func block(_ l: Int, _ x: [Double], rows t: Int) -> [Double] {
        let s = spec, d = s.hiddenSize, hd = s.headDim
        let nH = s.numHeads, nKV = s.numKVHeads, ff = s.intermediateSize
        let p = "layers.\(l)."

        // attention
        var xn = [Double](repeating: 0, count: t * d)
        let inW = w(p + "input_layernorm.weight")
        for r in 0..<t { rmsNorm(x, r * d, d, inW, into: &xn, r * d) }
        var q = linear(xn, rows: t, p + "self_attn.q_proj.weight", out: nH * hd, in: d)
        var k = linear(xn, rows: t, p + "self_attn.k_proj.weight", out: nKV * hd, in: d)
        let v = linear(xn, rows: t, p + "self_attn.v_proj.weight", out: nKV * hd, in: d)
        let qn = w(p + "self_attn.q_norm.weight"), kn = w(p + "self_attn.k_norm.weight")
        for r in 0..<t {
            let ang = ropeAngles(layer: l, pos: r)
            for h in 0..<nH {
                let off = r * nH * hd + h * hd
                rmsNorm(q, off, hd, qn, into: &q, off)
                rope(&q, off, angles: ang)
            }
            for g in 0..<nKV {
                let off = r * nKV * hd + g * hd
                rmsNorm(k, off, hd, kn, into: &k, off)
                rope(&k, off, angles: ang)
            }
        }
        let scale = 1 / (mistake == .scaleByHeadDim ? Double(hd) : s.queryPreAttnScalar).squareRoot()
        let sliding = !s.isFullLayer[l]
        let window = s.slidingWindow + (mistake == .windowOneWider ? 1 : 0)
        let group = nH / nKV
        var attn = [Double](repeating: 0, count: t * nH * hd)
        for h in 0..<nH {
            let g = mistake == .gqaInterleaved ? h % nKV : h / group
            for i in 0..<t {
                var scores = [Double](repeating: -.infinity, count: t)
                for j in 0..<t {
                    let visible = j <= i && (!sliding || j > i - window)
                    guard visible else { continue }
                    var dot = 0.0
                    for c in 0..<hd { dot += q[i * nH * hd + h * hd + c] * k[j * nKV * hd + g * hd + c] }
                    var sc = dot * scale
                    if let cap = s.attnLogitSoftcapping { sc = tanh(sc / cap) * cap }
                    scores[j] = sc
                }
                let m = scores.max()!
                var sum = 0.0
                for j in 0..<t { scores[j] = exp(scores[j] - m); sum += scores[j] }
                for j in 0..<t where scores[j] != 0 {
                    let pj = scores[j] / sum
                    for c in 0..<hd { attn[i * nH * hd + h * hd + c] += pj * v[j * nKV * hd + g * hd + c] }
                }
            }
        }
        var o = linear(attn, rows: t, p + "self_attn.o_proj.weight", out: d, in: nH * hd)
        let paW = w(p + "post_attention_layernorm.weight")
        for r in 0..<t { rmsNorm(o, r * d, d, paW, into: &o, r * d) }
        var hres = x
        for i in 0..<(t * d) { hres[i] += o[i] }

        // MLP
        let pfW = w(p + "pre_feedforward_layernorm.weight")
        var u = [Double](repeating: 0, count: t * d)
        for r in 0..<t { rmsNorm(hres, r * d, d, pfW, into: &u, r * d) }
        let gate = linear(u, rows: t, p + "mlp.gate_proj.weight", out: ff, in: d)
        let up = linear(u, rows: t, p + "mlp.up_proj.weight", out: ff, in: d)
        var a = [Double](repeating: 0, count: t * ff)
        for i in 0..<(t * ff) { a[i] = activation(gate[i]) * up[i] }
        var down = linear(a, rows: t, p + "mlp.down_proj.weight", out: d, in: ff)
        let pffW = w(p + "post_feedforward_layernorm.weight")
        for r in 0..<t { rmsNorm(down, r * d, d, pffW, into: &down, r * d) }
        for i in 0..<(t * d) { hres[i] += down[i] }
        return hres
    }
}

/// max|got − ref| / max|ref| over all elements (the golden tests' measure).
package func syntheticRelDeviation(_ got: [Float], _ ref: [Double]) -> Double {
    precondition(got.count == ref.count, "deviation: \(got.count) values vs \(ref.count) reference values")
    var maxd = 0.0, maxr = 0.0
    for i in 0..<ref.count {
        maxd = max(maxd, abs(Double(got[i]) - ref[i]))
        maxr = max(maxr, abs(ref[i]))
    }
    return maxd / max(maxr, 1e-30)
}

/// max|a − b| / max|b| for two runtime outputs.
package func syntheticRelDeviation(_ a: [Float], _ b: [Float]) -> Double {
    syntheticRelDeviation(a, b.map(Double.init))
}
