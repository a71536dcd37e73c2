// Many sequences through one forward pass (issue 8): every linear layer runs once over the new rows
// of all sequences (one matmul with m = total rows), attention runs per sequence over its own KV cache.
//
// KV cache layout: per loaded block, a ring of `ringLength` positions × kvDim. Global (full-attention)
// blocks keep the whole sequence (ringLength = capacity, never wraps); sliding blocks keep
// min(capacity, window + chunk − 1) positions, which is all a chunk of ≤ `chunk` new rows can see
// (query i sees keys i − window < j ≤ i). Position j lives at row j % ringLength — or, in a cache that
// reads positions 0..<sharedCount from a shared prefix, at row (j − sharedCount) % ringLength.
//
// The math per row is exactly `Gemma3Session`'s (same kernels, same order inside a row); only the
// matmul row count changes, which can change summation order inside the kernels (quantized weights use
// different kernels for m < 16 and m ≥ 16), so batched results are judged against the sequential path
// with tolerances (tests: BatchedForwardTests, BatchedNLATests).

import Foundation
import Quant
import SIMDKernels

/// The KV cache of one sequence for a `Gemma3Batch`.
///
/// A cache can attend to a read-only shared prefix it does not hold (`sharedPrefix`): positions
/// 0..<`sharedCount` are read from that cache (the AV prompt before the injection site, computed once
/// and used by every sequence of a batch); this cache holds only positions sharedCount..<capacity, at
/// ring row (j − sharedCount) % ringLength.
public final class KVCache: @unchecked Sendable {
    /// Maximum positions of this sequence (the shared prefix included).
    public let capacity: Int
    /// Blocks cached (the blocks a batch runs).
    public let blocks: Int
    /// Positions this cache holds per block (capacity − sharedCount on global blocks; at most the window
    /// plus a chunk on sliding blocks).
    public let ringLengths: [Int]
    /// The read-only cache positions 0..<sharedCount are read from (nil: this cache holds every position).
    public let sharedPrefix: KVCache?
    /// Positions read from `sharedPrefix` (0 without one).
    public let sharedCount: Int
    let kvDim: Int
    let k: [UnsafeMutablePointer<Float>]
    let v: [UnsafeMutablePointer<Float>]
    /// Positions already computed (the shared prefix included).
    public internal(set) var position = 0

    init(config: Gemma3Config, blocks: Int, capacity: Int, chunk: Int, sharing prefix: KVCache? = nil, count shared: Int = 0) {
        self.capacity = capacity
        self.blocks = blocks
        sharedPrefix = prefix
        sharedCount = prefix == nil ? 0 : shared
        position = sharedCount
        kvDim = config.kvDim
        ringLengths = Self.ringLengths(config: config, blocks: blocks, own: capacity - sharedCount, chunk: chunk)
        k = ringLengths.map { r in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(r * config.kvDim, 1)); p.initialize(repeating: 0, count: max(r * config.kvDim, 1)); return p
        }
        v = ringLengths.map { r in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(r * config.kvDim, 1)); p.initialize(repeating: 0, count: max(r * config.kvDim, 1)); return p
        }
    }

    deinit {
        for p in k { p.deallocate() }
        for p in v { p.deallocate() }
    }

    private static func ringLengths(config: Gemma3Config, blocks: Int, own: Int, chunk: Int) -> [Int] {
        (0..<blocks).map { l in config.layerTypes[l] == .sliding ? min(own, config.slidingWindow + chunk - 1) : own }
    }

    /// Bytes of K and V held (a shared prefix's not included).
    public var bytes: Int { ringLengths.reduce(0, +) * kvDim * 2 * MemoryLayout<Float>.size }

    /// Bytes a cache of this geometry would hold (for batch-size planning); `shared` positions read from a
    /// shared prefix are not held.
    public static func bytes(config: Gemma3Config, blocks: Int, capacity: Int, chunk: Int, shared: Int = 0) -> Int {
        ringLengths(config: config, blocks: blocks, own: capacity - shared, chunk: chunk).reduce(0, +) * config.kvDim * 2 * MemoryLayout<Float>.size
    }

    /// Forget every position this cache holds (a shared prefix stays: the next row is at sharedCount).
    public func reset() { position = sharedCount }

    /// Positions of block `l` still held here: [max(sharedCount, position − ringLength), position).
    public func heldRange(block l: Int) -> Range<Int> { max(sharedCount, position - ringLengths[l])..<position }

    /// Where K (or V) of `position` j of block `l` is (here or in the shared prefix), nil when not held.
    func row(block l: Int, position j: Int, value: Bool) -> UnsafeMutablePointer<Float>? {
        guard l >= 0, l < blocks, j >= 0 else { return nil }
        if j < sharedCount { return sharedPrefix!.row(block: l, position: j, value: value) }
        guard heldRange(block: l).contains(j) else { return nil }
        return (value ? v[l] : k[l]) + ((j - sharedCount) % ringLengths[l]) * kvDim
    }

    /// Make this cache hold exactly the first `count` positions of `source`, whose geometry may differ
    /// (ring lengths of another capacity or chunk, or a shared prefix): each block copies the positions
    /// its ring keeps, max(0, n − ring)..<n, which `source` must still hold. This cache must hold all its
    /// positions itself (no shared prefix).
    public func copyPrefix(from source: KVCache, count n: Int) throws {
        guard sharedPrefix == nil else { throw ModelError.input("KV prefix copy into a cache that reads its prefix from a shared one") }
        guard source.kvDim == kvDim, source.blocks == blocks else {
            throw ModelError.input("KV prefix copy between caches of different models (\(source.blocks) vs \(blocks) blocks)")
        }
        guard n >= 0, n <= source.position, n <= capacity else {
            throw ModelError.input("KV prefix copy of \(n) positions from a cache holding \(source.position) into one of capacity \(capacity)")
        }
        for l in 0..<blocks {
            let r = ringLengths[l]
            let lo = max(0, n - r)
            for j in lo..<n {
                guard let sk = source.row(block: l, position: j, value: false), let sv = source.row(block: l, position: j, value: true) else {
                    throw ModelError.input("KV prefix copy: positions \(lo)..<\(n) of block \(l) were already evicted from the source ring")
                }
                (k[l] + (j % r) * kvDim).update(from: sk, count: kvDim)
                (v[l] + (j % r) * kvDim).update(from: sv, count: kvDim)
            }
        }
        position = n
    }

    /// Checks that `prefix` can serve as the shared prefix of `count` positions of a cache of this model:
    /// same blocks and KV width, holds every position a later row can still see, holds all of them
    /// itself (no prefix of its own).
    static func checkSharable(_ prefix: KVCache, count n: Int, config: Gemma3Config, blocks: Int) throws {
        guard prefix.sharedPrefix == nil else { throw ModelError.input("a shared KV prefix cannot itself read from another") }
        guard prefix.kvDim == config.kvDim, prefix.blocks == blocks else {
            throw ModelError.input("shared KV prefix of another model (\(prefix.blocks) vs \(blocks) blocks)")
        }
        guard n >= 1, n <= prefix.position else {
            throw ModelError.input("shared KV prefix of \(n) positions from a cache holding \(prefix.position)")
        }
        for l in 0..<blocks {
            let seen = config.layerTypes[l] == .sliding ? min(n, config.slidingWindow - 1) : n
            guard n - seen >= prefix.heldRange(block: l).lowerBound else {
                throw ModelError.input("shared KV prefix: block \(l) no longer holds positions \(n - seen)..<\(n)")
            }
        }
    }

    /// K (or V) of `position` in block `l`, nil when it is not held (tests, diagnostics).
    public func entry(block l: Int, position j: Int, value: Bool = false) -> [Float]? {
        row(block: l, position: j, value: value).map { Array(UnsafeBufferPointer(start: $0, count: kvDim)) }
    }
}

/// A batch runner: scratch for `maxRows` rows per pass over up to `maxSequences` sequences.
public final class Gemma3Batch: @unchecked Sendable {
    public let model: Gemma3Model
    /// Blocks run (all loaded blocks).
    public let blocks: Int
    /// Positions per sequence.
    public let capacity: Int
    /// Rows per pass over all sequences (a GEMM of up to this many rows per linear layer).
    public let maxRows: Int
    /// Sequences per pass.
    public let maxSequences: Int
    /// Rows of one sequence per pass (longer inputs are split into chunks; sets the sliding ring length).
    public let chunk: Int

    /// What `forward` returns for the last row of each sequence.
    public enum Output: Sendable {
        /// Nothing (prefill only).
        case none
        /// Logits [vocab] (all blocks loaded, final norm, lm_head).
        case lastLogits
        /// The raw output of the last block run [d] (no final norm): the NLA AR's h.
        case lastHidden
        /// Greedy decoding: exactly `Kernels.top2` of the `.lastLogits` row (index of the first maximum,
        /// the two largest values), in `top2` after the call. With a packed Q8_0 lm_head and no final
        /// soft-capping the logits are never all computed: every vocabulary row is screened with int8
        /// activations and only the rows that can be in the top 2 are recomputed exactly
        /// (`PackedWeights.top2`); otherwise the logits are computed and their top 2 taken.
        case lastTop2
    }

    /// Whether `.lastTop2` screens the lm_head (packed Q8_0, no final soft-capping, not turned off with
    /// NLA_HEAD_SCREEN=0) instead of computing every logit.
    public var screensTop2: Bool {
        hasLogits && Gemma3Batch.headScreen && cfg.finalLogitSoftcapping == nil && model.lmHead.packed?.type == .q8_0
            && PackedWeights.screensTop2
    }

    /// NLA_HEAD_SCREEN=0 computes every logit for `.lastTop2` (for measuring what screening gains).
    static let headScreen: Bool = getenv("NLA_HEAD_SCREEN").map { String(cString: $0) } != "0"

    /// Vocabulary rows per slice when `.lastTop2` computes the logits of a packed head without the screen
    /// (AVX2 CPUs): maxSequences × this many floats instead of maxSequences × vocab (16 × 262144 floats =
    /// 16.8 MB for the 270M; the slice buffer is 1 MB).
    static let headSliceRows = 16384

    /// `Kernels.top2` of a row given the top-2 of its parts in order: `whole` holds the parts before `part`
    /// (whose indices start at `offset`), the result the parts up to it. The same result as one scan of
    /// the whole row (first index of the maximum, the largest value at any other index; the parts'
    /// values are never NaN).
    static func mergeTop2(_ whole: (index: Int, first: Float, second: Float), _ part: (index: Int, first: Float, second: Float),
                          offset: Int) -> (index: Int, first: Float, second: Float) {
        if part.first > whole.first { return (part.index + offset, part.first, max(whole.first, part.second)) }
        return (whole.index, whole.first, max(whole.second, part.first))
    }

    /// Per segment of the last `.lastTop2` forward: the top-2 of its last row's logits.
    public private(set) var top2: [(index: Int, first: Float, second: Float)] = []

    /// One sequence's part of a pass: `rows` new input rows appended to `cache`.
    public struct Segment {
        public var cache: KVCache
        public var rows: Int
        public init(cache: KVCache, rows: Int) { self.cache = cache; self.rows = rows }
    }

    private let cfg: Gemma3Config
    /// Scratch and block arithmetic for maxRows rows.
    private let layers: DecoderBlocks
    private let lastRows: UnsafeMutablePointer<Float>   // (maxSequences, d)
    private let outWidth: Int
    /// (maxSequences, vocab or d), allocated on the first `.lastLogits` / `.lastHidden` call (greedy
    /// batches that only ask for `.lastTop2` of a screened head never need the full logits).
    private var outStorage: UnsafeMutablePointer<Float>?
    private var out: UnsafeMutablePointer<Float> {
        if let p = outStorage { return p }
        let p = UnsafeMutablePointer<Float>.allocate(capacity: maxSequences * outWidth)
        p.initialize(repeating: 0, count: maxSequences * outWidth)
        outStorage = p
        return p
    }
    /// (maxSequences, headSliceRows) logits of one vocabulary slice, on first use (unscreened packed head).
    private var sliceStorage: UnsafeMutablePointer<Float>?
    /// Scratch of `PackedWeights.top2` for maxSequences rows (64-byte aligned), on first use.
    private var top2Scratch: UnsafeMutableRawPointer?
    private var top2ScratchBytes = 0

    public init(model: Gemma3Model, maxSequences: Int, capacity: Int, maxRows: Int = 256, chunk: Int? = nil) throws {
        let cfg = model.config
        guard maxSequences >= 1 else { throw ModelError.input("a batch needs at least one sequence") }
        guard capacity >= 1, capacity <= cfg.maxPositionEmbeddings else {
            throw ModelError.input("\(capacity) positions per sequence: must be 1…\(cfg.maxPositionEmbeddings) (max_position_embeddings)")
        }
        guard maxRows >= 1 else { throw ModelError.input("a batch pass needs at least one row") }
        self.model = model
        self.cfg = cfg
        blocks = model.loadedBlocks
        self.capacity = capacity
        self.maxSequences = maxSequences
        (self.maxRows, self.chunk) = Gemma3Batch.geometry(maxSequences: maxSequences, capacity: capacity, maxRows: maxRows, chunk: chunk)
        let r = self.maxRows
        func alloc(_ n: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(n, 1))
            p.initialize(repeating: 0, count: max(n, 1))
            return p
        }
        layers = DecoderBlocks(model: model, rows: r)
        lastRows = alloc(maxSequences * cfg.hiddenSize)
        let full = blocks == cfg.numHiddenLayers && model.finalNorm != nil
        outWidth = full ? cfg.vocabSize : cfg.hiddenSize
    }

    deinit {
        lastRows.deallocate()
        outStorage?.deallocate()
        top2Scratch?.deallocate()
        sliceStorage?.deallocate()
    }

    /// Rows per pass and KV chunk of a batch of this shape: at least one row per sequence, and no more
    /// rows than every sequence's whole capacity (scratch beyond that is never used).
    public static func geometry(maxSequences: Int, capacity: Int, maxRows: Int = 256, chunk: Int? = nil) -> (maxRows: Int, chunk: Int) {
        let rows = min(max(maxRows, maxSequences), maxSequences * capacity)
        return (rows, min(chunk ?? rows, rows, capacity))
    }

    /// Whether this batch can produce logits (all blocks and the final norm loaded).
    public var hasLogits: Bool { outWidth == cfg.vocabSize && blocks == cfg.numHiddenLayers && model.finalNorm != nil }

    /// A new, empty KV cache shaped for this batch.
    public func makeCache(capacity: Int? = nil) -> KVCache {
        KVCache(config: cfg, blocks: blocks, capacity: min(capacity ?? self.capacity, self.capacity), chunk: chunk)
    }

    /// A new cache whose positions 0..<`count` are read in place from `prefix` (which must hold them and
    /// must not change while this cache is used); it holds only positions count..<capacity itself. Every
    /// sequence of a batch can share one prefix: its KV is stored once.
    public func makeCache(sharing prefix: KVCache, count: Int, capacity: Int? = nil) throws -> KVCache {
        let cap = min(capacity ?? self.capacity, self.capacity)
        guard count < cap else { throw ModelError.input("a shared KV prefix of \(count) positions leaves no room in a context of \(cap)") }
        try KVCache.checkSharable(prefix, count: count, config: cfg, blocks: blocks)
        return KVCache(config: cfg, blocks: blocks, capacity: cap, chunk: chunk, sharing: prefix, count: count)
    }

    /// Bytes of one sequence's KV cache at this batch's geometry (`shared` positions read from a shared
    /// prefix are not held).
    public func kvBytesPerSequence(shared: Int = 0) -> Int {
        KVCache.bytes(config: cfg, blocks: blocks, capacity: capacity, chunk: chunk, shared: shared)
    }

    private struct Piece {
        var segment: Int
        var cache: KVCache
        var embRow: Int     // first row in the caller's embeddings
        var rows: Int
        var last: Bool      // the segment's final piece
    }

    /// Run the segments' new rows (`embeddings`: all segments' rows concatenated in order, [Σrows, d],
    /// scaled like `Gemma3Model.embed`) and append them to their caches.
    /// - Returns: for `.lastLogits` [segments, vocab], for `.lastHidden` [segments, d] (row i = segment i's
    ///   last row), valid until the next call; empty for `.none`.
    @discardableResult
    public func forward(_ segments: [Segment], embeddings: UnsafePointer<Float>, output: Output) throws -> UnsafeBufferPointer<Float> {
        guard !segments.isEmpty else { throw ModelError.input("empty batch: nothing to run") }
        guard segments.count <= maxSequences else {
            throw ModelError.input("\(segments.count) sequences exceed this batch's \(maxSequences)")
        }
        if (output == .lastLogits || output == .lastTop2) && !hasLogits {
            throw ModelError.input("logits need all \(cfg.numHiddenLayers) blocks and the final norm loaded")
        }
        var seen = Set<ObjectIdentifier>()
        for (i, s) in segments.enumerated() {
            guard s.rows >= 1 else { throw ModelError.input("sequence \(i) of the batch has no new rows") }
            guard seen.insert(ObjectIdentifier(s.cache)).inserted else {
                throw ModelError.input("sequence \(i) of the batch repeats another sequence's KV cache")
            }
            guard s.cache.blocks == blocks, s.cache.kvDim == cfg.kvDim, s.cache.capacity <= capacity else {
                throw ModelError.input("sequence \(i): KV cache of another model or batch")
            }
            guard s.cache.position + s.rows <= s.cache.capacity else {
                throw ModelError.input("\(s.cache.position + s.rows) tokens exceed the context of \(s.cache.capacity) positions")
            }
            for l in 0..<blocks where cfg.layerTypes[l] == .sliding && s.cache.ringLengths[l] < s.cache.capacity - s.cache.sharedCount {
                guard s.cache.ringLengths[l] >= cfg.slidingWindow + chunk - 1 else {
                    throw ModelError.input("sequence \(i): KV ring of \(s.cache.ringLengths[l]) positions is too short for chunks of \(chunk)")
                }
            }
        }
        if output == .lastTop2 { top2 = Array(repeating: (0, 0, 0), count: segments.count) }
        // Split into passes of ≤ maxRows rows; a sequence longer than a chunk ends its pass after each chunk
        // (its next chunk needs the previous one in its cache).
        var pass: [Piece] = []
        var passRows = 0
        var base = 0
        for (si, s) in segments.enumerated() {
            var off = 0
            while off < s.rows {
                let t = min(s.rows - off, chunk, maxRows - passRows)
                if t == 0 { run(pass, rows: passRows, embeddings: embeddings, output: output); pass = []; passRows = 0; continue }
                let last = off + t == s.rows
                pass.append(Piece(segment: si, cache: s.cache, embRow: base + off, rows: t, last: last))
                passRows += t
                off += t
                if !last { run(pass, rows: passRows, embeddings: embeddings, output: output); pass = []; passRows = 0 }
            }
            base += s.rows
        }
        if !pass.isEmpty { run(pass, rows: passRows, embeddings: embeddings, output: output) }
        if output == .none || output == .lastTop2 { return UnsafeBufferPointer(start: lastRows, count: 0) }
        return UnsafeBufferPointer(start: out, count: segments.count * outWidth)
    }

    private func run(_ pieces: [Piece], rows total: Int, embeddings: UnsafePointer<Float>, output: Output) {
        let d = cfg.hiddenSize, x = layers.x
        var r0 = 0
        for p in pieces {
            (x + r0 * d).update(from: embeddings + p.embRow * d, count: p.rows * d)
            layers.setPositions(row: r0, count: p.rows, position: p.cache.position)
            r0 += p.rows
        }
        // Last rows of the sequences that end in this pass (consecutive segment indices): the only rows the
        // last block must finish when the pass returns something.
        var finals: [(segment: Int, row: Int)] = []
        r0 = 0
        for p in pieces {
            if p.last { finals.append((p.segment, r0 + p.rows - 1)) }
            r0 += p.rows
        }
        let trimmed = output != .none && finals.count < total ? finals.map(\.row) : nil
        for l in 0..<blocks {
            layers.block(l, rows: total, outputRows: l == blocks - 1 ? trimmed : nil) { sliding in attention(l, pieces, sliding: sliding) }
        }
        for p in pieces { p.cache.position += p.rows }
        guard output != .none, let first = finals.first else { return }
        for (i, f) in finals.enumerated() {
            precondition(f.segment == first.segment + i, "final pieces of a pass are consecutive")
            (lastRows + i * d).update(from: x + (trimmed == nil ? f.row : i) * d, count: d)
        }
        let n = finals.count
        switch output {
        case .lastHidden:
            (out + first.segment * outWidth).update(from: lastRows, count: n * d)
        case .lastLogits:
            layers.finalNorm(lastRows, rows: n)
            layers.headLogits(lastRows, rows: n, into: out + first.segment * outWidth)
        case .lastTop2:
            layers.finalNorm(lastRows, rows: n)
            if screensTop2, let head = model.lmHead.packed {
                let need = head.top2ScratchBytes(m: maxSequences)
                if top2ScratchBytes < need {
                    top2Scratch?.deallocate()
                    top2Scratch = UnsafeMutableRawPointer.allocate(byteCount: need, alignment: 64)
                    top2ScratchBytes = need
                }
                for (i, t) in head.top2(x: lastRows, m: n, scratch: top2Scratch!).enumerated() { top2[first.segment + i] = t }
            } else if let head = model.lmHead.packed, QuantLinear.isIntegerPath(head.type), head.rows > Gemma3Batch.headSliceRows {
                // The logits one vocabulary slice at a time, each row's top 2 merged across slices: the same
                // values (every logit is computed as in the whole-head call) in 1 MB instead of 16.8 MB.
                let width = Gemma3Batch.headSliceRows
                let buf = sliceStorage ?? UnsafeMutablePointer<Float>.allocate(capacity: maxSequences * width)
                sliceStorage = buf
                var best = [(index: Int, first: Float, second: Float)](repeating: (0, -.infinity, -.infinity), count: n)
                head.matmulSlices(x: lastRows, m: n, width: width, y: buf, scratch: layers.actScratch.bytes) { lo, count in
                    for i in 0..<n {
                        let row = buf + i * count
                        layers.softcap(row, count: count)
                        let t = Kernels.top2(UnsafeBufferPointer(start: row, count: count))
                        best[i] = Gemma3Batch.mergeTop2(best[i], t, offset: lo)
                    }
                }
                for i in 0..<n { top2[first.segment + i] = best[i] }
            } else {
                let dst = out + first.segment * outWidth
                layers.headLogits(lastRows, rows: n, into: dst)
                for i in 0..<n {
                    top2[first.segment + i] = Kernels.top2(UnsafeBufferPointer(start: dst + i * outWidth, count: outWidth))
                }
            }
        case .none:
            break
        }
    }

    /// Store each piece's K/V in its ring, then softmax(q·kᵀ·scale)·v over its visible keys: all pieces
    /// (sequences) in one threaded call.
    private func attention(_ l: Int, _ pieces: [Piece], sliding: Bool) {
        let qDim = cfg.qDim, kvDim = cfg.kvDim
        var calls: [Kernels.AttentionPiece] = []
        calls.reserveCapacity(pieces.count)
        var row0 = 0
        for p in pieces {
            let cache = p.cache, t = p.rows, p0 = cache.position, base = cache.sharedCount
            let ring = cache.ringLengths[l]
            let kc = cache.k[l], vc = cache.v[l]
            for r in 0..<t {
                let idx = (p0 + r - base) % ring
                (kc + idx * kvDim).update(from: layers.k + (row0 + r) * kvDim, count: kvDim)
                (vc + idx * kvDim).update(from: layers.v + (row0 + r) * kvDim, count: kvDim)
            }
            let shared = cache.sharedPrefix.map {
                Kernels.SharedKeys(k: $0.k[l], v: $0.v[l], count: base, ring: $0.ringLengths[l])
            }
            calls.append(.init(q: layers.q + row0 * qDim, k: kc, v: vc, ring: ring, out: layers.attn + row0 * qDim, rows: t, pos0: p0, shared: shared))
            row0 += t
        }
        Kernels.attention(cfg.attentionShape(sliding: sliding), pieces: calls, ldq: qDim, ldkv: kvDim, ldo: qDim,
                          scratch: layers.attnScratch)
    }
}
