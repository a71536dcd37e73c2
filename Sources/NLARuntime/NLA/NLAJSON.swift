// Shared JSON shapes of the NLA commands (`nla verbalize|reconstruct|score --json`), used by the CLI and by
// `nla serve` so both write the same field names; and public initializers of the explain report types for
// callers outside the module that assemble a report themselves (the server's explain runs its AV through the
// server's engine).

import Foundation

extension Verbalization {
    /// `{"ids":[...],"text":"...","explanation":"..." or null}` (one element of `nla verbalize --json`).
    public var jsonObject: [String: Any] {
        ["ids": ids, "text": text, "explanation": explanation ?? NSNull()]
    }
}

extension NLAScore {
    /// `{"mse_nrm","cos","fve_nrm"}` (`nla score --json`; fve_nrm null without a baseline).
    public var jsonObject: [String: Any] {
        ["mse_nrm": mseNrm, "cos": cos, "fve_nrm": fveNrm.map { $0 as Any } ?? NSNull()]
    }
}

public enum NLAJSON {
    /// `{"vector":[...],"norm":x}` (`nla reconstruct --json`).
    public static func reconstruction(_ v: [Float]) -> [String: Any] {
        ["vector": v.map(Double.init), "norm": NLAVectorMath.norm(v)]
    }

    /// Sorted-key JSON bytes, slashes unescaped (the CLI's `printJSON`).
    public static func data(_ object: Any) throws -> Data {
        try JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes, .sortedKeys])
    }
}

extension ActivationVerbalizer {
    /// The Verbalization of ids generated elsewhere (text without the stop id, extracted explanation, warnings).
    public func verbalization(generated ids: [Int], stoppedOnStopId: Bool, maxNewTokens: Int) -> Verbalization {
        verbalization(ids: ids, stopped: stoppedOnStopId, maxNewTokens: maxNewTokens)
    }
}

extension ExplainPosition {
    /// A row with no explanation or score yet.
    public static func unscored(position: Int, segment: String, token: String, id: Int, norm: Double) -> ExplainPosition {
        ExplainPosition(position: position, segment: segment, token: token, id: id, norm: norm, mseNrm: nil, cos: nil, fveNrm: nil,
                        explanation: nil, text: nil, warnings: [], error: nil)
    }
}

extension ExplainReport {
    public static func assemble(target: String, av: String, ar: String, layer: Int, promptLength: Int, ids: [Int], positions: [ExplainPosition],
                                summary: ExplainSummaryStats, fveBaseline: Double?, batch: Int) -> ExplainReport {
        ExplainReport(target: target, av: av, ar: ar, layer: layer, promptLength: promptLength, ids: ids, positions: positions,
                      summary: summary, fveBaseline: fveBaseline, batch: batch)
    }
}
