// llama.cpp's dialect of a Gemma 3 GGUF, both ways:
// - writing (`quantize --names llama.cpp`): llama.cpp's tensor names, `gemma3.*` hyperparameters,
//   `tokenizer.ggml.*` built from tokenizer.json, norm weights stored as (1 + w) in f32;
// - reading (any Gemma 3 GGUF made by llama.cpp's converter): tensor names mapped back to the HF names
//   the loader uses, norms shifted back to w, and config.json / generation_config.json / tokenizer.json /
//   tokenizer_config.json synthesized from the metadata when the file does not embed ours.
//
// Facts (llama.cpp as vendored in llama-cpp-python 0.3.36: conversion/gemma.py `Gemma3Model`,
// conversion/base.py `set_gguf_parameters`, src/models/gemma3.cpp, src/llama-model.cpp; transformers
// integrations/gguf/gguf_tokenizer_mapping.py for the way back):
// - every tensor named `*norm.weight` is written as w + 1 (Gemma3RMSNorm multiplies by 1 + w); llama.cpp
//   then applies a plain RMSNorm;
// - `lm_head.weight` is never written (tied to token_embd); an untied head is `output.weight`;
// - keys: context_length, embedding_length, block_count, feed_forward_length, attention.head_count,
//   attention.head_count_kv, attention.key_length, attention.value_length,
//   attention.layer_norm_rms_epsilon, rope.freq_base (full-attention layers), rope.freq_base_swa
//   (sliding layers, default 10000), attention.sliding_window, rope.scaling.type/factor (linear, full
//   layers only), final_logit_softcapping; attention.sliding_window_pattern (default 6: layer i is full
//   iff (i + 1) % 6 == 0; a per-layer bool array "is sliding" otherwise);
// - llama.cpp has no query_pre_attn_scalar: it scales queries by 1/sqrt(n_embd / n_head) for the 62-block
//   27B and 1/sqrt(head_dim) otherwise;
// - tokenizer: model "llama" (SentencePiece), pre "default", tokens / scores / token_type in id order
//   (1 normal, 3 control, 4 user-defined, 6 byte; Gemma's <unk> is a control token), bos/eos/unk/padding ids, add_bos/add_eos,
//   add_space_prefix false; Gemma's runs of 2–31 spaces are user-defined tokens spelled with real spaces
//   (tokenizer.json spells them with "▁"); no merges are stored: they follow the token order.

import Foundation
import Quant

public enum TensorNaming: String, Sendable, CaseIterable {
    /// Hugging Face names (`model.layers.0.self_attn.q_proj.weight`), norms as stored by transformers.
    case hf = "hf"
    /// llama.cpp names (`blk.0.attn_q.weight`), gemma3.* / tokenizer.ggml.* metadata, norms as (1 + w).
    case llamaCpp = "llama.cpp"
}

public enum LlamaCppGGUF {
    /// HF block-module name → llama.cpp block tensor name.
    static let blockMap: [(hf: String, ll: String)] = [
        ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"), ("self_attn.q_norm", "attn_q_norm"), ("self_attn.k_norm", "attn_k_norm"),
        ("input_layernorm", "attn_norm"), ("post_attention_layernorm", "post_attention_norm"),
        ("pre_feedforward_layernorm", "ffn_norm"), ("post_feedforward_layernorm", "post_ffw_norm"),
        ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"), ("mlp.down_proj", "ffn_down"),
    ]
    static let topMap: [(hf: String, ll: String)] = [
        ("embed_tokens", "token_embd"), ("norm", "output_norm"),
    ]

    /// The llama.cpp name of an HF tensor name (any accepted prefix), or nil if llama.cpp has none
    /// (`lm_head.weight` is handled by the caller: dropped when tied, `output.weight` otherwise).
    public static func llamaName(hf name: String) -> String? {
        if name.hasSuffix("lm_head.weight") { return "output.weight" }
        guard name.hasSuffix(".weight") else { return nil }
        var base = String(name.dropLast(".weight".count))
        for p in ["model.language_model.", "language_model.model.", "model."] where base.hasPrefix(p) {
            base = String(base.dropFirst(p.count)); break
        }
        if let t = topMap.first(where: { $0.hf == base }) { return t.ll + ".weight" }
        let parts = base.split(separator: ".", maxSplits: 2).map(String.init)
        guard parts.count == 3, parts[0] == "layers", let i = Int(parts[1]),
              let b = blockMap.first(where: { $0.hf == parts[2] }) else { return nil }
        return "blk.\(i).\(b.ll).weight"
    }

    /// The HF name (prefix "model.") of a llama.cpp tensor name, or nil if it is not a Gemma 3 tensor.
    public static func hfName(llama name: String) -> String? {
        if name == "output.weight" { return "lm_head.weight" }
        guard name.hasSuffix(".weight") else { return nil }
        let base = String(name.dropLast(".weight".count))
        if let t = topMap.first(where: { $0.ll == base }) { return "model.\(t.hf).weight" }
        let parts = base.split(separator: ".", maxSplits: 2).map(String.init)
        guard parts.count == 3, parts[0] == "blk", let i = Int(parts[1]),
              let b = blockMap.first(where: { $0.ll == parts[2] }) else { return nil }
        return "model.layers.\(i).\(b.hf).weight"
    }

    /// True for the tensors llama.cpp's Gemma 3 converter stores as (1 + w).
    public static func isShiftedNorm(hf name: String) -> Bool { name.hasSuffix("norm.weight") }

    /// True when a GGUF file uses llama.cpp's tensor names.
    public static func usesLlamaNames(_ names: some Sequence<String>) -> Bool {
        names.contains("token_embd.weight")
    }

    /// llama.cpp's `general.file_type` (enum llama_ftype) for our target types.
    static func fileType(_ t: QuantType) -> UInt32? {
        switch t {
        case .f32: return 0
        case .f16: return 1
        case .q4_0: return 2
        case .q8_0: return 7
        case .q5_0: return 8
        case .q4_k: return 14  // MOSTLY_Q4_K_S (also our q4_k_m mix: the field is informational)
        case .q6_k: return 18
        case .iq4_nl: return 25
        case .bf16: return 32
        }
    }

    // MARK: - Writing

    /// The `gemma3.*` and `tokenizer.ggml.*` metadata llama.cpp needs, from our config and tokenizer files.
    public static func metadata(config c: Gemma3Config, configName: String, tokenizerJSON: Data, tokenizerName: String,
                                tokenizerConfig: Data?, fileType: QuantType) throws -> [(String, GGUFValue)] {
        var kv: [(String, GGUFValue)] = []
        let a = "gemma3."
        kv.append((a + "context_length", .uint32(UInt32(c.maxPositionEmbeddings))))
        kv.append((a + "embedding_length", .uint32(UInt32(c.hiddenSize))))
        kv.append((a + "block_count", .uint32(UInt32(c.numHiddenLayers))))
        kv.append((a + "feed_forward_length", .uint32(UInt32(c.intermediateSize))))
        kv.append((a + "attention.head_count", .uint32(UInt32(c.numAttentionHeads))))
        kv.append((a + "attention.head_count_kv", .uint32(UInt32(c.numKeyValueHeads))))
        kv.append((a + "attention.key_length", .uint32(UInt32(c.headDim))))
        kv.append((a + "attention.value_length", .uint32(UInt32(c.headDim))))
        kv.append((a + "attention.layer_norm_rms_epsilon", .float32(c.rmsNormEps)))
        kv.append((a + "rope.freq_base", .float32(Float(c.ropeFull.theta))))
        kv.append((a + "rope.freq_base_swa", .float32(Float(c.ropeSliding.theta))))
        if c.ropeFull.linearFactor != 1 {
            kv.append((a + "rope.scaling.type", .string("linear")))
            kv.append((a + "rope.scaling.factor", .float32(Float(c.ropeFull.linearFactor))))
        }
        if c.ropeSliding.linearFactor != 1 {
            throw ModelError.config(file: configName, reason: "linear rope scaling on sliding layers has no llama.cpp key")
        }
        if c.attnLogitSoftcapping != nil {
            throw ModelError.config(file: configName, reason: "attn_logit_softcapping has no Gemma 3 key in llama.cpp")
        }
        if let s = c.finalLogitSoftcapping { kv.append((a + "final_logit_softcapping", .float32(s))) }
        let hasSliding = c.layerTypes.contains(.sliding)
        if hasSliding {
            kv.append((a + "attention.sliding_window", .uint32(UInt32(c.slidingWindow))))
            let defaultPattern = (0..<c.numHiddenLayers).map { ($0 + 1) % 6 == 0 ? LayerType.full : .sliding }
            if c.layerTypes != defaultPattern {
                kv.append((a + "attention.sliding_window_pattern", .array(.bool(c.layerTypes.map { $0 == .sliding }))))
            }
        }
        let llamaScalar = c.numHiddenLayers == 62 ? Double(c.hiddenSize / c.numAttentionHeads) : Double(c.headDim)
        if llamaScalar != c.queryPreAttnScalar {
            FileHandle.standardError.write(Data(("note: llama.cpp scales Gemma 3 queries by 1/sqrt(\(Int(llamaScalar))) for a \(c.numHiddenLayers)-block model; " +
                "this config's query_pre_attn_scalar is \(c.queryPreAttnScalar) (our runtime reads the embedded config.json)\n").utf8))
        }
        kv.append(("general.file_type", .uint32(Self.fileType(fileType) ?? 0)))
        kv.append(("general.quantization_version", .uint32(2)))
        kv += try tokenizerMetadata(tokenizerJSON, name: tokenizerName, tokenizerConfig: tokenizerConfig, config: c)
        return kv
    }

    /// tokenizer.ggml.* (SentencePiece "llama" model) from a Gemma tokenizer.json (BPE, byte fallback).
    static func tokenizerMetadata(_ data: Data, name: String, tokenizerConfig: Data?, config c: Gemma3Config) throws -> [(String, GGUFValue)] {
        guard let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let model = root["model"] as? [String: Any] else {
            throw ModelError.input("\(name): not a tokenizer.json with a model object")
        }
        guard (model["type"] as? String) == "BPE", (model["byte_fallback"] as? Bool) == true else {
            throw ModelError.input("\(name): only a BPE tokenizer with byte_fallback (Gemma's) can be written as a llama.cpp SentencePiece vocabulary")
        }
        // The vocabulary from the tokenizer's own reader: keys as bytes (Swift's [String: …] would merge
        // canonically equivalent keys, which Gemma's vocabulary has).
        let parsed = try TokJSONReader.parseTokenizerFile(data, file: name)
        guard let table = parsed.vocab else { throw ModelError.input("\(name): model.vocab is not an object") }
        var added: [Int: (content: String, special: Bool)] = [:]
        for t in root["added_tokens"] as? [[String: Any]] ?? [] {
            if let id = (t["id"] as? NSNumber)?.intValue, let s = t["content"] as? String {
                added[id] = (s, (t["special"] as? Bool) ?? false)
            }
        }
        var n = 0
        for e in 0..<table.count where table.values[e] >= 0 { n = max(n, Int(table.values[e]) + 1) }
        for (i, _) in added { n = max(n, i + 1) }
        var tokens = [String?](repeating: nil, count: n)
        for e in 0..<table.count where table.values[e] >= 0 {
            tokens[Int(table.values[e])] = String(decoding: table.key(entry: e), as: UTF8.self)
        }
        for (i, t) in added where i >= 0 { tokens[i] = t.content }
        if let missing = tokens.firstIndex(where: { $0 == nil }) {
            throw ModelError.input("\(name): token id \(missing) has no entry in model.vocab or added_tokens")
        }
        var types = [Int32](repeating: 1, count: n)
        var scores = [Float](repeating: 0, count: n)
        var out = [String](repeating: "", count: n)
        var firstNormal: Int?
        for i in 0..<n {
            var t = tokens[i]!
            if let a = added[i] {
                types[i] = a.special ? 3 : 4
                scores[i] = -1000
            } else if t.count >= 6, t.hasPrefix("<0x"), t.hasSuffix(">"), t.count == 6, UInt8(t.dropFirst(3).prefix(2), radix: 16) != nil {
                types[i] = 6
                scores[i] = 0
            } else if t.unicodeScalars.count >= 2, t.unicodeScalars.allSatisfy({ $0 == "\u{2581}" }) {
                // Gemma's whitespace runs: user-defined pieces made of real spaces.
                t = String(repeating: " ", count: t.unicodeScalars.count)
                types[i] = 4
                scores[i] = -1000
            } else {
                if firstNormal == nil { firstNormal = i }
                // SentencePiece keeps pieces in score order; llama.cpp merges the best-scored bigram
                // first, so scores falling with the id reproduce the merge order of tokenizer.json.
                scores[i] = -Float(i - firstNormal!)
            }
            out[i] = t
        }
        func id(_ key: String, _ fallback: Int?) -> Int? {
            if let tc = tokenizerConfig, let o = try? JSONSerialization.jsonObject(with: tc) as? [String: Any] {
                var s = o[key] as? String
                if s == nil, let d = o[key] as? [String: Any] { s = d["content"] as? String }
                if let s, let i = out.firstIndex(of: s) { return i }
            }
            return fallback
        }
        var kv: [(String, GGUFValue)] = [
            ("tokenizer.ggml.model", .string("llama")),
            ("tokenizer.ggml.pre", .string("default")),
            ("tokenizer.ggml.tokens", .array(.string(out))),
            ("tokenizer.ggml.scores", .array(.float32(scores))),
            ("tokenizer.ggml.token_type", .array(.int32(types))),
        ]
        kv.append(("tokenizer.ggml.bos_token_id", .uint32(UInt32(id("bos_token", c.bosTokenId)!))))
        kv.append(("tokenizer.ggml.eos_token_id", .uint32(UInt32(id("eos_token", c.eosTokenIds.first ?? 1)!))))
        if let unk = model["unk_token"] as? String, let i = out.firstIndex(of: unk) {
            kv.append(("tokenizer.ggml.unknown_token_id", .uint32(UInt32(i))))
        }
        kv.append(("tokenizer.ggml.padding_token_id", .uint32(UInt32(id("pad_token", c.padTokenId)!))))
        // BOS is added iff the post-processor prepends a special token.
        var addBos = false, addEos = false
        if let pp = root["post_processor"] as? [String: Any], let single = pp["single"] as? [[String: Any]] {
            let seqAt = single.firstIndex(where: { $0["Sequence"] != nil }) ?? 0
            addBos = single.prefix(seqAt).contains { $0["SpecialToken"] != nil }
            addEos = single.suffix(from: min(seqAt + 1, single.count)).contains { $0["SpecialToken"] != nil }
        }
        kv.append(("tokenizer.ggml.add_bos_token", .bool(addBos)))
        kv.append(("tokenizer.ggml.add_eos_token", .bool(addEos)))
        kv.append(("tokenizer.ggml.add_space_prefix", .bool(false)))
        if let tc = tokenizerConfig, let o = try? JSONSerialization.jsonObject(with: tc) as? [String: Any],
           let tmpl = o["chat_template"] as? String {
            kv.append(("tokenizer.chat_template", .string(tmpl)))
        }
        return kv
    }

    // MARK: - Reading

    /// Tensors of a llama.cpp-named file under HF names; norms shifted back to w (owned copies, kept alive
    /// by the returned owner).
    static func hfTensors(_ g: GGUFFile) throws -> (tensors: [String: TensorEntry], owner: AnyObject) {
        let owner = OwnedBuffers()
        var out: [String: TensorEntry] = [:]
        for (name, t) in g.tensors {
            guard let hf = hfName(llama: name) else {
                // Unknown to Gemma 3 (e.g. rope_freqs): keep it under its own name; it is reported as unused.
                out[name] = t.entry
                continue
            }
            if isShiftedNorm(hf: hf) {
                let n = t.elementCount
                let p = owner.allocate(n)
                t.type.traits.dequantizeRow(t.data, p, n)
                for i in 0..<n { p[i] -= 1 }
                out[hf] = TensorEntry(name: hf, shape: t.shape, type: .f32, typeName: "F32", data: UnsafeRawPointer(p),
                                      byteCount: n * 4, file: t.file)
            } else {
                let e = t.entry
                out[hf] = TensorEntry(name: hf, shape: e.shape, type: e.type, typeName: e.typeName, data: e.data,
                                      byteCount: e.byteCount, file: e.file)
            }
        }
        return (out, owner)
    }

    /// config.json, generation_config.json, tokenizer.json and tokenizer_config.json from the metadata of a
    /// llama.cpp Gemma 3 file.
    static func synthesizeFiles(_ g: GGUFFile) throws -> (config: Data, files: [String: Data]) {
        let path = g.path
        let m = g.metadata
        guard let arch = m["general.architecture"]?.stringValue else {
            throw ModelError.weights(file: path, reason: "no general.architecture and no embedded config.json: not a model file")
        }
        guard arch == "gemma3" else {
            throw ModelError.weights(file: path, reason: "general.architecture is '\(arch)', only gemma3 is supported")
        }
        func int(_ k: String, _ def: Int? = nil) throws -> Int {
            if let v = m["gemma3." + k] {
                guard let i = v.intValue else { throw ModelError.weights(file: path, reason: "metadata gemma3.\(k) is not an integer") }
                return i
            }
            guard let def else { throw ModelError.weights(file: path, reason: "missing metadata gemma3.\(k)") }
            return def
        }
        func float(_ k: String) throws -> Double? {
            guard let v = m["gemma3." + k] else { return nil }
            guard let d = v.doubleValue else { throw ModelError.weights(file: path, reason: "metadata gemma3.\(k) is not a float") }
            return d
        }
        let n = try int("block_count")
        let d = try int("embedding_length")
        let heads = try int("attention.head_count")
        let headDim = try int("attention.key_length", d / max(heads, 1))
        if try int("attention.value_length", headDim) != headDim {
            throw ModelError.weights(file: path, reason: "gemma3.attention.value_length differs from key_length: not a Gemma 3 layout")
        }
        guard let tokens = m["tokenizer.ggml.tokens"]?.stringArrayValue else {
            throw ModelError.weights(file: path, reason: "missing metadata tokenizer.ggml.tokens (no embedded tokenizer.json either)")
        }
        var vocab = tokens.count
        if let e = g.tensors["token_embd.weight"], e.shape.count == 2 { vocab = e.shape[0] }
        var layerTypes: [String]
        let window = m["gemma3.attention.sliding_window"]?.intValue ?? 0
        if window > 0 {
            if case .array(let arr)? = m["gemma3.attention.sliding_window_pattern"] {
                let flags: [Bool]
                switch arr {
                case .bool(let b): flags = b
                case .uint32(let u): flags = u.map { $0 != 0 }
                case .int32(let u): flags = u.map { $0 != 0 }
                default: throw ModelError.weights(file: path, reason: "gemma3.attention.sliding_window_pattern is not a bool/int array")
                }
                guard flags.count >= n else {
                    throw ModelError.weights(file: path, reason: "gemma3.attention.sliding_window_pattern has \(flags.count) entries for \(n) blocks")
                }
                layerTypes = flags.prefix(n).map { $0 ? "sliding_attention" : "full_attention" }
            } else {
                let p = try int("attention.sliding_window_pattern", 6)
                layerTypes = (0..<n).map { p == 0 || $0 % p < p - 1 ? "sliding_attention" : "full_attention" }
            }
        } else {
            layerTypes = Array(repeating: "full_attention", count: n)
        }
        let ropeFull = try float("rope.freq_base") ?? 10000
        let ropeLocal = try float("rope.freq_base_swa") ?? 10000
        var full: [String: Any] = ["rope_type": "default", "rope_theta": ropeFull]
        if let f = try float("rope.scaling.factor") ?? float("rope.scale_linear"), f != 0, f != 1 {
            let type = m["gemma3.rope.scaling.type"]?.stringValue ?? "linear"
            guard type == "linear" else {
                throw ModelError.weights(file: path, reason: "gemma3.rope.scaling.type '\(type)' is not supported (linear)")
            }
            full = ["rope_type": "linear", "factor": f, "rope_theta": ropeFull]
        }
        func tokID(_ k: String, _ def: Int) -> Int { m["tokenizer.ggml." + k]?.intValue ?? def }
        let bos = tokID("bos_token_id", 2), eos = tokID("eos_token_id", 1), pad = tokID("padding_token_id", 0)
        var eosList = [eos]
        if let eot = m["tokenizer.ggml.eot_token_id"]?.intValue { eosList.append(eot) }
        else if let eot = tokens.firstIndex(of: "<end_of_turn>") { eosList.append(eot) }
        var cfg: [String: Any] = [
            "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
            "vocab_size": vocab, "hidden_size": d, "intermediate_size": try int("feed_forward_length"),
            "num_hidden_layers": n, "num_attention_heads": heads,
            "num_key_value_heads": try int("attention.head_count_kv", heads), "head_dim": headDim,
            "hidden_activation": "gelu_pytorch_tanh",
            "max_position_embeddings": try int("context_length", 131_072),
            "rms_norm_eps": try float("attention.layer_norm_rms_epsilon") ?? 1e-6,
            // llama.cpp's rule (src/models/gemma3.cpp): n_embd / n_head for the 62-block 27B, head_dim otherwise.
            "query_pre_attn_scalar": n == 62 ? d / heads : headDim,
            "sliding_window": window > 0 ? window : 4096,
            "layer_types": layerTypes,
            "rope_parameters": ["full_attention": full,
                                "sliding_attention": ["rope_type": "default", "rope_theta": ropeLocal]],
            "tie_word_embeddings": g.tensors["output.weight"] == nil,
            "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad,
        ]
        if let s = try float("final_logit_softcapping"), s != 0 { cfg["final_logit_softcapping"] = s }
        var files: [String: Data] = [:]
        files["generation_config.json"] = try JSONSerialization.data(withJSONObject: [
            "bos_token_id": bos, "eos_token_id": eosList, "pad_token_id": pad], options: [.sortedKeys])
        let tok = try synthesizeTokenizer(m, tokens: tokens, path: path)
        files["tokenizer.json"] = tok
        var tc: [String: Any] = ["tokenizer_class": "GemmaTokenizer"]
        if bos < tokens.count { tc["bos_token"] = tokens[bos] }
        if eos < tokens.count { tc["eos_token"] = tokens[eos] }
        if pad < tokens.count { tc["pad_token"] = tokens[pad] }
        if let t = m["tokenizer.chat_template"]?.stringValue { tc["chat_template"] = t }
        files["tokenizer_config.json"] = try JSONSerialization.data(withJSONObject: tc, options: [.sortedKeys])
        return (try JSONSerialization.data(withJSONObject: cfg, options: [.sortedKeys]), files)
    }

    /// A tokenizer.json (BPE with byte fallback, Gemma's normalizer/pre-tokenizer/decoder) from a
    /// SentencePiece ("llama") vocabulary without merges: merges are every split of a token into two
    /// tokens, ranked by the token's position (transformers' GGUF conversion for Gemma).
    static func synthesizeTokenizer(_ m: [String: GGUFValue], tokens raw: [String], path: String) throws -> Data {
        let model = m["tokenizer.ggml.model"]?.stringValue ?? "llama"
        guard model == "llama" else {
            throw ModelError.weights(file: path, reason: "tokenizer.ggml.model '\(model)' is not supported (a Gemma SentencePiece 'llama' vocabulary)")
        }
        if m["tokenizer.ggml.merges"] != nil {
            throw ModelError.weights(file: path, reason: "tokenizer.ggml.merges with a 'llama' vocabulary is not supported")
        }
        var types = [Int](repeating: 1, count: raw.count)
        if case .array(let a)? = m["tokenizer.ggml.token_type"] {
            switch a {
            case .int32(let v) where v.count == raw.count: types = v.map(Int.init)
            case .uint32(let v) where v.count == raw.count: types = v.map(Int.init)
            default: throw ModelError.weights(file: path, reason: "tokenizer.ggml.token_type is not an int array with one entry per token")
            }
        }
        let tokens = raw.map { t in !t.isEmpty && t.allSatisfy({ $0 == " " }) ? String(repeating: "\u{2581}", count: t.unicodeScalars.count) : t }
        // Keys as bytes: Swift's String equality would merge canonically equivalent tokens.
        let keys = tokens.map { Array($0.utf8) }
        var index: [[UInt8]: Int] = [:]
        index.reserveCapacity(keys.count)
        for (i, k) in keys.enumerated() where index[k] == nil { index[k] = i }
        // Merges in token order; within a token, longer left piece first (transformers' generate_merges).
        var mergesJSON = [UInt8]()
        mergesJSON.reserveCapacity(keys.count * 24)
        mergesJSON += Array("[".utf8)
        var first = true
        for (i, k) in keys.enumerated() where index[k] == i && k.count >= 2 {
            var cuts: [Int] = []
            for b in 1..<k.count where k[b] & 0xC0 != 0x80 { cuts.append(b) }  // scalar boundaries
            for b in cuts.reversed() {
                let l = Array(k[0..<b]), r = Array(k[b...])
                guard index[l] != nil, index[r] != nil else { continue }
                if !first { mergesJSON.append(UInt8(ascii: ",")) }
                first = false
                mergesJSON.append(UInt8(ascii: "["))
                TokJSONWriter.string(l, into: &mergesJSON)
                mergesJSON.append(UInt8(ascii: ","))
                TokJSONWriter.string(r, into: &mergesJSON)
                mergesJSON.append(UInt8(ascii: "]"))
            }
        }
        mergesJSON.append(UInt8(ascii: "]"))
        var vocabJSON = [UInt8]()
        vocabJSON.reserveCapacity(keys.count * 16)
        vocabJSON.append(UInt8(ascii: "{"))
        first = true
        for (i, k) in keys.enumerated() where index[k] == i {
            if !first { vocabJSON.append(UInt8(ascii: ",")) }
            first = false
            TokJSONWriter.string(k, into: &vocabJSON)
            vocabJSON += Array(":\(i)".utf8)
        }
        vocabJSON.append(UInt8(ascii: "}"))
        var added: [[String: Any]] = []
        for (i, t) in tokens.enumerated() where types[i] == 3 || (types[i] == 4 && raw[i] == t) {
            added.append(["id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                          "normalized": false, "special": types[i] == 3])
        }
        let bos = m["tokenizer.ggml.bos_token_id"]?.intValue ?? 2
        let addBos = m["tokenizer.ggml.add_bos_token"]?.boolValue ?? true
        let addEos = m["tokenizer.ggml.add_eos_token"]?.boolValue ?? false
        let eos = m["tokenizer.ggml.eos_token_id"]?.intValue ?? 1
        var single: [[String: Any]] = [], pair: [[String: Any]] = []
        var special: [String: Any] = [:]
        func sp(_ id: Int, _ type: Int) -> [String: Any] { ["SpecialToken": ["id": tokens[id], "type_id": type]] }
        func seq(_ s: String, _ type: Int) -> [String: Any] { ["Sequence": ["id": s, "type_id": type]] }
        if addBos, bos < tokens.count { single.append(sp(bos, 0)); pair.append(sp(bos, 0)); special[tokens[bos]] = ["id": tokens[bos], "ids": [bos], "tokens": [tokens[bos]]] }
        single.append(seq("A", 0)); pair.append(seq("A", 0))
        if addEos, eos < tokens.count { single.append(sp(eos, 0)); pair.append(sp(eos, 0)); special[tokens[eos]] = ["id": tokens[eos], "ids": [eos], "tokens": [tokens[eos]]] }
        if addBos, bos < tokens.count { pair.append(sp(bos, 1)) }
        pair.append(seq("B", 1))
        if addEos, eos < tokens.count { pair.append(sp(eos, 1)) }
        let unk = m["tokenizer.ggml.unknown_token_id"]?.intValue
        let json: [String: Any] = [
            "version": "1.0",
            "added_tokens": added,
            "normalizer": ["type": "Replace", "pattern": ["String": " "], "content": "\u{2581}"],
            "pre_tokenizer": ["type": "Split", "pattern": ["String": " "], "behavior": "MergedWithPrevious", "invert": false],
            "post_processor": ["type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special],
            "decoder": ["type": "Sequence", "decoders": [
                ["type": "Replace", "pattern": ["String": "\u{2581}"], "content": " "],
                ["type": "ByteFallback"], ["type": "Fuse"]]],
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": (unk.flatMap { $0 < tokens.count ? tokens[$0] : nil } as Any?) ?? NSNull(),
                      "continuing_subword_prefix": NSNull(), "end_of_word_suffix": NSNull(), "fuse_unk": true,
                      "byte_fallback": true, "ignore_merges": false, "vocab": "@VOCAB@", "merges": "@MERGES@"],
        ]
        // Splice the big arrays in as raw JSON (built from bytes above).
        var text = [UInt8](try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]))
        for (marker, raw) in [("\"@VOCAB@\"", vocabJSON), ("\"@MERGES@\"", mergesJSON)] {
            let m = Array(marker.utf8)
            guard let at = text.firstRange(of: m) else {
                throw ModelError.weights(file: path, reason: "internal: tokenizer.json template lost its \(marker) marker")
            }
            text.replaceSubrange(at, with: raw)
        }
        return Data(text)
    }

}

/// f32 buffers owned by a loaded model (norms shifted back from llama.cpp's (1 + w)).
final class OwnedBuffers: @unchecked Sendable {
    private var buffers: [UnsafeMutablePointer<Float>] = []
    func allocate(_ n: Int) -> UnsafeMutablePointer<Float> {
        let p = UnsafeMutablePointer<Float>.allocate(capacity: max(n, 1))
        buffers.append(p)
        return p
    }
    deinit { for p in buffers { p.deallocate() } }
}
