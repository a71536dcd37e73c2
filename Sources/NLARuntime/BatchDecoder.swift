// Continuous batching over a `Gemma3Batch` (issue 8): up to `maxSequences` sequences decode together,
// one forward per step (each sequence's pending rows: its prompt rows on its first step, then the
// token it just sampled). When a sequence stops (stop id or its cap) its slot takes the next waiting
// job at the following step; jobs start in index order. A job that cannot be prepared (bad input)
// fails alone; the others run.

import Foundation
import SIMDKernels

/// One generation request for `BatchDecoder`.
public struct DecodeJob {
    /// Input embedding rows after the shared prefix, [n, d], scaled like `Gemma3Model.embed`.
    public var rows: [Float]
    /// A cache whose first `prefixLength` positions are copied before `rows` run (any geometry that still
    /// holds them). A batch-wide prefix read in place is `BatchDecoder.run(shared:)` instead.
    public var prefix: KVCache?
    public var prefixLength: Int
    public var options: SamplingOptions
    public var stopIds: Set<Int>

    public init(rows: [Float], prefix: KVCache? = nil, prefixLength: Int = 0, options: SamplingOptions, stopIds: Set<Int>) {
        self.rows = rows; self.prefix = prefix; self.prefixLength = prefixLength; self.options = options; self.stopIds = stopIds
    }
}

/// The generated ids of one job, ending with the stop id when it stopped on one.
public struct DecodeOutcome: Sendable, Equatable {
    public var ids: [Int]
    public var stoppedOnStopId: Bool
    public init(ids: [Int], stoppedOnStopId: Bool) { self.ids = ids; self.stoppedOnStopId = stoppedOnStopId }
}

public enum BatchDecodeEvent {
    /// Job `index` took slot `slot`.
    case started(index: Int, slot: Int)
    /// Job `index` sampled `id`; `margin` is the top-2 logit margin of that step.
    case token(index: Int, id: Int, margin: Float)
    case finished(index: Int, DecodeOutcome)
    case failed(index: Int, Error)
    /// One forward pass over `sequences` sequences and `rows` new rows finished in `seconds`.
    case step(sequences: Int, rows: Int, seconds: Double)
}

public enum BatchDecoder {
    /// Run jobs 0..<count (`prepare(i)` builds job i when a slot frees up). Throws only for errors that
    /// concern the whole batch (cancellation, a failed forward, an unusable shared prefix).
    /// `shared`: every sequence reads positions 0..<count from this cache in place (stored once for the
    /// batch; jobs then give only the rows after it and no `prefix`).
    public static func run(batch: Gemma3Batch, count: Int, shared: (cache: KVCache, count: Int)? = nil,
                           prepare: (Int) throws -> DecodeJob,
                           onEvent: (BatchDecodeEvent) -> Void, isCancelled: () -> Bool = { false }) throws {
        let model = batch.model, d = model.config.hiddenSize, vocab = model.config.vocabSize
        guard batch.hasLogits else { throw ModelError.input("decoding needs all \(model.config.numHiddenLayers) blocks loaded") }
        let slotsCount = min(batch.maxSequences, max(count, 1))
        let caches = try (0..<slotsCount).map { _ in
            try shared.map { try batch.makeCache(sharing: $0.cache, count: $0.count) } ?? batch.makeCache()
        }
        struct Active {
            var index: Int
            var sampler: Sampler
            var out: [Int]
            var pending: [Float]
            var maxNew: Int
            var stops: Set<Int>
        }
        var slots = [Active?](repeating: nil, count: slotsCount)
        var next = 0
        var emb: [Float] = []
        while true {
            if isCancelled() { throw NLAError.cancelled }
            for s in 0..<slotsCount where slots[s] == nil {
                while next < count {
                    let i = next
                    next += 1
                    do {
                        let job = try prepare(i)
                        try job.options.validate()
                        guard !job.rows.isEmpty, job.rows.count % d == 0 else {
                            throw ModelError.input("job \(i): input rows are not a non-empty multiple of d = \(d)")
                        }
                        let cache = caches[s]
                        cache.reset()
                        if let pre = job.prefix {
                            guard shared == nil else { throw ModelError.input("job \(i): a copied prefix in a batch that shares one") }
                            try cache.copyPrefix(from: pre, count: job.prefixLength)
                        }
                        let n = job.rows.count / d
                        guard cache.position + n <= cache.capacity else {
                            throw ModelError.input("\(cache.position + n) tokens exceed the context of \(cache.capacity) positions")
                        }
                        onEvent(.started(index: i, slot: s))
                        if job.options.maxNewTokens == 0 {
                            onEvent(.finished(index: i, DecodeOutcome(ids: [], stoppedOnStopId: false)))
                            continue
                        }
                        slots[s] = Active(index: i, sampler: Sampler(options: job.options), out: [], pending: job.rows,
                                          maxNew: job.options.maxNewTokens, stops: job.stopIds)
                        break
                    } catch {
                        onEvent(.failed(index: i, error))
                    }
                }
            }
            let active = (0..<slotsCount).filter { slots[$0] != nil }
            if active.isEmpty { break }
            emb.removeAll(keepingCapacity: true)
            var segments: [Gemma3Batch.Segment] = []
            for s in active {
                emb += slots[s]!.pending
                segments.append(.init(cache: caches[s], rows: slots[s]!.pending.count / d))
            }
            // A step where every sequence decodes greedily needs only the top 2 of each logits row (the
            // argmax and the margin): the batch finds them without computing every logit when it can.
            let greedy = active.allSatisfy { slots[$0]!.sampler.options.temperature == 0 }
            let t0 = Date()
            let logits = try emb.withUnsafeBufferPointer {
                try batch.forward(segments, embeddings: $0.baseAddress!, output: greedy ? .lastTop2 : .lastLogits)
            }
            onEvent(.step(sequences: active.count, rows: emb.count / d, seconds: Date().timeIntervalSince(t0)))
            for (k, s) in active.enumerated() {
                var a = slots[s]!
                let tok: Int, margin: Float
                if greedy {
                    let t = batch.top2[k]
                    (tok, margin) = (t.index, t.first - t.second)
                } else {
                    let row = UnsafeBufferPointer(start: logits.baseAddress! + k * vocab, count: vocab)
                    (tok, margin) = (a.sampler.sample(row), topTwoMargin(row))
                }
                a.out.append(tok)
                onEvent(.token(index: a.index, id: tok, margin: margin))
                let cache = caches[s]
                if a.stops.contains(tok) {
                    onEvent(.finished(index: a.index, DecodeOutcome(ids: a.out, stoppedOnStopId: true)))
                    slots[s] = nil
                } else if a.out.count >= a.maxNew || cache.position >= cache.capacity {
                    onEvent(.finished(index: a.index, DecodeOutcome(ids: a.out, stoppedOnStopId: false)))
                    slots[s] = nil
                } else {
                    a.pending = try model.embed([tok])
                    slots[s] = a
                }
            }
        }
    }

    /// Largest minus second-largest logit.
    public static func topTwoMargin(_ row: UnsafeBufferPointer<Float>) -> Float {
        let t = Kernels.top2(row)
        return t.first - t.second
    }
}
