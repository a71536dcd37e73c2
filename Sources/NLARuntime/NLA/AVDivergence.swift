// A quantized AV against its reference on the same vectors (`nla av-kld`, issue 9's AV calibration
// measurement): greedy explanation agreement, and the KL divergence of the next-token distributions along the
// reference AV's own explanations (teacher-forced: both AVs read the injected prompt + the reference's ids).

import Foundation

public struct AVDivergenceReport: Sendable {
    public var vectors: Int
    /// Vectors whose greedy generations (ids) are identical.
    public var identical: Int
    /// Mean over vectors of (common prefix of the two generations) / (reference length).
    public var meanPrefixAgreement: Double
    /// Positions compared: one per reference generated token.
    public var positions: Int
    public var meanKLD: Double
    public var p99KLD: Double
    public var maxKLD: Double
    public var top1Agreement: Double

    public var json: [String: Any] {
        ["vectors": vectors, "identical": identical, "mean_prefix_agreement": meanPrefixAgreement, "positions": positions,
         "mean_kld": meanKLD, "p99_kld": p99KLD, "max_kld": maxKLD, "top1_agreement": top1Agreement]
    }
}

public enum AVDivergence {
    /// Next-token logits of `verbalizer` at every position that predicts one of `generated` (the last prompt row,
    /// then each fed id but the last), teacher-forced: [generated.count, vocab].
    public static func teacherForcedLogits(_ verbalizer: ActivationVerbalizer, vector: [Float], generated: [Int]) throws -> [Float] {
        guard !generated.isEmpty else { return [] }
        let e = try verbalizer.inputEmbeddings(for: vector)
        let fed = Array(generated.dropLast())
        let session = try verbalizer.model.session(for: verbalizer.promptIds, extra: fed.count)
        var logits = try e.withUnsafeBufferPointer {
            try session.forward(embeddings: $0.baseAddress!, rows: verbalizer.promptIds.count, logits: .last)
        }
        if !fed.isEmpty { logits += try session.forward(ids: fed, logits: .all) }
        return logits
    }

    /// Compare `quantized` to `reference` on `vectors` (greedy, `maxNewTokens` per vector, `batch` sequences per
    /// forward for the generations). Returns the report and both sides' generations.
    public static func compare(reference: ActivationVerbalizer, quantized: ActivationVerbalizer, vectors: [[Float]],
                               maxNewTokens: Int, batch: Int?) throws -> (report: AVDivergenceReport, reference: [Verbalization], quantized: [Verbalization]) {
        guard !vectors.isEmpty else { throw ModelError.input("no vectors to compare") }
        let (refGen, _) = try AVCalibration.verbalize(reference, vectors: vectors, maxNewTokens: maxNewTokens, batch: batch)
        let (report, qGen) = try compare(reference: reference, referenceGenerations: refGen, quantized: quantized, vectors: vectors,
                                         maxNewTokens: maxNewTokens, batch: batch)
        return (report, refGen, qGen)
    }

    /// The same with the reference's generations already made (one reference run for several quantized files).
    public static func compare(reference: ActivationVerbalizer, referenceGenerations refGen: [Verbalization], quantized: ActivationVerbalizer,
                               vectors: [[Float]], maxNewTokens: Int, batch: Int?) throws -> (report: AVDivergenceReport, quantized: [Verbalization]) {
        guard reference.model.config.vocabSize == quantized.model.config.vocabSize, reference.dModel == quantized.dModel,
              reference.promptIds == quantized.promptIds, reference.injectionPosition == quantized.injectionPosition else {
            throw ModelError.input("\(quantized.model.directory): not the same AV as \(reference.model.directory) (vocabulary, width or prompt differ)")
        }
        guard !vectors.isEmpty, refGen.count == vectors.count else { throw ModelError.input("no vectors to compare") }
        let (qGen, _) = try AVCalibration.verbalize(quantized, vectors: vectors, maxNewTokens: maxNewTokens, batch: batch)
        var identical = 0, prefixSum = 0.0
        var tally = KLDTally()
        let vocab = reference.model.config.vocabSize
        for (i, v) in vectors.enumerated() {
            let r = refGen[i].ids, q = qGen[i].ids
            if r == q { identical += 1 }
            var common = 0
            while common < min(r.count, q.count) && r[common] == q[common] { common += 1 }
            prefixSum += Double(common) / Double(max(r.count, 1))
            let lr = try teacherForcedLogits(reference, vector: v, generated: r)
            let lq = try teacherForcedLogits(quantized, vector: v, generated: r)
            tally.add(lr, lq, rows: r.count, vocab: vocab)
        }
        let report = AVDivergenceReport(vectors: vectors.count, identical: identical, meanPrefixAgreement: prefixSum / Double(vectors.count),
                                        positions: tally.positions, meanKLD: tally.mean, p99KLD: tally.p99,
                                        maxKLD: tally.max, top1Agreement: tally.top1Agreement)
        return (report, qGen)
    }
}
