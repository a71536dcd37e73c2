// Golden tests on the real Gemma 3 270M (built by `make test-model`) against transformers 5.24 f32
// outputs (Tests/Fixtures/forward*.json/.safetensors, generation.json; see shared fixtures README).
// Tolerances (from the fixtures README, fair for an f32 implementation):
//   hidden states: cosine >= 0.99999 and max|Δ| <= 1e-4 · max|ref| per layer;
//   logits: argmax equal and max|Δ| <= 1e-3 · max|logit|;  greedy: identical ids.

import Foundation
import Quant
import Testing
import NLATestSupport
@testable import NLARuntime

enum TestModel {
    static var directory: String { TestPaths.testModel }

    /// The model, loaded once. Fails (does not skip) when it is missing.
    static let shared: Result<LanguageModel, Error> = Result { try LanguageModel(directory: directory) }

    static func load() throws -> LanguageModel {
        guard FileManager.default.fileExists(atPath: directory + "/model.safetensors") else {
            Issue.record("test model missing at \(directory): run `make test-model`")
            throw ModelError.input("test model missing")
        }
        return try shared.get()
    }
}

enum Fixtures {
    static let dir: String = TestPaths.fixtures

    static func json(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + name))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    static func tensors(_ name: String) throws -> SafetensorsFile {
        try SafetensorsFile(path: dir + "/" + name)
    }
}

struct Deviation: CustomStringConvertible {
    var cosine: Double
    var relMaxAbs: Double
    var description: String { String(format: "cos %.8f, max|Δ|/max|ref| %.3e", cosine, relMaxAbs) }
}

func compare(_ got: UnsafeBufferPointer<Float>, _ ref: UnsafeBufferPointer<Float>) -> Deviation {
    precondition(got.count == ref.count)
    var dot = 0.0, ng = 0.0, nr = 0.0, maxd = 0.0, maxr = 0.0
    for i in 0..<ref.count {
        let a = Double(got[i]), b = Double(ref[i])
        dot += a * b; ng += a * a; nr += b * b
        maxd = max(maxd, abs(a - b)); maxr = max(maxr, abs(b))
    }
    return Deviation(cosine: dot / (ng.squareRoot() * nr.squareRoot() + 1e-30), relMaxAbs: maxd / max(maxr, 1e-30))
}

func compare(_ got: [Float], _ ref: [Float]) -> Deviation {
    got.withUnsafeBufferPointer { g in ref.withUnsafeBufferPointer { r in compare(g, r) } }
}

extension TensorView {
    /// Elements [offset, offset+count) as floats (f32 tensors).
    func floats(_ offset: Int = 0, _ count: Int? = nil) -> [Float] {
        let all = toFloatArray()
        return Array(all[offset..<(offset + (count ?? all.count - offset))])
    }
}

/// Log one line per measurement so the closing note can cite the worst deviations.
func report(_ s: String) { print("[golden] " + s) }

@Suite(.serialized) struct ForwardGoldenTests {
    static let names = ["short", "mid", "chat"]

    @Test(arguments: ["short", "mid", "chat"])
    func everyLayerMatchesTransformers(name: String) throws {
        let lm = try TestModel.load()
        let meta = try Fixtures.json("forward.json")
        let prompt = (meta["prompts"] as! [[String: Any]]).first { $0["name"] as? String == name }!
        let ids = (prompt["ids"] as! [NSNumber]).map(\.intValue)
        let golden = try Fixtures.tensors(prompt["file"] as! String)
        let n = lm.config.numHiddenLayers, d = lm.config.hiddenSize, t = ids.count
        #expect(try golden.tensor("input_ids").toInt32s().map(Int.init) == ids)

        let hs = try lm.session(for: ids).forwardHiddenStates(ids: ids, logits: .last)
        let ref = try golden.tensor("hidden_states").toFloatArray()
        var worst = Deviation(cosine: 1, relMaxAbs: 0)
        for layer in 0...n {
            let r = Array(ref[(layer * t * d)..<((layer + 1) * t * d)])
            let dev = compare(hs.states[layer], r)
            #expect(dev.cosine >= 0.99999, "\(name) hidden_states[\(layer)]: \(dev)")
            #expect(dev.relMaxAbs <= 1e-4, "\(name) hidden_states[\(layer)]: \(dev)")
            worst = Deviation(cosine: min(worst.cosine, dev.cosine), relMaxAbs: max(worst.relMaxAbs, dev.relMaxAbs))
        }
        let pre = compare(hs.lastBlockRaw, try golden.tensor("block17_output_prenorm").toFloatArray())
        #expect(pre.cosine >= 0.99999 && pre.relMaxAbs <= 1e-4, "\(name) block17 pre-norm: \(pre)")
        report("forward \(name) (T=\(t)): worst layer \(worst); block17 pre-norm \(pre)")
        try checkLastLogits(hs.logits, prompt: prompt, golden: golden, label: name)
    }

    @Test func longPromptCrossesSlidingWindow() throws {
        let lm = try TestModel.load()
        let meta = try Fixtures.json("forward.json")
        let prompt = (meta["prompts"] as! [[String: Any]]).first { $0["name"] as? String == "long" }!
        let ids = (prompt["ids"] as! [NSNumber]).map(\.intValue)
        #expect(ids.count > lm.config.slidingWindow)
        let golden = try Fixtures.tensors("forward_long.safetensors")
        let d = lm.config.hiddenSize, t = ids.count, n = lm.config.numHiddenLayers
        let hs = try lm.session(for: ids).forwardHiddenStates(ids: ids, logits: .last)
        let sel = try golden.tensor("hidden_states_layers_0_6_12_18").toFloatArray()
        for (k, layer) in [0, 6, 12, 18].enumerated() {
            let dev = compare(hs.states[layer], Array(sel[(k * t * d)..<((k + 1) * t * d)]))
            #expect(dev.cosine >= 0.99999 && dev.relMaxAbs <= 1e-4, "long hidden_states[\(layer)]: \(dev)")
            report("forward long (T=\(t)) layer \(layer): \(dev)")
        }
        let lastRef = try golden.tensor("hidden_states_last_token").toFloatArray()
        for layer in 0...n {
            let got = Array(hs.states[layer][((t - 1) * d)..<(t * d)])
            let dev = compare(got, Array(lastRef[(layer * d)..<((layer + 1) * d)]))
            #expect(dev.cosine >= 0.99999 && dev.relMaxAbs <= 1e-4, "long last-token hidden_states[\(layer)]: \(dev)")
        }
        try checkLastLogits(hs.logits, prompt: prompt, golden: golden, label: "long")
    }

    func checkLastLogits(_ logits: [Float], prompt: [String: Any], golden: SafetensorsFile, label: String) throws {
        let topIds = (prompt["last_logits_top50_ids"] as! [NSNumber]).map(\.intValue)
        let topVals = (prompt["last_logits_top50_values"] as! [NSNumber]).map(\.floatValue)
        #expect(Sampler.argmax(logits) == topIds[0], "\(label): argmax \(Sampler.argmax(logits)) != \(topIds[0])")
        let maxLogit = topVals.map(abs).max()!
        var worst: Float = 0
        if let full = golden.tensors["logits_last_full"] {
            let ref = full.toFloatArray()
            let maxAbs = ref.map(abs).max()!
            for i in ref.indices { worst = max(worst, abs(ref[i] - logits[i]) / maxAbs) }
        } else {
            for (i, id) in topIds.enumerated() { worst = max(worst, abs(topVals[i] - logits[id]) / maxLogit) }
        }
        #expect(worst <= 1e-3, "\(label): last logits max|Δ|/max|logit| = \(worst)")
        report("logits \(label): max|Δ|/max|logit| \(worst)")
    }
}

@Suite struct GenerationGoldenTests {
    @Test func greedy32TokensIdentical() throws {
        let lm = try TestModel.load()
        let g = try Fixtures.json("generation.json")
        var identical = 0
        let prompts = g["prompts"] as! [[String: Any]]
        for p in prompts {
            let promptIds = (p["prompt_ids"] as! [NSNumber]).map(\.intValue)
            let expected = (p["generate_ids"] as! [NSNumber]).map(\.intValue)
            // The prompt text must tokenize (plain or chat) to the golden prompt ids.
            let text = p["prompt"] as! String
            let tok = try lm.promptIds(text, chat: p["kind"] as? String == "chat")
            #expect(tok == promptIds, "\(p["name"]!): prompt ids")
            let session = try lm.session(for: promptIds, extra: 32)
            let r = try session.generate(promptIds: promptIds, options: SamplingOptions(maxNewTokens: 32),
                                         stopIds: Set(lm.generation.eosTokenIds))
            #expect(r.ids == expected, "\(p["name"]!): greedy ids differ")
            if r.ids == expected { identical += 1 }
            let textIds = r.stoppedOnEOS ? Array(r.ids.dropLast()) : r.ids
            #expect(lm.tokenizer.decode(textIds) == p["generate_text"] as! String)
        }
        report("greedy 32-token generations identical: \(identical)/\(prompts.count)")
    }

    @Test func prefillEqualsTokenByTokenDecode() throws {
        let lm = try TestModel.load()
        let ids = lm.tokenizer.encode("Prefill and decode must agree on every position of this prompt.")
        let a = try lm.session(for: ids)
        let batch = try a.forward(ids: ids, logits: .all)
        let b = try lm.session(for: ids)
        let v = lm.config.vocabSize
        for (i, id) in ids.enumerated() {
            let step = try b.forward(ids: [id], logits: .last)
            let dev = compare(step, Array(batch[(i * v)..<((i + 1) * v)]))
            #expect(dev.relMaxAbs <= 1e-4, "position \(i): \(dev)")
        }
        #expect(a.position == ids.count && b.position == ids.count)
    }
}

extension TensorView {
    func toInt32s() -> [Int32] {
        precondition(dtype == .i32)
        return Array(UnsafeBufferPointer(start: data.assumingMemoryBound(to: Int32.self), count: count))
    }
}
