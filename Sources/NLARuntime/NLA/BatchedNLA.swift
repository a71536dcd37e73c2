// Batched AV and AR (issue 8).
//
// AV: the prompt rows before the injection site do not depend on the vector (causal attention), so
// their KV is computed once per loaded AV (`prefixKV`, keyed on the prefix ids) and read in place by
// every sequence (stored once, not per sequence); each vector runs only the rows from the injection
// site on, then decodes with the others (continuous batching, `BatchDecoder`).
// AR: the ids every explanation's prompt shares with the template's fixed prefix
// (`Summary of the following text: <text>`) are computed once per loaded AR (`prefixKV`) and read in
// place; each explanation runs only its own rows, many explanations per forward. Sharing is by exact id prefix: never across different inputs.

import Foundation

extension ActivationVerbalizer {
    /// Rows of the prompt before the injection site (the part every vector shares).
    public var sharedPrefixLength: Int { injectionPosition }

    /// Rows per forward pass of the AV batch. The AV prefills only each vector's prompt tail (the rows from
    /// the injection site on, ~20) and then decodes one row per sequence, so 64 rows keep the weight reuse
    /// of a GEMM while the per-row scratch (~36 KB for Gemma 3 270M, ~300 KB at 27B) stays small: the AV's
    /// decode is where a run's memory peaks.
    public static let batchRows = 64

    /// Sequence capacity of the AV batch at these options.
    public func batchCapacity(_ options: SamplingOptions) -> Int {
        min(promptIds.count + max(options.maxNewTokens, 0), model.config.maxPositionEmbeddings)
    }

    /// KV bytes per sequence of `makeBatch(sequences:options:)`: the positions after the shared prefix
    /// (read in place from one stored copy, `sharedPrefixKVBytes`) or, with `sharePrefix: false`, all.
    public func batchKVBytes(sequences: Int, options: SamplingOptions, sharePrefix: Bool = true) -> Int {
        let g = Gemma3Batch.geometry(maxSequences: max(1, sequences), capacity: batchCapacity(options), maxRows: Self.batchRows)
        return KVCache.bytes(config: model.config, blocks: model.model.loadedBlocks, capacity: batchCapacity(options), chunk: g.chunk,
                             shared: sharePrefix ? injectionPosition : 0)
    }

    /// Bytes of the stored shared-prefix KV all sequences of a batch read (once per loaded AV and prompt).
    public var sharedPrefixKVBytes: Int {
        KVCache.bytes(config: model.config, blocks: model.model.loadedBlocks, capacity: injectionPosition,
                      chunk: min(256, injectionPosition))
    }

    /// Build the batch runner for `sequences` vectors at these options.
    public func makeBatch(sequences: Int, options: SamplingOptions, maxRows: Int = batchRows) throws -> Gemma3Batch {
        try Gemma3Batch(model: model.model, maxSequences: max(1, sequences), capacity: batchCapacity(options), maxRows: maxRows)
    }

    /// The ids whose KV every vector shares (the prompt before the injection site).
    public var sharedPrefixIds: [Int] { Array(promptIds[0..<injectionPosition]) }

    /// The shared prefix's KV freshly computed on `batch` (the rows 0..<injectionPosition; the reference
    /// the stored `prefixKV` entry is checked against).
    public func prefixCache(on batch: Gemma3Batch) throws -> KVCache {
        let p = injectionPosition
        let cache = batch.makeCache()
        let e = try model.model.embed(Array(promptIds[0..<p]))
        try e.withUnsafeBufferPointer { _ = try batch.forward([.init(cache: cache, rows: p)], embeddings: $0.baseAddress!, output: .none) }
        return cache
    }

    /// The shared prefix's KV in `batch`'s geometry, copied from this AV's stored entry (computed on the
    /// first call, reused by every later one).
    public func storedPrefixCache(on batch: Gemma3Batch) throws -> KVCache {
        let stored = try prefixKV.cache(for: sharedPrefixIds, model: model.model)
        let cache = batch.makeCache()
        try cache.copyPrefix(from: stored, count: injectionPosition)
        return cache
    }

    /// Verbalize many vectors together: up to `batch` sequences per forward, each result independent
    /// (a bad vector fails alone). `sharePrefix: false` prefills each vector's whole prompt.
    /// `ignoreStopIds` decodes exactly `maxNewTokens` tokens (benchmarks). Events report starts, tokens,
    /// finishes and failures by vector index.
    public func verbalizeBatch(_ vectors: [[Float]], options: SamplingOptions, batch: Int, sharePrefix: Bool = true,
                               ignoreStopIds: Bool = false, onEvent: ((BatchDecodeEvent) -> Void)? = nil,
                               isCancelled: () -> Bool = { false }) throws -> [Result<Verbalization, Error>] {
        try options.validate()
        guard batch >= 1 else { throw ModelError.input("batch size must be at least 1") }
        var results = [Result<Verbalization, Error>?](repeating: nil, count: vectors.count)
        guard !vectors.isEmpty else { return [] }
        let d = dModel, p = injectionPosition
        // Every sequence reads the stored entry in place: the prefix KV exists once, whatever the batch.
        // The prefix (when not stored yet) is computed before the batch exists, so the prefix pass's
        // scratch is gone before the batch's caches and scratch are made (a lower peak).
        let prefix = sharePrefix ? try prefixKV.cache(for: sharedPrefixIds, model: model.model) : nil
        let runner = try makeBatch(sequences: min(batch, vectors.count), options: options)
        let tail = try model.model.embed(Array(promptIds[(sharePrefix ? p : 0)...]))
        let site = sharePrefix ? 0 : p
        let stops = ignoreStopIds ? Set<Int>() : stopIds
        try BatchDecoder.run(batch: runner, count: vectors.count, shared: prefix.map { ($0, p) }, prepare: { i in
            let v = vectors[i]
            try validate(v)
            var rows = tail
            let scaled = NLAVectorMath.scaledForInjection(v, scale: injectionScale)
            rows.replaceSubrange((site * d)..<((site + 1) * d), with: scaled)
            return DecodeJob(rows: rows, options: options, stopIds: stops)
        }, onEvent: { e in
            switch e {
            case .finished(let i, let o):
                results[i] = .success(verbalization(ids: o.ids, stopped: o.stoppedOnStopId, maxNewTokens: options.maxNewTokens))
            case .failed(let i, let err):
                results[i] = .failure(err)
            default: break
            }
            onEvent?(e)
        }, isCancelled: isCancelled)
        return results.map { $0! }
    }
}

extension ActivationReconstructor {
    /// The template's fixed prefix (text before `{explanation}`) as ids with BOS, nil when the template
    /// has nothing before the explanation.
    public func sharedPrefixIds() -> [Int]? {
        guard let t = sidecar.arTemplate, let r = t.range(of: "{explanation}") else { return nil }
        guard let text = try? NLAPrompt.format(String(t[..<r.lowerBound]), [:], file: sidecar.file), !text.isEmpty else { return nil }
        return model.tokenizer.encode(text, addSpecialTokens: true)
    }

    /// Reconstruct many explanations: up to `batch` prompts per forward (the AR's fixed prefix computed
    /// once and shared by exact id prefix unless `sharePrefix` is false). Each result is independent.
    public func reconstructBatch(_ explanations: [String], batch: Int, sharePrefix: Bool = true,
                                 onDone: ((Int) -> Void)? = nil, isCancelled: () -> Bool = { false }) throws -> [Result<[Float], Error>] {
        guard batch >= 1 else { throw ModelError.input("batch size must be at least 1") }
        var results = [Result<[Float], Error>?](repeating: nil, count: explanations.count)
        var prompts: [(index: Int, ids: [Int])] = []
        for (i, e) in explanations.enumerated() {
            do { prompts.append((i, try promptIds(for: e))) } catch { results[i] = .failure(error); onDone?(i) }
        }
        if !prompts.isEmpty {
            let d = dModel
            let capacity = prompts.map(\.ids.count).max()!
            var prefix: (cache: KVCache, ids: [Int])? = nil
            if sharePrefix, let pids = sharedPrefixIds(), pids.count < capacity {
                prefix = (try prefixKV.cache(for: pids, model: model.model), pids)
            }
            let runner = try Gemma3Batch(model: model.model, maxSequences: min(batch, prompts.count), capacity: capacity)
            // Per slot, made on first use: a cache reading the whole stored prefix in place (the usual case:
            // the prompt starts with the template's prefix and goes on), and a plain one for prompts that
            // share only part of it (their shared part is copied).
            var readers = [KVCache?](repeating: nil, count: runner.maxSequences)
            var plain = [KVCache?](repeating: nil, count: runner.maxSequences)
            var start = 0
            while start < prompts.count {
                if isCancelled() { throw NLAError.cancelled }
                let group = Array(prompts[start..<min(start + runner.maxSequences, prompts.count)])
                var segments: [Gemma3Batch.Segment] = []
                var emb: [Float] = []
                for (s, item) in group.enumerated() {
                    var shared = 0
                    if let prefix {
                        while shared < prefix.ids.count && shared < item.ids.count - 1 && prefix.ids[shared] == item.ids[shared] { shared += 1 }
                    }
                    let cache: KVCache
                    if let prefix, shared == prefix.ids.count {
                        if readers[s] == nil { readers[s] = try runner.makeCache(sharing: prefix.cache, count: shared) }
                        cache = readers[s]!
                        cache.reset()
                    } else {
                        if plain[s] == nil { plain[s] = runner.makeCache() }
                        cache = plain[s]!
                        cache.reset()
                        if let prefix { try cache.copyPrefix(from: prefix.cache, count: shared) }
                    }
                    emb += try model.model.embed(Array(item.ids[shared...]))
                    segments.append(.init(cache: cache, rows: item.ids.count - shared))
                }
                let hidden = try emb.withUnsafeBufferPointer { try runner.forward(segments, embeddings: $0.baseAddress!, output: .lastHidden) }
                for (s, item) in group.enumerated() {
                    let h = Array(UnsafeBufferPointer(start: hidden.baseAddress! + s * d, count: d))
                    results[item.index] = .success(valueHead.apply(h))
                    onDone?(item.index)
                }
                start += group.count
            }
        }
        return results.map { $0! }
    }
}
