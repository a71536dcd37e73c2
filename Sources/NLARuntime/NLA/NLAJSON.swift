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
    public init(position: Int, segment: String, token: String, id: Int, norm: Double, mseNrm: Double? = nil, cos: Double? = nil,
                fveNrm: Double? = nil, explanation: String? = nil, text: String? = nil, warnings: [String] = [], error: String? = nil) {
        self.position = position; self.segment = segment; self.token = token; self.id = id; self.norm = norm
        self.mseNrm = mseNrm; self.cos = cos; self.fveNrm = fveNrm; self.explanation = explanation; self.text = text
        self.warnings = warnings; self.error = error
    }
}

extension ExplainReport {
    public init(target: String, av: String, ar: String, layer: Int, promptLength: Int, ids: [Int], positions: [ExplainPosition],
                summary: ExplainSummaryStats, fveBaseline: Double?, batch: Int) {
        self.target = target; self.av = av; self.ar = ar; self.layer = layer; self.promptLength = promptLength; self.ids = ids
        self.positions = positions; self.summary = summary; self.fveBaseline = fveBaseline; self.batch = batch
    }
}
