// 27B / 12B readiness without the weights (issue 4 item 6): a tiny synthetic NLA trio written with the
// RELEASED layouts (spec §5, §9), run end to end — capture → explain (AV) → reconstruct → score (AR) —
// in full precision and quantized (Q8_0 / Q4_0 GGUFs made with `Converter.convert`, i.e. `quantize`).
//
// The trio (hidden size 32 so every matrix can be block-quantized; the real Gemma 3 tokenizer, so the
// injection char, its neighbors and the AR suffix tokenize exactly as for the released pairs):
//   - target: the base-model multimodal wrapper (Gemma3ForConditionalGeneration, model_type gemma3,
//     text_config listing only the non-default fields — exactly the 27B's set —, language_model.model.*
//     names, vision_tower.* / multi_modal_projector.* tensors, 3 bf16 shards + index, vocab 262208 rows
//     (the default: the 27B embedding is larger than the tokenizer)), 8 blocks;
//   - AV: text-only Gemma3ForCausalLM (model_type gemma3_text), 4.x dialect like the 27B text config
//     (query_pre_attn_scalar 24 ≠ head_dim 16, rope_scaling linear ×8, sliding_window, sliding_window_pattern 6
//     so block 5 is global), F32 weights in 3 shards + model.safetensors.index.json (the 27B AV is f32 on
//     disk), no lm_head (tied), 8 blocks, sidecar with the 27B values (60000 / 73.32121111929344, ㈜ 246566,
//     neighbors 236813 / 954) in PyYAML dump form;
//   - AR: truncated to K+1 = 6 blocks ("42-of-62 style", K = 5), bf16, 2 shards, embedding + layers only
//     (no final norm tensor, no lm_head, as released), value_head.safetensors (`weight` [d, d] bf16),
//     sidecar with critic.extraction_layer_index K and critic_suffix_ids.
// With hidden size 32 the 27B mse_scale (73.32 = √5376) is not √d, so mse_nrm = 2(1 − cos)·s²/d here; the
// identity is checked in that general form (and in the √d form on the same vectors).
// Measurements are printed with a "[synthetic]" tag. Runtime: see the timing lines (a few seconds).

import Foundation
import Quant
import Testing
@testable import NLARuntime
import NLATestSupport

private func synNLALog(_ s: String) { print("[synthetic] " + s) }

/// The real Gemma 3 tokenizer files, taken from the test model (`make test-model`).
enum SynNLATokenizer {
    static var modelDirectory: String { TestPaths.testModel }

    /// Fails (never skips) when the test model is missing.
    static func require() throws -> String {
        let dir = modelDirectory
        for f in ["tokenizer.json", "tokenizer_config.json"] where !FileManager.default.fileExists(atPath: dir + "/" + f) {
            let msg = "the synthetic NLA tests need the Gemma 3 tokenizer of the test model (\(dir)/\(f) missing): run `make test-model`"
            Issue.record("\(msg)")
            throw ModelError.input(msg)
        }
        return dir
    }
}

/// The synthetic trio on disk (one temporary directory per test process, removed at exit).
struct SynNLAPair: Sendable {
    static let d = 32
    /// Extraction layer: block 5 is global with sliding_window_pattern 6 (like the 27B's L41).
    static let k = 5
    static let targetBlocks = 8
    static let avBlocks = 8
    static let injectionScale: Float = 60000
    static let mseScale = 73.32121111929344
    /// The 27B L41 baseline, passed explicitly (the built-in table does not know d = 32).
    static let baseline = 0.0579
    static let suffix = [1005, 236813, 655, 6011, 236813]

    let root: String
    let target: String
    let av: String
    let ar: String
    let avQ8: String
    let avQ4: String
    let arQ8: String
    let arQ4: String

    static let shared: Result<SynNLAPair, Error> = Result { try build() }
    static func get() throws -> SynNLAPair { try shared.get() }

    enum Precision: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case full, q8_0, q4_0
        var testDescription: String { rawValue }
    }

    func avPath(_ p: Precision) -> String { p == .full ? av : (p == .q8_0 ? avQ8 : avQ4) }
    func arPath(_ p: Precision) -> String { p == .full ? ar : (p == .q8_0 ? arQ8 : arQ4) }

    /// Shared hyperparameters; only depth, vocabulary and seed differ between the three models.
    static func spec(layers: Int, vocab: Int, seed: UInt64) -> SyntheticSpec {
        var s = SyntheticSpec()
        s.vocabSize = vocab
        s.hiddenSize = d
        s.intermediateSize = 64
        s.numLayers = layers
        s.numHeads = 4
        s.numKVHeads = 2
        s.headDim = 16
        s.queryPreAttnScalar = 24
        s.maxPositions = Gemma3DefaultsMirror.maxPositionEmbeddings
        s.slidingWindow = 16
        s.slidingWindowPattern = 6
        s.ropeTheta = 1_000_000
        s.ropeLocalBaseFreq = 10_000
        s.ropeLinearFactor = 8
        s.seed = seed
        return s
    }

    static func writeJSON(_ obj: Any, to path: String) throws {
        try JSONSerialization.data(withJSONObject: obj, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: path))
    }

    /// `shards` safetensors files named like HF's (model-0000i-of-0000n) plus model.safetensors.index.json;
    /// the embedding gets the first shard to itself (HF shards by size), the rest is split evenly.
    static func writeShards(_ entries: [SafetensorsWriter.Entry], shards: Int, to dir: String) throws {
        precondition(shards >= 2)
        let embed = entries.filter { $0.name.hasSuffix("embed_tokens.weight") }
        let rest = entries.filter { !$0.name.hasSuffix("embed_tokens.weight") }
        var groups: [[SafetensorsWriter.Entry]] = [embed]
        let per = (rest.count + shards - 2) / (shards - 1)
        for s in 0..<(shards - 1) { groups.append(Array(rest[min(s * per, rest.count)..<min((s + 1) * per, rest.count)])) }
        var weightMap: [String: String] = [:]
        var total = 0
        for (i, g) in groups.enumerated() {
            let file = String(format: "model-%05d-of-%05d.safetensors", i + 1, shards)
            var w = SafetensorsWriter()
            for e in g { w.add(e); weightMap[e.name] = file; total += e.bytes.count }
            try w.write(to: dir + "/" + file)
        }
        try writeJSON(["metadata": ["total_size": total], "weight_map": weightMap], to: dir + "/model.safetensors.index.json")
    }

    /// Tokenizer files as the release copies them from the base model, and the generation config.
    static func addCommonFiles(_ dir: String, tokenizer: String) throws {
        let fm = FileManager.default
        try fm.createSymbolicLink(atPath: dir + "/tokenizer.json", withDestinationPath: tokenizer + "/tokenizer.json")
        for f in ["tokenizer_config.json", "special_tokens_map.json"] where fm.fileExists(atPath: tokenizer + "/" + f) {
            try fm.copyItem(atPath: tokenizer + "/" + f, toPath: dir + "/" + f)
        }
        try writeJSON(["bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0, "cache_implementation": "hybrid"],
                      to: dir + "/generation_config.json")
    }

    /// The released AV sidecar (27B values) as PyYAML `safe_dump` writes it: sorted keys, "\u321C"
    /// escape, the AV template as a folded single-quoted scalar.
    static var avSidecarYAML: String {
        """
        base_checkpoint: google/gemma-3-27b-it
        created_at: '2025-01-01T00:00:00'
        created_by: SyntheticNLATests
        d_model: \(d)
        extraction:
          injection_scale: 60000.0
          mse_scale: 73.32121111929344
        extraction_layer_index: \(k)
        kind: nla_model
        parent_checkpoints:
        - synthetic
        prompt_templates:
          ar: 'Summary of the following text: <text>{explanation}</text> <summary>'
        \(ReleasedSidecarYAML.avTemplateEntry)
        role: av
        schema_version: 2
        stage: rl
        tokens:
          critic_suffix_ids: null
          injection_char: "\\u321C"
          injection_left_neighbor_id: 236813
          injection_right_neighbor_id: 954
          injection_token_id: 246566
        trained_on: synthetic test pair
        training:
          global_batch_size: 256
          loss_type: policy_loss
          lr: 1.0e-06

        """
    }

    /// The released AR sidecar: K under critic.extraction_layer_index (and top level), null
    /// injection_scale, critic_suffix_ids.
    static var arSidecarYAML: String {
        """
        base_checkpoint: google/gemma-3-27b-it
        created_at: '2025-01-01T00:00:00'
        created_by: SyntheticNLATests
        critic:
          extraction_layer_index: \(k)
        d_model: \(d)
        extraction:
          injection_scale: null
          mse_scale: 73.32121111929344
        extraction_layer_index: \(k)
        kind: nla_model
        parent_checkpoints:
        - synthetic
        prompt_templates:
          ar: 'Summary of the following text: <text>{explanation}</text> <summary>'
        \(ReleasedSidecarYAML.avTemplateEntry)
        role: ar
        schema_version: 2
        stage: sl
        tokens:
          critic_suffix_ids:
          - 1005
          - 236813
          - 655
          - 6011
          - 236813
          injection_char: "\\u321C"
          injection_left_neighbor_id: 236813
          injection_right_neighbor_id: 954
          injection_token_id: 246566
        trained_on: synthetic test pair
        training:
          global_batch_size: 256
          loss_type: custom_loss
          lr: 1.0e-06

        """
    }

    static func build() throws -> SynNLAPair {
        let tok = try SynNLATokenizer.require()
        let start = Date()
        let fm = FileManager.default
        let root = SyntheticCheckpoint.makeTempDirectory("nla-trio")
        atexit { if case .success(let p) = SynNLAPair.shared { try? FileManager.default.removeItem(atPath: p.root) } }
        let target = root + "/target", av = root + "/av", ar = root + "/ar"
        for dir in [target, av, ar] { try fm.createDirectory(atPath: dir, withIntermediateDirectories: true) }

        // Target: the base-model wrapper.
        try SyntheticCheckpoint(spec(layers: targetBlocks, vocab: Gemma3DefaultsMirror.vocabSize, seed: 0x7A96_E701))
            .write(layout: .wrapper(prefix: "language_model.model.", shards: 3, dtype: .bf16), dialect: .v4, to: target)
        try addCommonFiles(target, tokenizer: tok)

        // AV: text-only, f32, sharded, tied (no lm_head).
        let avCk = SyntheticCheckpoint(spec(layers: avBlocks, vocab: 262_144, seed: 0xA5_0001))
        var avCfg = avCk.config(layout: .flat(dtype: .f32), dialect: .v4)
        avCfg["torch_dtype"] = "float32"
        avCfg["transformers_version"] = "4.51.3"
        try writeJSON(avCfg, to: av + "/config.json")
        try writeShards(avCk.entries(layout: .flat(dtype: .f32)), shards: 3, to: av)
        try addCommonFiles(av, tokenizer: tok)
        try avSidecarYAML.write(toFile: av + "/nla_meta.yaml", atomically: true, encoding: .utf8)

        // AR: K+1 blocks, bf16, embedding + layers only, value head.
        let arCk = SyntheticCheckpoint(spec(layers: k + 1, vocab: 262_144, seed: 0xA2_0001))
        var arCfg = arCk.config(layout: .flat(dtype: .bf16), dialect: .v4)
        arCfg["transformers_version"] = "4.51.3"
        try writeJSON(arCfg, to: ar + "/config.json")
        try writeShards(arCk.entries(layout: .flat(dtype: .bf16)).filter { $0.name != "model.norm.weight" }, shards: 2, to: ar)
        var rng = SyntheticRNG(seed: 0x7A1E_0001)
        let a = (3.0 / Double(d)).squareRoot() * 0.5
        var w = [Float](repeating: 0, count: d * d)
        for i in 0..<d { for j in 0..<d { w[i * d + j] = Float((i == j ? 1.0 : 0.0) + rng.uniform(-a, a)) } }
        var vh = SafetensorsWriter()
        vh.add(.init(name: "weight", shape: [d, d], bf16FromFloats: w))
        try vh.write(to: ar + "/value_head.safetensors")
        try addCommonFiles(ar, tokenizer: tok)
        try arSidecarYAML.write(toFile: ar + "/nla_meta.yaml", atomically: true, encoding: .utf8)
        let written = Date()

        func convert(_ input: String, _ type: QuantType) throws -> String {
            let out = "\(input)-\(type.traits.name.lowercased()).gguf"
            _ = try Converter.convert(input: input, output: out, policy: QuantizePolicy(target: type))
            return out
        }
        let pair = SynNLAPair(root: root, target: target, av: av, ar: ar,
                              avQ8: try convert(av, .q8_0), avQ4: try convert(av, .q4_0),
                              arQ8: try convert(ar, .q8_0), arQ4: try convert(ar, .q4_0))
        synNLALog(String(format: "trio written in %.2f s, 4 GGUFs converted in %.2f s (%@)",
                         written.timeIntervalSince(start), Date().timeIntervalSince(written), root))
        return pair
    }
}

/// Models loaded once per process (full precision; quantized ones are loaded by the tests that use them).
enum SynNLAModels {
    static let target: Result<LanguageModel, Error> = Result { try LanguageModel(directory: SynNLAPair.get().target) }
    static let av: Result<ActivationVerbalizer, Error> = Result { try ActivationVerbalizer(path: SynNLAPair.get().av) }
    static let ar: Result<ActivationReconstructor, Error> = Result { try ActivationReconstructor(path: SynNLAPair.get().ar) }

    static func verbalizer(_ p: SynNLAPair.Precision) throws -> ActivationVerbalizer {
        if p == .full { return try av.get() }
        return try ActivationVerbalizer(path: try SynNLAPair.get().avPath(p))
    }
    static func reconstructor(_ p: SynNLAPair.Precision) throws -> ActivationReconstructor {
        if p == .full { return try ar.get() }
        return try ActivationReconstructor(path: try SynNLAPair.get().arPath(p))
    }

    static let chatPrompt = "What is the capital of France, and why is it famous?"
    static let chatReply = "Paris is the capital of France. It is famous for the Eiffel Tower."

    /// Block-K activations of the target on the chat prompt + reply.
    static let captured: Result<CapturedActivations, Error> = Result {
        try ActivationCapture.capture(target: target.get(), layer: SynNLAPair.k, prompt: chatPrompt, chat: true,
                                      reply: chatReply, maxReplyTokens: 0)
    }

    /// Fixed explanations for the AR comparisons (English, like trained AV output).
    static let explanations = [
        "the Eiffel Tower in Paris, a famous monument completed in 1889",
        "Final token \"capital\": a country's seat of government, in a geography question.",
        "Python code defining a function that sorts a list of integers.",
        "A recipe step: mixing flour, butter and sugar before baking.",
        "The word 'because' introducing an explanation of a cause.",
        "numbers in a table of quarterly revenue figures",
    ]
}

/// Expect an NLAError; returns it.
private func synExpectNLAError(sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) -> NLAError? {
    do {
        try body()
        Issue.record("expected a refusal (NLAError), nothing was thrown", sourceLocation: sourceLocation)
    } catch let e as NLAError {
        #expect(!e.description.contains("\n"), "multi-line message: \(e.description)", sourceLocation: sourceLocation)
        return e
    } catch {
        Issue.record("expected an NLAError, got \(type(of: error)): \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

/// Spec §4.3 identities on one score: mse·d/s² = 2(1 − cos) and fve = 1 − mse/B.
private func synCheckScore(_ s: NLAScore, baseline: Double?, label: String, sourceLocation: SourceLocation = #_sourceLocation) {
    let d = Double(SynNLAPair.d), s2 = SynNLAPair.mseScale * SynNLAPair.mseScale
    #expect(s.mseNrm.isFinite && s.cos.isFinite && s.cos >= -1 - 1e-9 && s.cos <= 1 + 1e-9, "\(label): \(s)", sourceLocation: sourceLocation)
    #expect(abs(s.mseNrm * d / s2 - 2 * (1 - s.cos)) <= 1e-5, "\(label): mse·d/s² \(s.mseNrm * d / s2) vs 2(1−cos) \(2 * (1 - s.cos))",
            sourceLocation: sourceLocation)
    if let b = baseline {
        #expect(s.fveNrm != nil && abs(s.fveNrm! - (1 - s.mseNrm / b)) <= 1e-12, "\(label): fve \(String(describing: s.fveNrm))",
                sourceLocation: sourceLocation)
    } else {
        #expect(s.fveNrm == nil, "\(label): fve without a baseline", sourceLocation: sourceLocation)
    }
}

private func synMean(_ xs: [Double]) -> Double { xs.isEmpty ? .nan : xs.reduce(0, +) / Double(xs.count) }

@Suite(.serialized) struct SyntheticNLATests {
    #if os(Linux)
    /// A loaded GGUF model keeps none of its file mapped in (packing gave the pages back, the rest are
    /// released after loading), and token embeddings are read without touching the mapping (`pread`).
    @Test func loadedGGUFKeepsNoMappedPagesAndEmbedsWithoutTheMapping() throws {
        let p = try SynNLAPair.get()
        let lm = try LanguageModel(directory: p.avPath(.q8_0))
        let file = try #require(lm.files.tensors.values.first?.file)
        #expect(lm.files.tensors.values.allSatisfy { $0.file === file })
        let afterLoad = try residentKB(ofMappingAt: file.base)
        #expect(afterLoad == 0, "\(afterLoad) KB of \(file.path) resident after loading")
        let ids = Array(stride(from: 0, to: lm.config.vocabSize, by: lm.config.vocabSize / 300))
        let e = try lm.model.embed(ids)
        #expect(e.count == ids.count * lm.config.hiddenSize && e.allSatisfy(\.isFinite))
        let afterEmbed = try residentKB(ofMappingAt: file.base)
        #expect(afterEmbed == 0, "\(afterEmbed) KB resident after \(ids.count) embedding lookups")
        // The check sees residency: the same rows read through the mapping become resident.
        let table = try #require(lm.files.tensors.values.max { $0.byteCount < $1.byteCount })
        var sum = 0
        let rowBytes = table.byteCount / lm.config.vocabSize
        for id in ids { sum &+= Int(table.data.load(fromByteOffset: id * rowBytes, as: UInt8.self)) }
        let touched = try residentKB(ofMappingAt: file.base)
        #expect(touched >= ids.count / 2 * 4, "\(touched) KB after reading the rows through the mapping (sum \(sum))")
        file.dropPages(file.base, count: file.size)
    }
    #endif

    // MARK: layouts

    @Test func filesHaveTheReleasedLayouts() throws {
        let p = try SynNLAPair.get()
        func json(_ path: String) throws -> [String: Any] {
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        }
        func header(_ dir: String) throws -> [String: String] {   // tensor name → dtype over all shards
            let ck = try SafetensorsCheckpoint(directory: dir, excluding: ["value_head.safetensors"])
            return ck.tensors.mapValues { $0.dtype.rawValue }
        }
        let d = SynNLAPair.d, k = SynNLAPair.k

        // AV: flat 4.x text config, f32 shards with an index, tied (no lm_head), final norm present.
        let avCfg = try json(p.av + "/config.json")
        #expect(avCfg["architectures"] as? [String] == ["Gemma3ForCausalLM"] && avCfg["model_type"] as? String == "gemma3_text")
        #expect(avCfg["text_config"] == nil && avCfg["layer_types"] == nil && avCfg["rope_parameters"] == nil)
        #expect(avCfg["sliding_window_pattern"] as? Int == 6 && avCfg["query_pre_attn_scalar"] as? Double == 24 && avCfg["head_dim"] as? Int == 16)
        #expect((avCfg["rope_scaling"] as? [String: Any])?["factor"] as? Double == 8)
        let avIndex = try json(p.av + "/model.safetensors.index.json")
        #expect(Set((avIndex["weight_map"] as! [String: String]).values).count == 3)
        let avT = try header(p.av)
        #expect(avT.count == SynNLAPair.avBlocks * 13 + 2 && Set(avT.values) == ["F32"])
        #expect(avT["model.norm.weight"] != nil && avT["lm_head.weight"] == nil)

        // AR: K+1 blocks, bf16, embedding + layers only, value head [d, d] bf16.
        let arCfg = try json(p.ar + "/config.json")
        #expect(arCfg["num_hidden_layers"] as? Int == k + 1 && arCfg["model_type"] as? String == "gemma3_text")
        let arT = try header(p.ar)
        #expect(arT.count == (k + 1) * 13 + 1 && Set(arT.values) == ["BF16"])
        #expect(arT["model.norm.weight"] == nil && arT["lm_head.weight"] == nil && arT["model.embed_tokens.weight"] != nil)
        let vh = try SafetensorsFile(path: p.ar + "/value_head.safetensors")
        #expect(vh.names == ["weight"] && vh.tensors["weight"]!.shape == [d, d] && vh.tensors["weight"]!.dtype == .bf16)

        // Target: the wrapper, text_config with exactly the fields the real 27B config lists.
        let tCfg = try json(p.target + "/config.json")
        #expect(tCfg["architectures"] as? [String] == ["Gemma3ForConditionalGeneration"] && tCfg["model_type"] as? String == "gemma3")
        let tc = tCfg["text_config"] as! [String: Any]
        #expect(Set(tc.keys) == ["head_dim", "hidden_size", "intermediate_size", "model_type", "num_attention_heads", "num_hidden_layers",
                                 "num_key_value_heads", "query_pre_attn_scalar", "rope_scaling", "sliding_window"], "\(tc.keys.sorted())")
        let tT = try header(p.target)
        #expect(tT.keys.contains("language_model.model.embed_tokens.weight") && tT.keys.contains { $0.hasPrefix("vision_tower.") }
                && tT.keys.contains { $0.hasPrefix("multi_modal_projector.") } && !tT.keys.contains { $0.hasPrefix("model.") })

        // The configs decode to the same architecture, block K global, 262208 target rows by default.
        let target = try SynNLAModels.target.get()
        #expect(target.config.isMultimodalWrapper && target.config.vocabSize == 262_208 && target.model.unusedTensors.isEmpty)
        for cfg in [target.config, try SynNLAModels.av.get().model.config, try SynNLAModels.ar.get().model.config] {
            #expect(cfg.hiddenSize == d && cfg.queryPreAttnScalar == 24 && cfg.headDim == 16 && cfg.slidingWindow == 16)
            #expect(cfg.layerTypes[k] == .full && cfg.layerTypes.enumerated().allSatisfy { ($0.offset == 5) == ($0.element == .full) })
            #expect(cfg.ropeFull.linearFactor == 8 && cfg.ropeSliding.linearFactor == 1)
        }

        // Sidecars (PyYAML dump form) parse to the 27B values.
        let avS = try NLASidecar.load(path: p.av + "/nla_meta.yaml"), arS = try NLASidecar.load(path: p.ar + "/nla_meta.yaml")
        #expect(avS.role == .av && avS.injectionScale == 60000 && avS.mseScale == Float(SynNLAPair.mseScale))
        #expect(avS.injectionChar.unicodeScalars.map(\.value) == [0x321C] && avS.injectionTokenId == 246566)
        #expect(avS.leftNeighborId == 236813 && avS.rightNeighborId == 954 && avS.criticSuffixIds == nil)
        #expect(avS.avTemplate?.hasPrefix("You are a meticulous AI researcher") == true && avS.avTemplate?.contains("\n\n<concept>{injection_char}</concept>\n\nPlease") == true)
        #expect(arS.role == .ar && arS.extractionLayer == k && arS.extractionLayerKey == "critic.extraction_layer_index")
        #expect(arS.injectionScaleState == .null && arS.criticSuffixIds == SynNLAPair.suffix)
        #expect(arS.arTemplate == "Summary of the following text: <text>{explanation}</text> <summary>")
    }

    // MARK: AV startup validation, capture

    @Test func avValidationPasses() throws {
        let av = try SynNLAModels.av.get()
        #expect(av.injectionScale == 60000 && av.dModel == SynNLAPair.d)
        // Same tokenizer and template as the released pairs: 108 tokens, site at 93 (spec T2).
        #expect(av.promptIds.count == 108 && av.injectionPosition == 93)
        #expect(av.promptIds[0] == 2 && av.promptIds.filter { $0 == 2 }.count == 1)
        #expect(av.promptIds[92] == 236813 && av.promptIds[93] == 246566 && av.promptIds[94] == 954)
        #expect(av.stopIds.isSuperset(of: [1, 106]))
        // The injected row is v·(60000/‖v‖) (not ×√d); every other row is the scaled lookup.
        let v = try SynNLAModels.captured.get().vectors[6]
        let e = try av.inputEmbeddings(for: v)
        let d = SynNLAPair.d, p = av.injectionPosition
        let row = Array(e[(p * d)..<((p + 1) * d)])
        #expect(abs(NLAVectorMath.norm(row) - 60000) <= 60000 * 1e-6, "injected row norm \(NLAVectorMath.norm(row))")
        #expect(cosine(row, v) > 1 - 1e-6)
        let plain = try av.model.model.embed(av.promptIds)
        var others = e, plainOthers = plain
        others.removeSubrange((p * d)..<((p + 1) * d)); plainOthers.removeSubrange((p * d)..<((p + 1) * d))
        #expect(others == plainOthers)
    }

    /// Spec §3 on the wrapper: the capture at layer K is transformers' hidden_states[K+1] of the target.
    @Test func captureFromWrapperTargetIsHiddenStateKPlus1() throws {
        let target = try SynNLAModels.target.get()
        let cap = try SynNLAModels.captured.get()
        #expect(cap.ids.count > cap.promptLength && cap.promptLength > 4)
        #expect(Array(cap.ids.prefix(4)) == [2, 105, 2364, 107])
        let hs = try target.session(for: cap.ids).forwardHiddenStates(ids: cap.ids, logits: .none)
        let flat = cap.vectors.flatMap { $0 }
        #expect(flat == hs.states[SynNLAPair.k + 1], "capture at K = \(SynNLAPair.k) differs from hidden_states[\(SynNLAPair.k + 1)]")
        #expect(flat != hs.states[SynNLAPair.k] && flat != hs.states[SynNLAPair.k + 2])
        for (i, v) in cap.vectors.enumerated() { #expect(abs(cap.norms[i] - NLAVectorMath.norm(v)) <= 1e-9 * cap.norms[i]) }
        synNLALog("capture (wrapper target, K = \(SynNLAPair.k), T = \(cap.ids.count)): norms \(cap.norms.map { String(format: "%.1f", $0) }.joined(separator: " "))")
    }

    @Test func verbalizeStopsOrHitsTheCapAndIsDeterministic() throws {
        let av = try SynNLAModels.av.get()
        let cap = try SynNLAModels.captured.get()
        let maxNew = 24
        var stopped = 0
        for pos in [4, 8, cap.ids.count - 1] {
            let a = try av.verbalize(cap.vectors[pos], options: SamplingOptions(maxNewTokens: maxNew))
            let b = try av.verbalize(cap.vectors[pos], options: SamplingOptions(maxNewTokens: maxNew))
            #expect(a.ids == b.ids && a.text == b.text, "position \(pos): greedy is not deterministic")
            #expect(!a.ids.isEmpty && a.ids.count <= maxNew)
            if let last = a.ids.last, av.stopIds.contains(last) {
                #expect(a.stoppedOnEOS); stopped += 1
            } else {
                #expect(a.ids.count == maxNew && !a.stoppedOnEOS, "position \(pos): neither a stop id nor the cap: \(a.ids)")
            }
            #expect(!a.ids.dropLast().contains { av.stopIds.contains($0) }, "stop id inside the ids")
            #expect(a.ids.allSatisfy { $0 >= 0 && $0 < 262_144 })
            #expect(a.explanation == NLAExplanation.extract(a.text))
            let s1 = try av.verbalize(cap.vectors[pos], options: SamplingOptions(temperature: 1, seed: 7, maxNewTokens: 8))
            let s2 = try av.verbalize(cap.vectors[pos], options: SamplingOptions(temperature: 1, seed: 7, maxNewTokens: 8))
            #expect(s1.ids == s2.ids, "position \(pos): seeded sampling is not reproducible")
        }
        synNLALog("verbalize: \(stopped)/3 stopped on a stop id, the rest hit the \(maxNew)-token cap")
    }

    /// The stop path, which random weights never take: an AV variant whose final norm keeps only dim 0
    /// ((1 + w) = 0 elsewhere) and whose embedding rows 1 (<eos>) and 106 (<end_of_turn>) are +8 / −8 there,
    /// so the first generated token is always a stop id, whatever the sign of dim 0.
    @Test func verbalizeStopsOnAStopIdAndKeepsIt() throws {
        let p = try SynNLAPair.get()
        let fm = FileManager.default
        let dir = p.root + "/av-eager-stop-\(UUID().uuidString.prefix(8))"
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? fm.removeItem(atPath: dir) }
        let d = SynNLAPair.d
        let ck = SyntheticCheckpoint(SynNLAPair.spec(layers: SynNLAPair.avBlocks, vocab: 262_144, seed: 0xA5_0001))
        var entries = ck.entries(layout: .flat(dtype: .f32))
        for i in entries.indices {
            var f = entries[i].bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            switch entries[i].name {
            case "model.norm.weight": f = (0..<d).map { $0 == 0 ? 0 : -1 }
            case "model.embed_tokens.weight": f[1 * d] = 8; f[106 * d] = -8
            default: continue
            }
            entries[i] = .init(name: entries[i].name, shape: entries[i].shape, floats: f)
        }
        try SynNLAPair.writeJSON(ck.config(layout: .flat(dtype: .f32), dialect: .v4), to: dir + "/config.json")
        try SynNLAPair.writeShards(entries, shards: 2, to: dir)
        try SynNLAPair.addCommonFiles(dir, tokenizer: try SynNLATokenizer.require())
        try SynNLAPair.avSidecarYAML.write(toFile: dir + "/nla_meta.yaml", atomically: true, encoding: .utf8)

        let av = try ActivationVerbalizer(path: dir)
        let cap = try SynNLAModels.captured.get()
        for pos in [4, 9] {
            let r = try av.verbalize(cap.vectors[pos], options: SamplingOptions(maxNewTokens: 24))
            #expect(r.ids.count == 1 && [1, 106].contains(r.ids[0]), "position \(pos): \(r.ids)")
            #expect(r.stoppedOnEOS && r.text.isEmpty && r.explanation == nil)
            #expect(r.warnings.contains { $0.contains("raw text") }, "\(r.warnings)")
        }
    }

    // MARK: end to end

    /// capture → verbalize → reconstruct → score, with the AV and AR in one precision.
    @Test(arguments: SynNLAPair.Precision.allCases)
    func explainReconstructScoreEndToEnd(_ precision: SynNLAPair.Precision) throws {
        let start = Date()
        let cap = try SynNLAModels.captured.get()
        let av = try SynNLAModels.verbalizer(precision)
        let ar = try SynNLAModels.reconstructor(precision)
        #expect(ar.layers == SynNLAPair.k + 1 && ar.valueHead.typeName == "F32")
        #expect(ar.builtInFVEBaseline == nil)
        let positions = Array(4..<min(cap.ids.count, 12))
        var scores: [NLAScore] = []
        for pos in positions {
            let v = try av.verbalize(cap.vectors[pos], options: SamplingOptions(maxNewTokens: 16))
            let explanation = v.explanation ?? v.text
            let pred = try ar.reconstruct(explanation)
            #expect(pred.count == SynNLAPair.d && pred.allSatisfy(\.isFinite) && NLAVectorMath.norm(pred) > 0)
            let ids = try ar.promptIds(for: explanation)
            #expect(ids.first == 2 && Array(ids.suffix(5)) == SynNLAPair.suffix)
            let s = try ar.score(prediction: pred, gold: cap.vectors[pos], fveBaseline: SynNLAPair.baseline)
            synCheckScore(s, baseline: SynNLAPair.baseline, label: "\(precision) position \(pos)")
            synCheckScore(try ar.score(prediction: pred, gold: cap.vectors[pos], fveBaseline: nil), baseline: nil, label: "no baseline")
            // With s = √d the identity is the familiar mse = 2(1 − cos).
            let r = try NLAScore.compute(prediction: pred, gold: cap.vectors[pos], mseScale: Float(Double(SynNLAPair.d).squareRoot()),
                                         d: SynNLAPair.d, fveBaseline: nil)
            #expect(abs(r.mseNrm - 2 * (1 - r.cos)) <= 1e-5 && abs(r.cos - s.cos) <= 1e-6)
            scores.append(s)
        }
        synNLALog(String(format: "end to end %@ (%d positions): mean mse_nrm %.3f, mean cos %.4f, mean fve_nrm %.2f (B = %.4f); %.2f s",
                         precision.rawValue, positions.count, synMean(scores.map(\.mseNrm)), synMean(scores.map(\.cos)),
                         synMean(scores.compactMap(\.fveNrm)), SynNLAPair.baseline, Date().timeIntervalSince(start)))
    }

    // MARK: quantized files

    @Test func quantizedFilesCarrySidecarAndValueHead() throws {
        let p = try SynNLAPair.get()
        for (path, type) in [(p.arQ8, QuantType.q8_0), (p.arQ4, .q4_0)] {
            let g = try GGUFFile(path: path)
            let vh = try g.tensor("value_head.weight")
            #expect(vh.type == .f32 && vh.shape == [SynNLAPair.d, SynNLAPair.d], "\(path): value_head.weight \(vh.type) \(vh.shape)")
            let ref = try SafetensorsFile(path: p.ar + "/value_head.safetensors").tensor("weight").toFloatArray()
            #expect(try vh.toFloatArray() == ref, "value head changed by conversion")
            #expect(try g.tensor("model.layers.0.mlp.down_proj.weight").type == type)
            #expect(try g.tensor("model.embed_tokens.weight").type == .q8_0)
            #expect(g.tensors["model.norm.weight"] == nil && g.tensors["lm_head.weight"] == nil)
            #expect(g.tensors.count == (SynNLAPair.k + 1) * 13 + 2)
            let yaml = g.metadata[GGUFKeys.filePrefix + "nla_meta.yaml"]?.stringValue
            #expect(yaml == SynNLAPair.arSidecarYAML)
            let s = try NLASidecar.load(files: try ModelFiles.open(path, tensors: false))
            #expect(s.role == .ar && s.extractionLayer == SynNLAPair.k && s.file == "\(path)[nla_meta.yaml]")
        }
        for (path, type) in [(p.avQ8, QuantType.q8_0), (p.avQ4, .q4_0)] {
            let g = try GGUFFile(path: path)
            #expect(try g.tensor("model.layers.7.self_attn.o_proj.weight").type == type)
            #expect(try g.tensor("model.norm.weight").type == .f32 && g.tensors["value_head.weight"] == nil)
            #expect(g.metadata[GGUFKeys.filePrefix + "nla_meta.yaml"]?.stringValue == SynNLAPair.avSidecarYAML)
        }
        // Both load as NLA models from the single file.
        let avQ = try ActivationVerbalizer(path: p.avQ8)
        #expect(avQ.sidecar.file == "\(p.avQ8)[nla_meta.yaml]" && avQ.injectionScale == 60000)
        #expect(avQ.promptIds == (try SynNLAModels.av.get()).promptIds && avQ.injectionPosition == 93)
        let arQ = try ActivationReconstructor(path: p.arQ8)
        #expect(arQ.valueHead.typeName == "F32" && arQ.layers == SynNLAPair.k + 1 && arQ.sidecar.mseScale == Float(SynNLAPair.mseScale))
    }

    /// Q8_0 AR reconstructions of the same explanations agree with the bf16 AR (cos ≥ 0.99); the Q8_0 AV's
    /// next-token distribution agrees with the f32 AV's. Q4_0 and round-trip numbers are recorded.
    @Test func quantizedReconstructionsAgreeWithFullPrecision() throws {
        let start = Date()
        let full = try SynNLAModels.ar.get()
        let cap = try SynNLAModels.captured.get()
        let avFull = try SynNLAModels.av.get()
        var texts = SynNLAModels.explanations
        for pos in [5, 9] {   // plus two AV outputs (the text an AR really sees)
            let v = try avFull.verbalize(cap.vectors[pos], options: SamplingOptions(maxNewTokens: 16))
            texts.append(v.explanation ?? v.text)
        }
        let fullPreds = try texts.map { try full.reconstruct($0) }
        for precision in [SynNLAPair.Precision.q8_0, .q4_0] {
            let q = try SynNLAModels.reconstructor(precision)
            let cos = try zip(texts, fullPreds).map { cosine(try q.reconstruct($0), $1) }
            if precision == .q8_0 {
                for (t, c) in zip(texts, cos) { #expect(c >= 0.99, "Q8_0 AR cos(q, f) \(c) for \(t.debugDescription)") }
            } else {
                #expect(cos.allSatisfy { $0.isFinite })
            }
            synNLALog(String(format: "AR %@ vs bf16 (%d explanations): cos(q,f) mean %.6f min %.6f", precision.rawValue, texts.count,
                             synMean(cos), cos.min()!))
        }

        // AV: last-prompt-position logits and greedy decodes, then the round trip vector → AV → AR.
        let positions = [4, 6, 8, 10]
        for precision in [SynNLAPair.Precision.q8_0, .q4_0] {
            let avQ = try SynNLAModels.verbalizer(precision)
            let arQ = try SynNLAModels.reconstructor(precision)
            var logitCos: [Double] = [], identical = 0, tripF: [Double] = [], tripQ: [Double] = []
            for pos in positions {
                let v = cap.vectors[pos]
                logitCos.append(cosine(try avQ.lastPromptLogits(for: v), try avFull.lastPromptLogits(for: v)))
                let f = try avFull.verbalize(v, options: SamplingOptions(maxNewTokens: 16))
                let q = try avQ.verbalize(v, options: SamplingOptions(maxNewTokens: 16))
                if f.ids == q.ids { identical += 1 }
                tripF.append(try full.score(prediction: try full.reconstruct(f.explanation ?? f.text), gold: v, fveBaseline: nil).cos)
                tripQ.append(try arQ.score(prediction: try arQ.reconstruct(q.explanation ?? q.text), gold: v, fveBaseline: nil).cos)
            }
            if precision == .q8_0 {
                for (pos, c) in zip(positions, logitCos) { #expect(c >= 0.99, "Q8_0 AV last-position logits cos \(c) at position \(pos)") }
            }
            synNLALog(String(format: "AV %@ vs f32 (%d vectors): last-position logits cos mean %.6f min %.6f; greedy 16-token decodes identical %d/%d; round-trip cos(gold) full %.4f, %@ %.4f",
                             precision.rawValue, positions.count, synMean(logitCos), logitCos.min()!, identical, positions.count,
                             synMean(tripF), precision.rawValue, synMean(tripQ)))
        }
        synNLALog(String(format: "quantized comparisons: %.2f s", Date().timeIntervalSince(start)))
    }

    // MARK: refusals

    @Test func wrongLayerCountAndMissingInjectionScaleAreRefused() throws {
        let p = try SynNLAPair.get()
        let fm = FileManager.default
        var messages: [String: String] = [:]

        // (1) --ar pointed at an untruncated checkpoint (8 blocks) carrying the AR's value head and sidecar (K = 5).
        let untruncated = p.root + "/ar-untruncated-\(UUID().uuidString.prefix(8))"
        try fm.createDirectory(atPath: untruncated, withIntermediateDirectories: true)
        defer { try? fm.removeItem(atPath: untruncated) }
        for f in try fm.contentsOfDirectory(atPath: p.av) where f != "nla_meta.yaml" {
            try fm.createSymbolicLink(atPath: untruncated + "/" + f, withDestinationPath: p.av + "/" + f)
        }
        for f in ["nla_meta.yaml", "value_head.safetensors"] {
            try fm.createSymbolicLink(atPath: untruncated + "/" + f, withDestinationPath: p.ar + "/" + f)
        }
        let e1 = synExpectNLAError { _ = try ActivationReconstructor(path: untruncated) }
        #expect(e1 == .layerCountMismatch(file: untruncated + "/nla_meta.yaml", k: SynNLAPair.k, configLayers: SynNLAPair.avBlocks,
                                          configFile: untruncated + "/config.json"), "\(String(describing: e1))")
        if let e1 { messages["untruncated AR"] = e1.description; #expect(e1.description.contains("K+1 = 6") && e1.description.contains("8")) }

        // (2) the truncated AR with a sidecar whose K disagrees (K = 4 needs 5 blocks, the AR has 6).
        let ar = try SynNLAModels.ar.get()
        var s = ar.sidecar
        s.extractionLayer = 4
        let e2 = synExpectNLAError { _ = try ActivationReconstructor(model: ar.model, sidecar: s) }
        if case .layerCountMismatch(_, 4, 6, _) = e2 {} else { Issue.record("K = 4: \(String(describing: e2))") }
        if let e2 { messages["sidecar K"] = e2.description }
        // The same drift written in the YAML (both K places) of the GGUF-embedded sidecar's text.
        let driftedYAML = SynNLAPair.arSidecarYAML.replacingOccurrences(of: "extraction_layer_index: 5", with: "extraction_layer_index: 4")
        let s2 = try NLASidecar.decode(yaml: driftedYAML, file: "drifted.yaml")
        #expect(synExpectNLAError { _ = try ActivationReconstructor(model: ar.model, sidecar: s2) }
                == .layerCountMismatch(file: "drifted.yaml", k: 4, configLayers: 6, configFile: ar.model.configFileName))

        // (3) an AV sidecar without injection_scale (absent: no default), on the loaded model and from a directory.
        let av = try SynNLAModels.av.get()
        let noScaleYAML = SynNLAPair.avSidecarYAML.replacingOccurrences(of: "  injection_scale: 60000.0\n", with: "")
        #expect(noScaleYAML != SynNLAPair.avSidecarYAML)
        let noScale = try NLASidecar.decode(yaml: noScaleYAML, file: p.av + "/nla_meta.yaml")
        #expect(noScale.injectionScaleState == .absent && noScale.injectionScale == nil)
        let e3 = synExpectNLAError { _ = try ActivationVerbalizer(model: av.model, sidecar: noScale) }
        #expect(e3 == .injectionScaleMissing(file: p.av + "/nla_meta.yaml", state: "absent"))
        if let e3 { messages["no injection_scale"] = e3.description; #expect(e3.description.contains("injection_scale")) }
        let noScaleDir = p.root + "/av-noscale-\(UUID().uuidString.prefix(8))"
        try fm.createDirectory(atPath: noScaleDir, withIntermediateDirectories: true)
        defer { try? fm.removeItem(atPath: noScaleDir) }
        for f in try fm.contentsOfDirectory(atPath: p.av) where f != "nla_meta.yaml" {
            try fm.createSymbolicLink(atPath: noScaleDir + "/" + f, withDestinationPath: p.av + "/" + f)
        }
        try noScaleYAML.write(toFile: noScaleDir + "/nla_meta.yaml", atomically: true, encoding: .utf8)
        #expect(synExpectNLAError { _ = try ActivationVerbalizer(path: noScaleDir) }
                == .injectionScaleMissing(file: noScaleDir + "/nla_meta.yaml", state: "absent"))
        // null is refused too, with its own state.
        let nullScale = try NLASidecar.decode(yaml: SynNLAPair.avSidecarYAML.replacingOccurrences(of: "injection_scale: 60000.0", with: "injection_scale: null"),
                                              file: "null.yaml")
        #expect(synExpectNLAError { _ = try ActivationVerbalizer(model: av.model, sidecar: nullScale) }
                == .injectionScaleMissing(file: "null.yaml", state: "null"))

        #expect(Set(messages.values).count == messages.count, "messages are not distinct: \(messages)")
        for (k, m) in messages.sorted(by: { $0.key < $1.key }) { synNLALog("refusal \(k): \(m)") }
    }

    // MARK: the CLI on the quantized trio

    /// `nla explain --batch 1` (the sequential reference path) with the wrapper target and the Q8_0 AV/AR
    /// files: the per-position report agrees with the library's sequential verbalize/reconstruct.
    @Test func cliExplainOnQuantizedTrio() throws {
        let p = try SynNLAPair.get()
        guard CLI.require() else { return }
        let start = Date()
        let r = try CLI.run(["explain", "--target", p.target, "--av", p.avQ8, "--ar", p.arQ8, "--chat", "--reply", SynNLAModels.chatReply,
                             "--positions", "4-7", "--max-new-tokens", "12", "--fve-baseline", "0.0579", "--batch", "1", "--json", SynNLAModels.chatPrompt])
        #expect(r.status == 0, "nla explain failed: \(r.stderr)")
        guard r.status == 0 else { return }
        let o = Data(r.stdout.utf8)
        let obj = try JSONSerialization.jsonObject(with: o) as! [String: Any]
        let cap = try SynNLAModels.captured.get()
        #expect(obj["layer"] as? Int == SynNLAPair.k && (obj["ids"] as? [Int]) == cap.ids && obj["prompt_length"] as? Int == cap.promptLength)
        #expect(obj["fve_baseline"] as? Double == SynNLAPair.baseline)
        let rows = obj["positions"] as! [[String: Any]]
        #expect(rows.map { $0["position"] as! Int } == [4, 5, 6, 7])
        let av = try ActivationVerbalizer(path: p.avQ8)
        let ar = try ActivationReconstructor(path: p.arQ8)
        for row in rows {
            let pos = row["position"] as! Int
            let v = try av.verbalize(cap.vectors[pos], options: SamplingOptions(maxNewTokens: 12))
            #expect(row["explanation"] as? String == v.explanation ?? v.text, "position \(pos): explanation differs from the library")
            let s = try ar.score(prediction: try ar.reconstruct(v.explanation ?? v.text), gold: cap.vectors[pos], fveBaseline: SynNLAPair.baseline)
            let mse = row["mse_nrm"] as! Double, cos = row["cos"] as! Double, fve = row["fve_nrm"] as! Double
            #expect(abs(mse - s.mseNrm) <= 1e-9 * max(1, mse) && abs(cos - s.cos) <= 1e-9, "position \(pos): CLI \(mse) \(cos) vs \(s)")
            #expect(abs(fve - (1 - mse / SynNLAPair.baseline)) <= 1e-9 * max(1, abs(fve)))
            #expect(abs((row["norm"] as! Double) - cap.norms[pos]) <= 1e-6 * cap.norms[pos])
        }
        let summary = obj["summary"] as! [String: Any]
        #expect(summary["count"] as? Int == 4 && summary["fve_baseline"] as? Double == SynNLAPair.baseline)
        synNLALog(String(format: "nla explain (wrapper target, Q8_0 AV/AR, 4 positions × 12 tokens): %.2f s", Date().timeIntervalSince(start)))
    }
}
