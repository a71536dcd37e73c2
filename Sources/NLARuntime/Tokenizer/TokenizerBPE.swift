import Foundation

/// Stage 3 of encoding: turns a pre-tokenized word into ids.
protocol TokModel: Sendable {
    func tokenize(_ word: [UInt8], into out: inout [Int32])
    func tokenToId(_ token: [UInt8]) -> Int32?
    func idToToken(_ id: Int32) -> [UInt8]?
    /// One past the largest id in the model vocabulary.
    var idUpperBound: Int { get }
}

/// `model.type` values understood by this implementation.
enum TokModelType: String, Sendable, CaseIterable {
    case bpe = "BPE"
}

enum TokModelFactory {
    static func make(_ node: TokJSONNode, vocab: TokByteTable?, merges: TokRawMerges?) throws -> any TokModel {
        // tokenizers accepts a BPE model without "type" (it is the untagged fallback); so do we.
        let typeName = try node.optional("type")?.asString() ?? "BPE"
        guard let type = TokModelType(rawValue: typeName) else {
            throw TokenizerError.unknownComponentType(file: node.file, stage: "model", type: typeName, path: node.path)
        }
        switch type {
        case .bpe: return try TokBPEModel(node, vocab: vocab, merges: merges)
        }
    }
}

/// Byte-pair encoding with the semantics of huggingface/tokenizers' `BPE`: per-character initial symbols
/// (with optional continuing_subword_prefix / end_of_word_suffix), byte_fallback to `<0xXX>` tokens,
/// unk (optionally fused), then repeatedly merging the adjacent pair with the lowest merge rank
/// (leftmost first on ties) using a priority queue over a linked list of symbols.
struct TokBPEModel: TokModel {
    let vocab: TokByteTable
    /// id -> entry index in `vocab` (-1 when the id has no token).
    let idToEntry: [Int32]
    let merges: TokPairTable
    let unkId: Int32?
    let fuseUnk: Bool
    let byteFallback: Bool
    let ignoreMerges: Bool
    let continuingSubwordPrefix: [UInt8]?
    let endOfWordSuffix: [UInt8]?
    /// id of `<0xXX>` for each byte (-1 when absent).
    let byteIds: [Int32]

    var idUpperBound: Int { idToEntry.count }

    init(_ node: TokJSONNode, vocab streamedVocab: TokByteTable?, merges streamedMerges: TokRawMerges?) throws {
        _ = try node.asObject()
        if let d = node.optional("dropout") {
            let p = try d.asDouble()
            if p != 0 {
                throw TokenizerError.unsupported(file: node.file, path: d.path, problem: "BPE dropout \(p) is not supported (must be null or 0)")
            }
        }
        guard let vocab = streamedVocab else {
            if let v = node.child("vocab") { throw v.invalid("expected an object mapping tokens to ids, found \(v.value.kindName)") }
            throw TokenizerError.missingKey(file: node.file, path: "\(node.path).vocab")
        }
        guard let rawMerges = streamedMerges else {
            if let m = node.child("merges") { throw m.invalid("expected an array of merges, found \(m.value.kindName)") }
            throw TokenizerError.missingKey(file: node.file, path: "\(node.path).merges")
        }
        let prefix = try node.optional("continuing_subword_prefix").map { Array(try $0.asString().utf8) }

        // id -> entry
        var maxId: Int32 = -1
        for v in vocab.values where v > maxId { maxId = v }
        if maxId >= 1 << 26 {
            throw TokenizerError.unsupported(file: node.file, path: "\(node.path).vocab",
                                             problem: "token id \(maxId) is too large (ids must be below 67,108,864)")
        }
        var idToEntry = [Int32](repeating: -1, count: Int(maxId) + 1)
        for e in 0..<vocab.count where vocab.values[e] >= 0 { idToEntry[Int(vocab.values[e])] = Int32(e) }

        // merges: (left id, right id) -> (rank, merged id)
        let table = try Self.buildMergeTable(rawMerges, vocab: vocab, prefixLength: prefix?.count ?? 0, node: node)
        try self.init(node, vocab: vocab, idToEntry: idToEntry, merges: table)
    }

    /// The model over tables built before (the on-disk tokenizer cache): `node` gives the options.
    init(_ node: TokJSONNode, vocab: TokByteTable, idToEntry: [Int32], merges table: TokPairTable) throws {
        let prefix = try node.optional("continuing_subword_prefix").map { Array(try $0.asString().utf8) }
        let suffix = try node.optional("end_of_word_suffix").map { Array(try $0.asString().utf8) }
        let unkToken = try node.optional("unk_token").map { Array(try $0.asString().utf8) }
        var byteIds = [Int32](repeating: -1, count: 256)
        let hex = Array("0123456789ABCDEF".utf8)
        for b in 0..<256 {
            let name: [UInt8] = [0x3C, 0x30, 0x78, hex[b >> 4], hex[b & 15], 0x3E]  // "<0xXX>"
            byteIds[b] = vocab.get(name) ?? -1
        }

        self.vocab = vocab
        self.idToEntry = idToEntry
        self.merges = table
        // An unk_token absent from the vocabulary behaves like no unk_token (unknown characters are dropped).
        self.unkId = unkToken.flatMap { vocab.get($0) }
        self.fuseUnk = try node.bool("fuse_unk", default: false)
        self.byteFallback = try node.bool("byte_fallback", default: false)
        self.ignoreMerges = try node.bool("ignore_merges", default: false)
        self.continuingSubwordPrefix = prefix
        self.endOfWordSuffix = suffix
        self.byteIds = byteIds
    }

    /// Resolves every merge to (left id, right id) -> (rank, merged id). The three vocabulary lookups per
    /// merge (left, right, left + right without the continuing_subword_prefix) are done in batches.
    private static func buildMergeTable(_ raw: TokRawMerges, vocab: TokByteTable, prefixLength: Int, node: TokJSONNode) throws -> TokPairTable {
        let n = raw.count
        // Every pair id and merged id is a vocabulary value.
        var table = TokPairTable(expectedCount: n, maxId: vocab.values.max() ?? 0)
        // Resolve and insert in chunks so the intermediate arrays stay in cache; insertion keeps file order.
        let chunk = 1 << 15
        var ids = [Int32](repeating: -1, count: 3 * min(n, chunk))
        try raw.pool.withUnsafeBufferPointer { pool in
            try raw.refs.withUnsafeBufferPointer { refs in
                for k in 0..<n where refs[4 * k + 3] < prefixLength {
                    throw TokenizerError.invalidValue(file: node.file, path: "\(node.path).merges[\(k)]",
                                                      problem: "right token is shorter than continuing_subword_prefix")
                }
                @inline(__always) func piece(_ k: Int, _ side: Int, skip: Int = 0) -> UnsafeBufferPointer<UInt8> {
                    let s = Int(refs[4 * k + 2 * side]) + skip
                    return UnsafeBufferPointer(rebasing: pool[s..<(Int(refs[4 * k + 2 * side]) + Int(refs[4 * k + 2 * side + 1]))])
                }
                var k0 = 0
                while k0 < n {
                    let m = min(chunk, n - k0)
                    ids.withUnsafeMutableBufferPointer { out in
                        vocab.getBatch(count: 3 * m, into: out) { q in
                            let k = k0 + q / 3
                            switch q % 3 {
                            case 0: return (piece(k, 0), TokByteTable.emptyBuffer)
                            case 1: return (piece(k, 1), TokByteTable.emptyBuffer)
                            default: return (piece(k, 0), piece(k, 1, skip: prefixLength))
                            }
                        }
                    }
                    for j in 0..<m where ids[3 * j] < 0 || ids[3 * j + 1] < 0 || ids[3 * j + 2] < 0 {
                        let k = k0 + j
                        let a = String(decoding: piece(k, 0), as: UTF8.self)
                        let b = String(decoding: piece(k, 1), as: UTF8.self)
                        let what = ids[3 * j] < 0 ? "token '\(a)'" : ids[3 * j + 1] < 0 ? "token '\(b)'"
                            : "merged token '\(a + String(decoding: piece(k, 1, skip: prefixLength), as: UTF8.self))'"
                        throw TokenizerError.invalidValue(file: node.file, path: "\(node.path).merges[\(k)]",
                                                          problem: "\(what) is not in the vocabulary")
                    }
                    for j in 0..<m {
                        table.set(TokPairTable.pack(ids[3 * j], ids[3 * j + 1]), rank: UInt32(k0 + j), newId: ids[3 * j + 2])
                    }
                    k0 += m
                }
            }
        }
        return table
    }

    func tokenToId(_ token: [UInt8]) -> Int32? { vocab.get(token) }

    func idToToken(_ id: Int32) -> [UInt8]? {
        guard id >= 0, Int(id) < idToEntry.count else { return nil }
        let e = idToEntry[Int(id)]
        return e < 0 ? nil : Array(vocab.key(entry: Int(e)))
    }

    func tokenize(_ word: [UInt8], into out: inout [Int32]) {
        if word.isEmpty { return }
        if ignoreMerges, let id = vocab.get(word) {
            out.append(id)
            return
        }
        var sym: [Int32] = []
        var len: [Int32] = []
        sym.reserveCapacity(word.count)
        len.reserveCapacity(word.count)
        var pendingUnk: (id: Int32, len: Int32)?
        var scratch: [UInt8] = []

        word.withUnsafeBufferPointer { w in
            var i = 0
            while i < w.count {
                let n = TokUTF8.sequenceLength(w[i])
                let isFirst = i == 0
                let isLast = i + n >= w.count
                let char = UnsafeBufferPointer(rebasing: w[i..<min(i + n, w.count)])
                var id: Int32?
                if (continuingSubwordPrefix != nil && !isFirst) || (endOfWordSuffix != nil && isLast) {
                    scratch.removeAll(keepingCapacity: true)
                    if !isFirst, let p = continuingSubwordPrefix { scratch.append(contentsOf: p) }
                    scratch.append(contentsOf: char)
                    if isLast, let s = endOfWordSuffix { scratch.append(contentsOf: s) }
                    id = scratch.withUnsafeBufferPointer { vocab.get($0) }
                    if id == nil && byteFallback {
                        // byte fallback applies to the decorated string, as in tokenizers
                        var all: [Int32] = []
                        for b in scratch {
                            let bid = byteIds[Int(b)]
                            if bid < 0 { all.removeAll(); break }
                            all.append(bid)
                        }
                        if all.count == scratch.count {
                            for bid in all { sym.append(bid); len.append(1) }
                            i += n
                            continue
                        }
                    }
                } else {
                    id = vocab.get(char)
                    if id == nil && byteFallback {
                        var ok = true
                        for b in char where byteIds[Int(b)] < 0 { ok = false; break }
                        if ok {
                            // Note: like tokenizers, a pending unk is not flushed before byte tokens.
                            for b in char { sym.append(byteIds[Int(b)]); len.append(1) }
                            i += n
                            continue
                        }
                    }
                }
                if let id {
                    if let u = pendingUnk { sym.append(u.id); len.append(u.len); pendingUnk = nil }
                    sym.append(id)
                    len.append(Int32(n))
                } else if let unk = unkId {
                    if let u = pendingUnk {
                        if fuseUnk {
                            pendingUnk = (u.id, u.len + Int32(n))
                        } else {
                            sym.append(u.id); len.append(u.len)
                            pendingUnk = (unk, Int32(n))
                        }
                    } else {
                        pendingUnk = (unk, Int32(n))
                    }
                }
                i += n
            }
        }
        if let u = pendingUnk { sym.append(u.id); len.append(u.len) }
        if sym.count > 1 { mergeAll(&sym, &len) }
        for k in 0..<sym.count where len[k] != 0 { out.append(sym[k]) }
    }

    /// tokenizers' `Word::merge_all` (without dropout).
    private func mergeAll(_ sym: inout [Int32], _ len: inout [Int32]) {
        let n = sym.count
        var prev = [Int32](repeating: -1, count: n)
        var next = [Int32](repeating: -1, count: n)
        for k in 0..<n {
            prev[k] = Int32(k - 1)
            next[k] = k + 1 < n ? Int32(k + 1) : -1
        }
        var heap = TokMergeHeap()
        heap.reserve(n)
        for k in 0..<(n - 1) {
            if let m = merges.get(TokPairTable.pack(sym[k], sym[k + 1])) {
                heap.push(rank: m.rank, pos: Int32(k), newId: m.newId)
            }
        }
        while let top = heap.pop() {
            let pos = Int(top.pos)
            if len[pos] == 0 { continue }
            let right = Int(next[pos])
            if right < 0 { continue }
            // Skip entries made stale by earlier merges.
            guard let cur = merges.get(TokPairTable.pack(sym[pos], sym[right])), cur.newId == top.newId else { continue }
            sym[pos] = top.newId
            len[pos] += len[right]
            len[right] = 0
            let after = next[right]
            next[pos] = after
            if after >= 0 { prev[Int(after)] = Int32(pos) }
            let before = prev[pos]
            if before >= 0, let m = merges.get(TokPairTable.pack(sym[Int(before)], sym[pos])) {
                heap.push(rank: m.rank, pos: before, newId: m.newId)
            }
            if after >= 0, let m = merges.get(TokPairTable.pack(sym[pos], sym[Int(after)])) {
                heap.push(rank: m.rank, pos: Int32(pos), newId: m.newId)
            }
        }
    }
}

/// Binary min-heap of pending merges ordered by (rank, position).
struct TokMergeHeap {
    private var keys: [UInt64] = []  // rank << 32 | pos
    private var ids: [Int32] = []

    mutating func reserve(_ n: Int) {
        keys.reserveCapacity(n)
        ids.reserveCapacity(n)
    }

    mutating func push(rank: UInt32, pos: Int32, newId: Int32) {
        var i = keys.count
        let key = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: pos))
        keys.append(key)
        ids.append(newId)
        while i > 0 {
            let parent = (i - 1) >> 1
            if keys[parent] <= key { break }
            keys[i] = keys[parent]
            ids[i] = ids[parent]
            i = parent
        }
        keys[i] = key
        ids[i] = newId
    }

    mutating func pop() -> (pos: Int32, newId: Int32)? {
        guard let topKey = keys.first else { return nil }
        let topId = ids[0]
        let lastKey = keys.removeLast()
        let lastId = ids.removeLast()
        let n = keys.count
        if n > 0 {
            var i = 0
            while true {
                let l = 2 * i + 1
                if l >= n { break }
                var c = l
                if l + 1 < n && keys[l + 1] < keys[l] { c = l + 1 }
                if keys[c] >= lastKey { break }
                keys[i] = keys[c]
                ids[i] = ids[c]
                i = c
            }
            keys[i] = lastKey
            ids[i] = lastId
        }
        return (Int32(truncatingIfNeeded: topKey & 0xFFFF_FFFF), topId)
    }
}
