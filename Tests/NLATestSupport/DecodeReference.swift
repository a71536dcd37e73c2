// The sequential AV decode the batched paths are judged against (issue 8), with each step's top-2 logit
// margin, and the margin rule: a batched greedy explanation may differ from the sequential one only at a
// step whose top-2 margin is < 1e-3.

import Foundation
import Testing
import NLARuntime
import SIMDKernels

/// The sequential reference decode with each step's top-2 margin (same steps as `verbalize`); stops on
/// `stops` (default: the AV's stop ids).
package func referenceDecode(_ av: ActivationVerbalizer, _ v: [Float], maxNew: Int, stops: Set<Int>? = nil) throws -> (ids: [Int], margins: [Float]) {
    let stops = stops ?? av.stopIds
    let e = try av.inputEmbeddings(for: v)
    let session = try av.model.session(for: av.promptIds, extra: maxNew)
    var logits = try e.withUnsafeBufferPointer { try session.forward(embeddings: $0.baseAddress!, rows: av.promptIds.count, logits: .last) }
    var ids: [Int] = [], margins: [Float] = []
    while ids.count < maxNew {
        let tok = Sampler.argmax(logits)
        ids.append(tok)
        margins.append(logits.withUnsafeBufferPointer { BatchDecoder.topTwoMargin($0) })
        if stops.contains(tok) || ids.count == maxNew || session.position >= session.capacity { break }
        logits = try session.forward(ids: [tok], logits: .last)
    }
    return (ids, margins)
}

/// First step where `got` differs from the reference, with the reference's top-2 margin there.
package func firstDivergence(ref: [Int], margins: [Float], got: [Int]) -> (step: Int, margin: Float)? {
    for j in 0..<max(ref.count, got.count) where j >= ref.count || j >= got.count || ref[j] != got[j] {
        return (j, j < margins.count ? margins[j] : .infinity)
    }
    return nil
}

/// The margin rule of issue 8; returns the number of vectors identical to the end. Divergences are
/// printed with `tag`.
@discardableResult
package func expectGreedyMatches(_ label: String, refs: [(ids: [Int], margins: [Float])], got: [[Int]], tag: String = "batched",
                                 sourceLocation: SourceLocation = #_sourceLocation) -> Int {
    var identical = 0
    for (i, (r, g)) in zip(refs, got).enumerated() {
        if let div = firstDivergence(ref: r.ids, margins: r.margins, got: g) {
            print(String(format: "[%@] %@: vector %d diverges at step %d (sequential top-2 margin %.3g)", tag, label, i, div.step, div.margin))
            #expect(div.margin < 1e-3, "\(label): vector \(i) diverges at step \(div.step) where the top-2 margin is \(div.margin) ≥ 1e-3",
                    sourceLocation: sourceLocation)
        } else {
            identical += 1
        }
    }
    return identical
}

/// Greedy-decode `vectors` together for `steps` steps twice over the same inputs — once asking the batch
/// for `.lastTop2`, once for `.lastLogits` — and require at every step and for every sequence that the
/// top-2 result is exactly `Kernels.top2` of the logits row (index, first and second value, bit for
/// bit). Returns how many rows were compared and whether the batch screened the head.
package func expectTop2MatchesLogits(_ av: ActivationVerbalizer, vectors: [[Float]], steps: Int,
                                     sourceLocation: SourceLocation = #_sourceLocation) throws -> (compared: Int, screened: Bool) {
    let model = av.model.model
    let t = av.promptIds.count, vocab = model.config.vocabSize
    let batch = try Gemma3Batch(model: model, maxSequences: vectors.count, capacity: t + steps + 1)
    let viaLogits = vectors.map { _ in batch.makeCache() }, viaTop2 = vectors.map { _ in batch.makeCache() }
    var emb = try vectors.flatMap { try av.inputEmbeddings(for: $0) }
    var rows = t, compared = 0
    for step in 0..<steps {
        let logits = try emb.withUnsafeBufferPointer {
            Array(try batch.forward(viaLogits.map { .init(cache: $0, rows: rows) }, embeddings: $0.baseAddress!, output: .lastLogits))
        }
        _ = try emb.withUnsafeBufferPointer {
            try batch.forward(viaTop2.map { .init(cache: $0, rows: rows) }, embeddings: $0.baseAddress!, output: .lastTop2)
        }
        let tops = batch.top2
        #expect(tops.count == vectors.count, sourceLocation: sourceLocation)
        for i in vectors.indices {
            let ref = logits[(i * vocab)..<((i + 1) * vocab)].withUnsafeBufferPointer { Kernels.top2($0) }
            let got = tops[i]
            #expect(got.index == ref.index && got.first.bitPattern == ref.first.bitPattern
                    && got.second.bitPattern == ref.second.bitPattern,
                    "step \(step) sequence \(i): top2 \(got) vs the logits' \(ref)", sourceLocation: sourceLocation)
            compared += 1
        }
        emb = try vectors.indices.flatMap { try model.embed([tops[$0].index]) }
        rows = 1
    }
    return (compared, batch.screensTop2)
}
