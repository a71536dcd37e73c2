// Tiny random Gemma 3 checkpoints written to a temporary directory, for tests that need no download.
//
// One `SyntheticSpec` (dimensions + every config field that changes the math) and one seed give one
// set of weights; the same weights can be written in every layout the loader accepts:
//   - `.flat`:    Gemma3ForCausalLM, model_type gemma3_text, all fields at the top level,
//                 names `model.*`, a single `model.safetensors` (BF16 by default);
//   - `.wrapper`: Gemma3ForConditionalGeneration, model_type gemma3, text fields under `text_config`
//                 listing only the non-default ones (as the released 27B/12B configs do), names
//                 `language_model.model.*` (transformers < 4.52) or `model.language_model.*` (>= 4.52),
//                 extra `vision_tower.*` / `multi_modal_projector.*` tensors, sharded into N files
//                 with `model.safetensors.index.json` (F32 by default).
// and in both config dialects:
//   - `.v4`: rope_theta, rope_local_base_freq, rope_scaling {rope_type: linear, factor} (full layers
//            only), sliding_window_pattern;
//   - `.v5`: rope_parameters {full_attention: {...}, sliding_attention: {...}}, layer_types.
// Weight values are rounded to bf16 once, so a BF16 file and an F32 file hold exactly the same numbers
// and every layout must give bit-identical outputs.

import Foundation
import Quant
import struct NLARuntime.SplitMix64

/// SplitMix64: small, seedable, identical on every platform (SystemRandomNumberGenerator is not seedable).
package struct SyntheticRNG: RandomNumberGenerator {
    private var generator: SplitMix64
    package init(seed: UInt64) { generator = SplitMix64(seed: seed) }

    package mutating func next() -> UInt64 { generator.next() }

    /// Uniform in [lo, hi).
    package mutating func uniform(_ lo: Double, _ hi: Double) -> Double {
        lo + (hi - lo) * Double(next() >> 11) * 0x1p-53
    }

    /// Standard normal (Box–Muller).
    package mutating func normal() -> Double {
        let u1 = max(uniform(0, 1), 1e-300), u2 = uniform(0, 1)
        return (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2)
    }

    /// `count` token ids in 0..<vocab.
    package mutating func ids(_ count: Int, vocab: Int) -> [Int] {
        (0..<count).map { _ in Int(next() % UInt64(vocab)) }
    }
}

/// Every hyperparameter of a synthetic model. Defaults: 6 layers (full attention at layers 2 and 5),
/// GQA 4 query heads / 2 KV heads, head_dim 16 with query_pre_attn_scalar 24 (so the attention scale
/// is not head_dim^-0.5), linear RoPE scaling 8 on full layers, sliding window 4.
package struct SyntheticSpec: Sendable, CustomStringConvertible {
    package init() {}

    package var vocabSize = 96
    package var hiddenSize = 48
    package var intermediateSize = 64
    package var numLayers = 6
    package var numHeads = 4
    package var numKVHeads = 2
    package var headDim = 16
    package var maxPositions = 64
    package var slidingWindow = 4
    /// Every `pattern`-th layer (1-based) is full attention, as transformers 4.x derives layer_types.
    package var slidingWindowPattern = 3
    /// RoPE of full-attention layers: base and linear factor (nil = rope_type default).
    package var ropeTheta = 1_000_000.0
    package var ropeLinearFactor: Double? = 8
    /// RoPE of sliding layers. A linear factor here is only expressible in the 5.x dialect.
    package var ropeLocalBaseFreq = 10_000.0
    package var ropeLocalLinearFactor: Double? = nil
    package var queryPreAttnScalar = 24.0
    package var rmsNormEps = 1e-6
    package var attnLogitSoftcapping: Double? = nil
    package var finalLogitSoftcapping: Double? = nil
    package var hiddenActivation = "gelu_pytorch_tanh"
    package var seed: UInt64 = 0x5EED_0001

    /// true = full attention, per layer.
    package var isFullLayer: [Bool] { (0..<numLayers).map { ($0 + 1) % slidingWindowPattern == 0 } }
    package var layerTypeNames: [String] { isFullLayer.map { $0 ? "full_attention" : "sliding_attention" } }

    package var description: String {
        "L\(numLayers) d\(hiddenSize) H\(numHeads)/\(numKVHeads)×\(headDim) W\(slidingWindow) p\(slidingWindowPattern) "
            + "θ\(ropeTheta)/\(ropeLocalBaseFreq) lin\(ropeLinearFactor.map { "\($0)" } ?? "-") qpas\(queryPreAttnScalar) "
            + "eps\(rmsNormEps) cap\(attnLogitSoftcapping.map { "\($0)" } ?? "-")/\(finalLogitSoftcapping.map { "\($0)" } ?? "-") \(hiddenActivation)"
    }
}

/// The weights of a synthetic model, keyed by the name without prefix ("embed_tokens.weight",
/// "layers.3.mlp.up_proj.weight", "norm.weight"). Values are already bf16-representable.
package struct SyntheticWeights: Sendable {
    package struct Tensor: Sendable {
        package var name: String
        package var shape: [Int]
        package var values: [Float]
    }
    /// In checkpoint order (embedding, layers, final norm).
    package var tensors: [Tensor]
    private var index: [String: Int]

    package init(spec s: SyntheticSpec) {
        var rng = SyntheticRNG(seed: s.seed)
        var out: [Tensor] = []
        func bf16(_ x: Double) -> Float { bf16ToFloat(floatToBF16(Float(x))) }
        func add(_ name: String, _ shape: [Int], _ gen: (inout SyntheticRNG) -> Double) {
            let n = shape.reduce(1, *)
            out.append(Tensor(name: name, shape: shape, values: (0..<n).map { _ in bf16(gen(&rng)) }))
        }
        // Linear layers: uniform with variance 1/fan_in, so each projection keeps the scale of its input.
        func linear(_ name: String, _ outDim: Int, _ inDim: Int) {
            let a = (3.0 / Double(inDim)).squareRoot()
            add(name, [outDim, inDim]) { $0.uniform(-a, a) }
        }
        // Norm weights: small and random, so (1 + w) differs from both 1 and w.
        func norm(_ name: String, _ n: Int) { add(name, [n]) { $0.uniform(-0.4, 0.4) } }

        let d = s.hiddenSize, hd = s.headDim
        add("embed_tokens.weight", [s.vocabSize, d]) { 0.5 * $0.normal() }
        for l in 0..<s.numLayers {
            let p = "layers.\(l)."
            linear(p + "self_attn.q_proj.weight", s.numHeads * hd, d)
            linear(p + "self_attn.k_proj.weight", s.numKVHeads * hd, d)
            linear(p + "self_attn.v_proj.weight", s.numKVHeads * hd, d)
            linear(p + "self_attn.o_proj.weight", d, s.numHeads * hd)
            norm(p + "self_attn.q_norm.weight", hd)
            norm(p + "self_attn.k_norm.weight", hd)
            linear(p + "mlp.gate_proj.weight", s.intermediateSize, d)
            linear(p + "mlp.up_proj.weight", s.intermediateSize, d)
            linear(p + "mlp.down_proj.weight", d, s.intermediateSize)
            norm(p + "input_layernorm.weight", d)
            norm(p + "post_attention_layernorm.weight", d)
            norm(p + "pre_feedforward_layernorm.weight", d)
            norm(p + "post_feedforward_layernorm.weight", d)
        }
        norm("norm.weight", d)
        tensors = out
        index = Dictionary(uniqueKeysWithValues: out.enumerated().map { ($1.name, $0) })
    }

    package subscript(_ name: String) -> [Float] {
        guard let i = index[name] else { preconditionFailure("synthetic weights: no tensor \(name)") }
        return tensors[i].values
    }
}

package enum SyntheticLayout: Sendable, CustomStringConvertible {
    /// Gemma3ForCausalLM: `model.*`, one `model.safetensors`.
    case flat(dtype: DType)
    /// Gemma3ForConditionalGeneration: `prefix` is "language_model.model." or "model.language_model.",
    /// `shards` files plus `model.safetensors.index.json`; vision tensors included.
    case wrapper(prefix: String, shards: Int, dtype: DType)

    package static let flatBF16 = SyntheticLayout.flat(dtype: .bf16)
    package static let wrapperOld = SyntheticLayout.wrapper(prefix: "language_model.model.", shards: 3, dtype: .f32)
    package static let wrapperNew = SyntheticLayout.wrapper(prefix: "model.language_model.", shards: 2, dtype: .f32)

    package var prefix: String {
        switch self {
        case .flat: return "model."
        case .wrapper(let p, _, _): return p
        }
    }

    package var description: String {
        switch self {
        case .flat(let dt): return "flat \(dt.rawValue)"
        case .wrapper(let p, let n, let dt): return "wrapper \(p)* \(n) shards \(dt.rawValue)"
        }
    }
}

package enum SyntheticDialect: Sendable { case v4, v5 }

/// Writes a `SyntheticSpec` as a checkpoint directory.
package struct SyntheticCheckpoint {
    package let spec: SyntheticSpec
    package let weights: SyntheticWeights

    package init(_ spec: SyntheticSpec = SyntheticSpec()) {
        self.spec = spec
        weights = SyntheticWeights(spec: spec)
    }

    /// A fresh empty directory under the system temporary directory.
    package static func makeTempDirectory(_ tag: String = "model") -> String {
        TestPaths.tempDirectory("synthetic-" + tag)
    }

    package static func remove(_ directory: String) { try? FileManager.default.removeItem(atPath: directory) }

    /// The config.json object for `layout` and `dialect`.
    package func config(layout: SyntheticLayout, dialect: SyntheticDialect) -> [String: Any] {
        let s = spec
        let d = Gemma3DefaultsMirror.self
        // Text fields with the value they take for this spec, and whether that value is the default.
        var text: [(key: String, value: Any, isDefault: Bool)] = [
            ("vocab_size", s.vocabSize, s.vocabSize == d.vocabSize),
            ("hidden_size", s.hiddenSize, s.hiddenSize == d.hiddenSize),
            ("intermediate_size", s.intermediateSize, s.intermediateSize == d.intermediateSize),
            ("num_hidden_layers", s.numLayers, s.numLayers == d.numHiddenLayers),
            ("num_attention_heads", s.numHeads, s.numHeads == d.numAttentionHeads),
            ("num_key_value_heads", s.numKVHeads, s.numKVHeads == d.numKeyValueHeads),
            ("head_dim", s.headDim, s.headDim == d.headDim),
            ("max_position_embeddings", s.maxPositions, s.maxPositions == d.maxPositionEmbeddings),
            ("sliding_window", s.slidingWindow, s.slidingWindow == d.slidingWindow),
            ("query_pre_attn_scalar", s.queryPreAttnScalar, s.queryPreAttnScalar == d.queryPreAttnScalar),
            ("rms_norm_eps", s.rmsNormEps, s.rmsNormEps == d.rmsNormEps),
            ("hidden_activation", s.hiddenActivation, s.hiddenActivation == d.hiddenActivation),
            ("attn_logit_softcapping", s.attnLogitSoftcapping.map { $0 as Any } ?? NSNull(), s.attnLogitSoftcapping == nil),
            ("final_logit_softcapping", s.finalLogitSoftcapping.map { $0 as Any } ?? NSNull(), s.finalLogitSoftcapping == nil),
        ]
        func rope(_ theta: Double, _ factor: Double?) -> [String: Any] {
            if let factor { return ["rope_type": "linear", "factor": factor, "rope_theta": theta] }
            return ["rope_type": "default", "rope_theta": theta]
        }
        switch dialect {
        case .v4:
            precondition(s.ropeLocalLinearFactor == nil, "the 4.x dialect cannot scale sliding-layer RoPE")
            text.append(("rope_theta", s.ropeTheta, s.ropeTheta == d.ropeTheta))
            text.append(("rope_local_base_freq", s.ropeLocalBaseFreq, s.ropeLocalBaseFreq == d.ropeLocalBaseFreq))
            text.append(("rope_scaling", s.ropeLinearFactor.map { ["rope_type": "linear", "factor": $0] as Any } ?? NSNull(),
                         s.ropeLinearFactor == nil))
            text.append(("sliding_window_pattern", s.slidingWindowPattern, s.slidingWindowPattern == d.slidingWindowPattern))
        case .v5:
            text.append(("rope_parameters", ["full_attention": rope(s.ropeTheta, s.ropeLinearFactor),
                                             "sliding_attention": rope(s.ropeLocalBaseFreq, s.ropeLocalLinearFactor)], false))
            text.append(("layer_types", s.layerTypeNames, false))
        }
        switch layout {
        case .flat:
            var root: [String: Any] = [
                "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
                "bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0,
                "attention_bias": false, "attention_dropout": 0.0, "initializer_range": 0.02,
                "tie_word_embeddings": true, "use_cache": true, "torch_dtype": "bfloat16",
            ]
            for f in text { root[f.key] = f.value }
            return root
        case .wrapper:
            var tc: [String: Any] = ["model_type": "gemma3_text"]
            for f in text where !f.isDefault { tc[f.key] = f.value }
            return [
                "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
                "boi_token_index": 255_999, "eoi_token_index": 256_000, "image_token_index": 262_144,
                "eos_token_id": [1, 106], "initializer_range": 0.02, "mm_tokens_per_image": 256,
                "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
                "text_config": tc,
                "vision_config": ["hidden_size": 8, "image_size": 4, "intermediate_size": 16,
                                  "model_type": "siglip_vision_model", "num_attention_heads": 2,
                                  "num_hidden_layers": 1, "patch_size": 2, "vision_use_head": false],
            ]
        }
    }

    /// Safetensors entries (full names) for `layout`, including the vision tensors of the wrapper.
    package func entries(layout: SyntheticLayout) -> [SafetensorsWriter.Entry] {
        let dtype: DType
        switch layout {
        case .flat(let dt): dtype = dt
        case .wrapper(_, _, let dt): dtype = dt
        }
        func entry(_ name: String, _ shape: [Int], _ v: [Float]) -> SafetensorsWriter.Entry {
            switch dtype {
            case .bf16: return .init(name: name, shape: shape, bf16FromFloats: v)
            case .f32: return .init(name: name, shape: shape, floats: v)
            case .f16:
                let bits = v.map { Float16($0).bitPattern }
                return .init(name: name, dtype: .f16, shape: shape, bytes: bits.withUnsafeBytes { Data($0) })
            default: preconditionFailure("synthetic checkpoints are float")
            }
        }
        var out = weights.tensors.map { entry(layout.prefix + $0.name, $0.shape, $0.values) }
        if case .wrapper(let prefix, _, _) = layout {
            let vp = prefix == "model.language_model." ? "model." : ""
            var rng = SyntheticRNG(seed: spec.seed ^ 0xA11CE)
            func rnd(_ n: Int) -> [Float] { (0..<n).map { _ in Float(rng.uniform(-0.1, 0.1)) } }
            out.append(entry(vp + "vision_tower.vision_model.embeddings.patch_embedding.weight", [8, 3, 2, 2], rnd(96)))
            out.append(entry(vp + "vision_tower.vision_model.post_layernorm.weight", [8], rnd(8)))
            out.append(entry(vp + "multi_modal_projector.mm_input_projection_weight", [8, spec.hiddenSize], rnd(8 * spec.hiddenSize)))
            out.append(entry(vp + "multi_modal_projector.mm_soft_emb_norm.weight", [8], rnd(8)))
        }
        return out
    }

    /// Write config.json and the safetensors file(s) into `directory` (a new temporary directory when
    /// nil) and return the directory. `editConfig` and `editEntries` let error tests corrupt the output.
    @discardableResult
    package func write(layout: SyntheticLayout = .flatBF16, dialect: SyntheticDialect = .v4, to directory: String? = nil,
               editConfig: ((inout [String: Any]) -> Void)? = nil,
               editEntries: ((inout [SafetensorsWriter.Entry]) -> Void)? = nil) throws -> String {
        let dir = directory ?? Self.makeTempDirectory()
        var cfg = config(layout: layout, dialect: dialect)
        editConfig?(&cfg)
        let json = try JSONSerialization.data(withJSONObject: cfg, options: [.prettyPrinted, .sortedKeys])
        try json.write(to: URL(fileURLWithPath: dir + "/config.json"))

        var all = entries(layout: layout)
        editEntries?(&all)
        switch layout {
        case .flat:
            var w = SafetensorsWriter()
            for e in all { w.add(e) }
            try w.write(to: dir + "/model.safetensors")
        case .wrapper(_, let shards, _):
            precondition(shards >= 1)
            var weightMap: [String: String] = [:]
            var total = 0
            let per = (all.count + shards - 1) / shards
            for s in 0..<shards {
                let file = String(format: "model-%05d-of-%05d.safetensors", s + 1, shards)
                var w = SafetensorsWriter()
                for e in all[min(s * per, all.count)..<min((s + 1) * per, all.count)] {
                    w.add(e)
                    weightMap[e.name] = file
                    total += e.bytes.count
                }
                try w.write(to: dir + "/" + file)
            }
            let index: [String: Any] = ["metadata": ["total_size": total], "weight_map": weightMap]
            try JSONSerialization.data(withJSONObject: index, options: [.prettyPrinted, .sortedKeys])
                .write(to: URL(fileURLWithPath: dir + "/model.safetensors.index.json"))
        }
        return dir
    }
}

/// transformers' `Gemma3TextConfig` defaults, restated here (not read from `Gemma3Defaults`) so that the
/// wrapper writer's "omit default fields" decision does not depend on the code under test.
package enum Gemma3DefaultsMirror {
    package static let vocabSize = 262_208
    package static let hiddenSize = 2304
    package static let intermediateSize = 9216
    package static let numHiddenLayers = 26
    package static let numAttentionHeads = 8
    package static let numKeyValueHeads = 4
    package static let headDim = 256
    package static let hiddenActivation = "gelu_pytorch_tanh"
    package static let maxPositionEmbeddings = 131_072
    package static let rmsNormEps = 1e-6
    package static let ropeTheta = 1_000_000.0
    package static let ropeLocalBaseFreq = 10_000.0
    package static let queryPreAttnScalar = 256.0
    package static let slidingWindow = 4096
    package static let slidingWindowPattern = 6
}

/// A raw safetensors file from a literal JSON header and data bytes (for malformed-file tests).
/// The header is padded with spaces to a multiple of 8, as the writer does.
package func syntheticRawSafetensors(header: String, data: Data, declaredHeaderLength: UInt64? = nil) -> Data {
    var h = Data(header.utf8)
    while h.count % 8 != 0 { h.append(0x20) }
    var len = (declaredHeaderLength ?? UInt64(h.count)).littleEndian
    var out = Data()
    withUnsafeBytes(of: &len) { out.append(contentsOf: $0) }
    out.append(h)
    out.append(data)
    return out
}
