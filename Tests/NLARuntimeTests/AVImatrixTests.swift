// AV calibration for the importance matrix (`nla imatrix --av`, `AVCalibration`) on the synthetic released-layout
// NLA trio (SynNLAPair: real Gemma 3 tokenizer, target 8 blocks bf16 wrapper, AV 8 blocks f32, K = 5):
//   - the vectors are the target's block-K outputs (checked against `forwardHiddenStates`) at the documented
//     positions, the generations follow the sequential greedy reference (margin rule), and the imatrix equals
//     (1) an observer run by hand over the injected prompt rows (injection computed here in f64) + the fed ids,
//     (2) for layer 0's q_proj, a scalar f64 re-computation: RMSNorm(rows)·(1 + input_layernorm) with the raw
//         weight read from the checkpoint and the injected row in place;
//   - the injected vector matters: other vectors (same ids) change layer 0's q_proj entry, and the text mode over
//     the same prompt ids (the injection char's own embedding in that row) differs from the AV mode;
//   - bad input is refused with one-line errors naming the file / the problem (the library names no flag).

import Foundation
import Quant
import Testing
@testable import NLARuntime
import NLATestSupport

@Suite(.serialized) struct AVImatrixTests {
    static let paragraphs = ["The quick brown fox jumps over the lazy dog near the river bank.",
                             "Bread is one of the oldest prepared foods, baked on hot stones."]
    static let options = AVCalibrationOptions(positionsPerParagraph: 3, maxNewTokens: 6, batch: 2)

    @Test func positionsAreEvenlySpacedAndSkipBOS() {
        #expect(AVCalibration.positions(count: 10, perParagraph: 3) == [2, 5, 8])
        #expect(AVCalibration.positions(count: 101, perParagraph: 4) == [13, 38, 63, 88])
        #expect(AVCalibration.positions(count: 3, perParagraph: 4) == [1, 2])
        #expect(AVCalibration.positions(count: 5, perParagraph: 4) == [1, 2, 3, 4])
        #expect(AVCalibration.positions(count: 1, perParagraph: 4) == [])
        #expect(AVCalibration.positions(count: 0, perParagraph: 4) == [])
    }

    /// Per weight name, mean x² over the given AV input rows, accumulated by hand (f64) through the observer.
    static func handImatrix(_ model: Gemma3Model, sequences: [[Float]]) throws -> [String: [Double]] {
        var names: [ObjectIdentifier: String] = [:]
        for (i, l) in model.layers.enumerated() {
            for (n, w) in [("self_attn.q_proj", l.qProj), ("self_attn.k_proj", l.kProj), ("self_attn.v_proj", l.vProj),
                           ("self_attn.o_proj", l.oProj), ("mlp.gate_proj", l.gateProj), ("mlp.up_proj", l.upProj),
                           ("mlp.down_proj", l.downProj)] {
                names[ObjectIdentifier(w)] = "\(model.weightPrefix)layers.\(i).\(n).weight"
            }
        }
        let d = model.config.hiddenSize
        var sums: [String: [Double]] = [:]
        var tokens = 0
        for rows in sequences {
            let t = rows.count / d
            let s = try model.makeSession(capacity: t)
            s.linearInputObserver = { w, x, m in
                guard let name = names[ObjectIdentifier(w)] else { return }
                var acc = sums[name] ?? [Double](repeating: 0, count: w.cols)
                for r in 0..<m { for c in 0..<w.cols { let v = Double(x[r * w.cols + c]); acc[c] += v * v } }
                sums[name] = acc
            }
            _ = try rows.withUnsafeBufferPointer { try s.forward(embeddings: $0.baseAddress!, rows: t, logits: .none) }
            tokens += t
        }
        return sums.mapValues { $0.map { $0 / Double(tokens) } }
    }

    /// The AV's input rows built here: scaled embeddings of the prompt, the injection row v·(scale/‖v‖) computed
    /// in f64, then the fed ids' scaled embeddings.
    static func handRows(_ av: ActivationVerbalizer, vector: [Float], fed: [Int]) throws -> [Float] {
        let d = av.dModel
        var rows = try av.model.model.embed(av.promptIds + fed)
        let norm = vector.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        for j in 0..<d { rows[av.injectionPosition * d + j] = Float(Double(vector[j]) * Double(av.injectionScale) / norm) }
        return rows
    }

    static func maxRelDiff(_ a: [Float], _ b: [Double]) -> Double {
        var worst = 0.0
        for (x, y) in zip(a, b) { worst = max(worst, abs(Double(x) - y) / max(abs(y), 1e-30)) }
        return worst
    }

    @Test func avImatrixIsTheMeanSquareOverTheAVsOwnInputs() throws {
        let pair = try SynNLAPair.get()
        let result = try AVCalibration.run(av: pair.av, target: pair.target, paragraphs: Self.paragraphs, options: Self.options)
        #expect(result.layer == SynNLAPair.k)
        #expect(result.batch == 2)

        // Vectors: the target's block-K output at the documented positions of each paragraph.
        let target = try LanguageModel(directory: pair.target)
        var expected: [(Int, Int)] = []
        var targetTokens = 0
        for (pi, p) in Self.paragraphs.enumerated() {
            let ids = target.tokenizer.encode(p)
            targetTokens += ids.count
            let hs = try target.model.makeSession(capacity: ids.count).forwardHiddenStates(ids: ids, logits: .none)
            let picked = AVCalibration.positions(count: ids.count, perParagraph: 3)
            #expect(picked.count == 3 && !picked.contains(0))
            for pos in picked {
                expected.append((pi, pos))
                let want = Array(hs.states[SynNLAPair.k + 1][(pos * SynNLAPair.d)..<((pos + 1) * SynNLAPair.d)])
                let got = result.samples.first { $0.source.paragraph == pi && $0.source.position == pos }
                #expect(got?.source.vector == want, "paragraph \(pi) position \(pos)")
                #expect(got?.source.id == ids[pos])
            }
        }
        #expect(result.samples.map { [$0.source.paragraph, $0.source.position] } == expected.map { [$0.0, $0.1] })
        #expect(result.targetTokens == targetTokens)

        // Generations: the sequential greedy reference (batched may differ only where the top-2 margin < 1e-3);
        // the AV read everything it generated but the last id.
        let av = try ActivationVerbalizer(path: pair.av)
        let refs = try result.samples.map { try referenceDecode(av, $0.source.vector, maxNew: 6) }
        expectGreedyMatches("AV calibration", refs: refs, got: result.samples.map(\.generated))
        for s in result.samples { #expect(s.fedIds == Array(s.generated.dropLast()) && !s.generated.isEmpty) }

        // (1) The imatrix equals the observer run by hand over rows built here.
        let seqs = try result.samples.map { try Self.handRows(av, vector: $0.source.vector, fed: $0.fedIds) }
        let hand = try Self.handImatrix(av.model.model, sequences: seqs)
        let means = result.collector.means
        #expect(means.count == 7 * 8 && hand.count == means.count)
        var worst = 0.0
        for (name, ref) in hand { worst = max(worst, Self.maxRelDiff(try #require(means[name]), ref)) }
        print("[av-imatrix] max relative |imatrix − hand observer| = \(worst)")
        #expect(worst < 1e-5)
        let rows = seqs.reduce(0) { $0 + $1.count / SynNLAPair.d }
        #expect(result.collector.tokens == rows && result.collector.sequences == result.samples.count)
        #expect(rows == result.samples.count * av.promptIds.count + result.samples.reduce(0) { $0 + $1.fedIds.count })

        // (2) Layer 0 q_proj: scalar f64 RMSNorm of the input rows with the checkpoint's raw norm weight.
        let files = try ModelFiles.open(pair.av)
        let normEntry = try #require(files.tensors["model.layers.0.input_layernorm.weight"])
        #expect(normEntry.type == .f32)
        let d = SynNLAPair.d
        let w = (0..<d).map { Double(normEntry.data.load(fromByteOffset: 4 * $0, as: Float.self)) }
        let eps = Double(av.model.config.rmsNormEps)
        var scalar = [Double](repeating: 0, count: d)
        for seq in seqs {
            for r in 0..<(seq.count / d) {
                let x: [Double] = (0..<d).map { Double(seq[r * d + $0]) }
                var ss = 0.0
                for v in x { ss += v * v }
                let inv: Double = 1 / (ss / Double(d) + eps).squareRoot()
                for j in 0..<d {
                    let y: Double = x[j] * inv * (1 + w[j])
                    scalar[j] += y * y
                }
            }
        }
        scalar = scalar.map { $0 / Double(rows) }
        let q0 = try #require(means["model.layers.0.self_attn.q_proj.weight"])
        let scalarDiff = Self.maxRelDiff(q0, scalar)
        print("[av-imatrix] layer 0 q_proj vs scalar RMSNorm re-computation: max relative diff \(scalarDiff)")
        #expect(scalarDiff < 1e-4)

        // The file: standard metadata plus the AV keys, and it loads as an imatrix.
        let dir = SyntheticCheckpoint.makeTempDirectory("av-imatrix")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = dir + "/av.imatrix.safetensors"
        try result.collector.write(to: out, textSHA256: "abc", extraMetadata: result.metadata(target: pair.target, options: Self.options))
        let im = try Imatrix(path: out)
        let m = im.metadata
        #expect(m["format"] == "nla-imatrix" && m["source"] == "av" && m["target"] == pair.target && m["model"] == pair.av)
        #expect(m["layer"] == "\(SynNLAPair.k)" && m["vectors"] == "\(result.samples.count)" && m["tokens"] == "\(rows)")
        #expect(m["sequences"] == "\(result.samples.count)" && m["text_sha256"] == "abc" && m["positions_per_paragraph"] == "3")
        #expect(m["max_new_tokens"] == "6" && m["target_tokens"] == "\(targetTokens)" && m["paragraphs"] == "2")
        #expect(try im.importance(for: "model.layers.0.self_attn.q_proj.weight", width: d) == q0)
    }

    @Test func theInjectedVectorChangesTheFirstLayerInput() throws {
        let pair = try SynNLAPair.get()
        let av = try ActivationVerbalizer(path: pair.av)
        let (sources, _) = try AVCalibration.captureVectors(target: pair.target, layer: SynNLAPair.k, dModel: SynNLAPair.d,
                                                           paragraphs: Self.paragraphs, options: Self.options)
        let fed = [818, 3823, 8864]
        func qProj0(_ vectors: [[Float]]) throws -> [Float] {
            let c = ImatrixCollector(model: av.model.model)
            for v in vectors {
                let (e, rows) = try AVCalibration.inputRows(av, vector: v, fedIds: fed)
                try c.observe(embeddings: e, rows: rows)
            }
            return c.means["model.layers.0.self_attn.q_proj.weight"]!
        }
        func relDiff(_ a: [Float], _ b: [Float]) -> Double {
            zip(a, b).map { abs(Double($0) - Double($1)) / max(abs(Double($1)), 1e-30) }.max()!
        }
        let vs = sources.map(\.vector)
        let base = try qProj0(vs)
        #expect(try qProj0(vs) == base)                          // deterministic
        let reversed = try qProj0(vs.map { Array($0.reversed()) }) // other directions, same ids
        let shifted = try qProj0(vs.map { v in v.indices.map { v[($0 + 7) % v.count] } })
        // The text mode over the same ids: the injection char's own embedding in the injected row.
        let text = ImatrixCollector(model: av.model.model)
        for _ in vs { try text.observe(ids: av.promptIds + fed) }
        let plain = text.means["model.layers.0.self_attn.q_proj.weight"]!
        print("[av-imatrix] layer 0 q_proj change: reversed vectors \(relDiff(reversed, base)), shifted \(relDiff(shifted, base)), text mode \(relDiff(plain, base))")
        for other in [reversed, shifted, plain] { #expect(relDiff(other, base) > 1e-3) }
        // Scaling a vector does not change the injected row (it is normalized to injection_scale).
        let scaled = try qProj0(vs.map { $0.map { $0 * 3 } })
        #expect(relDiff(scaled, base) < 1e-5)
    }

    @Test func badInputIsRefused() throws {
        let pair = try SynNLAPair.get()
        for bad in [AVCalibrationOptions(positionsPerParagraph: 0), AVCalibrationOptions(maxNewTokens: 0),
                    AVCalibrationOptions(batch: 0), AVCalibrationOptions(maxTokens: 1)] {
            let e = expectError(ModelError.self) { _ = try AVCalibration.run(av: pair.av, target: pair.target, paragraphs: Self.paragraphs, options: bad) }
            #expect(e.map { !"\($0)".contains("--") } ?? false, "the library names no flag: \(String(describing: e))")
        }
        // A model without an NLA sidecar (the target), and an AR, as the AV.
        expectError(NLAError.self, mentioning: [pair.target, "nla_meta.yaml"]) {
            _ = try AVCalibration.run(av: pair.target, target: pair.target, paragraphs: Self.paragraphs, options: Self.options)
        }
        expectError(NLAError.self, mentioning: ["nla_meta.yaml", "role is 'ar'"]) {
            _ = try AVCalibration.run(av: pair.ar, target: pair.target, paragraphs: Self.paragraphs, options: Self.options)
        }
        // A target whose width is not the AV's d_model; a layer the target does not have; no text.
        expectError(ModelError.self, mentioning: ["config.json", "hidden_size 32", "d_model 64"]) {
            _ = try AVCalibration.captureVectors(target: pair.target, layer: 5, dModel: 64, paragraphs: Self.paragraphs, options: Self.options)
        }
        expectError(ModelError.self, mentioning: [pair.target]) {
            _ = try AVCalibration.captureVectors(target: pair.target, layer: 8, dModel: 32, paragraphs: Self.paragraphs, options: Self.options)
        }
        expectError(ModelError.self, mentioning: ["no paragraph"]) {
            _ = try AVCalibration.run(av: pair.av, target: pair.target, paragraphs: [], options: Self.options)
        }
        // A vector of the wrong width or with NaN is refused by the AV, not observed.
        let av = try ActivationVerbalizer(path: pair.av)
        expectError(NLAError.self, mentioning: ["activation vector", "expected d_model = 32"]) {
            _ = try AVCalibration.inputRows(av, vector: [Float](repeating: 1, count: 31), fedIds: [])
        }
        expectError(NLAError.self, mentioning: ["NaN"]) {
            _ = try AVCalibration.inputRows(av, vector: [Float](repeating: .nan, count: 32), fedIds: [])
        }
        // The collector refuses rows that do not match the width.
        let c = ImatrixCollector(model: av.model.model)
        expectError(ModelError.self, mentioning: ["33 embedding values", "width 32"]) { try c.observe(embeddings: [Float](repeating: 0, count: 33), rows: 1) }
        #expect(c.tokens == 0)
    }
}
