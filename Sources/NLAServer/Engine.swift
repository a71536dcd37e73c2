// The server's engine: one compute thread that owns every model. Generation requests (chat, /generate,
// the AV of explain) become jobs of a lane (one per generative model); each lane decodes its active jobs
// together, one `Gemma3Batch` forward per step, and a job that finishes frees its slot for the next waiting
// job at the next step (continuous batching across concurrent requests). Other model work (target capture,
// AR reconstruction) runs as tasks between steps, so a long explain never blocks a chat.
//
// Prefix cache: after a job's prompt is prefilled its KV is kept (up to `prefixEntries` per lane, LRU) with
// the bytes of its input rows; a new job copies the KV of the longest run of leading rows that are
// byte-identical to an entry's (at most all but its last row) and runs only the rest. Identical rows share
// KV; rows that differ in any bit never do (the comparison is on the bytes, not on a hash).

import Foundation
import NLARuntime
import NLAWire

/// The outcome of one generation job.
public struct JobResult: Sendable {
    /// Generated ids, ending with the stop id when generation stopped on one.
    public var ids: [Int]
    public var stoppedOnStopId: Bool
    public var promptTokens: Int
    /// Leading prompt rows whose KV came from the prefix cache.
    public var cachedTokens: Int
    /// Generation stopped because the job's text check matched (a stop string).
    public var stoppedOnText = false
}

/// Where a job reports: tokens as they come, then exactly one finish. Thread-safe.
public final class JobSink: @unchecked Sendable {
    private let lock = NSLock()
    private var cancelledFlag = false
    private var finished = false
    let deadline: Date
    let onToken: @Sendable (Int) -> Void
    let onFinish: @Sendable (Result<JobResult, Error>) -> Void

    init(deadline: Date, onToken: @escaping @Sendable (Int) -> Void = { _ in }, onFinish: @escaping @Sendable (Result<JobResult, Error>) -> Void) {
        self.deadline = deadline; self.onToken = onToken; self.onFinish = onFinish
    }

    public func cancel() { lock.lock(); cancelledFlag = true; lock.unlock() }
    var isCancelled: Bool { lock.lock(); defer { lock.unlock() }; return cancelledFlag }

    func finish(_ r: Result<JobResult, Error>) {
        lock.lock()
        let first = !finished
        finished = true
        lock.unlock()
        if first { onFinish(r) }
    }

    /// Why this job must stop now (cancelled or past its deadline), nil to go on.
    func stopReason(timeout: Double) -> Error? {
        if isCancelled { return EngineError.cancelled }
        if Date() > deadline { return APIError(504, "request timed out after \(Int(timeout)) s") }
        return nil
    }
}

/// Cancellation and deadline of one engine task (capture, AR).
public final class TaskControl: @unchecked Sendable {
    private let lock = NSLock()
    private var cancelled = false
    let deadline: Date
    let timeout: Double

    init(deadline: Date, timeout: Double) { self.deadline = deadline; self.timeout = timeout }

    func cancel() { lock.lock(); cancelled = true; lock.unlock() }

    /// Why the task must stop (cancelled, past the deadline), nil to go on.
    var stopReason: Error? {
        lock.lock(); let c = cancelled; lock.unlock()
        if c { return EngineError.cancelled }
        if Date() > deadline { return APIError(504, "request timed out after \(Int(timeout)) s") }
        return nil
    }

    var isStopped: Bool { stopReason != nil }
}

public enum EngineError: Error, CustomStringConvertible {
    case cancelled
    public var description: String { "request cancelled" }
}

struct GenJob {
    var rows: [Float]        // [T, d], scaled like Gemma3Model.embed (empty: embed `ids` on the engine thread)
    var ids: [Int]? = nil
    var options: SamplingOptions
    var stopIds: Set<Int>
    var sink: JobSink
    /// Checked after every token that is not a stop id, on the engine thread, with the ids so far: true ends the
    /// job (stop strings).
    var stopCheck: (@Sendable ([Int]) -> Bool)? = nil
}

/// One generative model's continuous batch.
final class Lane {
    let name: String
    let lm: LanguageModel
    let batch: Gemma3Batch
    let d: Int
    let vocab: Int
    private var caches: [KVCache]
    private struct Active {
        var job: GenJob
        var sampler: Sampler
        var out: [Int]
        var pending: [Float]
        var promptTokens: Int
        var cachedTokens: Int
        var prefilled: Bool
    }
    private var slots: [Active?]
    /// Jobs submitted but not yet seen by the engine thread (guarded by the engine lock).
    var incoming: [GenJob] = []
    /// Jobs waiting for a slot (engine thread only).
    var waiting: [GenJob] = []
    /// Counters published under the engine lock after each step.
    var published = LaneCounters()
    private struct PrefixEntry { var rows: [Float]; var cache: KVCache; var lastUse: UInt64 }
    private var prefixes: [PrefixEntry] = []
    let prefixEntries: Int
    private var useClock: UInt64 = 0
    let timeout: Double
    // Counters (read under the engine lock via `stats`).
    var prefixHits = 0, prefixHitTokens = 0, steps = 0, tokens = 0

    init(name: String, lm: LanguageModel, maxSequences: Int, context: Int, prefixEntries: Int, timeout: Double) throws {
        self.name = name
        self.lm = lm
        let cap = min(context, lm.config.maxPositionEmbeddings)
        let b = try Gemma3Batch(model: lm.model, maxSequences: maxSequences, capacity: cap)
        batch = b
        d = lm.config.hiddenSize
        vocab = lm.config.vocabSize
        caches = (0..<maxSequences).map { _ in b.makeCache() }
        slots = Array(repeating: nil, count: maxSequences)
        self.prefixEntries = prefixEntries
        self.timeout = timeout
    }

    var capacity: Int { batch.capacity }
    var activeCount: Int { slots.reduce(0) { $0 + ($1 == nil ? 0 : 1) } }
    var busy: Bool { activeCount > 0 || !waiting.isEmpty }
    var counters: LaneCounters {
        LaneCounters(waiting: waiting.count, active: activeCount, prefixEntries: prefixes.count, prefixHits: prefixHits,
                     prefixHitTokens: prefixHitTokens, steps: steps, tokens: tokens)
    }
    var prefixCount: Int { prefixes.count }

    /// Leading rows of `a` byte-identical to `b`'s.
    private static func commonRows(_ a: [Float], _ b: [Float], d: Int) -> Int {
        let n = min(a.count, b.count) / d
        return a.withUnsafeBytes { pa in
            b.withUnsafeBytes { pb in
                var r = 0
                let rowBytes = d * MemoryLayout<Float>.size
                while r < n, memcmp(pa.baseAddress! + r * rowBytes, pb.baseAddress! + r * rowBytes, rowBytes) == 0 { r += 1 }
                return r
            }
        }
    }

    private func admit(_ job: GenJob, slot s: Int) {
        let cache = caches[s]
        cache.reset()
        let t = job.rows.count / d
        var shared = 0
        if prefixEntries > 0 {
            var best = -1, bestN = 0
            for (k, e) in prefixes.enumerated() {
                let n = min(Lane.commonRows(job.rows, e.rows, d: d), t - 1)
                if n > bestN { best = k; bestN = n }
            }
            if best >= 0 {
                do {
                    try cache.copyPrefix(from: prefixes[best].cache, count: bestN)
                    shared = bestN
                    useClock += 1
                    prefixes[best].lastUse = useClock
                    prefixHits += 1; prefixHitTokens += bestN
                } catch {
                    cache.reset()
                    shared = 0
                }
            }
        }
        slots[s] = Active(job: job, sampler: Sampler(options: job.options), out: [], pending: Array(job.rows[(shared * d)...]),
                          promptTokens: t, cachedTokens: shared, prefilled: false)
    }

    private func remember(rows: [Float], cache: KVCache) {
        guard prefixEntries > 0, rows.count / d >= 2 else { return }
        // Already covered by an entry holding all these rows: nothing new to keep.
        for e in prefixes where Lane.commonRows(rows, e.rows, d: d) == rows.count / d { return }
        let snap = batch.makeCache()
        do { try snap.copyPrefix(from: cache, count: rows.count / d) } catch { return }
        useClock += 1
        if prefixes.count >= prefixEntries, let victim = prefixes.indices.min(by: { prefixes[$0].lastUse < prefixes[$1].lastUse }) {
            prefixes.remove(at: victim)
        }
        prefixes.append(PrefixEntry(rows: rows, cache: snap, lastUse: useClock))
    }

    func clearPrefixes() { prefixes.removeAll() }

    /// Admit waiting jobs into free slots and run one forward over all active jobs. Returns whether it did work.
    func step() throws -> Bool {
        // Waiting jobs that were cancelled or timed out leave the queue.
        waiting.removeAll { j in
            if let e = j.sink.stopReason(timeout: timeout) { j.sink.finish(.failure(e)); return true }
            return false
        }
        for s in slots.indices where slots[s] == nil && !waiting.isEmpty {
            var job = waiting.removeFirst()
            if job.rows.isEmpty, let ids = job.ids {
                do { job.rows = try lm.model.embed(ids) } catch { job.sink.finish(.failure(error)); continue }
            }
            if job.options.maxNewTokens == 0 {
                job.sink.finish(.success(JobResult(ids: [], stoppedOnStopId: false, promptTokens: job.rows.count / d, cachedTokens: 0)))
                continue
            }
            admit(job, slot: s)
        }
        // Active jobs that were cancelled or timed out free their slots.
        for s in slots.indices {
            if let a = slots[s], let e = a.job.sink.stopReason(timeout: timeout) { a.job.sink.finish(.failure(e)); slots[s] = nil }
        }
        let active = slots.indices.filter { slots[$0] != nil }
        if active.isEmpty { return false }
        var emb: [Float] = []
        var segments: [Gemma3Batch.Segment] = []
        for s in active {
            emb += slots[s]!.pending
            segments.append(.init(cache: caches[s], rows: slots[s]!.pending.count / d))
        }
        // Greedy steps need only each row's argmax: the batch finds it without every logit when it can.
        let greedy = active.allSatisfy { slots[$0]!.sampler.options.temperature == 0 }
        let logits: UnsafeBufferPointer<Float>
        do {
            logits = try emb.withUnsafeBufferPointer {
                try batch.forward(segments, embeddings: $0.baseAddress!, output: greedy ? .lastTop2 : .lastLogits)
            }
        } catch {
            // A failed forward fails the jobs in it (not the server).
            for s in active { slots[s]!.job.sink.finish(.failure(error)); slots[s] = nil }
            return true
        }
        steps += 1
        for (k, s) in active.enumerated() {
            var a = slots[s]!
            let cache = caches[s]
            if !a.prefilled {
                a.prefilled = true
                remember(rows: a.job.rows, cache: cache)
            }
            let tok = greedy ? batch.top2[k].index
                : a.sampler.sample(UnsafeBufferPointer(start: logits.baseAddress! + k * vocab, count: vocab))
            a.out.append(tok)
            tokens += 1
            a.job.sink.onToken(tok)
            let stop = a.job.stopIds.contains(tok)
            let textStop = !stop && (a.job.stopCheck?(a.out) ?? false)
            if stop || textStop || a.out.count >= a.job.options.maxNewTokens || cache.position >= cache.capacity {
                a.job.sink.finish(.success(JobResult(ids: a.out, stoppedOnStopId: stop, promptTokens: a.promptTokens, cachedTokens: a.cachedTokens,
                                                     stoppedOnText: textStop)))
                slots[s] = nil
            } else {
                do {
                    a.pending = try lm.model.embed([tok])
                    slots[s] = a
                } catch {
                    a.job.sink.finish(.failure(error)); slots[s] = nil
                }
            }
        }
        return true
    }
}

struct LaneCounters {
    var waiting = 0, active = 0, prefixEntries = 0, prefixHits = 0, prefixHitTokens = 0, steps = 0, tokens = 0
}

/// Counters for /health.
public struct EngineStats: Sendable {
    public var queued: Int
    public var active: Int
    public var tasks: Int
    public var prefixEntries: Int
    public var prefixHits: Int
    public var prefixHitTokens: Int
    public var steps: Int
    public var tokens: Int
}

/// The compute thread and its lanes. Submission is thread-safe; all model work runs on the one thread.
public final class Engine: @unchecked Sendable {
    private let cond = NSCondition()
    private var lanes: [String: Lane] = [:]
    private var laneOrder: [String] = []
    private var tasks: [() -> Void] = []
    private var stopped = false
    private var thread: Thread?
    public let maxQueue: Int
    public let timeout: Double

    public init(maxQueue: Int, timeout: Double) {
        self.maxQueue = maxQueue
        self.timeout = timeout
    }

    func addLane(_ lane: Lane) {
        cond.lock(); lanes[lane.name] = lane; laneOrder.append(lane.name); cond.unlock()
    }

    func lane(_ name: String) -> Lane? { cond.lock(); defer { cond.unlock() }; return lanes[name] }

    public func start() {
        let t = Thread { [weak self] in self?.loop() }
        t.name = "nla-engine"
        t.stackSize = 8 << 20
        thread = t
        t.start()
    }

    public func stop() {
        cond.lock(); stopped = true; cond.signal(); cond.unlock()
    }

    private var queuedLocked: Int { lanes.values.reduce(0) { $0 + $1.incoming.count + $1.published.waiting } + tasks.count }

    /// Queue generation jobs on a lane (all or none: 429 when the queue would pass `maxQueue`).
    func submit(lane name: String, _ jobs: [GenJob]) throws {
        cond.lock()
        defer { cond.unlock() }
        guard let lane = lanes[name] else { throw APIError(400, "model: no model '\(name)' is loaded") }
        guard queuedLocked + jobs.count <= maxQueue else {
            throw APIError(429, "queue full (\(queuedLocked) waiting, limit \(maxQueue)); retry later")
        }
        lane.incoming += jobs
        cond.signal()
    }

    /// Run `body` on the engine thread between decode steps and return its result.
    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await run { (_: TaskControl) in try body() }
    }

    /// Run `body` on the engine thread between decode steps, cancellable and with the request timeout: a task whose
    /// caller was cancelled (the client went away) or whose deadline passed while it waited is not run; a running one
    /// sees `control.isStopped` (work that checks it, such as the AR batches, stops between steps) and its result is
    /// replaced by the stop reason (cancelled, or 504).
    func run<T: Sendable>(_ body: @escaping @Sendable (TaskControl) throws -> T) async throws -> T {
        let control = TaskControl(deadline: Date().addingTimeInterval(timeout), timeout: timeout)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, Error>) in
                cond.lock()
                if queuedLocked + 1 > maxQueue {
                    let n = queuedLocked
                    cond.unlock()
                    c.resume(throwing: APIError(429, "queue full (\(n) waiting, limit \(maxQueue)); retry later"))
                    return
                }
                tasks.append {
                    if let e = control.stopReason { c.resume(throwing: e); return }
                    let r = Result { try body(control) }
                    if let e = control.stopReason { c.resume(throwing: e); return }
                    c.resume(with: r)
                }
                cond.signal()
                cond.unlock()
            }
        } onCancel: {
            control.cancel()
        }
    }

    public var stats: EngineStats {
        cond.lock(); defer { cond.unlock() }
        var s = EngineStats(queued: queuedLocked, active: 0, tasks: tasks.count, prefixEntries: 0, prefixHits: 0, prefixHitTokens: 0, steps: 0, tokens: 0)
        for l in lanes.values.map(\.published) {
            s.active += l.active; s.prefixEntries += l.prefixEntries; s.prefixHits += l.prefixHits
            s.prefixHitTokens += l.prefixHitTokens; s.steps += l.steps; s.tokens += l.tokens
        }
        return s
    }

    private func loop() {
        var busy = false
        while true {
            cond.lock()
            while !stopped && tasks.isEmpty && !busy && !lanes.values.contains(where: { !$0.incoming.isEmpty }) { cond.wait() }
            if stopped { cond.unlock(); return }
            let task = tasks.isEmpty ? nil : tasks.removeFirst()
            let order = laneOrder.compactMap { lanes[$0] }
            for lane in order where !lane.incoming.isEmpty {
                lane.waiting += lane.incoming
                lane.incoming = []
                lane.published.waiting = lane.waiting.count
            }
            cond.unlock()
            task?()
            busy = false
            for lane in order where lane.busy {
                _ = try? lane.step()
                let c = lane.counters
                cond.lock(); lane.published = c; cond.unlock()
                busy = busy || lane.busy
            }
        }
    }
}
