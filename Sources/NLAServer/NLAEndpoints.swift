// explain / verbalize / reconstruct / score. Target capture and the AR run as engine tasks; the AV's
// explanations are jobs of the "av" lane (so they batch with each other and with concurrent /generate
// requests, and the prefix cache shares the AV prompt rows before the injection site, which are
// byte-identical for every vector). Responses have the field names of the CLI's --json outputs.

import Foundation
import Hummingbird
import NLARuntime
import NLAWire

private func requireNLA(_ s: NLAService, _ what: String) throws -> (ActivationVerbalizer, ActivationReconstructor, LanguageModel, Int) {
    guard let v = s.verbalizer, let r = s.reconstructor, let t = s.target, let k = s.layer else {
        throw APIError(404, "\(what) needs an NLA pair: this server runs generate-only (--model); start it with --target, --av and --ar")
    }
    return (v, r, t, k)
}

/// AR work in engine tasks of at most `maxBatch` explanations each (so chat and /generate steps run between them).
private func reconstructAll(_ s: NLAService, _ r: ActivationReconstructor, _ texts: [String],
                            onDone: (@Sendable (Int) -> Void)? = nil) async throws -> [Result<[Float], Error>] {
    var out: [Result<[Float], Error>] = []
    var start = 0
    let chunk = max(1, s.options.maxBatch)
    while start < texts.count {
        try Task.checkCancellation()
        let part = Array(texts[start..<min(start + chunk, texts.count)])
        let res = try await s.engine.run { (control: TaskControl) -> [Result<[Float], Error>] in
            try NLAPipeline.reconstruct(r, explanations: part, batch: max(1, part.count), isCancelled: { control.isStopped })
        }
        out += res
        start += part.count
        onDone?(out.count)
    }
    return out
}

/// Turn an engine error of a job into the request's error when it concerns the whole request (cancelled, timed out).
private func requestLevel(_ e: Error) -> Bool {
    if e is EngineError { return true }
    if let a = e as? APIError, a.status == 504 { return true }
    return false
}

enum Explain {
    /// Build the report (progress: (event, object) for the SSE stream).
    static func run(_ v: JSONValue, service s: NLAService, progress: @escaping @Sendable (String, Any) -> Void) async throws -> ExplainReport {
        let (verbalizer, reconstructor, target, layer) = try requireNLA(s, "explain")
        let body = try ExplainBody.decode(v, vocab: target.config.vocabSize, maxNewTokensLimit: s.options.maxNewTokensLimit)
        let sampling = body.sampling, spec = body.positions
        let baseline = body.fveBaseline ?? s.options.fveBaseline ?? FVEBaselines.builtIn(dModel: reconstructor.dModel, layer: layer)
        let context = min(target.config.maxPositionEmbeddings, s.options.context)
        // What to capture: explicit ids, or a prompt (and reply).
        let captured: CapturedActivations
        progress("progress", ["phase": "capture", "done": 0, "total": 1])
        switch body.source {
        case .ids(let ids, let promptLength):
            guard ids.count <= context else { throw APIError.bad("ids: \(ids.count) tokens exceed the context of \(context) (--context)") }
            let pl = promptLength ?? ids.count
            captured = try await s.engine.run { try ActivationCapture.capture(target: target, layer: layer, ids: ids, promptLength: pl) }
        case .prompt(let prompt, let chat, let reply, let maxReply):
            let promptTokens = try target.promptIds(prompt, chat: chat).count
            guard promptTokens + (reply == nil ? maxReply : 0) <= context else {
                throw APIError.bad("prompt: \(promptTokens) tokens (+ \(maxReply) reply) exceed the context of \(context) (--context)")
            }
            captured = try await s.engine.run {
                try ActivationCapture.capture(target: target, layer: layer, prompt: prompt, chat: chat, reply: reply,
                                              maxReplyTokens: reply == nil ? maxReply : 0)
            }
        }
        progress("progress", ["phase": "capture", "done": 1, "total": 1])
        let picked: [Int]
        do { picked = try spec.resolve(count: captured.ids.count) } catch { throw APIError.bad("\(error)") }
        guard picked.count <= s.options.maxExplainPositions else {
            throw APIError.bad("positions: \(picked.count) positions exceed the limit of \(s.options.maxExplainPositions) per request")
        }
        try Task.checkCancellation()
        // AV: one job per position; a vector that cannot be injected fails alone.
        var specs: [GenJob.Spec] = []
        var jobOf: [Int: Int] = [:]
        var rowError: [Int: String] = [:]
        for (i, p) in picked.enumerated() {
            do {
                let rows = try verbalizer.inputEmbeddings(for: captured.vectors[p])
                jobOf[i] = specs.count
                specs.append(GenJob.Spec(rows: rows, options: sampling, stopIds: verbalizer.stopIds))
            } catch { rowError[i] = "\(error)" }
        }
        let total = picked.count
        let counter = Counter()
        progress("progress", ["phase": "verbalize", "done": 0, "total": total])
        let results = try await s.generate(lane: "av", jobs: specs, onDone: { _, _ in
            progress("progress", ["phase": "verbalize", "done": counter.next(), "total": total])
        })
        for r in results { if case .failure(let e) = r, requestLevel(e) { throw e } }
        try Task.checkCancellation()
        var verbal: [Int: Verbalization] = [:]
        for (i, _) in picked.enumerated() {
            guard let j = jobOf[i] else { continue }
            switch results[j] {
            case .success(let jr):
                verbal[i] = verbalizer.verbalization(generated: jr.ids, stoppedOnStopId: jr.stoppedOnStopId, maxNewTokens: sampling.maxNewTokens)
            case .failure(let e): rowError[i] = "\(e)"
            }
        }
        let ok = picked.indices.filter { verbal[$0] != nil }
        let texts = ok.map { verbal[$0]!.explanation ?? verbal[$0]!.text }
        progress("progress", ["phase": "score", "done": 0, "total": texts.count])
        let preds = try await reconstructAll(s, reconstructor, texts, onDone: { n in
            progress("progress", ["phase": "score", "done": n, "total": texts.count])
        })
        var predOf: [Int: Result<[Float], Error>] = [:]
        for (k, i) in ok.enumerated() { predOf[i] = preds[k] }
        var rows: [ExplainPosition] = []
        var stats: [(Int, NLAScore)] = []
        for (i, p) in picked.enumerated() {
            var row = ExplainPosition.unscored(position: p, segment: p < captured.promptLength ? "PROMPT" : "REPLY", token: captured.tokens[p],
                                               id: captured.ids[p], norm: captured.norms[p])
            if let v = verbal[i] {
                row.explanation = v.explanation ?? v.text
                row.text = v.text
                row.warnings = v.warnings
                do {
                    let sc = try reconstructor.score(prediction: try predOf[i]!.get(), gold: captured.vectors[p], fveBaseline: baseline)
                    row.mseNrm = sc.mseNrm; row.cos = sc.cos; row.fveNrm = sc.fveNrm
                    stats.append((p, sc))
                } catch { row.error = "\(error)" }
            } else {
                row.error = rowError[i] ?? "no explanation"
            }
            rows.append(row)
            if let obj = try? JSONSerialization.jsonObject(with: JSONEncoder().encode(row)) { progress("position", obj) }
        }
        return ExplainReport.assemble(target: s.options.target!, av: s.options.av!, ar: s.options.ar!, layer: layer,
                             promptLength: captured.promptLength, ids: captured.ids, positions: rows,
                             summary: ExplainSummaryStats(scores: stats.filter { $0.0 >= 4 }.map(\.1), baseline: baseline),
                             fveBaseline: baseline, batch: s.options.maxBatch)
    }

    static func stream(_ v: JSONValue, service s: NLAService) async throws -> Response {
        let (_, _, target, _) = try requireNLA(s, "explain")
        _ = try ExplainBody.decode(v, vocab: target.config.vocabSize, maxNewTokensLimit: s.options.maxNewTokensLimit)
        return Routes.sse { send in
            let report = try await run(v, service: s, progress: send)
            send("report", try JSONSerialization.jsonObject(with: try report.jsonData()))
        }
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func next() -> Int { lock.lock(); defer { lock.unlock() }; n += 1; return n }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}

enum NLAEndpoints {
    /// `{"vectors": [[f32 × d] × n]}` (or `"vector"`) → `[{"ids","text","explanation"}]` as `nla verbalize --json`.
    static func verbalize(_ v: JSONValue, service s: NLAService) async throws -> Any {
        let (verbalizer, _, _, _) = try requireNLA(s, "verbalize")
        let body = try VerbalizeBody.decode(v, d: verbalizer.dModel, maxNewTokensLimit: s.options.maxNewTokensLimit,
                                            maxVectors: s.options.maxExplainPositions)
        let sampling = body.sampling
        var specs: [GenJob.Spec] = []
        for (i, x) in body.vectors.enumerated() {
            do { specs.append(GenJob.Spec(rows: try verbalizer.inputEmbeddings(for: x), options: sampling, stopIds: verbalizer.stopIds)) } catch {
                throw APIError.bad("\(body.name(i)): \(error)")
            }
        }
        let results = try await s.generate(lane: "av", jobs: specs)
        return try results.map { r -> [String: Any] in
            let jr = try r.get()
            return verbalizer.verbalization(generated: jr.ids, stoppedOnStopId: jr.stoppedOnStopId, maxNewTokens: sampling.maxNewTokens).jsonObject
        }
    }

    /// `{"explanation"}` → `{"vector","norm"}` as `nla reconstruct --json`.
    static func reconstruct(_ v: JSONValue, service s: NLAService) async throws -> Any {
        let (_, r, _, _) = try requireNLA(s, "reconstruct")
        let e = try ScoreBody.decodeReconstruct(v)
        let vec = try await s.engine.run { try r.reconstruct(e) }
        return NLAJSON.reconstruction(vec)
    }

    /// `{"explanation","gold"[,"fve_baseline"]}` → `{"mse_nrm","cos","fve_nrm"}` as `nla score --json`.
    static func score(_ v: JSONValue, service s: NLAService) async throws -> Any {
        let (_, r, _, k) = try requireNLA(s, "score")
        let body = try ScoreBody.decodeScore(v, d: r.dModel)
        let e = body.explanation, gold = body.gold!
        let baseline = body.fveBaseline ?? s.options.fveBaseline ?? FVEBaselines.builtIn(dModel: r.dModel, layer: k)
        let sc = try await s.engine.run { try r.score(prediction: try r.reconstruct(e), gold: gold, fveBaseline: baseline) }
        return sc.jsonObject
    }
}
