// Quantized vs reference next-token distributions: the quality number every quant decision cites.

import Foundation

public struct DivergenceReport: Sendable {
    public var positions: Int
    public var meanKLD: Double
    public var p99KLD: Double
    public var maxKLD: Double
    public var top1Agreement: Double
    public var meanHiddenCos: Double

    public var json: [String: Any] {
        ["positions": positions, "mean_kld": meanKLD, "p99_kld": p99KLD, "max_kld": maxKLD,
         "top1_agreement": top1Agreement, "mean_hidden_cos": meanHiddenCos]
    }
}

public enum Divergence {
    /// KL(P_ref ‖ P_quant) of the next-token distributions at every position of `ids`, top-1 agreement and
    /// the mean cosine of the final (normed) hidden states. Both models run over the same ids in chunks
    /// of `chunk` positions (the KV cache carries across chunks). Sums in f64.
    public static func compare(reference: Gemma3Model, quantized: Gemma3Model, ids: [Int], chunk: Int = 64) throws -> DivergenceReport {
        guard reference.config.vocabSize == quantized.config.vocabSize, reference.config.hiddenSize == quantized.config.hiddenSize else {
            throw ModelError.input("the two models have different vocabularies or widths")
        }
        guard !ids.isEmpty else { throw ModelError.input("empty text: no positions to compare") }
        for (m, role) in [(reference, "reference"), (quantized, "quantized")] where !m.producesLogits {
            throw ModelError.input("the \(role) model runs \(m.loadedBlocks) of \(m.config.numHiddenLayers) blocks without the final norm (an NLA AR?): it has no next-token distribution to compare")
        }
        let v = reference.config.vocabSize, d = reference.config.hiddenSize
        let sr = try reference.makeSession(capacity: ids.count)
        let sq = try quantized.makeSession(capacity: ids.count)
        var tally = KLDTally()
        var cosSum = 0.0
        var start = 0
        while start < ids.count {
            let part = Array(ids[start..<min(ids.count, start + chunk)])
            var hr = [Float](repeating: 0, count: part.count * d), hq = hr
            let lr = try sr.forward(ids: part, logits: .all) { p, row0, vals in
                if p == .finalNorm { hr.withUnsafeMutableBufferPointer { ($0.baseAddress! + row0 * d).update(from: vals.baseAddress!, count: vals.count) } }
            }
            let lq = try sq.forward(ids: part, logits: .all) { p, row0, vals in
                if p == .finalNorm { hq.withUnsafeMutableBufferPointer { ($0.baseAddress! + row0 * d).update(from: vals.baseAddress!, count: vals.count) } }
            }
            tally.add(lr, lq, rows: part.count, vocab: v)
            for r in 0..<part.count {
                cosSum += cosine(Array(hr[(r * d)..<((r + 1) * d)]), Array(hq[(r * d)..<((r + 1) * d)]))
            }
            start += part.count
        }
        return DivergenceReport(positions: tally.positions, meanKLD: tally.mean, p99KLD: tally.p99, maxKLD: tally.max,
                                top1Agreement: tally.top1Agreement, meanHiddenCos: cosSum / Double(tally.positions))
    }

    /// KL(softmax(a) ‖ softmax(b)) and whether the argmaxes agree.
    static func klAndTop1(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>) -> (Double, Bool) {
        var ma = -Float.infinity, mb = -Float.infinity, ia = 0, ib = 0
        for i in 0..<a.count {
            if a[i] > ma { ma = a[i]; ia = i }
            if b[i] > mb { mb = b[i]; ib = i }
        }
        var sa = 0.0, sb = 0.0
        for i in 0..<a.count { sa += exp(Double(a[i] - ma)); sb += exp(Double(b[i] - mb)) }
        let lza = log(sa) + Double(ma), lzb = log(sb) + Double(mb)
        var kl = 0.0
        for i in 0..<a.count {
            let la = Double(a[i]) - lza
            kl += exp(la) * (la - (Double(b[i]) - lzb))
        }
        return (max(kl, 0), ia == ib)
    }
}

/// Per-position KL(P_ref ‖ P_quant) and top-1 agreement, summarised the same way for every report
/// (`nla kld`, `nla av-kld`): mean, 99th percentile (nearest rank), max.
struct KLDTally {
    private(set) var klds: [Double] = []
    private(set) var agree = 0

    /// Add rows 0..<rows of two [rows, vocab] logit arrays (reference first).
    mutating func add(_ reference: [Float], _ quantized: [Float], rows: Int, vocab: Int) {
        reference.withUnsafeBufferPointer { a in
            quantized.withUnsafeBufferPointer { b in
                for r in 0..<rows {
                    let (kl, same) = Divergence.klAndTop1(UnsafeBufferPointer(rebasing: a[(r * vocab)..<((r + 1) * vocab)]),
                                                          UnsafeBufferPointer(rebasing: b[(r * vocab)..<((r + 1) * vocab)]))
                    klds.append(kl)
                    if same { agree += 1 }
                }
            }
        }
    }

    var positions: Int { klds.count }
    var mean: Double { klds.reduce(0, +) / Double(klds.count) }
    var p99: Double {
        let sorted = klds.sorted()
        return sorted[min(sorted.count - 1, Int((Double(sorted.count) * 0.99).rounded(.up)) - 1)]
    }
    var max: Double { klds.max()! }
    var top1Agreement: Double { Double(agree) / Double(klds.count) }
}

/// Cosine similarity in f64.
public func cosine(_ a: [Float], _ b: [Float]) -> Double {
    var dot = 0.0, na = 0.0, nb = 0.0
    for i in 0..<min(a.count, b.count) {
        dot += Double(a[i]) * Double(b[i]); na += Double(a[i]) * Double(a[i]); nb += Double(b[i]) * Double(b[i])
    }
    return na == 0 || nb == 0 ? 0 : dot / (na.squareRoot() * nb.squareRoot())
}

extension Gemma3Model {
    /// Whether a forward pass can produce next-token logits: every block loaded and the final norm applied
    /// (an NLA AR runs blocks 0…K and stops, without them).
    public var producesLogits: Bool { loadedBlocks == config.numHiddenLayers && finalNorm != nil }
}
