// The Gemma 3 forward on tiny random checkpoints (SyntheticCheckpoint.swift) against a naive Float64
// reference (SyntheticReference.swift), plus the invariants the runtime promises: every checkpoint layout
// and config dialect gives the same model, every config field reaches the math, prefill = decode,
// chunked = one-shot, truncated runs stop before the final norm, embeddings in = ids in.
//
// Tolerances (f32 runtime vs f64 reference; measured worst cases are printed with a "[synthetic]" tag):
//   reference:  max|Δ| / max|ref| <= 1e-5 for every hidden state and the logits (measured: hidden
//               states <= 6e-7, logits <= 1.3e-6, on 13 and 260 tokens);
//   runtime vs itself along different code paths (prefill/decode, chunking): <= 1e-5 (different GEMM
//   shapes round differently; measured ~3e-7); same code path with the same f32 numbers (layouts,
//   dialects, embeddings in, truncation): bit-identical.
// Runtime of all Synthetic* tests: ~1-2 s in release.

import Foundation
import Quant
import Testing
import NLATestSupport
@testable import NLARuntime

/// Runtime vs Float64 reference, relative to the largest reference value.
let syntheticReferenceTolerance = 1e-5
/// Runtime vs runtime when the same math runs through differently shaped matrix products.
let syntheticPathTolerance = 1e-5

func syntheticLog(_ s: String) { print("[synthetic] " + s) }

/// Everything one forward call exposes: observer states and logits.
struct SyntheticRun {
    var embeddings: [Float] = []
    var blocks: [[Float]] = []
    var finalNorm: [Float] = []
    var finalNormCalls = 0
    var logits: [Float] = []

    /// Append another run over later positions (decode steps, successive chunks).
    mutating func append(_ o: SyntheticRun) {
        embeddings += o.embeddings
        if blocks.isEmpty { blocks = o.blocks } else { for i in blocks.indices { blocks[i] += o.blocks[i] } }
        finalNorm += o.finalNorm
        finalNormCalls += o.finalNormCalls
        logits += o.logits
    }
}

extension Gemma3Session {
    /// Run `rows` embedding rows and collect every observed state into [rows, d] arrays.
    func syntheticRun(embeddings: [Float], rows: Int, blocks: Int? = nil, logits: LogitsMode = .all) throws -> SyntheticRun {
        let d = model.config.hiddenSize
        let nBlocks = blocks ?? model.loadedBlocks
        var run = SyntheticRun()
        run.embeddings = [Float](repeating: .nan, count: rows * d)
        run.blocks = [[Float]](repeating: [Float](repeating: .nan, count: rows * d), count: nBlocks)
        run.finalNorm = [Float](repeating: .nan, count: rows * d)
        func store(_ dst: inout [Float], _ row0: Int, _ v: UnsafeBufferPointer<Float>) {
            precondition(row0 * d + v.count <= dst.count)
            for i in 0..<v.count { dst[row0 * d + i] = v[i] }
        }
        run.logits = try embeddings.withUnsafeBufferPointer { e in
            try forward(embeddings: e.baseAddress!, rows: rows, blocks: blocks, logits: logits) { point, row0, values in
                switch point {
                case .embeddings: store(&run.embeddings, row0, values)
                case .block(let b): store(&run.blocks[b], row0, values)
                case .finalNorm: store(&run.finalNorm, row0, values); run.finalNormCalls += 1
                }
            }
        }
        if run.finalNormCalls == 0 { run.finalNorm = [] }
        return run
    }

    func syntheticRun(ids: [Int], blocks: Int? = nil, logits: LogitsMode = .all) throws -> SyntheticRun {
        try syntheticRun(embeddings: try model.embed(ids), rows: ids.count, blocks: blocks, logits: logits)
    }
}

/// Write `spec` as a flat BF16 checkpoint, load it, run `ids` from position 0. The directory is removed.
func syntheticForward(_ spec: SyntheticSpec, ids: [Int], layout: SyntheticLayout = .flatBF16,
                      dialect: SyntheticDialect = .v4) throws -> SyntheticRun {
    let dir = try SyntheticCheckpoint(spec).write(layout: layout, dialect: dialect)
    defer { SyntheticCheckpoint.remove(dir) }
    let model = try Gemma3Model(directory: dir)
    return try model.makeSession(capacity: ids.count).syntheticRun(ids: ids)
}

/// Largest deviation of a runtime run from the reference over every state and the logits.
struct SyntheticComparison: CustomStringConvertible {
    var embeddings = 0.0
    var blocks: [Double] = []
    var finalNorm = 0.0
    var logits = 0.0
    var worst: Double { max(embeddings, blocks.max() ?? 0, finalNorm, logits) }
    var description: String {
        String(format: "emb %.2e, blocks max %.2e, final norm %.2e, logits %.2e", embeddings, blocks.max() ?? 0, finalNorm, logits)
    }

    init(_ got: SyntheticRun, _ ref: SyntheticReference.Output) {
        embeddings = syntheticRelDeviation(got.embeddings, ref.embeddings)
        blocks = zip(got.blocks, ref.blocks).map { syntheticRelDeviation($0, $1) }
        if !ref.finalNorm.isEmpty { finalNorm = syntheticRelDeviation(got.finalNorm, ref.finalNorm) }
        if !ref.logits.isEmpty { logits = syntheticRelDeviation(got.logits, ref.logits) }
    }
}

/// The model variants checked against the reference. All run 13 tokens (> 3 sliding windows of 4).
enum SyntheticVariant: String, CaseIterable, Sendable, CustomTestStringConvertible {
    /// GQA 4/2, linear RoPE ×8 on full layers, qpas 24 ≠ head_dim 16, full layers 2 and 5.
    case base
    /// attention softcap 2 and final softcap 5, both of which bite at these magnitudes.
    case softcapped
    /// exact erf GELU, rms_norm_eps 1e-2, larger sliding window, pattern 2.
    case geluExact
    /// one KV head for four query heads (GQA group 4), hidden 32, head_dim 8, 4 layers.
    case multiQuery
    /// 5.x dialect with RoPE scaling on both layer types (not expressible in 4.x) and odd bases.
    case v5PerTypeRope

    var testDescription: String { rawValue }

    var spec: SyntheticSpec {
        var s = SyntheticSpec()
        switch self {
        case .base: break
        case .softcapped:
            s.attnLogitSoftcapping = 2
            s.finalLogitSoftcapping = 5
            s.seed = 0x5EED_0002
        case .geluExact:
            s.hiddenActivation = "gelu"
            s.rmsNormEps = 1e-2
            s.slidingWindow = 5
            s.slidingWindowPattern = 2
            s.seed = 0x5EED_0003
        case .multiQuery:
            s.numKVHeads = 1
            s.hiddenSize = 32
            s.headDim = 8
            s.queryPreAttnScalar = 12
            s.numLayers = 4
            s.vocabSize = 64
            s.seed = 0x5EED_0004
        case .v5PerTypeRope:
            s.ropeTheta = 5000
            s.ropeLinearFactor = 4
            s.ropeLocalBaseFreq = 50
            s.ropeLocalLinearFactor = 2
            s.seed = 0x5EED_0005
        }
        return s
    }

    var dialect: SyntheticDialect { self == .v5PerTypeRope ? .v5 : .v4 }
}

@Suite struct SyntheticReferenceTests {
    @Test(arguments: SyntheticVariant.allCases)
    func forwardMatchesNaiveReference(_ variant: SyntheticVariant) throws {
        let spec = variant.spec
        var rng = SyntheticRNG(seed: 42)
        let ids = rng.ids(13, vocab: spec.vocabSize)
        let got = try syntheticForward(spec, ids: ids, dialect: variant.dialect)
        let ref = SyntheticReference(spec).forward(ids: ids)
        let cmp = SyntheticComparison(got, ref)
        syntheticLog("reference \(variant): \(cmp)")
        #expect(got.blocks.count == spec.numLayers)
        #expect(got.logits.count == ids.count * spec.vocabSize)
        #expect(cmp.worst <= syntheticReferenceTolerance, "\(variant): \(cmp)")
        // Per block, so that a failure names the first block that goes wrong.
        for (l, dev) in cmp.blocks.enumerated() {
            #expect(dev <= syntheticReferenceTolerance, "\(variant): block \(l) deviates by \(dev)")
        }
        let finite = got.logits.allSatisfy { $0.isFinite }
        #expect(finite)
    }

    /// The comparison has teeth: a reference with one classic Gemma mistake is far outside the tolerance.
    @Test(arguments: SyntheticReferenceMistake.allCases.filter { $0 != .none })
    func brokenReferenceIsDetected(_ mistake: SyntheticReferenceMistake) throws {
        let spec = SyntheticSpec()
        var rng = SyntheticRNG(seed: 42)
        let ids = rng.ids(13, vocab: spec.vocabSize)
        let got = try syntheticForward(spec, ids: ids)
        let cmp = SyntheticComparison(got, SyntheticReference(spec, mistake: mistake).forward(ids: ids))
        syntheticLog("broken reference \(mistake): \(cmp)")
        #expect(cmp.logits > 100 * syntheticReferenceTolerance, "\(mistake) went unnoticed: \(cmp)")
    }

    /// A long sequence: 260 tokens with the default 256-row chunk runs two chunks inside one forward call
    /// (the public API has no chunk-size parameter, so this is the only public way to get several).
    @Test func longSequenceAcrossInternalChunksMatchesReference() throws {
        var spec = SyntheticSpec()
        spec.maxPositions = 320
        spec.numLayers = 3
        spec.seed = 0x5EED_0010
        var rng = SyntheticRNG(seed: 7)
        let ids = rng.ids(260, vocab: spec.vocabSize)
        let dir = try SyntheticCheckpoint(spec).write()
        defer { SyntheticCheckpoint.remove(dir) }
        let session = try Gemma3Model(directory: dir).makeSession(capacity: 300)
        #expect(session.chunkRows == 256)
        let got = try session.syntheticRun(ids: ids)
        #expect(session.position == 260)
        let cmp = SyntheticComparison(got, SyntheticReference(spec).forward(ids: ids))
        syntheticLog("reference 260 tokens (2 chunks): \(cmp)")
        #expect(cmp.worst <= syntheticReferenceTolerance, "\(cmp)")
    }
}

// MARK: - layouts and dialects

/// The config fields the math depends on, for comparing two decoded configs.
func syntheticMathFields(_ c: Gemma3Config) -> [String] {
    [c.vocabSize, c.hiddenSize, c.intermediateSize, c.numHiddenLayers, c.numAttentionHeads, c.numKeyValueHeads,
     c.headDim, c.maxPositionEmbeddings, c.slidingWindow].map(String.init)
        + [c.rmsNormEps.description, c.queryPreAttnScalar.description, "\(c.layerTypes)", "\(c.ropeFull)", "\(c.ropeSliding)",
           "\(c.attnLogitSoftcapping as Any)", "\(c.finalLogitSoftcapping as Any)", "\(c.activation)", c.embedScale.description,
           "\(c.tieWordEmbeddings)"]
}

@Suite struct SyntheticLayoutTests {
    static let spec: SyntheticSpec = {
        var s = SyntheticSpec()
        s.attnLogitSoftcapping = 3
        s.finalLogitSoftcapping = 6
        return s
    }()

    static func run(_ layout: SyntheticLayout, _ dialect: SyntheticDialect, ids: [Int]) throws -> (SyntheticRun, Gemma3Model) {
        let dir = try SyntheticCheckpoint(spec).write(layout: layout, dialect: dialect)
        defer { SyntheticCheckpoint.remove(dir) }
        let model = try Gemma3Model(directory: dir)
        return (try model.makeSession(capacity: ids.count).syntheticRun(ids: ids), model)
    }

    @Test func allLayoutsGiveIdenticalOutputs() throws {
        var rng = SyntheticRNG(seed: 3)
        let ids = rng.ids(11, vocab: Self.spec.vocabSize)
        let (flat, flatModel) = try Self.run(.flatBF16, .v4, ids: ids)
        #expect(flatModel.weightPrefix == "model.")
        #expect(!flatModel.config.isMultimodalWrapper)
        #expect(flatModel.unusedTensors.isEmpty)
        let ref = SyntheticReference(Self.spec).forward(ids: ids)
        #expect(SyntheticComparison(flat, ref).worst <= syntheticReferenceTolerance)

        let layouts: [SyntheticLayout] = [.wrapperOld, .wrapperNew, .flat(dtype: .f32),
                                          .wrapper(prefix: "language_model.model.", shards: 2, dtype: .bf16)]
        for layout in layouts {
            let (got, model) = try Self.run(layout, .v4, ids: ids)
            #expect(model.weightPrefix == layout.prefix, "\(layout)")
            if case .wrapper = layout {
                #expect(model.config.isMultimodalWrapper, "\(layout)")
                #expect(model.config.modelType == "gemma3_text", "\(layout)")
            }
            // Vision tensors are present in the wrapper checkpoints but are not "unused".
            #expect(model.unusedTensors.isEmpty, "\(layout): \(model.unusedTensors)")
            #expect(syntheticMathFields(model.config) == syntheticMathFields(flatModel.config), "\(layout)")
            #expect(got.logits == flat.logits, "\(layout): logits differ by \(syntheticRelDeviation(got.logits, flat.logits))")
            #expect(got.blocks == flat.blocks, "\(layout): hidden states differ")
            #expect(got.finalNorm == flat.finalNorm, "\(layout)")
        }
    }

    /// A 2-byte tensor first shifts every F32 tensor off 4-byte alignment: the loader must copy
    /// instead of viewing, with the same result (and report the extra tensor).
    @Test func unalignedF32TensorsGiveIdenticalOutputs() throws {
        var rng = SyntheticRNG(seed: 6)
        let ids = rng.ids(9, vocab: Self.spec.vocabSize)
        let (aligned, _) = try Self.run(.flat(dtype: .f32), .v4, ids: ids)
        let dir = try SyntheticCheckpoint(Self.spec).write(layout: .flat(dtype: .f32), editEntries: { entries in
            entries.insert(.init(name: "aaa.pad", shape: [1], bf16FromFloats: [1]), at: 0)
        })
        defer { SyntheticCheckpoint.remove(dir) }
        let model = try Gemma3Model(directory: dir)
        let view = model.embedding
        #expect(Int(bitPattern: view.data) % 4 == 2, "the test layout should be misaligned")
        #expect(model.unusedTensors == ["aaa.pad"])
        let got = try model.makeSession(capacity: ids.count).syntheticRun(ids: ids)
        #expect(got.logits == aligned.logits)
        #expect(got.blocks == aligned.blocks)
    }

    @Test func wrapperConfigListsOnlyNonDefaultFields() throws {
        let cfg = SyntheticCheckpoint(Self.spec).config(layout: .wrapperOld, dialect: .v4)
        let tc = try #require(cfg["text_config"] as? [String: Any])
        // Defaults of the spec (rope bases, eps, activation) are left out, as in the released configs.
        for key in ["rope_theta", "rope_local_base_freq", "rms_norm_eps", "hidden_activation"] {
            #expect(tc[key] == nil, "\(key) should be omitted")
        }
        #expect(tc["rope_scaling"] != nil)
        #expect(cfg["rope_theta"] == nil && cfg["hidden_size"] == nil)
    }

    @Test func unexpectedTensorIsReportedAsUnused() throws {
        for layout in [SyntheticLayout.flatBF16, .wrapperNew] {
            let extra = [layout.prefix + "layers.0.self_attn.q_proj.bias", "some_adapter.lora_A.weight"]
            let dir = try SyntheticCheckpoint(Self.spec).write(layout: layout, editEntries: { entries in
                for name in extra { entries.append(.init(name: name, shape: [4], floats: [1, 2, 3, 4])) }
            })
            defer { SyntheticCheckpoint.remove(dir) }
            let model = try Gemma3Model(directory: dir)
            #expect(model.unusedTensors == extra.sorted(), "\(layout)")
        }
    }

    @Test func explicitLmHeadIsUsedWhenUntied() throws {
        // tie_word_embeddings false + lm_head.weight equal to the embedding: same logits as tied.
        var rng = SyntheticRNG(seed: 4)
        let ids = rng.ids(6, vocab: Self.spec.vocabSize)
        let ck = SyntheticCheckpoint(Self.spec)
        let tiedDir = try ck.write()
        let untiedDir = try ck.write(editConfig: { $0["tie_word_embeddings"] = false }, editEntries: { entries in
            let e = entries.first { $0.name == "model.embed_tokens.weight" }!
            entries.append(.init(name: "lm_head.weight", dtype: e.dtype, shape: e.shape, bytes: e.bytes))
        })
        defer { SyntheticCheckpoint.remove(tiedDir); SyntheticCheckpoint.remove(untiedDir) }
        let tied = try Gemma3Model(directory: tiedDir), untied = try Gemma3Model(directory: untiedDir)
        #expect(untied.unusedTensors.isEmpty)
        let a = try tied.makeSession(capacity: 6).forward(ids: ids, logits: .all)
        let b = try untied.makeSession(capacity: 6).forward(ids: ids, logits: .all)
        #expect(a == b)
    }

    @Test func v4AndV5DialectsGiveIdenticalOutputs() throws {
        var rng = SyntheticRNG(seed: 5)
        let ids = rng.ids(12, vocab: Self.spec.vocabSize)
        for layout in [SyntheticLayout.flatBF16, .wrapperNew] {
            let (a, ma) = try Self.run(layout, .v4, ids: ids)
            let (b, mb) = try Self.run(layout, .v5, ids: ids)
            #expect(syntheticMathFields(ma.config) == syntheticMathFields(mb.config), "\(layout)")
            #expect(ma.config.ropeFull == RopeParams(theta: Self.spec.ropeTheta, linearFactor: 8))
            #expect(ma.config.ropeSliding == RopeParams(theta: Self.spec.ropeLocalBaseFreq, linearFactor: 1))
            #expect(ma.config.layerTypes == Self.spec.isFullLayer.map { $0 ? LayerType.full : .sliding })
            #expect(a.logits == b.logits, "\(layout)")
            #expect(a.blocks == b.blocks, "\(layout)")
        }
        // 5.x with a single (not per-layer-type) rope_parameters dict: it is the full-attention RoPE and
        // sliding layers fall back to rope_local_base_freq.
        let dir = try SyntheticCheckpoint(Self.spec).write(dialect: .v5, editConfig: { c in
            c["rope_parameters"] = ["rope_type": "linear", "factor": 8.0, "rope_theta": Self.spec.ropeTheta]
            c["rope_local_base_freq"] = Self.spec.ropeLocalBaseFreq
        })
        defer { SyntheticCheckpoint.remove(dir) }
        let model = try Gemma3Model(directory: dir)
        let (v4, _) = try Self.run(.flatBF16, .v4, ids: ids)
        #expect(try model.makeSession(capacity: ids.count).syntheticRun(ids: ids).logits == v4.logits)
    }
}

// MARK: - every config field reaches the math

/// Changing one config field (and nothing else: same weights, same ids).
enum SyntheticFieldChange: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case queryPreAttnScalarEqualsHeadDim
    case ropeTheta
    case ropeLocalBaseFreq
    case ropeScalingFactor
    case ropeScalingRemoved
    case slidingWindow
    case slidingWindowOfOne
    case slidingWindowPattern
    case rmsNormEps
    case attnLogitSoftcapping
    case attnLogitSoftcappingRemoved
    case finalLogitSoftcapping
    case hiddenActivation

    var testDescription: String { rawValue }

    func apply(_ s: inout SyntheticSpec) {
        switch self {
        case .queryPreAttnScalarEqualsHeadDim: s.queryPreAttnScalar = Double(s.headDim)
        case .ropeTheta: s.ropeTheta = 10_000
        case .ropeLocalBaseFreq: s.ropeLocalBaseFreq = 100
        case .ropeScalingFactor: s.ropeLinearFactor = 2
        case .ropeScalingRemoved: s.ropeLinearFactor = nil
        case .slidingWindow: s.slidingWindow = 6
        case .slidingWindowOfOne: s.slidingWindow = 1
        case .slidingWindowPattern: s.slidingWindowPattern = 2
        case .rmsNormEps: s.rmsNormEps = 0.05
        case .attnLogitSoftcapping: s.attnLogitSoftcapping = 1
        case .attnLogitSoftcappingRemoved: s.attnLogitSoftcapping = nil
        case .finalLogitSoftcapping: s.finalLogitSoftcapping = 2
        case .hiddenActivation: s.hiddenActivation = "gelu"
        }
    }

    /// The base every change starts from: both softcaps on, so that changing them is visible.
    static let base: SyntheticSpec = {
        var s = SyntheticSpec()
        s.attnLogitSoftcapping = 2
        s.finalLogitSoftcapping = 5
        s.seed = 0x5EED_0020
        return s
    }()
}

@Suite struct SyntheticConfigFieldTests {
    static let ids: [Int] = { var r = SyntheticRNG(seed: 9); return r.ids(13, vocab: SyntheticFieldChange.base.vocabSize) }()
    static let baseLogits: Result<[Float], Error> = Result { try syntheticForward(SyntheticFieldChange.base, ids: ids).logits }

    @Test(arguments: SyntheticFieldChange.allCases, [SyntheticDialect.v4, .v5])
    func changingOneFieldChangesTheLogits(_ change: SyntheticFieldChange, _ dialect: SyntheticDialect) throws {
        var spec = SyntheticFieldChange.base
        change.apply(&spec)
        let got = try syntheticForward(spec, ids: Self.ids, dialect: dialect)
        let ref = SyntheticReference(spec).forward(ids: Self.ids)
        let cmp = SyntheticComparison(got, ref)
        let base = try Self.baseLogits.get()
        let moved = syntheticRelDeviation(base, ref.logits)
        syntheticLog("field \(change) (\(dialect)): vs changed reference \(cmp); base vs changed reference \(String(format: "%.2e", moved))")
        // The runtime follows the changed field...
        #expect(cmp.worst <= syntheticReferenceTolerance, "\(change): \(cmp)")
        // ...and the change is far larger than the agreement, so it cannot be numerical noise
        // (the smallest effect is gelu vs gelu_pytorch_tanh: ~3e-4, vs ~5e-7 agreement).
        #expect(moved > 10 * syntheticReferenceTolerance && moved > 100 * cmp.logits,
                "\(change) did not change the logits enough: \(moved)")
    }

    @Test func missingWrapperFieldsTakeTheDefaults() throws {
        let json = #"{"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "text_config": {}}"#
        let c = try Gemma3Config.decode(Data(json.utf8), file: "config.json")
        let d = Gemma3DefaultsMirror.self
        #expect(c.isMultimodalWrapper)
        #expect(c.modelType == "gemma3_text")
        #expect(c.vocabSize == d.vocabSize && c.vocabSize == Gemma3Defaults.vocabSize)
        #expect(c.hiddenSize == d.hiddenSize && c.intermediateSize == d.intermediateSize)
        #expect(c.numHiddenLayers == d.numHiddenLayers)
        #expect(c.numAttentionHeads == d.numAttentionHeads && c.numKeyValueHeads == d.numKeyValueHeads)
        #expect(c.headDim == d.headDim && c.maxPositionEmbeddings == d.maxPositionEmbeddings)
        #expect(c.rmsNormEps == Float(d.rmsNormEps))
        #expect(c.queryPreAttnScalar == d.queryPreAttnScalar)
        #expect(c.slidingWindow == d.slidingWindow)
        #expect(c.activation == .geluTanh)
        #expect(c.ropeFull == RopeParams(theta: d.ropeTheta, linearFactor: 1))
        #expect(c.ropeSliding == RopeParams(theta: d.ropeLocalBaseFreq, linearFactor: 1))
        #expect(c.attnLogitSoftcapping == nil && c.finalLogitSoftcapping == nil)
        #expect(c.tieWordEmbeddings && !c.attentionBias)
        #expect(c.bosTokenId == 2 && c.eosTokenIds == [1] && c.padTokenId == 0)
        // Pattern 6: layers 5, 11, 17, 23 are full attention.
        #expect(c.layerTypes.count == 26)
        #expect(c.layerTypes.indices.filter { c.layerTypes[$0] == .full } == [5, 11, 17, 23])
        // Every default agrees with the table the runtime keeps.
        #expect(Gemma3Defaults.hiddenSize == d.hiddenSize && Gemma3Defaults.headDim == d.headDim
                && Gemma3Defaults.ropeTheta == d.ropeTheta && Gemma3Defaults.ropeLocalBaseFreq == d.ropeLocalBaseFreq
                && Gemma3Defaults.queryPreAttnScalar == d.queryPreAttnScalar && Gemma3Defaults.slidingWindow == d.slidingWindow
                && Gemma3Defaults.slidingWindowPattern == d.slidingWindowPattern && Gemma3Defaults.rmsNormEps == d.rmsNormEps
                && Gemma3Defaults.maxPositionEmbeddings == d.maxPositionEmbeddings && Gemma3Defaults.hiddenActivation == d.hiddenActivation)
    }

    @Test func released27BStyleWrapperConfig() throws {
        // The text_config of gemma-3-27b-it as released: only the non-default fields.
        let json = #"""
        {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "eos_token_id": [1, 106],
         "text_config": {"head_dim": 128, "hidden_size": 5376, "intermediate_size": 21504, "model_type": "gemma3_text",
                         "num_attention_heads": 32, "num_hidden_layers": 62, "num_key_value_heads": 16,
                         "query_pre_attn_scalar": 168, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                         "sliding_window": 1024},
         "vision_config": {"model_type": "siglip_vision_model"}}
        """#
        let c = try Gemma3Config.decode(Data(json.utf8), file: "config.json")
        #expect(c.hiddenSize == 5376 && c.headDim == 128 && c.numHiddenLayers == 62)
        #expect(c.vocabSize == 262_208)
        #expect(c.queryPreAttnScalar == 168 && c.attentionScale == Float(1 / 168.0.squareRoot()))
        #expect(c.ropeFull == RopeParams(theta: 1_000_000, linearFactor: 8))
        #expect(c.ropeSliding == RopeParams(theta: 10_000, linearFactor: 1))
        #expect(c.slidingWindow == 1024)
        #expect(c.eosTokenIds == [1, 106])
        #expect(c.layerTypes.filter { $0 == .full }.count == 10)
    }
}

// MARK: - sessions: prefill, decode, chunks, truncation, embeddings

@Suite struct SyntheticSessionTests {
    static let spec: SyntheticSpec = {
        var s = SyntheticSpec()
        s.attnLogitSoftcapping = 3
        s.finalLogitSoftcapping = 6
        s.seed = 0x5EED_0030
        return s
    }()
    static let ids: [Int] = { var r = SyntheticRNG(seed: 11); return r.ids(13, vocab: spec.vocabSize) }()

    /// Load the suite's checkpoint (written for this test, removed afterwards).
    static func withModel(_ body: (Gemma3Model) throws -> Void) throws {
        let dir = try SyntheticCheckpoint(spec).write()
        defer { SyntheticCheckpoint.remove(dir) }
        try body(try Gemma3Model(directory: dir))
    }

    static func decodeOneByOne(_ session: Gemma3Session, _ ids: [Int]) throws -> SyntheticRun {
        var all = SyntheticRun()
        for id in ids {
            let step = try session.syntheticRun(ids: [id], logits: .last)
            all.append(step)
        }
        return all
    }

    @Test func prefillEqualsTokenByTokenDecode() throws {
        try Self.withModel { model in
            let n = Self.ids.count
            #expect(n > 3 * Self.spec.slidingWindow)
            let prefill = try model.makeSession(capacity: n + 1)
            let a = try prefill.syntheticRun(ids: Self.ids)
            let decode = try model.makeSession(capacity: n + 1)
            let b = try Self.decodeOneByOne(decode, Self.ids)
            #expect(prefill.position == n && decode.position == n)
            let logitDev = syntheticRelDeviation(b.logits, a.logits)
            let stateDev = zip(b.blocks, a.blocks).map { syntheticRelDeviation($0, $1) }.max()!
            syntheticLog(String(format: "prefill vs decode: logits %.2e, hidden states %.2e", logitDev, stateDev))
            #expect(logitDev <= syntheticPathTolerance)
            #expect(stateDev <= syntheticPathTolerance)
            // The caches must hold the same keys and values: one more token reads all of them.
            let next = Self.ids[3]
            let ca = try prefill.syntheticRun(ids: [next]), cb = try decode.syntheticRun(ids: [next])
            #expect(syntheticRelDeviation(cb.logits, ca.logits) <= syntheticPathTolerance)
            for l in 0..<Self.spec.numLayers {
                #expect(syntheticRelDeviation(cb.blocks[l], ca.blocks[l]) <= syntheticPathTolerance, "block \(l)")
            }
            // ...and both agree with the reference over all n + 1 positions.
            let ref = SyntheticReference(Self.spec).forward(ids: Self.ids + [next])
            var full = a
            full.append(ca)
            #expect(SyntheticComparison(full, ref).worst <= syntheticReferenceTolerance, "\(SyntheticComparison(full, ref))")
        }
    }

    @Test func chunkedPrefillThroughSuccessiveCallsEqualsOneShot() throws {
        try Self.withModel { model in
            let oneShot = try model.makeSession(capacity: 13).syntheticRun(ids: Self.ids)
            for cuts in [[5, 1, 7], [4, 4, 4, 1], [12, 1]] {
                let s = try model.makeSession(capacity: 13)
                var run = SyntheticRun()
                var at = 0
                for c in cuts {
                    run.append(try s.syntheticRun(ids: Array(Self.ids[at..<at + c])))
                    at += c
                }
                #expect(s.position == 13)
                #expect(syntheticRelDeviation(run.logits, oneShot.logits) <= syntheticPathTolerance, "\(cuts)")
                for l in 0..<Self.spec.numLayers {
                    #expect(syntheticRelDeviation(run.blocks[l], oneShot.blocks[l]) <= syntheticPathTolerance, "\(cuts) block \(l)")
                }
            }
        }
    }

    /// chunkRows is not settable through the public API (`makeSession(capacity:)` always uses 256);
    /// the internal initializer is reached with @testable.
    @Test(arguments: [1, 3, 4, 5, 12])
    func internalChunkSizeDoesNotChangeOutputs(_ chunk: Int) throws {
        try Self.withModel { model in
            let oneShot = try model.makeSession(capacity: 13).syntheticRun(ids: Self.ids)
            let s = try Gemma3Session(model: model, capacity: 13, chunkRows: chunk)
            #expect(s.chunkRows == chunk)
            let run = try s.syntheticRun(ids: Self.ids)
            #expect(run.finalNormCalls == (13 + chunk - 1) / chunk)
            #expect(syntheticRelDeviation(run.logits, oneShot.logits) <= syntheticPathTolerance, "chunk \(chunk)")
            #expect(syntheticRelDeviation(run.embeddings, oneShot.embeddings) == 0)
            for l in 0..<Self.spec.numLayers {
                #expect(syntheticRelDeviation(run.blocks[l], oneShot.blocks[l]) <= syntheticPathTolerance, "chunk \(chunk) block \(l)")
            }
            // .last returns the last position's logits even when it sits in a later chunk.
            let last = try Gemma3Session(model: model, capacity: 13, chunkRows: chunk).forward(ids: Self.ids, logits: .last)
            let v = Self.spec.vocabSize
            #expect(syntheticRelDeviation(last, Array(oneShot.logits[(12 * v)...])) <= syntheticPathTolerance)
        }
    }

    @Test(arguments: [0, 2, 4])
    func truncatedRunStopsAfterBlockKWithoutFinalNorm(_ k: Int) throws {
        try Self.withModel { full in
            let whole = try full.makeSession(capacity: 13).syntheticRun(ids: Self.ids)

            let truncated = try Gemma3Model(directory: full.directory, blocks: k + 1)
            #expect(truncated.loadedBlocks == k + 1)
            #expect(truncated.unusedTensors.isEmpty, "\(truncated.unusedTensors)")
            let session = try truncated.makeSession(capacity: 13)
            let out = try session.syntheticRun(ids: Self.ids, logits: .all)
            #expect(out.logits.isEmpty)
            #expect(out.finalNormCalls == 0)
            #expect(out.blocks.count == k + 1)
            #expect(out.blocks[k] == whole.blocks[k])
            #expect(session.position == 13)
            // The same through `forward(..., blocks:)` on the full model.
            let viaBlocks = try full.makeSession(capacity: 13).syntheticRun(ids: Self.ids, blocks: k + 1, logits: .all)
            #expect(viaBlocks.logits.isEmpty && viaBlocks.finalNormCalls == 0)
            #expect(viaBlocks.blocks[k] == whole.blocks[k])
            // And the residual is the raw block output of the reference, not a normed state.
            let ref = SyntheticReference(Self.spec).forward(embeddings: SyntheticReference(Self.spec).embed(Self.ids),
                                                            rows: 13, blocks: k + 1)
            #expect(syntheticRelDeviation(out.blocks[k], ref.blocks[k]) <= syntheticReferenceTolerance)
            #expect(ref.finalNorm.isEmpty)
            // A truncated model cannot run more blocks than it loaded.
            #expect(throws: ModelError.self) { try session.forward(ids: [1], blocks: k + 2) }
        }
    }

    @Test func embeddingsPathEqualsIdsPath() throws {
        try Self.withModel { model in
            let byIds = try model.makeSession(capacity: 13).syntheticRun(ids: Self.ids)
            let e = try model.embed(Self.ids)
            let byEmb = try model.makeSession(capacity: 13).syntheticRun(embeddings: e, rows: 13)
            #expect(byEmb.logits == byIds.logits)
            #expect(byEmb.blocks == byIds.blocks)
            #expect(byEmb.embeddings == e)

            // Replace row 6 by an arbitrary vector (written as is: no √d scale): positions < 6 are untouched
            // (causal), positions >= 6 change, and the reference given the same rows agrees.
            let d = Self.spec.hiddenSize, v = Self.spec.vocabSize, r = 6
            var rng = SyntheticRNG(seed: 12)
            var e2 = e
            for c in 0..<d { e2[r * d + c] = Float(3 * rng.normal()) }
            let injected = try model.makeSession(capacity: 13).syntheticRun(embeddings: e2, rows: 13)
            #expect(Array(injected.logits[..<(r * v)]) == Array(byIds.logits[..<(r * v)]))
            for pos in r..<13 {
                let a = Array(injected.logits[(pos * v)..<((pos + 1) * v)]), b = Array(byIds.logits[(pos * v)..<((pos + 1) * v)])
                #expect(syntheticRelDeviation(a, b) > 1e-3, "position \(pos) did not see the injected row")
            }
            let ref = SyntheticReference(Self.spec).forward(embeddings: e2.map(Double.init), rows: 13)
            let cmp = SyntheticComparison(injected, ref)
            syntheticLog("injected embedding row vs reference: \(cmp)")
            #expect(cmp.worst <= syntheticReferenceTolerance, "\(cmp)")
        }
    }

    @Test func hiddenStatesFollowTransformersIndexing() throws {
        try Self.withModel { model in
            let n = Self.spec.numLayers
            let hs = try model.makeSession(capacity: 13).forwardHiddenStates(ids: Self.ids, logits: .all)
            let run = try model.makeSession(capacity: 13).syntheticRun(ids: Self.ids)
            #expect(hs.states.count == n + 1)
            #expect(hs.states[0] == run.embeddings)
            for i in 1..<n { #expect(hs.states[i] == run.blocks[i - 1], "state \(i)") }
            #expect(hs.states[n] == run.finalNorm)
            #expect(hs.lastBlockRaw == run.blocks[n - 1])
            #expect(hs.logits == run.logits)
        }
    }

    @Test func slidingRingKVAcrossTheWindowBoundary() throws {
        try Self.withModel { model in
            let n = Self.ids.count, w = Self.spec.slidingWindow
            let cfg = model.config
            // Chunks of 3 rows: sliding blocks keep window + 2 positions, so the ring wraps several times.
            let ring = try Gemma3Session(model: model, capacity: n, chunkRows: 3)
            let full = try model.makeSession(capacity: n)
            for l in 0..<model.loadedBlocks {
                #expect(ring.ringLengths[l] == (cfg.layerTypes[l] == .sliding ? w + 2 : n), "block \(l)")
            }
            #expect(ring.kvBytes < full.kvBytes)
            let a = try ring.syntheticRun(ids: Self.ids)
            let b = try full.syntheticRun(ids: Self.ids)
            #expect(syntheticRelDeviation(a.logits, b.logits) <= syntheticPathTolerance)
            let ref = SyntheticReference(Self.spec).forward(ids: Self.ids)
            #expect(SyntheticComparison(a, ref).worst <= syntheticReferenceTolerance, "\(SyntheticComparison(a, ref))")
            // Rolling back within the ring works; past what the ring still holds it is refused.
            try ring.truncate(to: n - 2)
            let again = try ring.syntheticRun(ids: Array(Self.ids[(n - 2)...]))
            #expect(syntheticRelDeviation(again.logits, Array(a.logits[((n - 2) * Self.spec.vocabSize)...])) <= syntheticPathTolerance)
            #expect(throws: ModelError.self) { try ring.truncate(to: 1) }
            #expect(ring.position == n)
        }
    }

    @Test func resetAndTruncateReuseTheCache() throws {
        try Self.withModel { model in
            let oneShot = try model.makeSession(capacity: 13).forward(ids: Self.ids, logits: .all)
            let v = Self.spec.vocabSize
            let s = try model.makeSession(capacity: 13)
            _ = try s.forward(ids: Array(Self.ids[..<8]) + [0, 1, 2])
            try s.truncate(to: 8)
            let tail = try s.forward(ids: Array(Self.ids[8...]), logits: .all)
            #expect(syntheticRelDeviation(tail, Array(oneShot[(8 * v)...])) <= syntheticPathTolerance)
            s.reset()
            #expect(s.position == 0)
            let again = try s.forward(ids: Self.ids, logits: .all)
            #expect(again == oneShot)
        }
    }
}
