// Gemma 3 text configuration, decoded from a Hugging Face `config.json`.
//
// Accepts:
// - flat text configs (`Gemma3ForCausalLM`, model_type `gemma3_text`), and the multimodal wrapper
//   (`Gemma3ForConditionalGeneration`, model_type `gemma3`) whose text fields sit under `text_config`
//   (the released 27B/12B files list only the non-default ones there);
// - both dialects seen in the wild: transformers 4.x (`rope_theta`, `rope_local_base_freq`,
//   `rope_scaling` applied to full-attention layers only, `sliding_window_pattern`) and 5.x
//   (`rope_parameters` per layer type, `layer_types`).
// Missing fields take the defaults of transformers' `Gemma3TextConfig` (see `Gemma3Defaults`).
// Values that would change the math in a way this runtime does not implement are errors.

import Foundation
import Quant

public enum ModelError: Error, CustomStringConvertible {
    case config(file: String, reason: String)
    case weights(file: String, reason: String)
    case input(String)

    /// One line: control characters quoted from the input (keys, names) are escaped.
    public var description: String { oneLineMessage(unescapedDescription) }

    private var unescapedDescription: String {
        switch self {
        case .config(let f, let r): return "\(f): \(r)"
        case .weights(let f, let r): return "\(f): \(r)"
        case .input(let r): return r
        }
    }
}

/// Defaults of transformers' `Gemma3TextConfig.__init__`
/// (src/transformers/models/gemma3/configuration_gemma3.py, transformers 4.50–5.x; the values are the
/// same in both lines). Kept in one place: every missing config field takes its value from here.
public enum Gemma3Defaults {
    public static let vocabSize = 262_208
    public static let hiddenSize = 2304
    public static let intermediateSize = 9216
    public static let numHiddenLayers = 26
    public static let numAttentionHeads = 8
    public static let numKeyValueHeads = 4
    public static let headDim = 256
    public static let hiddenActivation = "gelu_pytorch_tanh"
    public static let maxPositionEmbeddings = 131_072
    public static let rmsNormEps = 1e-6
    public static let ropeTheta = 1_000_000.0
    public static let ropeLocalBaseFreq = 10_000.0
    public static let queryPreAttnScalar = 256.0
    public static let slidingWindow = 4096
    public static let slidingWindowPattern = 6
    public static let tieWordEmbeddings = true
    public static let attentionBias = false
    public static let bosTokenId = 2
    public static let eosTokenId = 1
    public static let padTokenId = 0
}

public enum LayerType: String, Sendable {
    case sliding = "sliding_attention"
    case full = "full_attention"
}

public enum Activation: String, Sendable {
    /// 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))): transformers' "gelu_pytorch_tanh" and "gelu_new".
    case geluTanh
    /// 0.5·x·(1 + erf(x/√2)): transformers' "gelu".
    case geluExact

    init?(hfName: String) {
        switch hfName {
        case "gelu_pytorch_tanh", "gelu_new", "gelu_fast_tanh": self = .geluTanh
        case "gelu": self = .geluExact
        default: return nil
        }
    }
}

/// RoPE parameters of one layer type. Only the "default" and "linear" rope types exist in Gemma 3
/// checkpoints; others are refused rather than silently approximated.
public struct RopeParams: Sendable, Equatable {
    public var theta: Double
    /// Linear position-interpolation factor (inv_freq / factor); 1 = none.
    public var linearFactor: Double = 1
}

public struct Gemma3Config: Sendable {
    public var modelType: String
    public var architectures: [String]
    /// True when the text fields came from `text_config` (the multimodal wrapper).
    public var isMultimodalWrapper: Bool

    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var activation: Activation
    public var maxPositionEmbeddings: Int
    public var rmsNormEps: Float
    /// Attention scores are multiplied by queryPreAttnScalar^-0.5 (not headDim^-0.5).
    public var queryPreAttnScalar: Double
    public var slidingWindow: Int
    public var layerTypes: [LayerType]
    public var ropeFull: RopeParams
    public var ropeSliding: RopeParams
    public var attnLogitSoftcapping: Float?
    public var finalLogitSoftcapping: Float?
    public var tieWordEmbeddings: Bool
    public var attentionBias: Bool
    public var bosTokenId: Int
    public var eosTokenIds: [Int]
    public var padTokenId: Int

    /// Embedding scale: transformers stores `hidden_size ** 0.5` (a Python double) in an f32 tensor,
    /// so an f32 model multiplies by f32(√d) (25.298221588134766 for d = 640).
    public var embedScale: Float { Float(Double(hiddenSize).squareRoot()) }
    public var attentionScale: Float { Float(1.0 / queryPreAttnScalar.squareRoot()) }
    public var qDim: Int { numAttentionHeads * headDim }
    public var kvDim: Int { numKeyValueHeads * headDim }

    public func rope(for layer: Int) -> RopeParams {
        layerTypes[layer] == .full ? ropeFull : ropeSliding
    }

    /// Decode `config.json` at `path`.
    public static func load(path: String) throws -> Gemma3Config {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ModelError.config(file: path, reason: "cannot read file")
        }
        return try decode(data, file: path)
    }

    public static func decode(_ data: Data, file: String) throws -> Gemma3Config {
        let obj: Any
        do { obj = try JSONSerialization.jsonObject(with: data) } catch {
            throw ModelError.config(file: file, reason: "malformed JSON")
        }
        guard let root = obj as? [String: Any] else {
            throw ModelError.config(file: file, reason: "top level is not a JSON object")
        }
        if let dup = JSONDuplicateKeys.first(in: data) {
            throw ModelError.config(file: file, reason: "duplicate key '\(dup)'")
        }
        let rootReader = JSONFields(root, file: file, path: "")
        let architectures = try rootReader.stringArray("architectures") ?? []
        let rootType = try rootReader.string("model_type")
        var text = rootReader
        var wrapper = false
        if let tc = root["text_config"] {
            guard let tcd = tc as? [String: Any] else {
                throw ModelError.config(file: file, reason: "text_config is not an object")
            }
            text = JSONFields(tcd, file: file, path: "text_config.")
            wrapper = true
        } else if rootType == "gemma3" {
            throw ModelError.config(file: file, reason: "model_type gemma3 (multimodal wrapper) needs a text_config object")
        }
        let modelType = try text.string("model_type") ?? (wrapper ? "gemma3_text" : rootType ?? "")
        guard modelType == "gemma3_text" || modelType == "gemma3" else {
            throw ModelError.config(file: file, reason: "model_type '\(modelType)' is not Gemma 3 (expected gemma3_text or gemma3)")
        }

        let d = Gemma3Defaults.self
        var c = Gemma3Config(
            modelType: modelType, architectures: architectures, isMultimodalWrapper: wrapper,
            vocabSize: try text.int("vocab_size") ?? d.vocabSize,
            hiddenSize: try text.int("hidden_size") ?? d.hiddenSize,
            intermediateSize: try text.int("intermediate_size") ?? d.intermediateSize,
            numHiddenLayers: try text.int("num_hidden_layers") ?? d.numHiddenLayers,
            numAttentionHeads: try text.int("num_attention_heads") ?? d.numAttentionHeads,
            numKeyValueHeads: try text.int("num_key_value_heads") ?? d.numKeyValueHeads,
            headDim: try text.int("head_dim") ?? d.headDim,
            activation: .geluTanh,
            maxPositionEmbeddings: try text.int("max_position_embeddings") ?? d.maxPositionEmbeddings,
            rmsNormEps: Float(try text.double("rms_norm_eps") ?? d.rmsNormEps),
            queryPreAttnScalar: try text.double("query_pre_attn_scalar") ?? d.queryPreAttnScalar,
            slidingWindow: try text.int("sliding_window") ?? d.slidingWindow,
            layerTypes: [],
            ropeFull: RopeParams(theta: d.ropeTheta), ropeSliding: RopeParams(theta: d.ropeLocalBaseFreq),
            attnLogitSoftcapping: (try text.double("attn_logit_softcapping")).map(Float.init),
            finalLogitSoftcapping: (try text.double("final_logit_softcapping")).map(Float.init),
            tieWordEmbeddings: try text.bool("tie_word_embeddings") ?? rootReader.bool("tie_word_embeddings") ?? d.tieWordEmbeddings,
            attentionBias: try text.bool("attention_bias") ?? d.attentionBias,
            bosTokenId: try text.int("bos_token_id") ?? rootReader.int("bos_token_id") ?? d.bosTokenId,
            eosTokenIds: [], padTokenId: try text.int("pad_token_id") ?? rootReader.int("pad_token_id") ?? d.padTokenId)

        // Sizes first: the layer types below are built from num_hidden_layers.
        try validateSizes(c, file: file, path: text.path)

        let actName = try text.string("hidden_activation") ?? text.string("hidden_act") ?? d.hiddenActivation
        guard let act = Activation(hfName: actName) else {
            throw ModelError.config(file: file, reason: "\(text.path)hidden_activation '\(actName)' is not supported (gelu_pytorch_tanh, gelu_new, gelu)")
        }
        c.activation = act

        if let eosList = try text.intArray("eos_token_id") ?? rootReader.intArray("eos_token_id") {
            c.eosTokenIds = eosList
        } else {
            c.eosTokenIds = [try text.int("eos_token_id") ?? rootReader.int("eos_token_id") ?? d.eosTokenId]
        }

        // Layer types: 5.x `layer_types`, else 4.x `sliding_window_pattern` (every Nth layer full).
        if let lt = try text.stringArray("layer_types") {
            guard lt.count == c.numHiddenLayers else {
                throw ModelError.config(file: file, reason: "\(text.path)layer_types has \(lt.count) entries, num_hidden_layers is \(c.numHiddenLayers)")
            }
            c.layerTypes = try lt.map { s in
                guard let t = LayerType(rawValue: s) else {
                    throw ModelError.config(file: file, reason: "\(text.path)layer_types: unknown layer type '\(s)'")
                }
                return t
            }
        } else {
            let pattern = try text.int("sliding_window_pattern") ?? text.int("_sliding_window_pattern") ?? d.slidingWindowPattern
            guard pattern >= 1 else {
                throw ModelError.config(file: file, reason: "\(text.path)sliding_window_pattern must be >= 1")
            }
            c.layerTypes = (0..<c.numHiddenLayers).map { ($0 + 1) % pattern == 0 ? .full : .sliding }
        }

        // RoPE. 5.x: rope_parameters {full_attention: {...}, sliding_attention: {...}} (or one flat dict).
        if let rp = text.dict["rope_parameters"], !(rp is NSNull) {
            guard let rpd = rp as? [String: Any] else {
                throw ModelError.config(file: file, reason: "\(text.path)rope_parameters is not an object")
            }
            let rpr = JSONFields(rpd, file: file, path: text.path + "rope_parameters.")
            if rpd["full_attention"] != nil || rpd["sliding_attention"] != nil {
                if let f = try rpr.object("full_attention") { c.ropeFull = try parseRope(f, defaultTheta: d.ropeTheta) }
                if let s = try rpr.object("sliding_attention") { c.ropeSliding = try parseRope(s, defaultTheta: d.ropeLocalBaseFreq) }
            } else {
                c.ropeFull = try parseRope(rpr, defaultTheta: d.ropeTheta)
                c.ropeSliding = RopeParams(theta: try text.double("rope_local_base_freq") ?? d.ropeLocalBaseFreq)
            }
        } else {
            // 4.x: rope_theta + rope_scaling apply to full-attention layers; local layers use
            // rope_local_base_freq with the default rope type.
            c.ropeFull = RopeParams(theta: try text.double("rope_theta") ?? d.ropeTheta)
            if let rs = try text.object("rope_scaling") {
                let scaled = try parseRope(rs, defaultTheta: c.ropeFull.theta)
                c.ropeFull.linearFactor = scaled.linearFactor
            }
            c.ropeSliding = RopeParams(theta: try text.double("rope_local_base_freq") ?? d.ropeLocalBaseFreq)
        }

        if try text.bool("use_bidirectional_attention") == true {
            throw ModelError.config(file: file, reason: "\(text.path)use_bidirectional_attention is not supported")
        }
        if c.attentionBias {
            throw ModelError.config(file: file, reason: "\(text.path)attention_bias true is not supported")
        }
        guard c.numAttentionHeads % c.numKeyValueHeads == 0 else {
            throw ModelError.config(file: file, reason: "\(text.path)num_attention_heads \(c.numAttentionHeads) is not a multiple of num_key_value_heads \(c.numKeyValueHeads)")
        }
        guard c.headDim % 2 == 0 else {
            throw ModelError.config(file: file, reason: "\(text.path)head_dim must be even for RoPE")
        }
        try validateRanges(c, file: file, path: text.path)
        return c
    }

    /// Sizes must be positive and bounded before anything is allocated from them (a negative or huge
    /// num_hidden_layers would otherwise trap or exhaust memory while the layer types are built).
    static func validateSizes(_ c: Gemma3Config, file: String, path: String) throws {
        let sizes = [("hidden_size", c.hiddenSize), ("intermediate_size", c.intermediateSize),
                     ("num_hidden_layers", c.numHiddenLayers), ("num_attention_heads", c.numAttentionHeads),
                     ("num_key_value_heads", c.numKeyValueHeads), ("head_dim", c.headDim),
                     ("vocab_size", c.vocabSize), ("sliding_window", c.slidingWindow),
                     ("max_position_embeddings", c.maxPositionEmbeddings)]
        for (name, v) in sizes where v <= 0 {
            throw ModelError.config(file: file, reason: "\(path)\(name) must be positive, got \(v)")
        }
        // Sizes: large enough for every released Gemma 3 (27B: hidden 5376, intermediate 21504,
        // vocab 262208, context 131072), small enough that products of them cannot overflow.
        for (name, v, limit) in [("hidden_size", c.hiddenSize, 1 << 20), ("intermediate_size", c.intermediateSize, 1 << 22),
                                 ("num_hidden_layers", c.numHiddenLayers, 4096), ("num_attention_heads", c.numAttentionHeads, 4096),
                                 ("num_key_value_heads", c.numKeyValueHeads, 4096), ("head_dim", c.headDim, 1 << 16),
                                 ("vocab_size", c.vocabSize, 1 << 24), ("max_position_embeddings", c.maxPositionEmbeddings, 1 << 24),
                                 ("sliding_window", c.slidingWindow, 1 << 30)] where v > limit {
            throw ModelError.config(file: file, reason: "\(path)\(name) is \(v); must be at most \(limit)")
        }
    }

    /// Values that parse but cannot be right: each error names the field and the accepted range.
    static func validateRanges(_ c: Gemma3Config, file: String, path: String) throws {
        func bad(_ field: String, _ value: Any, _ range: String) -> ModelError {
            .config(file: file, reason: "\(path)\(field) is \(value); must be \(range)")
        }
        let eps = c.rmsNormEps
        guard eps.isFinite, eps > 0, eps < 1 else { throw bad("rms_norm_eps", eps, "in (0, 1), e.g. 1e-06") }
        guard c.queryPreAttnScalar.isFinite, c.queryPreAttnScalar > 0 else {
            throw bad("query_pre_attn_scalar", c.queryPreAttnScalar, "a finite number > 0")
        }
        for (name, r) in [("rope theta (rope_theta / rope_parameters.full_attention)", c.ropeFull),
                          ("rope theta (rope_local_base_freq / rope_parameters.sliding_attention)", c.ropeSliding)] {
            guard r.theta.isFinite, r.theta > 0 else { throw bad(name, r.theta, "a finite number > 0") }
            guard r.linearFactor.isFinite, r.linearFactor > 0 else { throw bad(name + " factor", r.linearFactor, "a finite number > 0") }
        }
        for (name, v) in [("attn_logit_softcapping", c.attnLogitSoftcapping), ("final_logit_softcapping", c.finalLogitSoftcapping)] {
            if let v, !(v.isFinite && v > 0) { throw bad(name, v, "null or a finite number > 0") }
        }
        let vocab = "in 0..<\(c.vocabSize) (vocab_size)"
        guard (0..<c.vocabSize).contains(c.bosTokenId) else { throw bad("bos_token_id", c.bosTokenId, vocab) }
        guard (0..<c.vocabSize).contains(c.padTokenId) else { throw bad("pad_token_id", c.padTokenId, vocab) }
        guard !c.eosTokenIds.isEmpty else { throw bad("eos_token_id", "[]", "an id or a non-empty list of ids") }
        // An eos id past the vocabulary can never be generated (harmless, and common in small test
        // configs that keep Gemma's [1, 106]); a negative one is a broken file.
        for id in c.eosTokenIds where id < 0 || id > Int(Int32.max) { throw bad("eos_token_id", id, ">= 0") }
    }

    private static func parseRope(_ r: JSONFields, defaultTheta: Double) throws -> RopeParams {
        let type = try r.string("rope_type") ?? r.string("type") ?? "default"
        let theta = try r.double("rope_theta") ?? defaultTheta
        switch type {
        case "default":
            return RopeParams(theta: theta)
        case "linear":
            guard let f = try r.double("factor"), f > 0 else {
                throw ModelError.config(file: r.file, reason: "\(r.path)factor is required and must be > 0 for linear rope")
            }
            return RopeParams(theta: theta, linearFactor: f)
        default:
            throw ModelError.config(file: r.file, reason: "\(r.path)rope_type '\(type)' is not supported (default, linear)")
        }
    }
}

/// Typed access to a JSON object with errors that name the file and the key path.
/// JSON null reads as absent.
struct JSONFields {
    let dict: [String: Any]
    let file: String
    let path: String

    init(_ dict: [String: Any], file: String, path: String) {
        self.dict = dict; self.file = file; self.path = path
    }

    private func value(_ key: String) -> Any? {
        guard let v = dict[key], !(v is NSNull) else { return nil }
        return v
    }

    private func typeError(_ key: String, _ expected: String) -> ModelError {
        .config(file: file, reason: "\(path)\(key) must be \(expected)")
    }

    func string(_ key: String) throws -> String? {
        guard let v = value(key) else { return nil }
        guard let s = v as? String else { throw typeError(key, "a string") }
        return s
    }

    func number(_ key: String) throws -> NSNumber? {
        guard let v = value(key) else { return nil }
        guard let n = v as? NSNumber, !(CFGetTypeIDIsBool(n)) else { throw typeError(key, "a number") }
        return n
    }

    func int(_ key: String) throws -> Int? {
        guard let n = try number(key) else { return nil }
        guard let i = Int(exactly: n.doubleValue) else { throw typeError(key, "an integer") }
        return i
    }

    func double(_ key: String) throws -> Double? {
        try number(key)?.doubleValue
    }

    func bool(_ key: String) throws -> Bool? {
        guard let v = value(key) else { return nil }
        guard let n = v as? NSNumber, CFGetTypeIDIsBool(n) else { throw typeError(key, "true or false") }
        return n.boolValue
    }

    func stringArray(_ key: String) throws -> [String]? {
        guard let v = value(key) else { return nil }
        guard let a = v as? [Any] else { throw typeError(key, "an array of strings") }
        return try a.map { guard let s = $0 as? String else { throw typeError(key, "an array of strings") }; return s }
    }

    func intArray(_ key: String) throws -> [Int]? {
        guard let v = value(key), let a = v as? [Any] else { return nil }
        return try a.map {
            guard let n = $0 as? NSNumber, !CFGetTypeIDIsBool(n), let i = Int(exactly: n.doubleValue) else { throw typeError(key, "an integer or an array of integers") }
            return i
        }
    }

    func object(_ key: String) throws -> JSONFields? {
        guard let v = value(key) else { return nil }
        guard let d = v as? [String: Any] else { throw typeError(key, "an object") }
        return JSONFields(d, file: file, path: path + key + ".")
    }
}

/// JSONSerialization on Linux returns booleans as NSNumber; tell them apart from 0/1.
@inline(__always)
func CFGetTypeIDIsBool(_ n: NSNumber) -> Bool {
    #if canImport(Darwin)
    return CFGetTypeID(n) == CFBooleanGetTypeID()
    #else
    return type(of: n) == type(of: NSNumber(value: true))
    #endif
}
