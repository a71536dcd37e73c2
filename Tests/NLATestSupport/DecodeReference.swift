// The sequential AV decode the batched paths are judged against (issue 8), with each step's top-2 logit
// margin, and the margin rule: a batched greedy explanation may differ from the sequential one only at a
// step whose top-2 margin is < 1e-3.

import Foundation
import Testing
import NLARuntime

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
