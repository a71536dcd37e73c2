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
        var klds: [Double] = []
        var agree = 0
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
            for r in 0..<part.count {
                let (kl, same) = lr.withUnsafeBufferPointer { a in
                    lq.withUnsafeBufferPointer { b in
                        klAndTop1(UnsafeBufferPointer(rebasing: a[(r * v)..<((r + 1) * v)]),
                                  UnsafeBufferPointer(rebasing: b[(r * v)..<((r + 1) * v)]))
                    }
                }
                klds.append(kl)
                if same { agree += 1 }
                cosSum += cosine(Array(hr[(r * d)..<((r + 1) * d)]), Array(hq[(r * d)..<((r + 1) * d)]))
            }
            start += part.count
        }
        let sorted = klds.sorted()
        let p99 = sorted[min(sorted.count - 1, Int((Double(sorted.count) * 0.99).rounded(.up)) - 1)]
        return DivergenceReport(positions: klds.count, meanKLD: klds.reduce(0, +) / Double(klds.count), p99KLD: p99,
                                maxKLD: sorted.last!, top1Agreement: Double(agree) / Double(klds.count),
                                meanHiddenCos: cosSum / Double(klds.count))
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
