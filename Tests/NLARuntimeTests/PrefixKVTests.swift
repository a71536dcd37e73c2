// The shared-prefix KV computed once per loaded model (issue 8): the AV's prompt rows before the
// injection site and the AR's template prefix are stored on the loaded AV / AR (`prefixKV`, keyed exactly
// on the prefix ids) and reused by every later batched call; on the synthetic trio (SyntheticNLATests.swift).
//   - a second call reuses the entry (the store's counters), with results identical to the first call and
//     to a freshly loaded model's first call, and a stored KV equal bit for bit to a fresh prefix pass;
//   - different prompts (a custom AV prompt; other ids) get their own entries, never another's KV.

import Foundation
import Testing
import NLATestSupport
@testable import NLARuntime

@Suite(.serialized) struct PrefixKVTests {
    /// Every K and V the two caches hold for positions 0..<n, compared bit for bit.
    func sameKV(_ a: KVCache, _ b: KVCache, count n: Int) -> Bool {
        guard a.blocks == b.blocks else { return false }
        for l in 0..<a.blocks {
            for j in 0..<n {
                for value in [false, true] {
                    let x = a.entry(block: l, position: j, value: value), y = b.entry(block: l, position: j, value: value)
                    guard x != nil || y != nil else { continue }
                    guard let x, let y, x.map(\.bitPattern) == y.map(\.bitPattern) else { return false }
                }
            }
        }
        return true
    }

    /// The largest |Δ| between the entries both caches hold for positions 0..<n relative to max(1, max |a|),
    /// or nil when one holds an entry the other lacks.
    func relativeMaxDiff(_ a: KVCache, _ b: KVCache, count n: Int) -> Float? {
        guard a.blocks == b.blocks else { return nil }
        var diff: Float = 0, ref: Float = 1
        for l in 0..<a.blocks {
            for j in 0..<n {
                for value in [false, true] {
                    let x = a.entry(block: l, position: j, value: value), y = b.entry(block: l, position: j, value: value)
                    guard x != nil || y != nil else { continue }
                    guard let x, let y, x.count == y.count else { return nil }
                    for (u, v) in zip(x, y) { diff = max(diff, abs(u - v)); ref = max(ref, abs(u)) }
                }
            }
        }
        return diff / ref
    }

    @Test(arguments: [SynNLAPair.Precision.full, .q8_0])
    func avPrefixKVIsComputedOnceAndReused(_ precision: SynNLAPair.Precision) throws {
        let pair = try SynNLAPair.get()
        let cap = try SynNLAModels.captured.get()
        let vs = [4, 7, 9, 12].map { cap.vectors[$0] }
        let opts = SamplingOptions(maxNewTokens: 10)
        let av = try ActivationVerbalizer(path: pair.avPath(precision))
        #expect(av.prefixKV.computations == 0 && av.prefixKV.reuses == 0)
        let first = try av.verbalizeBatch(vs, options: opts, batch: 3).map { try $0.get().ids }
        #expect(av.prefixKV.computations == 1 && av.prefixKV.reuses == 0)
        let second = try av.verbalizeBatch(vs, options: opts, batch: 2).map { try $0.get().ids }
        let third = try av.verbalizeBatch(Array(vs.reversed()), options: opts, batch: 4).map { try $0.get().ids }
        #expect(av.prefixKV.computations == 1, "the prefix KV was computed again: \(av.prefixKV.computations) times")
        #expect(av.prefixKV.reuses == 2 && av.prefixKV.count == 1)
        #expect(second == first && third == Array(first.reversed()))
        // A freshly loaded AV computes it anew and gets the same explanations.
        let fresh = try ActivationVerbalizer(path: pair.avPath(precision))
        #expect(try fresh.verbalizeBatch(vs, options: opts, batch: 3).map { try $0.get().ids } == first)
        #expect(fresh.prefixKV.computations == 1)
        // The stored KV equals a runner's own prefix pass bit for bit, in every position it holds.
        let runner = try av.makeBatch(sequences: 2, options: opts)
        let stored = try av.storedPrefixCache(on: runner)
        let recomputed = try av.prefixCache(on: runner)
        #expect(stored.position == av.injectionPosition && recomputed.position == av.injectionPosition)
        // Q8_0: bit for bit (integer kernels, each row the same whatever rows come with it). f32 goes through
        // OpenBLAS sgemm, whose rounding is not row-invariant on every CPU (bit-identical on the Sapphire Rapids
        // box, not on an AMD EPYC one, with the same code): the "within f32 tolerance" there.
        if precision == .q8_0 {
            #expect(sameKV(stored, recomputed, count: av.injectionPosition), "stored prefix KV differs from a fresh computation")
        } else {
            let d = relativeMaxDiff(stored, recomputed, count: av.injectionPosition)
            #expect(d != nil && d! <= 1e-5, "stored prefix KV differs from a fresh computation: relative max|Δ| \(String(describing: d))")
        }
        #expect(av.prefixKV.computations == 1 && av.prefixKV.reuses == 3)
        // Into a runner of another geometry (chunk 5: wrapped sliding rings) the copy keeps what that ring holds.
        let small = try Gemma3Batch(model: av.model.model, maxSequences: 1, capacity: av.promptIds.count + 4, chunk: 5)
        let copied = try av.storedPrefixCache(on: small)
        let fromStore = try av.prefixKV.cache(for: av.sharedPrefixIds, model: av.model.model)
        for l in 0..<small.blocks {
            let held = copied.heldRange(block: l)
            #expect(held.upperBound == av.injectionPosition)
            for j in held {
                #expect(copied.entry(block: l, position: j) == fromStore.entry(block: l, position: j), "block \(l) position \(j)")
                #expect(copied.entry(block: l, position: j, value: true) == fromStore.entry(block: l, position: j, value: true))
            }
        }
    }

    @Test func differentPromptsNeverAlias() throws {
        let pair = try SynNLAPair.get()
        let cap = try SynNLAModels.captured.get()
        let canonical = try ActivationVerbalizer(path: pair.av)
        let custom = try ActivationVerbalizer(path: pair.av, promptTemplate: "Explain this activation, please: <concept><INJECT></concept>")
        #expect(canonical.sharedPrefixIds != custom.sharedPrefixIds)
        let opts = SamplingOptions(maxNewTokens: 8)
        let v = [cap.vectors[5], cap.vectors[10]]
        let a = try canonical.verbalizeBatch(v, options: opts, batch: 2).map { try $0.get().ids }
        let b = try custom.verbalizeBatch(v, options: opts, batch: 2).map { try $0.get().ids }
        #expect(canonical.prefixKV.computations == 1 && custom.prefixKV.computations == 1)
        // Each equals its own sequential reference (margin rule), so neither used the other's prefix.
        expectGreedyMatches("canonical prompt", refs: try v.map { try referenceDecode(canonical, $0, maxNew: 8) }, got: a)
        expectGreedyMatches("custom prompt", refs: try v.map { try referenceDecode(custom, $0, maxNew: 8) }, got: b)

        // One store, several prefixes: each keyed exactly on its ids, including ids that share a beginning.
        let store = PrefixKVStore(limit: 3)
        let model = canonical.model.model
        let p1 = canonical.sharedPrefixIds
        var p2 = p1; p2[p2.count - 1] = p1[p1.count - 1] == 100 ? 101 : 100   // same first n-1 ids, another last id
        let p3 = Array(p1.prefix(p1.count - 3))               // a proper prefix of p1
        let c1 = try store.cache(for: p1, model: model)
        let c2 = try store.cache(for: p2, model: model)
        let c3 = try store.cache(for: p3, model: model)
        #expect(store.computations == 3 && store.reuses == 0 && store.count == 3)
        #expect(c1 !== c2 && c1 !== c3 && c2 !== c3)
        #expect(c1.position == p1.count && c2.position == p2.count && c3.position == p3.count)
        // Shared beginnings give the same KV there (causal attention); the differing last row does not.
        #expect(sameKV(c1, c2, count: p1.count - 1))
        let last = p1.count - 1
        #expect(c1.entry(block: 0, position: last) != c2.entry(block: 0, position: last))
        #expect(try store.cache(for: p1, model: model) === c1 && store.reuses == 1)
        #expect(sameKV(c1, try PrefixKVStore.compute(ids: p1, model: model), count: p1.count))
        // Past the limit the least recently used entry goes; asking for it again computes it again.
        _ = try store.cache(for: Array(p1.prefix(4)), model: model)      // evicts p2 (p1 was used last)
        #expect(store.count == 3 && store.computations == 4)
        #expect(try store.cache(for: p2, model: model) !== c2 && store.computations == 5)
        #expect(throws: ModelError.self) { _ = try store.cache(for: [], model: model) }
    }

    @Test(arguments: [SynNLAPair.Precision.full, .q8_0])
    func arPrefixKVIsComputedOnceAndReused(_ precision: SynNLAPair.Precision) throws {
        let pair = try SynNLAPair.get()
        let ar = try ActivationReconstructor(path: pair.arPath(precision))
        let texts = SynNLAModels.explanations
        let first = try ar.reconstructBatch(texts, batch: 4).map { try $0.get() }
        #expect(ar.prefixKV.computations == 1 && ar.prefixKV.reuses == 0)
        // Another call with other explanations (another capacity, so another runner geometry) reuses it.
        let second = try ar.reconstructBatch(Array(texts.prefix(2)) + ["A much longer explanation about the capital of France, its history and its monuments."],
                                             batch: 2).map { try $0.get() }
        #expect(ar.prefixKV.computations == 1 && ar.prefixKV.reuses == 1)
        #expect(cosine(second[0], first[0]) >= 0.99999 && cosine(second[1], first[1]) >= 0.99999)
        // Identical to a freshly loaded AR's first call (same batch: the same computation, bit for bit).
        let fresh = try ActivationReconstructor(path: pair.arPath(precision))
        let again = try fresh.reconstructBatch(texts, batch: 4).map { try $0.get() }
        for (x, y) in zip(first, again) { #expect(x.map(\.bitPattern) == y.map(\.bitPattern)) }
        // And equal to the unshared computation within the batched-vs-sequential tolerance.
        let unshared = try ar.reconstructBatch(texts, batch: 4, sharePrefix: false).map { try $0.get() }
        #expect(ar.prefixKV.computations == 1 && ar.prefixKV.reuses == 1)
        for (x, y) in zip(first, unshared) { #expect(cosine(x, y) >= 0.99999) }
    }
}
