// The NLA pipeline on the demo pair (`make demo-models`: the real Gemma 3 270M as an untrained AV, a 13-block
// AR with a ridge-fit value head, K = 12) against transformers 5.24 f32 goldens (Tests/Fixtures/nla, copied
// from the shared fixtures golden/nla; see the fixtures README "Demo NLA pair").
// Tolerances (issue 4):
//   AV: prompt ids and injected position exact; input-embedding matrix max|Δ| ≤ 1e-6 · max|ref|;
//       last-position top-50 logits max|Δ| ≤ 1e-3 · max|logit|; greedy 48-token decode identical.
//   AR: prompt ids exact; reconstruction cos ≥ 0.99999 vs golden pred_raw; mse/cos vs the stated values ≤ 1e-5.
// Then the startup guards of spec §1.5 on the real tokenizer: each drift is refused with its own message.

import Foundation
import Quant
import Testing
import NLATestSupport
@testable import NLARuntime

enum NLADemoPair {
    static var avDir: String { FidelityDemo.av }
    static var arDir: String { FidelityDemo.ar }

    /// Fails (never skips) when the demo pair is missing.
    static func requirePair() throws { try FidelityDemo.require() }

    /// Loaded once (fails, never skips, when the pair is missing).
    static let avResult: Result<ActivationVerbalizer, Error> = Result { try ActivationVerbalizer(path: avDir) }
    static let arResult: Result<ActivationReconstructor, Error> = Result { try ActivationReconstructor(path: arDir) }

    static func av() throws -> ActivationVerbalizer { try requirePair(); return try avResult.get() }
    static func ar() throws -> ActivationReconstructor { try requirePair(); return try arResult.get() }
}

enum NLAGolden {
    static func av() throws -> [String: Any] { try Fixtures.json("nla/av.json") }
    static func ar() throws -> [String: Any] { try Fixtures.json("nla/ar.json") }
    static func avTensors() throws -> SafetensorsFile { try Fixtures.tensors("nla/av_inputs.safetensors") }
    static func arTensors() throws -> SafetensorsFile { try Fixtures.tensors("nla/ar_outputs.safetensors") }

    static func ints(_ a: Any?) -> [Int] { (a as! [NSNumber]).map(\.intValue) }
    static func row(_ t: TensorView, _ i: Int) -> [Float] {
        let n = t.shape.dropFirst().reduce(1, *)
        return Array(t.toFloatArray()[(i * n)..<((i + 1) * n)])
    }
}

@Suite(.serialized) struct NLAVerbalizerGoldenTests {
    @Test func promptIdsAndInjectionSite() throws {
        let av = try NLADemoPair.av()
        let g = try NLAGolden.av()
        let golden = NLAGolden.ints(g["prompt_ids"])
        #expect(av.promptIds == golden)
        #expect(av.promptIds.count == 108 && av.injectionPosition == 93)                     // T2
        #expect(av.injectionPosition == g["injection_position"] as? Int)
        #expect(av.promptIds[0] == 2 && av.promptIds[92] == 236813 && av.promptIds[93] == 246566 && av.promptIds[94] == 954)
        #expect(Array(av.promptIds.suffix(3)) == [105, 4368, 107])                            // T3
        #expect(av.promptIds.filter { $0 == 2 }.count == 1)
        #expect(try NLAPrompt.avContent(sidecar: av.sidecar, customPrompt: nil) == g["prompt_content"] as? String)
        #expect(av.model.tokenizer.encode("㈜", addSpecialTokens: false) == [246566])          // T1
        #expect(av.stopIds.isSuperset(of: [1, 106]))                                          // T16
        #expect(av.injectionScale == 15000)
    }

    @Test func inputEmbeddingMatrix() throws {
        let av = try NLADemoPair.av()
        let g = try NLAGolden.av()
        let t = try NLAGolden.avTensors()
        let vectors = g["vectors"] as! [[String: Any]]
        let raw = t.tensors["vectors_raw"]!, scaled = t.tensors["vectors_scaled"]!, embeds = t.tensors["inputs_embeds"]!
        let d = 640, T = 108
        var worst = 0.0, worstScaled = 0.0
        for (i, meta) in vectors.enumerated() {
            let v = NLAGolden.row(raw, i)
            #expect(abs(Double(NLAVectorMath.normF32(v)) - (meta["raw_norm"] as! Double)) <= 1e-6 * (meta["raw_norm"] as! Double))
            let sv = NLAVectorMath.scaledForInjection(v, scale: av.injectionScale)
            let ds = compare(sv, NLAGolden.row(scaled, i))
            worstScaled = max(worstScaled, ds.relMaxAbs)
            let e = try av.inputEmbeddings(for: v)
            #expect(e.count == T * d)
            let dev = compare(e, NLAGolden.row(embeds, i))
            #expect(dev.relMaxAbs <= 1e-6, "\(meta["name"]!): inputs_embeds \(dev)")
            // The injected row is v·(scale/‖v‖), not ×√d; the other rows are the plain scaled lookup.
            let rowDev = compare(Array(e[(93 * d)..<(94 * d)]), NLAGolden.row(scaled, i))
            #expect(rowDev.relMaxAbs <= 1e-6, "\(meta["name"]!): injected row \(rowDev)")
            worst = max(worst, dev.relMaxAbs)
        }
        let plain = compare(try av.model.model.embed(av.promptIds), t.tensors["token_embeds_no_injection"]!.toFloatArray())
        #expect(plain.relMaxAbs <= 1e-6, "token embeddings without injection: \(plain)")
        report("NLA AV input embeddings (6 vectors): worst max|Δ|/max|ref| \(String(format: "%.3e", worst)); injected rows \(String(format: "%.3e", worstScaled)); plain rows \(plain)")
    }

    @Test func lastPositionTop50Logits() throws {
        let av = try NLADemoPair.av()
        let g = try NLAGolden.av()
        let t = try NLAGolden.avTensors()
        let raw = t.tensors["vectors_raw"]!
        var worst: Float = 0
        for (i, meta) in (g["vectors"] as! [[String: Any]]).enumerated() {
            let ids = NLAGolden.ints(meta["last_logits_top50_ids"])
            let vals = (meta["last_logits_top50_values"] as! [NSNumber]).map(\.floatValue)
            let logits = try av.lastPromptLogits(for: NLAGolden.row(raw, i))
            #expect(Sampler.argmax(logits) == ids[0], "\(meta["name"]!): argmax")
            let maxLogit = vals.map(abs).max()!
            var w: Float = 0
            for (k, id) in ids.enumerated() { w = max(w, abs(logits[id] - vals[k]) / maxLogit) }
            #expect(w <= 1e-3, "\(meta["name"]!): top-50 logits max|Δ|/max|logit| = \(w)")
            worst = max(worst, w)
        }
        report("NLA AV last-position top-50 logits (6 vectors): worst max|Δ|/max|logit| \(worst)")
    }

    @Test func greedy48TokenDecodeIdentical() throws {
        let av = try NLADemoPair.av()
        let g = try NLAGolden.av()
        let t = try NLAGolden.avTensors()
        let raw = t.tensors["vectors_raw"]!
        var identical = 0
        let vectors = g["vectors"] as! [[String: Any]]
        for (i, meta) in vectors.enumerated() {
            let expected = NLAGolden.ints(meta["generate_ids"])
            let r = try av.verbalize(NLAGolden.row(raw, i), options: SamplingOptions(maxNewTokens: 48))
            #expect(r.ids == expected, "\(meta["name"]!): greedy ids differ")
            #expect(r.text == meta["generate_text"] as? String, "\(meta["name"]!): text")
            #expect(!r.stoppedOnEOS)
            if r.ids == expected { identical += 1 }
            // The untrained AV echoes the prompt: the explanation (when the tags close) and warnings are consistent.
            #expect(r.explanation == NLAExplanation.extract(r.text))
            if r.explanation == nil { #expect(r.warnings.contains { $0.contains("raw text") }) }
        }
        report("NLA AV greedy 48-token decodes identical: \(identical)/\(vectors.count)")
    }

    @Test func determinismAndSampling() throws {
        let av = try NLADemoPair.av()
        let v = NLAGolden.row(try NLAGolden.avTensors().tensors["vectors_raw"]!, 0)
        let a = try av.verbalize(v, options: SamplingOptions(temperature: 1, seed: 42, maxNewTokens: 8))
        let b = try av.verbalize(v, options: SamplingOptions(temperature: 1, seed: 42, maxNewTokens: 8))
        #expect(a.ids == b.ids && a.ids.count <= 8)
        let zero = try av.verbalize(v, options: SamplingOptions(maxNewTokens: 0))
        #expect(zero.ids.isEmpty && zero.text.isEmpty)
    }

    /// Spec §3: block-K output (hidden_states[K+1]) at every position, one forward.
    @Test func captureMatchesHiddenStates13() throws {
        let av = try NLADemoPair.av()
        let g = try NLAGolden.av()
        let t = try NLAGolden.avTensors()
        let src = g["source_prompt"] as! String
        let cap = try ActivationCapture.capture(target: av.model, layer: 12, prompt: src, chat: false, reply: nil, maxReplyTokens: 0)
        #expect(cap.ids == NLAGolden.ints(g["source_prompt_ids"]))
        #expect(cap.promptLength == cap.ids.count && cap.tokens.count == cap.ids.count)
        let dev = compare(cap.vectors.flatMap { $0 }, t.tensors["source_prompt_hidden_states_13"]!.toFloatArray())
        #expect(dev.cosine >= 0.99999 && dev.relMaxAbs <= 1e-4, "capture layer 12: \(dev)")
        // The four recorded AV vectors are these activations.
        let raw = t.tensors["vectors_raw"]!
        for (i, meta) in (g["vectors"] as! [[String: Any]]).prefix(4).enumerated() {
            let pos = (meta["source"] as! [String: Any])["position"] as! Int
            let dv = compare(cap.vectors[pos], NLAGolden.row(raw, i))
            #expect(dv.cosine >= 0.99999, "position \(pos): \(dv)")
            #expect(abs(cap.norms[pos] - (meta["raw_norm"] as! Double)) <= 1e-3 * cap.norms[pos])
        }
        report("NLA capture (layer 12, T=\(cap.ids.count)): \(dev)")
        // A chat with a given reply: prompt ids then the reply's ids, one vector per position.
        let chat = try ActivationCapture.capture(target: av.model, layer: 12, prompt: "What is the capital of France?", chat: true,
                                                 reply: "Paris.", maxReplyTokens: 0)
        #expect(chat.ids.count == chat.promptLength + av.model.tokenizer.encode("Paris.", addSpecialTokens: false).count)
        #expect(chat.vectors.count == chat.ids.count && chat.norms.allSatisfy { $0 > 0 })
        let gen = try ActivationCapture.capture(target: av.model, layer: 12, prompt: "What is the capital of France?", chat: true,
                                                reply: nil, maxReplyTokens: 4)
        #expect(gen.ids.count > gen.promptLength && gen.ids.count <= gen.promptLength + 4)
        // Same prompt positions, captured in forwards of different lengths: equal up to f32 summation
        // order (OpenBLAS picks its blocking by the row count, so bit equality is not a contract).
        let same = compare(gen.vectors[0..<chat.promptLength].flatMap { $0 }, chat.vectors[0..<chat.promptLength].flatMap { $0 })
        #expect(same.cosine >= 0.9999999 && same.relMaxAbs <= 1e-5, "prompt positions of two captures: \(same)")
        report("NLA capture, prompt positions of a 4-token generation vs a given reply: \(same)")
    }
}

@Suite(.serialized) struct NLAReconstructorGoldenTests {
    @Test func promptIds() throws {
        let ar = try NLADemoPair.ar()
        #expect(ar.layers == 13)
        for row in try NLAGolden.ar()["rows"] as! [[String: Any]] {
            let ids = try ar.promptIds(for: row["explanation"] as! String)
            #expect(ids == NLAGolden.ints(row["ar_prompt_ids"]), "\(row["explanation"]!)")
            #expect(ids.first == 2 && Array(ids.suffix(5)) == [1005, 236813, 655, 6011, 236813])   // T4
        }
        // {explanation} is the stripped text (spec §4.2).
        #expect(try ar.promptIds(for: "\n  Paris, the capital city of France \n") == ar.promptIds(for: "Paris, the capital city of France"))
    }

    @Test func reconstructionAndScores() throws {
        let ar = try NLADemoPair.ar()
        let rows = try NLAGolden.ar()["rows"] as! [[String: Any]]
        let t = try NLAGolden.arTensors()
        let predRaw = t.tensors["pred_raw"]!, gold = t.tensors["gold"]!, hidden = t.tensors["ar_last_token_hidden"]!
        var worstCos = 1.0, worstH = Deviation(cosine: 1, relMaxAbs: 0), worstMse = 0.0, worstC = 0.0, worstFormula = 0.0
        for (i, row) in rows.enumerated() {
            let name = row["explanation"] as! String
            let h = try ar.lastHidden(ids: try ar.promptIds(for: name))
            let dh = compare(h, NLAGolden.row(hidden, i))
            #expect(dh.cosine >= 0.99999 && dh.relMaxAbs <= 1e-4, "\(name): h \(dh)")
            worstH = Deviation(cosine: min(worstH.cosine, dh.cosine), relMaxAbs: max(worstH.relMaxAbs, dh.relMaxAbs))
            let pred = try ar.reconstruct(name)
            let dp = compare(pred, NLAGolden.row(predRaw, i))
            #expect(dp.cosine >= 0.99999, "\(name): pred \(dp)")
            worstCos = min(worstCos, dp.cosine)
            #expect(abs(NLAVectorMath.norm(pred) - (row["pred_norm"] as! Double)) <= 1e-4 * (row["pred_norm"] as! Double))

            let g = NLAGolden.row(gold, i)
            let s = try ar.score(prediction: pred, gold: g, fveBaseline: nil)
            let mse = row["mse"] as! Double, cos = row["cos"] as! Double
            #expect(abs(s.mseNrm - mse) <= 1e-5, "\(name): mse \(s.mseNrm) vs \(mse)")
            #expect(abs(s.cos - cos) <= 1e-5, "\(name): cos \(s.cos) vs \(cos)")
            #expect(s.fveNrm == nil)
            worstMse = max(worstMse, abs(s.mseNrm - mse)); worstC = max(worstC, abs(s.cos - cos))
            // The formula alone, on the golden prediction.
            let f = try ar.score(prediction: NLAGolden.row(predRaw, i), gold: g, fveBaseline: 0.5)
            #expect(abs(f.mseNrm - mse) <= 1e-6 && abs(f.cos - cos) <= 1e-6, "\(name): formula \(f)")
            #expect(abs(f.fveNrm! - (1 - f.mseNrm / 0.5)) < 1e-12)
            worstFormula = max(worstFormula, abs(f.mseNrm - mse), abs(f.cos - cos))
        }
        #expect(ar.builtInFVEBaseline == nil)
        report("NLA AR (8 explanations): pred cos worst \(String(format: "%.8f", worstCos)); h worst \(worstH); |Δmse| \(String(format: "%.2e", worstMse)), |Δcos| \(String(format: "%.2e", worstC)); formula on golden pred \(String(format: "%.2e", worstFormula))")
    }
}

/// Spec §1.5 on the real tokenizer and weights: every drift is refused, each with its own message.
@Suite(.serialized) struct NLAStartupGuardTests {
    static func expectRefusal(sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) -> NLAError? {
        do {
            try body()
            Issue.record("expected a refusal, nothing was thrown", sourceLocation: sourceLocation)
        } catch let e as NLAError {
            #expect(!e.description.contains("\n"), sourceLocation: sourceLocation)
            return e
        } catch {
            Issue.record("expected an NLAError, got \(error)", sourceLocation: sourceLocation)
        }
        return nil
    }

    @Test func everyDriftRefusedWithItsOwnMessage() throws {
        let av = try NLADemoPair.av()
        let ar = try NLADemoPair.ar()
        let avModel = av.model, arModel = ar.model
        var messages: [String: String] = [:]
        func record(_ label: String, _ e: NLAError?, mentions: [String]) {
            guard let e else { return }
            for m in mentions { #expect(e.description.contains(m), "\(label): '\(e.description)' does not mention '\(m)'") }
            messages[label] = e.description
        }

        // Wrong injection char (U+320E is Qwen's; for Gemma it is not [246566]).
        var s = av.sidecar
        s.injectionChar = "\u{320E}"
        let e1 = Self.expectRefusal { _ = try ActivationVerbalizer(model: avModel, sidecar: s) }
        if case .injectionCharTokenization(_, _, 246566, let got) = e1 { #expect(got != [246566]) } else { Issue.record("wrong char: \(String(describing: e1))") }
        record("wrong injection char", e1, mentions: [av.sidecar.file, "246566"])

        // Wrong injection token id in the sidecar.
        s = av.sidecar; s.injectionTokenId = 246567
        let e1b = Self.expectRefusal { _ = try ActivationVerbalizer(model: avModel, sidecar: s) }
        if case .injectionCharTokenization = e1b {} else { Issue.record("wrong id: \(String(describing: e1b))") }

        // Drifted template: spaces around the marker change the neighbors.
        s = av.sidecar
        s.avTemplate = s.avTemplate!.replacingOccurrences(of: "<concept>{injection_char}</concept>", with: "<concept> {injection_char} </concept>")
        let e2 = Self.expectRefusal { _ = try ActivationVerbalizer(model: avModel, sidecar: s) }
        if case .injectionNeighborsDrifted(_, _, 236813, 954, let l, let r) = e2 { #expect(l != 236813 || r != 954) } else { Issue.record("drift: \(String(describing: e2))") }
        record("drifted template", e2, mentions: [av.sidecar.file, "236813", "954"])

        // Sidecar neighbors drifted instead of the template.
        s = av.sidecar; s.rightNeighborId = 955
        let e2b = Self.expectRefusal { _ = try ActivationVerbalizer(model: avModel, sidecar: s) }
        if case .injectionNeighborsDrifted = e2b {} else { Issue.record("neighbor ids: \(String(describing: e2b))") }

        // Template without the placeholder.
        s = av.sidecar; s.avTemplate = "Please provide an explanation."
        let e2c = Self.expectRefusal { _ = try ActivationVerbalizer(model: avModel, sidecar: s) }
        record("no placeholder", e2c, mentions: ["{injection_char}"])
        if case .templatePlaceholderMissing = e2c {} else { Issue.record("placeholder: \(String(describing: e2c))") }

        // Two sites for one vector.
        s = av.sidecar; s.avTemplate = "<concept>{injection_char}</concept> and <concept>{injection_char}</concept>"
        let e2d = Self.expectRefusal { _ = try ActivationVerbalizer(model: avModel, sidecar: s) }
        if case .injectionSiteCount(_, let sites) = e2d { #expect(sites.count == 2) } else { Issue.record("two sites: \(String(describing: e2d))") }
        record("two sites", e2d, mentions: [av.sidecar.file])

        // Double BOS: (a) rendering the chat to a string and encoding it WITH special tokens;
        let rendered = try avModel.tokenizer.renderChat([ChatMessage(role: "user", content: try NLAPrompt.avContent(sidecar: av.sidecar, customPrompt: nil))])
        let doubled = avModel.tokenizer.encode(rendered, addSpecialTokens: true)
        #expect(Array(doubled.prefix(2)) == [2, 2])
        let e3 = Self.expectRefusal { try NLAPrompt.validateBOS(doubled, bos: 2, label: av.sidecar.file, anywhere: true) }
        #expect(e3 == .doubleBOS(file: av.sidecar.file, positions: [0, 1]))
        record("double BOS (chat re-encoded with specials)", e3, mentions: [av.sidecar.file, "BOS"])
        // (b) a custom prompt carrying its own <bos>;
        let e3b = Self.expectRefusal { _ = try ActivationVerbalizer(model: avModel, sidecar: av.sidecar, promptTemplate: "<bos>Explain: <concept><INJECT></concept>") }
        if case .doubleBOS(_, let pos) = e3b { #expect(pos.first == 0 && pos.count == 2) } else { Issue.record("custom bos: \(String(describing: e3b))") }
        // (c) an AR template that adds BOS a second time.
        var rs = ar.sidecar
        rs.arTemplate = "<bos>" + rs.arTemplate!
        let e3c = Self.expectRefusal { _ = try ActivationReconstructor(model: arModel, sidecar: rs) }
        #expect(e3c == .doubleBOS(file: ar.sidecar.file, positions: [0, 1]))

        // Missing injection_scale on an AV: absent (no default) and null.
        let yaml = try String(contentsOfFile: av.sidecar.file, encoding: .utf8)
        let noScale = try NLASidecar.decode(yaml: yaml.replacingOccurrences(of: "  injection_scale: 15000.0\n", with: ""), file: av.sidecar.file)
        #expect(noScale.injectionScaleState == .absent)
        let e4 = Self.expectRefusal { _ = try ActivationVerbalizer(model: avModel, sidecar: noScale) }
        #expect(e4 == .injectionScaleMissing(file: av.sidecar.file, state: "absent"))
        record("missing injection_scale", e4, mentions: [av.sidecar.file, "injection_scale", "absent"])
        let nullScale = try NLASidecar.decode(yaml: yaml.replacingOccurrences(of: "injection_scale: 15000.0", with: "injection_scale: null"), file: av.sidecar.file)
        #expect(Self.expectRefusal { _ = try ActivationVerbalizer(model: avModel, sidecar: nullScale) } == .injectionScaleMissing(file: av.sidecar.file, state: "null"))

        // d_model drift.
        s = av.sidecar; s.dModel = 5376
        let e5 = Self.expectRefusal { _ = try ActivationVerbalizer(model: avModel, sidecar: s) }
        if case .dModelMismatch(_, 5376, 640, _) = e5 {} else { Issue.record("d_model: \(String(describing: e5))") }
        record("d_model", e5, mentions: [av.sidecar.file, "5376", "640", "config.json"])

        // AR with the wrong layer count: K = 11 needs 12 blocks, the AR config has 13.
        rs = ar.sidecar; rs.extractionLayer = 11
        let e6 = Self.expectRefusal { _ = try ActivationReconstructor(model: arModel, sidecar: rs) }
        if case .layerCountMismatch(_, 11, 13, _) = e6 {} else { Issue.record("layers: \(String(describing: e6))") }
        record("AR layer count", e6, mentions: [ar.sidecar.file, "K+1 = 12", "13"])
        // No K at all.
        rs = ar.sidecar; rs.extractionLayer = nil
        #expect(Self.expectRefusal { _ = try ActivationReconstructor(model: arModel, sidecar: rs) } == .extractionLayerMissing(file: ar.sidecar.file))

        // No value head: the AV directory (18 blocks, K = 17 makes the count right) has none.
        rs = ar.sidecar; rs.extractionLayer = 17
        let e7 = Self.expectRefusal { _ = try ActivationReconstructor(model: avModel, sidecar: rs) }
        #expect(e7 == .valueHeadMissing(model: avModel.directory))
        record("value head missing", e7, mentions: [avModel.directory, "value_head"])

        // AR prompt suffix drift (template without the space before <summary>), and a wrong suffix list.
        rs = ar.sidecar; rs.arTemplate = "Summary of the following text: <text>{explanation}</text><summary>"
        let e8 = Self.expectRefusal { _ = try ActivationReconstructor(model: arModel, sidecar: rs) }
        if case .criticSuffixMismatch = e8 {} else { Issue.record("suffix: \(String(describing: e8))") }
        record("AR suffix", e8, mentions: [ar.sidecar.file, "critic_suffix_ids"])
        rs = ar.sidecar; rs.criticSuffixIds = [1005, 236813, 655, 6011, 236814]
        if case .criticSuffixMismatch = Self.expectRefusal({ _ = try ActivationReconstructor(model: arModel, sidecar: rs) }) {} else { Issue.record("suffix ids") }

        // AV and AR swapped.
        let e9 = Self.expectRefusal { _ = try ActivationReconstructor(model: avModel, sidecar: av.sidecar) }
        #expect(e9 == .wrongRole(file: av.sidecar.file, expected: "AR", found: "av"))
        record("roles swapped", e9, mentions: [av.sidecar.file])
        #expect(Self.expectRefusal { _ = try ActivationVerbalizer(model: arModel, sidecar: ar.sidecar) } == .wrongRole(file: ar.sidecar.file, expected: "AV", found: "ar"))

        // Vectors: wrong length, NaN, Inf, zero.
        var v = [Float](repeating: 1, count: 640)
        let e10 = Self.expectRefusal { try av.validate(Array(v.prefix(639))) }
        #expect(e10 == .vectorLength(label: "activation vector", got: 639, expected: 640))
        record("vector length", e10, mentions: ["639", "640"])
        v[17] = .nan
        let e11 = Self.expectRefusal { _ = try av.verbalize(v, options: SamplingOptions(maxNewTokens: 1)) }
        if case .vectorNotFinite(_, 17, let x) = e11 { #expect(x.isNaN) } else { Issue.record("NaN: \(String(describing: e11))") }
        record("vector NaN", e11, mentions: ["[17]", "nan"])
        v[17] = .infinity
        if case .vectorNotFinite(_, 17, _) = Self.expectRefusal({ _ = try av.inputEmbeddings(for: v) }) {} else { Issue.record("Inf") }
        let e12 = Self.expectRefusal { _ = try av.inputEmbeddings(for: [Float](repeating: 0, count: 640)) }
        #expect(e12 == .vectorZeroNorm(label: "activation vector"))
        record("vector zero", e12, mentions: ["zero norm"])
        let e13 = Self.expectRefusal { _ = try ar.score(prediction: [Float](repeating: 1, count: 641), gold: [Float](repeating: 1, count: 640), fveBaseline: nil) }
        #expect(e13 == .vectorLength(label: "predicted vector", got: 641, expected: 640))

        // Custom prompts (spec §6.1): a tight marker works, a loose one or none is refused.
        let custom = try ActivationVerbalizer(model: avModel, sidecar: av.sidecar, promptTemplate: "Explain: <concept><INJECT></concept>")
        #expect(custom.promptIds[custom.injectionPosition] == 246566 && custom.promptIds.count < av.promptIds.count)
        let e14 = Self.expectRefusal { _ = try ActivationVerbalizer(model: avModel, sidecar: av.sidecar, promptTemplate: "Explain: <concept> <INJECT> </concept>") }
        if case .injectionNeighborsDrifted = e14 {} else if case .injectionSiteMissing = e14 {} else { Issue.record("loose custom: \(String(describing: e14))") }
        let e15 = Self.expectRefusal { _ = try ActivationVerbalizer(model: avModel, sidecar: av.sidecar, promptTemplate: "Explain the vector.") }
        #expect(e15 == .templatePlaceholderMissing(file: "custom AV prompt", placeholder: "<INJECT>"))
        record("custom prompt without <INJECT>", e15, mentions: ["<INJECT>"])

        let texts = Array(messages.values)
        #expect(Set(texts).count == texts.count, "messages are not distinct: \(messages)")
        report("NLA startup guards: \(messages.count) distinct refusals")
        for (k, m) in messages.sorted(by: { $0.key < $1.key }) { report("  \(k): \(m)") }
    }
}
