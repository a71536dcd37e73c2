// The KV of a fixed id prefix, computed once per loaded model and kept (issue 8: "compute it once per
// loaded AV"). The AV's prompt rows before the injection site and the AR's template prefix do not depend
// on the vector or the explanation (causal attention), so their KV is the same for every call. Entries are
// keyed exactly on the prefix ids: a different prompt (a custom `--av-prompt`, another template) gets its
// own entry, never another's KV.
//
// A stored cache holds every prefix position it can (capacity = the prefix length). Batch sequences read
// it in place (`Gemma3Batch.makeCache(sharing:count:)`: one copy for all of them), or copy it into a
// cache of any geometry (`KVCache.copyPrefix`). The prefix is computed in one pass of its rows (chunked at 256 rows, like the batch
// runners), so the result is the one a runner's own prefix pass gives.

import Foundation

public final class PrefixKVStore: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [(ids: [Int], cache: KVCache)] = []
    private var computedCount = 0
    private var reusedCount = 0
    /// Entries kept (least recently used dropped first).
    public let limit: Int

    public init(limit: Int = 4) { self.limit = max(1, limit) }

    /// Prefix KVs computed (a forward over the prefix rows) since this store was made.
    public var computations: Int { lock.withLock { computedCount } }
    /// Calls answered from a stored entry.
    public var reuses: Int { lock.withLock { reusedCount } }
    /// Prefixes held now.
    public var count: Int { lock.withLock { entries.count } }

    /// Forget every entry (the next call computes again).
    public func removeAll() { lock.withLock { entries.removeAll() } }

    /// The KV of `ids` on `model` (all its loaded blocks): stored, or computed now and stored.
    /// The returned cache must be treated as read-only (share it, or copy from it with `copyPrefix`).
    public func cache(for ids: [Int], model: Gemma3Model) throws -> KVCache {
        guard !ids.isEmpty else { throw ModelError.input("an empty prefix has no KV to share") }
        return try lock.withLock {
            if let i = entries.firstIndex(where: { $0.ids == ids }) {
                let e = entries.remove(at: i)
                entries.append(e)
                reusedCount += 1
                return e.cache
            }
            let cache = try Self.compute(ids: ids, model: model)
            entries.append((ids, cache))
            if entries.count > limit { entries.removeFirst(entries.count - limit) }
            computedCount += 1
            return cache
        }
    }

    /// A fresh computation of the KV of `ids` (no store involved).
    public static func compute(ids: [Int], model: Gemma3Model) throws -> KVCache {
        let runner = try Gemma3Batch(model: model, maxSequences: 1, capacity: ids.count)
        let cache = runner.makeCache()
        let e = try model.embed(ids)
        try e.withUnsafeBufferPointer { _ = try runner.forward([.init(cache: cache, rows: ids.count)], embeddings: $0.baseAddress!, output: .none) }
        return cache
    }
}
