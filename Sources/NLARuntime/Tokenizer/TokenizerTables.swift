import Foundation

/// Open-addressing hash table from byte strings (UTF-8 tokens) to Int32 ids.
///
/// Keys are compared byte for byte (never with `String ==`, which would treat canonically equivalent
/// tokens as equal). All key bytes live in one pool, so the table also serves as id -> bytes storage.
/// Each slot is 16 bytes and holds keys of up to 8 bytes inline (most tokens), so a lookup usually
/// touches a single cache line; longer keys are checked against the pool after a 15-bit hash tag match.
/// The slot array is kept at most 3/4 full with any capacity (not only powers of two): the home slot is
/// the high 32 hash bits scaled to the capacity, the tag comes from bits 16...30. For Gemma 3's 262,144
/// tokens that is 5.6 MB of slots instead of 8.4 at a power-of-two capacity and load 1/2.
/// Bulk loading (`append` + `buildIndex`) and `getBatch` issue the random memory accesses of many
/// independent keys together so their cache/TLB misses overlap, which is what makes loading a
/// 262k-token vocabulary with 515k merges fast.
struct TokByteTable: Sendable {
    /// `word` = inline key bytes (len <= 8) or pool offset (len > 8); `entry` = the entry the slot
    /// indexes (its value is `values[entry]`); `meta` = occupied bit 31, hash tag (hash bits 16...30) in
    /// bits 16...30, key length bits 0...15 (0xFFFF = 65535 or more).
    struct Slot: Sendable {
        var word: UInt64
        var entry: Int32
        var meta: UInt32
    }

    private(set) var pool: [UInt8] = []
    /// Entry e's key is `pool[starts[e] ..< starts[e + 1]]` (keys are appended back to back); one more
    /// element than entries.
    private(set) var starts: [Int32] = [0]
    /// Entry values; -1 marks an entry overridden by a later duplicate key.
    private(set) var values: [Int32] = []
    private var slots: [Slot]
    private var indexed = 0

    /// Slots for `n` keys at load factor at most 3/4.
    static func capacity(for n: Int) -> Int { max(16, n + (n + 2) / 3 + 1) }

    init(expectedCount: Int = 16) {
        slots = [Slot](repeating: Slot(word: 0, entry: -1, meta: 0), count: Self.capacity(for: expectedCount))
    }

    /// Number of entries, including overridden duplicates (whose value is -1).
    var count: Int { starts.count - 1 }

    /// Bytes held by the table (for tests and memory accounting).
    var byteCount: Int { pool.count + starts.count * 4 + values.count * 4 + slots.count * MemoryLayout<Slot>.stride }

    /// Byte length of entry `e`'s key.
    @inline(__always) func length(entry e: Int) -> Int { Int(starts[e + 1] - starts[e]) }

    /// The home slot of a hash: its high 32 bits scaled to the capacity.
    @inline(__always) private func home(_ h: UInt64) -> Int {
        Int(truncatingIfNeeded: ((h >> 32) &* UInt64(slots.count)) >> 32)
    }

    @inline(__always) private func nextSlot(_ i: Int) -> Int { i + 1 == slots.count ? 0 : i + 1 }

    // MARK: hashing

    @inline(__always) private static func mix(_ h: UInt64) -> UInt64 {
        var x = h
        x ^= x >> 32
        x = x &* 0xD6E8_FEB8_6659_FD93
        x ^= x >> 32
        x = x &* 0xD6E8_FEB8_6659_FD93
        x ^= x >> 32
        return x
    }

    /// Hash of the concatenation `a + b`, computed 8 bytes at a time. Keys of up to 8 bytes hash their
    /// packed word (`inlineWord`), so short lookups cost one mix.
    @inline(__always) static func hash(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> UInt64 {
        let n = a.count + b.count
        if n <= 8 { return mix(inlineWord(a, b) ^ UInt64(n) &* 0x9E37_79B9_7F4A_7C15) }
        var h = UInt64(n) &* 0x9E37_79B9_7F4A_7C15
        var w: UInt64 = 0
        var shift: UInt64 = 0
        @inline(__always) func feed(_ x: UInt8) {
            w |= UInt64(x) << shift
            shift += 8
            if shift == 64 {
                h = mix(h ^ w) &+ 0x2545_F491_4F6C_DD1D
                w = 0
                shift = 0
            }
        }
        for x in a { feed(x) }
        for x in b { feed(x) }
        if shift != 0 { h = mix(h ^ w) }
        return h
    }

    @inline(__always) private static func meta(hash h: UInt64, length n: Int) -> UInt32 {
        0x8000_0000 | UInt32(truncatingIfNeeded: h & 0x7FFF_0000) | UInt32(min(n, 0xFFFF))
    }

    /// Up to 8 bytes packed little-endian (bytes of `b` follow those of `a`).
    @inline(__always) private static func inlineWord(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var w: UInt64 = 0
        var shift: UInt64 = 0
        for x in a { w |= UInt64(x) << shift; shift += 8 }
        for x in b { w |= UInt64(x) << shift; shift += 8 }
        return w
    }

    @inline(__always) static var emptyBuffer: UnsafeBufferPointer<UInt8> { UnsafeBufferPointer(start: nil, count: 0) }

    // MARK: building

    /// Adds an entry without indexing it; call `buildIndex()` before any lookup.
    mutating func append(_ key: UnsafeBufferPointer<UInt8>, value: Int32) {
        pool.append(contentsOf: key)
        starts.append(Int32(pool.count))
        values.append(value)
    }

    mutating func reservePool(_ n: Int) { pool.reserveCapacity(n) }

    /// Appends an entry whose key bytes `fill` appends to the pool; its value is set by `setLastValue`.
    mutating func appendKey(_ fill: (inout [UInt8]) throws -> Void) rethrows {
        try fill(&pool)
        starts.append(Int32(pool.count))
        values.append(-1)
    }

    mutating func setLastValue(_ v: Int32) { values[values.count - 1] = v }


    /// The entry arrays without the spare capacity appending left (up to half of each: ~7 MB for Gemma 3's
    /// 262k tokens, kept for as long as the tokenizer lives).
    mutating func shrinkToFit() {
        func exact<T>(_ a: [T]) -> [T] {
            guard a.capacity - a.count > a.count / 16 + 64 else { return a }
            return [T](unsafeUninitializedCapacity: a.count) { buf, n in
                a.withUnsafeBufferPointer { src in _ = buf.initialize(fromContentsOf: src) }
                n = a.count
            }
        }
        pool = exact(pool); starts = exact(starts); values = exact(values)
    }

    /// Indexes all appended entries; a key seen again overrides the earlier entry (last wins).
    mutating func buildIndex() {
        if indexed == count { return }
        shrinkToFit()
        if count * 4 > slots.count * 3 {
            slots = [Slot](repeating: Slot(word: 0, entry: -1, meta: 0), count: Self.capacity(for: count))
            indexed = 0
        }
        let batch = 16
        var hashes = [UInt64](repeating: 0, count: batch)
        var firstMeta = [UInt32](repeating: 0, count: batch)
        var written = [Int](repeating: -1, count: batch)
        pool.withUnsafeBufferPointer { p in
            var e0 = indexed
            while e0 < count {
                let n = min(batch, count - e0)
                for k in 0..<n {
                    let e = e0 + k
                    hashes[k] = Self.hash(UnsafeBufferPointer(rebasing: p[Int(starts[e])..<Int(starts[e + 1])]), Self.emptyBuffer)
                }
                // Issue the batch's random reads together so the misses overlap.
                for k in 0..<n { firstMeta[k] = slots[home(hashes[k])].meta }
                var nWritten = 0
                for k in 0..<n {
                    let e = e0 + k
                    let key = UnsafeBufferPointer(rebasing: p[Int(starts[e])..<Int(starts[e + 1])])
                    let h = hashes[k]
                    let m = Self.meta(hash: h, length: key.count)
                    let inline = key.count <= 8
                    let w = inline ? Self.inlineWord(key, Self.emptyBuffer) : UInt64(starts[e])
                    var i = home(h)
                    // Fast path: the preloaded home slot was empty and nothing in this batch wrote there.
                    if firstMeta[k] == 0 && !written[0..<nWritten].contains(i) {
                        slots[i] = Slot(word: w, entry: Int32(e), meta: m)
                        written[nWritten] = i; nWritten += 1
                        continue
                    }
                    while true {
                        let s = slots[i]
                        if s.meta == 0 {
                            slots[i] = Slot(word: w, entry: Int32(e), meta: m)
                            written[nWritten] = i; nWritten += 1
                            break
                        }
                        if s.meta == m {
                            let old = Int(s.entry)
                            let same = inline ? s.word == w : (length(entry: old) == key.count && Self.equal(p, Int(starts[old]), key))
                            if same {
                                values[old] = -1
                                slots[i] = Slot(word: w, entry: Int32(e), meta: m)
                                break
                            }
                        }
                        i = nextSlot(i)
                    }
                }
                e0 += n
            }
        }
        indexed = count
    }

    @inline(__always) private static func equal(_ p: UnsafeBufferPointer<UInt8>, _ s: Int, _ key: UnsafeBufferPointer<UInt8>) -> Bool {
        var k = 0
        while k < key.count {
            if p[s + k] != key[k] { return false }
            k += 1
        }
        return true
    }

    // MARK: lookup

    /// First 8 bytes of `a + b` packed little-endian (caller ensures `a.count + b.count >= 8`).
    @inline(__always) private static func prefixWord(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var w: UInt64 = 0
        var k = 0
        while k < 8 {
            let x = k < a.count ? a[k] : b[k - a.count]
            w |= UInt64(x) << UInt64(8 * k)
            k += 1
        }
        return w
    }

    /// Probes for `a + b` starting from the already loaded home slot `first`. For keys longer than 8
    /// bytes, `firstPrefix` may carry the first 8 pool bytes of `first`'s key, loaded beforehand.
    @inline(__always) private func probe(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>, hash h: UInt64,
                                         first: Slot, firstPrefix: UInt64? = nil) -> Int32? {
        let n = a.count + b.count
        let m = Self.meta(hash: h, length: n)
        var i = home(h)
        var s = first
        if n <= 8 {
            let w = Self.inlineWord(a, b)
            while true {
                if s.meta == m && s.word == w { return values[Int(s.entry)] }
                if s.meta == 0 { return nil }
                i = nextSlot(i)
                s = slots[i]
            }
        }
        let keyPrefix = Self.prefixWord(a, b)
        var known = firstPrefix
        return pool.withUnsafeBufferPointer { p -> Int32? in
            while true {
                if s.meta == m && (n < 0xFFFF || length(entry: Int(s.entry)) == n) {
                    let st = Int(s.word)
                    let prefix = known ?? UnsafeRawPointer(p.baseAddress! + st).loadUnaligned(as: UInt64.self)
                    if prefix == keyPrefix {
                        var same = true
                        var k = 8
                        while k < n {
                            let x = k < a.count ? a[k] : b[k - a.count]
                            if p[st + k] != x { same = false; break }
                            k += 1
                        }
                        if same { return values[Int(s.entry)] }
                    }
                }
                if s.meta == 0 { return nil }
                known = nil
                i = nextSlot(i)
                s = slots[i]
            }
        }
    }

    /// Looks up the concatenation `a + b` without building it.
    @inline(__always) func get(concat a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> Int32? {
        let h = Self.hash(a, b)
        return probe(a, b, hash: h, first: slots[home(h)])
    }

    func get(_ key: UnsafeBufferPointer<UInt8>) -> Int32? { get(concat: key, Self.emptyBuffer) }

    func get(_ key: [UInt8]) -> Int32? { key.withUnsafeBufferPointer { get($0) } }

    func get(_ key: ArraySlice<UInt8>) -> Int32? { key.withUnsafeBufferPointer { get($0) } }

    /// Looks up `count` keys (`key(q)` returns the two halves of key q) and writes ids, or -1, to `out`.
    /// The home slots of 16 keys are loaded together so their cache misses overlap; large batches are
    /// split over two threads.
    func getBatch(count: Int, into out: UnsafeMutableBufferPointer<Int32>,
                  key: (Int) -> (UnsafeBufferPointer<UInt8>, UnsafeBufferPointer<UInt8>)) {
        if count < 1 << 15 {
            getBatch(range: 0..<count, into: out, key: key)
            return
        }
        let half = count / 2
        TokParallel.both({ getBatch(range: 0..<half, into: out, key: key) },
                         { getBatch(range: half..<count, into: out, key: key) })
    }

    private func getBatch(range: Range<Int>, into out: UnsafeMutableBufferPointer<Int32>,
                          key: (Int) -> (UnsafeBufferPointer<UInt8>, UnsafeBufferPointer<UInt8>)) {
        let batch = 16
        withUnsafeTemporaryAllocation(of: UInt64.self, capacity: batch) { hashes in
            withUnsafeTemporaryAllocation(of: Slot.self, capacity: batch) { first in
              withUnsafeTemporaryAllocation(of: UInt64.self, capacity: batch) { prefixes in
                var q0 = range.lowerBound
                while q0 < range.upperBound {
                    let n = min(batch, range.upperBound - q0)
                    for k in 0..<n {
                        let (a, b) = key(q0 + k)
                        hashes[k] = Self.hash(a, b)
                    }
                    for k in 0..<n { first[k] = slots[home(hashes[k])] }
                    // For long keys whose home slot looks like a hit, load the pool bytes up front too.
                    pool.withUnsafeBufferPointer { p in
                        for k in 0..<n {
                            let (a, b) = key(q0 + k)
                            let len = a.count + b.count
                            if len > 8 && first[k].meta == Self.meta(hash: hashes[k], length: len) {
                                prefixes[k] = UnsafeRawPointer(p.baseAddress! + Int(first[k].word)).loadUnaligned(as: UInt64.self)
                            }
                        }
                    }
                    for k in 0..<n {
                        let (a, b) = key(q0 + k)
                        let long = a.count + b.count > 8 && first[k].meta == Self.meta(hash: hashes[k], length: a.count + b.count)
                        out[q0 + k] = probe(a, b, hash: hashes[k], first: first[k], firstPrefix: long ? prefixes[k] : nil) ?? -1
                    }
                    q0 += n
                }
              }
            }
        }
    }

    /// The key bytes of entry `e`.
    func key(entry e: Int) -> ArraySlice<UInt8> {
        return pool[Int(starts[e])..<Int(starts[e + 1])]
    }

    // MARK: storage (the on-disk tokenizer cache)

    /// The arrays of an indexed table.
    struct Storage {
        var pool: [UInt8]
        var starts: [Int32]
        var values: [Int32]
        var slots: [Slot]
    }

    /// The arrays of this table; call `buildIndex()` first.
    var storage: Storage {
        precondition(indexed == count, "TokByteTable.storage of a table with unindexed entries")
        return Storage(pool: pool, starts: starts, values: values, slots: slots)
    }

    /// A table over stored arrays, or nil when they are not a consistent index (offsets in order and inside
    /// the pool, every occupied slot naming a live entry with its length and key word, an empty slot to end
    /// every probe): a damaged file can make lookups miss, never read out of bounds or loop forever.
    init?(storage st: Storage) {
        let n = st.starts.count - 1
        guard n >= 0, st.starts[0] == 0, Int(st.starts[n]) == st.pool.count, st.values.count == n,
              st.slots.count >= 16 else { return nil }
        for e in 0..<n where st.starts[e] > st.starts[e + 1] { return nil }
        for v in st.values where v < -1 { return nil }
        var empty = 0
        let ok = st.pool.withUnsafeBufferPointer { p -> Bool in
            for slot in st.slots {
                if slot.meta == 0 { empty += 1; continue }
                let e = Int(slot.entry)
                guard slot.meta & 0x8000_0000 != 0, e >= 0, e < n, st.values[e] >= 0 else { return false }
                let key = UnsafeBufferPointer(rebasing: p[Int(st.starts[e])..<Int(st.starts[e + 1])])
                guard slot.meta & 0xFFFF == UInt32(min(key.count, 0xFFFF)),
                      slot.word == (key.count <= 8 ? Self.inlineWord(key, Self.emptyBuffer) : UInt64(st.starts[e])) else { return false }
            }
            return true
        }
        guard ok, empty > 0 else { return nil }
        pool = st.pool; starts = st.starts; values = st.values; slots = st.slots
        indexed = n
    }
}

/// Open-addressing map from a token pair (`pack(left, right)`) to (rank, merged id): the BPE merge table.
/// Compact layout (ids below 2^21 − 1 and at most 2^22 merges, e.g. Gemma 3's 262,144 ids and 514,906
/// merges): one 64-bit cell per pair, left id (21 bits) | right id (21 bits) | rank (22 bits), and the merged
/// id of each rank in `mergedIds` — 8 bytes per cell plus 4 per merge instead of 16 per cell. Otherwise
/// the wide layout: (key, rank << 32 | merged id) cells. Load factor at most 3/4 at any capacity (the home
/// cell is the high 32 bits of a Fibonacci hash scaled to the capacity): 5.5 MB of cells for Gemma 3 instead
/// of 8.4 at a power of two and load 1/2. A lookup is two multiplies and usually a single cache line.
struct TokPairTable: Sendable {
    private var cells: [UInt64] = []              // compact
    private var mergedIds: [Int32] = []           // compact: merged id by rank
    private var wide: [SIMD2<UInt64>] = []        // wide: (key, value)
    private var compact: Bool
    private var capacity: Int
    private(set) var count = 0
    private static let empty = UInt64.max
    static let compactIdLimit: Int32 = (1 << 21) - 1
    static let compactRankLimit = 1 << 22

    /// `maxId`: the largest id a pair or merged id can hold; `expectedCount`: the number of merges (ranks
    /// are 0..<expectedCount).
    init(expectedCount: Int, maxId: Int32) {
        let cap = TokByteTable.capacity(for: expectedCount)
        compact = maxId < Self.compactIdLimit && expectedCount <= Self.compactRankLimit
        if compact {
            cells = [UInt64](repeating: Self.empty, count: cap)
            mergedIds = [Int32](repeating: -1, count: expectedCount)
        } else {
            wide = [SIMD2<UInt64>](repeating: SIMD2(Self.empty, 0), count: cap)
        }
        capacity = cap
    }

    /// Bytes held by the table (for tests and memory accounting).
    var byteCount: Int { cells.count * 8 + mergedIds.count * 4 + wide.count * 16 }
    var isCompact: Bool { compact }

    @inline(__always) static func pack(_ a: Int32, _ b: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
    }

    /// The 42-bit pair of a packed key in the compact layout (both ids are below 2^21 there).
    @inline(__always) private static func pair42(_ key: UInt64) -> UInt64 {
        (key >> 32) << 21 | (key & 0xFFFF_FFFF)
    }

    @inline(__always) private func slot(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (((key &* 0x9E37_79B9_7F4A_7C15) >> 32) &* UInt64(capacity)) >> 32)
    }

    @inline(__always) private func next(_ i: Int) -> Int { i + 1 == capacity ? 0 : i + 1 }

    /// Inserts or replaces (a pair listed twice keeps its last rank, as in tokenizers' HashMap collect).
    /// A pair, merged id or rank the compact layout cannot hold turns the table wide first.
    mutating func set(_ key: UInt64, rank: UInt32, newId: Int32) {
        if compact && (key >> 32 >= UInt64(Self.compactIdLimit) || key & 0xFFFF_FFFF >= UInt64(Self.compactIdLimit)
                       || newId < 0 || newId >= Self.compactIdLimit || Int(rank) >= Self.compactRankLimit) {
            widen()
        }
        if (count + 1) * 4 > capacity * 3 { grow() }
        if compact {
            if Int(rank) >= mergedIds.count { mergedIds += repeatElement(-1, count: Int(rank) + 1 - mergedIds.count) }
            mergedIds[Int(rank)] = newId
            let p = Self.pair42(key)
            var i = slot(p)
            while true {
                let c = cells[i]
                if c == Self.empty { cells[i] = p << 22 | UInt64(rank); count += 1; return }
                if c >> 22 == p { cells[i] = p << 22 | UInt64(rank); return }
                i = next(i)
            }
        }
        let v = Self.value(rank: rank, newId: newId)
        var i = slot(key)
        while true {
            let k = wide[i].x
            if k == Self.empty { wide[i] = SIMD2(key, v); count += 1; return }
            if k == key { wide[i].y = v; return }
            i = next(i)
        }
    }

    @inline(__always) private static func value(rank: UInt32, newId: Int32) -> UInt64 {
        UInt64(rank) << 32 | UInt64(UInt32(bitPattern: newId))
    }

    /// Moves every pair to the wide layout (same capacity).
    private mutating func widen() {
        wide = [SIMD2<UInt64>](repeating: SIMD2(Self.empty, 0), count: cells.count)
        compact = false
        for c in cells where c != Self.empty {
            let p = c >> 22, rank = UInt32(truncatingIfNeeded: c & 0x3F_FFFF)
            let key = Self.pack(Int32(truncatingIfNeeded: p >> 21), Int32(truncatingIfNeeded: p & 0x1F_FFFF))
            var j = slot(key)
            while wide[j].x != Self.empty { j = next(j) }
            wide[j] = SIMD2(key, Self.value(rank: rank, newId: mergedIds[Int(rank)]))
        }
        cells = []
        mergedIds = []
    }

    private mutating func grow() {
        let cap = capacity * 2
        capacity = cap
        count = 0
        if compact {
            let old = cells
            cells = [UInt64](repeating: Self.empty, count: cap)
            for c in old where c != Self.empty {
                var j = slot(c >> 22)
                while cells[j] != Self.empty { j = next(j) }
                cells[j] = c
                count += 1
            }
        } else {
            let old = wide
            wide = [SIMD2<UInt64>](repeating: SIMD2(Self.empty, 0), count: cap)
            for c in old where c.x != Self.empty {
                var j = slot(c.x)
                while wide[j].x != Self.empty { j = next(j) }
                wide[j] = c
                count += 1
            }
        }
    }

    /// The arrays and layout of the table (the on-disk tokenizer cache).
    struct Storage {
        var compact: Bool
        var capacity: Int
        var count: Int
        var cells: [UInt64]
        var mergedIds: [Int32]
        var wide: [SIMD2<UInt64>]
    }

    var storage: Storage {
        Storage(compact: compact, capacity: capacity, count: count, cells: cells, mergedIds: mergedIds, wide: wide)
    }

    /// A table over stored arrays, or nil when they are inconsistent (sizes, the pair count, an empty cell
    /// to end every probe, every stored pair's rank inside the merged-id list with a merged id in
    /// 0..<`idLimit`; ranks no pair holds may keep −1).
    init?(storage st: Storage, idLimit: Int) {
        guard st.capacity >= 1, st.count >= 0, st.count < st.capacity else { return nil }
        var used = 0
        if st.compact {
            guard st.cells.count == st.capacity, st.wide.isEmpty else { return nil }
            for c in st.cells where c != Self.empty {
                let rank = Int(c & 0x3F_FFFF)
                guard rank < st.mergedIds.count, st.mergedIds[rank] >= 0 else { return nil }
                used += 1
            }
            for m in st.mergedIds where m < -1 || Int(m) >= idLimit { return nil }
        } else {
            guard st.wide.count == st.capacity, st.cells.isEmpty, st.mergedIds.isEmpty else { return nil }
            for c in st.wide where c.x != Self.empty {
                let newId = Int32(bitPattern: UInt32(truncatingIfNeeded: c.y))
                guard newId >= 0, Int(newId) < idLimit else { return nil }
                used += 1
            }
        }
        guard used == st.count else { return nil }
        compact = st.compact; capacity = st.capacity; count = st.count
        cells = st.cells; mergedIds = st.mergedIds; wide = st.wide
    }

    /// (rank, merged id) for the pair, if it is a merge.
    @inline(__always) func get(_ key: UInt64) -> (rank: UInt32, newId: Int32)? {
        if compact {
            // Ids at or above the limit are never stored here (and would alias): not a merge.
            guard key >> 32 < UInt64(Self.compactIdLimit), key & 0xFFFF_FFFF < UInt64(Self.compactIdLimit) else { return nil }
            let p = Self.pair42(key)
            var i = slot(p)
            while true {
                let c = cells[i]
                if c == Self.empty { return nil }
                if c >> 22 == p {
                    let rank = UInt32(truncatingIfNeeded: c & 0x3F_FFFF)
                    return (rank, mergedIds[Int(rank)])
                }
                i = next(i)
            }
        }
        var i = slot(key)
        while true {
            let c = wide[i]
            if c.x == key {
                return (UInt32(truncatingIfNeeded: c.y >> 32), Int32(bitPattern: UInt32(truncatingIfNeeded: c.y)))
            }
            if c.x == Self.empty { return nil }
            i = next(i)
        }
    }
}
