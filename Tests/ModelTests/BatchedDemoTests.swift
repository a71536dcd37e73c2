// Batched explain (issue 8) on the demo pair (`make demo-models`), f32 and Q8_0 (made in the run with
// `Converter.convert`), against the sequential path on the 8 golden gold vectors / explanations of
// Tests/Fixtures/nla:
//   - greedy explanations identical at every step whose top-2 logit margin (sequential path) is ≥ 1e-3;
//     the margin of any divergence is printed;
//   - AR vectors cos ≥ 0.99999 and mse_nrm (s = √d here) within 1e-5 of the sequential path;
//   - the shared-prefix KV (93 rows before the injection site) equals a full 108-row prefill's KV.

import Foundation
import Testing
@testable import NLARuntime
import NLATestSupport
import SIMDKernels

private func demoBatchLog(_ s: String) { print("[batched-demo] " + s) }

enum BatchedDemo {
    static let avF32: Result<ActivationVerbalizer, Error> = Result { try FidelityDemo.require(); return try ActivationVerbalizer(path: FidelityDemo.av) }
    static let avQ8: Result<ActivationVerbalizer, Error> = Result { try ActivationVerbalizer(path: try FidelityDemo.avQ8.get()) }
    static let arF32: Result<ActivationReconstructor, Error> = Result { try FidelityDemo.require(); return try ActivationReconstructor(path: FidelityDemo.ar) }
    static let arQ8: Result<ActivationReconstructor, Error> = Result { try ActivationReconstructor(path: try FidelityDemo.arQ8.get()) }

    static func av(_ q8: Bool) throws -> ActivationVerbalizer { try (q8 ? avQ8 : avF32).get() }
    static func ar(_ q8: Bool) throws -> ActivationReconstructor { try (q8 ? arQ8 : arF32).get() }
}

@Suite(.serialized) struct BatchedDemoTests {
    @Test(arguments: [false, true])
    func batchedGreedyMatchesSequential(q8: Bool) throws {
        let label = q8 ? "q8_0" : "f32"
        let av = try BatchedDemo.av(q8)
        let rows = try FidelityDemo.rows()
        let vs = rows.map(\.gold)
        let maxNew = 24
        let refs = try vs.map { try referenceDecode(av, $0, maxNew: maxNew) }
        #expect(try av.verbalize(vs[0], options: SamplingOptions(maxNewTokens: maxNew)).ids == refs[0].ids)
        for batch in [8, 3] {
            let start = Date()
            var batchedMargins: [Int: [Float]] = [:]
            let got = try av.verbalizeBatch(vs, options: SamplingOptions(maxNewTokens: maxNew), batch: batch, onEvent: { e in
                if case .token(let i, _, let m) = e { batchedMargins[i, default: []].append(m) }
            })
            let identical = expectGreedyMatches("\(label) batch \(batch)", refs: refs, got: try got.map { try $0.get().ids }, tag: "batched-demo")
            let minMargin = refs.flatMap(\.margins).min()!
            demoBatchLog(String(format: "%@ batch %d: %d/%d greedy explanations identical to sequential (%d tokens each at most; smallest sequential margin %.3g); %.1f s",
                                label, batch, identical, vs.count, maxNew, minMargin, Date().timeIntervalSince(start)))
        }
    }

    @Test(arguments: [false, true])
    func batchedReconstructionMatchesSequential(q8: Bool) throws {
        let label = q8 ? "q8_0" : "f32"
        let ar = try BatchedDemo.ar(q8)
        let rows = try FidelityDemo.rows()
        let texts = rows.map(\.explanation)
        let seq = try texts.map { try ar.reconstruct($0) }
        let got = try ar.reconstructBatch(texts, batch: 8)
        var minCos = 1.0, maxMse = 0.0
        for (i, r) in got.enumerated() {
            let v = try r.get()
            let c = cosine(v, seq[i])
            let a = try ar.score(prediction: v, gold: rows[i].gold, fveBaseline: nil)
            let b = try ar.score(prediction: seq[i], gold: rows[i].gold, fveBaseline: nil)
            #expect(c >= 0.99999, "\(label): cos(batched, sequential) \(c) for row \(i)")
            #expect(abs(a.mseNrm - b.mseNrm) <= 1e-5, "\(label): mse_nrm \(a.mseNrm) vs \(b.mseNrm) for row \(i)")
            minCos = min(minCos, c); maxMse = max(maxMse, abs(a.mseNrm - b.mseNrm))
        }
        let prefix = try #require(ar.sharedPrefixIds())
        let shared = try texts.map { try ar.promptIds(for: $0) }.map { ids in zip(ids, prefix).prefix { $0 == $1 }.count }
        #expect(shared.allSatisfy { $0 == prefix.count }, "every golden AR prompt should start with the template prefix: \(shared) of \(prefix.count)")
        demoBatchLog(String(format: "AR %@ batch 8 (8 golden explanations, %d shared prefix ids): min cos(batched, sequential) %.8f, max |Δmse_nrm| %.2g",
                            label, prefix.count, minCos, maxMse))
    }

    @Test(arguments: [false, true])
    func top2OutputIsTheTopTwoOfTheLogits(q8: Bool) throws {
        // The real 262,144-row head: the screened top-2 (Q8_0) against every logit, on real final hidden states.
        let av = try BatchedDemo.av(q8)
        let vectors = try FidelityDemo.rows().prefix(4).map(\.gold)
        let r = try expectTop2MatchesLogits(av, vectors: Array(vectors), steps: 6)
        #expect(r.compared == 6 * vectors.count)
        #expect(!q8 || r.screened || !PackedWeights.screensTop2)
        demoBatchLog("\(q8 ? "q8_0" : "f32"): .lastTop2 == top2(.lastLogits) on \(r.compared) rows (head screened: \(r.screened))")
    }

    @Test(arguments: [false, true])
    func sharedPrefixKVEqualsFullPrefill(q8: Bool) throws {
        let label = q8 ? "q8_0" : "f32"
        let av = try BatchedDemo.av(q8)
        let gold = try FidelityDemo.rows()[2].gold
        let p = av.injectionPosition, t = av.promptIds.count
        #expect(p == 93 && t == 108)
        let batch = try Gemma3Batch(model: av.model.model, maxSequences: 2, capacity: t + 8)
        let prefix = try av.prefixCache(on: batch)
        let full = batch.makeCache()
        let e = try av.inputEmbeddings(for: gold)
        _ = try e.withUnsafeBufferPointer { try batch.forward([.init(cache: full, rows: t)], embeddings: $0.baseAddress!, output: .none) }
        var maxDiff: Float = 0, maxRef: Float = 0
        for l in 0..<batch.blocks {
            for j in 0..<p {
                for value in [false, true] {
                    let a = try #require(prefix.entry(block: l, position: j, value: value))
                    let b = try #require(full.entry(block: l, position: j, value: value))
                    for (x, y) in zip(a, b) { maxDiff = max(maxDiff, abs(x - y)); maxRef = max(maxRef, abs(y)) }
                }
            }
        }
        #expect(maxDiff <= 1e-5 * maxRef, "\(label): prefix KV max|Δ| \(maxDiff), max |ref| \(maxRef)")
        demoBatchLog(String(format: "%@: shared-prefix KV (93 rows × 18 blocks) vs full 108-row prefill: max|Δ| %.3g (max |ref| %.3g); KV %.2f MB per sequence",
                            label, maxDiff, maxRef, Double(full.bytes) / 1e6))
    }
}
