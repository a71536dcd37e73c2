// The explain pipeline as a library API (issue 8): capture (target) → verbalize (AV, batched) →
// reconstruct and score (AR, batched), one model loaded at a time, with a progress callback and
// cancellation, returning a typed report whose JSON has the field names of `nla explain --json`.
// `batch == 1` is the sequential reference path (full AV prompt prefill per vector, no sharing).

import Foundation

/// Which positions to explain: `all`, or comma-separated positions and ranges (`4-` = to the end).
public enum NLAPositionSpec: Sendable, Equatable {
    case all
    /// (first, last) pairs; last nil = to the end; a single position is (p, p) with `single` true.
    case items([Item])

    public struct Item: Sendable, Equatable {
        public var first: Int
        public var last: Int?
        public var single: Bool
    }

    /// `all`, `4-`, `10,12,15`, `3-9` and combinations.
    public static func parse(_ spec: String) throws -> NLAPositionSpec {
        if spec == "all" { return .all }
        var out: [Item] = []
        for part in spec.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !part.isEmpty {
            if let dash = part.firstIndex(of: "-") {
                let a = Int(part[..<dash]), bStr = part[part.index(after: dash)...]
                let b = bStr.isEmpty ? nil : Int(bStr)
                guard let a, a >= 0, bStr.isEmpty || (b != nil && a <= b!) else {
                    throw ModelError.input("positions: '\(part)' is not a range")
                }
                out.append(Item(first: a, last: b, single: false))
            } else {
                guard let p = Int(part), p >= 0 else { throw ModelError.input("positions: '\(part)' is not a position") }
                out.append(Item(first: p, last: p, single: true))
            }
        }
        guard !out.isEmpty else { throw ModelError.input("positions: '\(spec)' lists no position") }
        return .items(out)
    }

    /// The positions of a sequence of `count` tokens (ranges are clipped to it; a single position past
    /// the end is an error).
    public func resolve(count: Int) throws -> [Int] {
        guard case .items(let items) = self else { return Array(0..<count) }
        var out: [Int] = []
        for it in items {
            if it.single { out.append(it.first) } else {
                let b = min(it.last ?? count - 1, count - 1)
                if it.first <= b { out += Array(it.first...b) } else if it.first >= count {
                    throw ModelError.input("positions: \(it.first) is past the last position \(count - 1)")
                }
            }
        }
        for p in out where p >= count {
            throw ModelError.input("positions: \(p) is past the last position \(count - 1)")
        }
        var seen = Set<Int>()
        for p in out where !seen.insert(p).inserted {
            throw ModelError.input("positions: \(p) is listed more than once")
        }
        return out
    }
}

/// An AV that runs elsewhere (`nla explain --backend sglang`: an SGLang `/generate` server or another
/// `nla serve`). It gets the loaded verbalizer (only its prompt embeddings and tokenizer are used here) and the
/// vectors, and returns one result per vector, as `NLAPipeline.verbalize` does; capture and the AR stay local.
public protocol VerbalizeBackend: Sendable {
    /// Vectors per request when the caller did not choose (also the AR batch of the report).
    func batchSize(items: Int, verbalizer: ActivationVerbalizer) -> Int
    func verbalize(_ verbalizer: ActivationVerbalizer, vectors: [[Float]], options: SamplingOptions, batch: Int, ignoreStopIds: Bool,
                   onEvent: ((BatchDecodeEvent) -> Void)?, isCancelled: () -> Bool) throws -> [Result<Verbalization, Error>]
}

public struct ExplainRequest: Sendable {
    public var target: String
    public var av: String
    public var ar: String
    public var prompt: String
    public var chat: Bool
    /// The reply text; nil = generate up to `maxReplyTokens` greedily.
    public var reply: String?
    public var maxReplyTokens: Int
    public var positions: NLAPositionSpec
    public var sampling: SamplingOptions
    /// fve_nrm baseline B; nil = the built-in one of the released pairs, if any.
    public var fveBaseline: Double?
    /// Custom AV user prompt containing `<INJECT>`.
    public var avPrompt: String?
    /// Sequences per forward; 1 = sequential reference; nil = automatic (bounded by memory).
    public var batch: Int?
    /// Decode exactly `maxNewTokens` tokens per explanation (benchmarks).
    public var ignoreStopIds: Bool
    /// Where the AV runs when not in this process (`nla explain --backend sglang`); nil = here.
    public var backend: (any VerbalizeBackend)? = nil

    public init(target: String, av: String, ar: String, prompt: String, chat: Bool = false, reply: String? = nil,
                maxReplyTokens: Int = 64, positions: NLAPositionSpec = .all, sampling: SamplingOptions = SamplingOptions(maxNewTokens: 200),
                fveBaseline: Double? = nil, avPrompt: String? = nil, batch: Int? = nil, ignoreStopIds: Bool = false) {
        self.target = target; self.av = av; self.ar = ar; self.prompt = prompt; self.chat = chat; self.reply = reply
        self.maxReplyTokens = maxReplyTokens; self.positions = positions; self.sampling = sampling
        self.fveBaseline = fveBaseline; self.avPrompt = avPrompt; self.batch = batch; self.ignoreStopIds = ignoreStopIds
    }
}

/// One explained position (JSON: the `positions` rows of `nla explain --json`).
public struct ExplainPosition: Codable, Sendable {
    public var position: Int
    public var segment: String
    public var token: String
    public var id: Int
    public var norm: Double
    public var mseNrm: Double?
    public var cos: Double?
    public var fveNrm: Double?
    public var explanation: String?
    public var text: String?
    public var warnings: [String]
    /// Why this position has no explanation or score (it failed alone).
    public var error: String?

    enum CodingKeys: String, CodingKey {
        case position, segment, token, id, norm, cos, explanation, text, warnings, error
        case mseNrm = "mse_nrm", fveNrm = "fve_nrm"
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(position, forKey: .position); try c.encode(segment, forKey: .segment)
        try c.encode(token, forKey: .token); try c.encode(id, forKey: .id); try c.encode(norm, forKey: .norm)
        try c.encode(mseNrm, forKey: .mseNrm); try c.encode(cos, forKey: .cos); try c.encode(fveNrm, forKey: .fveNrm)
        try c.encode(explanation, forKey: .explanation); try c.encode(text, forKey: .text)
        try c.encode(warnings, forKey: .warnings)
        try c.encodeIfPresent(error, forKey: .error)
    }
}

/// Summary over scored positions ≥ 4 (the reference transcripts' convention).
public struct ExplainSummaryStats: Codable, Sendable {
    public var count: Int
    public var meanMseNrm, medianMseNrm, minMseNrm, maxMseNrm, meanCos: Double?
    public var meanFveNrm, medianFveNrm, fveBaseline: Double?
    public var fveGt05, fveGt08, fveLt0: Int?

    enum CodingKeys: String, CodingKey {
        case count
        case meanMseNrm = "mean_mse_nrm", medianMseNrm = "median_mse_nrm", minMseNrm = "min_mse_nrm", maxMseNrm = "max_mse_nrm"
        case meanCos = "mean_cos", meanFveNrm = "mean_fve_nrm", medianFveNrm = "median_fve_nrm", fveBaseline = "fve_baseline"
        case fveGt05 = "fve_gt_0_5", fveGt08 = "fve_gt_0_8", fveLt0 = "fve_lt_0"
    }

    public init(scores: [NLAScore], baseline: Double?) {
        func mean(_ xs: [Double]) -> Double? { xs.isEmpty ? nil : xs.reduce(0, +) / Double(xs.count) }
        func median(_ xs: [Double]) -> Double? {
            guard !xs.isEmpty else { return nil }
            let s = xs.sorted()
            return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
        }
        let mse = scores.map(\.mseNrm), cos = scores.map(\.cos), fve = scores.compactMap(\.fveNrm)
        count = scores.count
        meanMseNrm = mean(mse); medianMseNrm = median(mse); minMseNrm = mse.min(); maxMseNrm = mse.max(); meanCos = mean(cos)
        if let b = baseline, !fve.isEmpty {
            meanFveNrm = mean(fve); medianFveNrm = median(fve); fveBaseline = b
            fveGt05 = fve.filter { $0 > 0.5 }.count; fveGt08 = fve.filter { $0 > 0.8 }.count; fveLt0 = fve.filter { $0 < 0 }.count
        }
    }
}

/// The whole explain result (JSON: `nla explain --json`).
public struct ExplainReport: Codable, Sendable {
    public var target, av, ar: String
    public var layer: Int
    public var promptLength: Int
    public var ids: [Int]
    public var positions: [ExplainPosition]
    public var summary: ExplainSummaryStats
    public var fveBaseline: Double?
    /// Sequences per forward used for the AV and the AR.
    public var batch: Int

    enum CodingKeys: String, CodingKey {
        case target, av, ar, layer, ids, positions, summary, batch
        case promptLength = "prompt_length", fveBaseline = "fve_baseline"
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(target, forKey: .target); try c.encode(av, forKey: .av); try c.encode(ar, forKey: .ar)
        try c.encode(layer, forKey: .layer); try c.encode(promptLength, forKey: .promptLength); try c.encode(ids, forKey: .ids)
        try c.encode(positions, forKey: .positions); try c.encode(summary, forKey: .summary)
        try c.encode(fveBaseline, forKey: .fveBaseline); try c.encode(batch, forKey: .batch)
    }

    /// Sorted-key JSON.
    public func jsonData() throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return try e.encode(self)
    }
}

public struct ExplainProgress: Sendable {
    public enum Phase: String, Sendable { case capture, verbalize, score }
    public var phase: Phase
    /// Items (positions) done and total in this phase.
    public var done: Int
    public var total: Int
    /// AV tokens generated so far (verbalize phase).
    public var tokens: Int
    /// Seconds since the phase started.
    public var elapsed: Double
    /// Tokens and seconds of the pure decode steps (every sequence of the step adds one token; batched path only).
    public var decodeTokens: Int = 0
    public var decodeSeconds: Double = 0
}

public enum NLAPipeline {
    /// Upper bound of the automatic batch size.
    public static let maxAutoBatch = 16

    /// The automatic batch size: at most `maxAutoBatch` and `items`, with all sequences' KV within 1/8 of
    /// physical memory.
    public static func autoBatch(kvBytesPerSequence: Int, items: Int) -> Int {
        let budget = Int(ProcessInfo.processInfo.physicalMemory / 8)
        let byMemory = kvBytesPerSequence > 0 ? max(1, budget / kvBytesPerSequence) : maxAutoBatch
        return max(1, min(maxAutoBatch, max(items, 1), byMemory))
    }

    /// The batch size for a verbalizer: `requested`, or automatic.
    public static func batchSize(_ requested: Int?, verbalizer: ActivationVerbalizer, options: SamplingOptions, items: Int) throws -> Int {
        if let r = requested {
            guard r >= 1 else { throw ModelError.input("batch size must be at least 1 (got \(r))") }
            return r
        }
        return autoBatch(kvBytesPerSequence: verbalizer.batchKVBytes(sequences: maxAutoBatch, options: options), items: items)
    }

    /// The batch size for a reconstructor: `requested`, or automatic (KV sized for prompts of `tokens` tokens).
    public static func batchSize(_ requested: Int?, reconstructor: ActivationReconstructor, items: Int, tokens: Int = 512) throws -> Int {
        if let r = requested {
            guard r >= 1 else { throw ModelError.input("batch size must be at least 1 (got \(r))") }
            return r
        }
        let cfg = reconstructor.model.config
        return autoBatch(kvBytesPerSequence: KVCache.bytes(config: cfg, blocks: reconstructor.layers, capacity: min(tokens, cfg.maxPositionEmbeddings), chunk: 256),
                         items: items)
    }

    /// Verbalize vectors: `batch` 1 = one `verbalize` per vector (the reference), else `verbalizeBatch`.
    /// Each result is independent (a bad vector fails alone).
    public static func verbalize(_ verbalizer: ActivationVerbalizer, vectors: [[Float]], options: SamplingOptions, batch: Int,
                                 ignoreStopIds: Bool = false, onEvent: ((BatchDecodeEvent) -> Void)? = nil,
                                 isCancelled: () -> Bool = { false }) throws -> [Result<Verbalization, Error>] {
        guard batch >= 1 else { throw ModelError.input("batch size must be at least 1 (got \(batch))") }
        if batch > 1 {
            return try verbalizer.verbalizeBatch(vectors, options: options, batch: batch, ignoreStopIds: ignoreStopIds,
                                                 onEvent: onEvent, isCancelled: isCancelled)
        }
        try options.validate()
        var out: [Result<Verbalization, Error>] = []
        for (i, v) in vectors.enumerated() {
            if isCancelled() { throw NLAError.cancelled }
            onEvent?(.started(index: i, slot: 0))
            do {
                let r = ignoreStopIds ? try verbalizer.verbalizeIgnoringStops(v, options: options)
                                      : try verbalizer.verbalize(v, options: options)
                for id in r.ids { onEvent?(.token(index: i, id: id, margin: .nan)) }
                out.append(.success(r))
                onEvent?(.finished(index: i, DecodeOutcome(ids: r.ids, stoppedOnStopId: r.stoppedOnEOS)))
            } catch {
                out.append(.failure(error))
                onEvent?(.failed(index: i, error))
            }
        }
        return out
    }

    /// Reconstruct explanations: `batch` 1 = one `reconstruct` each (the reference), else `reconstructBatch`.
    public static func reconstruct(_ reconstructor: ActivationReconstructor, explanations: [String], batch: Int,
                                   onDone: ((Int) -> Void)? = nil, isCancelled: () -> Bool = { false }) throws -> [Result<[Float], Error>] {
        guard batch >= 1 else { throw ModelError.input("batch size must be at least 1 (got \(batch))") }
        if batch > 1 {
            return try reconstructor.reconstructBatch(explanations, batch: batch, onDone: onDone, isCancelled: isCancelled)
        }
        var out: [Result<[Float], Error>] = []
        for (i, e) in explanations.enumerated() {
            if isCancelled() { throw NLAError.cancelled }
            out.append(Result { try reconstructor.reconstruct(e) })
            onDone?(i)
        }
        return out
    }

    /// Run the whole pipeline. `onBatch` reports the batch size chosen (before the AV runs).
    public static func explain(_ req: ExplainRequest, progress: ((ExplainProgress) -> Void)? = nil,
                               onBatch: ((_ batch: Int, _ automatic: Bool, _ kvBytesPerSequence: Int, _ sharedKVBytes: Int) -> Void)? = nil,
                               isCancelled: () -> Bool = { false }) throws -> ExplainReport {
        try req.sampling.validate()
        guard req.maxReplyTokens >= 0 else { throw ModelError.input("max reply tokens must be >= 0") }
        try NLAScore.validateBaseline(req.fveBaseline)
        let avSidecar = try NLASidecar.load(files: try ModelFiles.open(req.av, tensors: false))
        let arSidecar = try NLASidecar.load(files: try ModelFiles.open(req.ar, tensors: false))
        guard let layer = avSidecar.extractionLayer ?? arSidecar.extractionLayer else {
            throw ModelError.input("\(avSidecar.file): no extraction layer (K) in the AV or AR sidecar")
        }
        // One model's weights at a time: capture, then verbalize, then reconstruct.
        var start = Date()
        progress?(ExplainProgress(phase: .capture, done: 0, total: 1, tokens: 0, elapsed: 0))
        let captured: CapturedActivations
        do {
            let targetModel = try LanguageModel(directory: req.target)
            captured = try ActivationCapture.capture(target: targetModel, layer: layer, prompt: req.prompt, chat: req.chat,
                                                     reply: req.reply, maxReplyTokens: req.reply == nil ? req.maxReplyTokens : 0)
        }
        progress?(ExplainProgress(phase: .capture, done: 1, total: 1, tokens: 0, elapsed: Date().timeIntervalSince(start)))
        if isCancelled() { throw NLAError.cancelled }
        let picked = try req.positions.resolve(count: captured.ids.count)
        let verbal: [Result<Verbalization, Error>]
        let batch: Int
        do {
            // A remote AV needs only the prompt embeddings and the tokenizer here: one block is loaded.
            let verbalizer = try ActivationVerbalizer(path: req.av, promptTemplate: req.avPrompt, blocks: req.backend == nil ? nil : 1)
            if let backend = req.backend {
                if let b = req.batch, b < 1 { throw ModelError.input("batch size must be at least 1 (got \(b))") }
                batch = req.batch ?? backend.batchSize(items: picked.count, verbalizer: verbalizer)
                onBatch?(batch, req.batch == nil, 0, 0)
            } else {
                batch = try batchSize(req.batch, verbalizer: verbalizer, options: req.sampling, items: picked.count)
                let cfg = verbalizer.model.config
                // Batch 1 runs Gemma3Session (full-length KV on every block); batched runs ring KV on sliding blocks.
                // Batched sequences hold the positions after the shared prefix, whose KV is stored once.
                let kv = batch == 1 ? verbalizer.batchCapacity(req.sampling) * cfg.kvDim * 2 * 4 * cfg.numHiddenLayers
                                    : verbalizer.batchKVBytes(sequences: batch, options: req.sampling)
                onBatch?(batch, req.batch == nil, kv, batch == 1 ? 0 : verbalizer.sharedPrefixKVBytes)
            }
            start = Date()
            var done = 0, tokens = 0, decodeTokens = 0, decodeSeconds = 0.0
            progress?(ExplainProgress(phase: .verbalize, done: 0, total: picked.count, tokens: 0, elapsed: 0))
            let onEvent: (BatchDecodeEvent) -> Void = { e in
                switch e {
                case .token: tokens += 1
                case .step(let n, let rows, let secs) where n == rows:
                    decodeTokens += n; decodeSeconds += secs
                case .finished, .failed:
                    done += 1
                    progress?(ExplainProgress(phase: .verbalize, done: done, total: picked.count, tokens: tokens,
                                              elapsed: Date().timeIntervalSince(start), decodeTokens: decodeTokens, decodeSeconds: decodeSeconds))
                default: break
                }
            }
            let vectors = picked.map { captured.vectors[$0] }
            if let backend = req.backend {
                try req.sampling.validate()
                verbal = try backend.verbalize(verbalizer, vectors: vectors, options: req.sampling, batch: batch,
                                               ignoreStopIds: req.ignoreStopIds, onEvent: onEvent, isCancelled: isCancelled)
            } else {
                verbal = try verbalize(verbalizer, vectors: vectors, options: req.sampling, batch: batch,
                                       ignoreStopIds: req.ignoreStopIds, onEvent: onEvent, isCancelled: isCancelled)
            }
        }
        let reconstructor = try ActivationReconstructor(path: req.ar)
        let baseline = req.fveBaseline ?? FVEBaselines.builtIn(dModel: reconstructor.sidecar.dModel, layer: layer)
        let okIndices = verbal.indices.filter { if case .success = verbal[$0] { return true } else { return false } }
        let texts = okIndices.map { i -> String in let v = try! verbal[i].get(); return v.explanation ?? v.text }
        start = Date()
        var scored = 0
        progress?(ExplainProgress(phase: .score, done: 0, total: texts.count, tokens: 0, elapsed: 0))
        let preds = try reconstruct(reconstructor, explanations: texts, batch: batch, onDone: { _ in
            scored += 1
            progress?(ExplainProgress(phase: .score, done: scored, total: texts.count, tokens: 0, elapsed: Date().timeIntervalSince(start)))
        }, isCancelled: isCancelled)
        var predByIndex: [Int: Result<[Float], Error>] = [:]
        for (k, i) in okIndices.enumerated() { predByIndex[i] = preds[k] }

        var rows: [ExplainPosition] = []
        var stats: [(pos: Int, score: NLAScore)] = []
        for (i, p) in picked.enumerated() {
            var row = ExplainPosition(position: p, segment: p < captured.promptLength ? "PROMPT" : "REPLY", token: captured.tokens[p],
                                      id: captured.ids[p], norm: captured.norms[p], mseNrm: nil, cos: nil, fveNrm: nil,
                                      explanation: nil, text: nil, warnings: [], error: nil)
            switch verbal[i] {
            case .failure(let e):
                row.error = "\(e)"
            case .success(let v):
                row.explanation = v.explanation ?? v.text
                row.text = v.text
                row.warnings = v.warnings
                do {
                    let pred = try predByIndex[i]!.get()
                    let score = try reconstructor.score(prediction: pred, gold: captured.vectors[p], fveBaseline: baseline)
                    row.mseNrm = score.mseNrm; row.cos = score.cos; row.fveNrm = score.fveNrm
                    stats.append((p, score))
                } catch {
                    row.error = "\(error)"
                }
            }
            rows.append(row)
        }
        return ExplainReport(target: req.target, av: req.av, ar: req.ar, layer: layer, promptLength: captured.promptLength,
                             ids: captured.ids, positions: rows,
                             summary: ExplainSummaryStats(scores: stats.filter { $0.pos >= 4 }.map(\.score), baseline: baseline),
                             fveBaseline: baseline, batch: batch)
    }
}
