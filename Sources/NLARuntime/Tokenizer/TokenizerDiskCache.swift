// Built tokenizer tables on disk. Building Gemma 3's tokenizer from its 33 MB tokenizer.json takes ~0.25 s
// (parse, index 262k tokens, resolve 515k merges) in every process that loads a model: most of the start-up
// of `nla tokenize`, and a fixed cost of every `explain`. The tables are a pure function of those bytes, so
// the first build writes them to `<dir>/<sha256 of tokenizer.json>.nlatok` and later processes read them
// back (~25 MB copied, a few milliseconds) instead of parsing.
//
// The file holds the document without `model.vocab` / `model.merges` (a few KB of JSON, parsed again so
// every option goes through the same code as a fresh build) and the BPE tables. A file that is missing,
// truncated, of another format version, fails its checksum or holds tables that are not a consistent index
// is ignored and rebuilt from tokenizer.json; writing goes to a temporary file renamed into place, so a
// reader never sees half a file. Failing to write (read-only or full disk) only costs the rebuild next time.

import Crypto
import Foundation

enum TokenizerDiskCache {
    /// Bumped whenever the layout of the file or of the tables in it changes.
    static let magic = Array("NLATOKC2".utf8)
    static let sectionCount = 10
    /// Files kept in a directory; storing one more removes the least recently used (a load refreshes a
    /// file's modification time).
    static let maxFiles = 16

    /// The SHA-256 of a tokenizer.json's bytes: the key of everything cached for it.
    typealias Key = [UInt8]

    static func key(of bytes: Data) -> Key { Array(SHA256.hash(data: bytes)) }

    static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    static func path(directory: String, key: Key) -> String {
        directory + "/" + hex(key) + ".nlatok"
    }

    /// Writes `bytes` to `final` through a temporary file renamed into place, so a reader never sees half a
    /// file; errors are swallowed (the cache is an optimization).
    static func writeAtomically(directory: String, final: String, bytes: Data) {
        let tmp = final + ".tmp.\(ProcessInfo.processInfo.processIdentifier).\(UInt32.random(in: 0...UInt32.max))"
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try bytes.write(to: URL(fileURLWithPath: tmp))
            if rename(tmp, final) != 0 { try? FileManager.default.removeItem(atPath: tmp) }
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)
        }
    }

    // MARK: writing

    /// Writes the tables of a freshly built BPE tokenizer; errors are swallowed (the cache is an optimization).
    static func store(directory: String, key: Key, root: [String: TokJSON], model: TokBPEModel) {
        writeAtomically(directory: directory, final: path(directory: directory, key: key),
                        bytes: Data(encode(key: key, root: root, model: model)))
        evict(directory: directory, keeping: maxFiles)
    }

    // MARK: identities

    /// The file that maps a source identity (`FileIdentity.rangeKey`: a file range as it is now) to the
    /// SHA-256 of its bytes, so a process loading an unchanged file finds its tokenizer without reading the
    /// 33 MB. Named by the SHA-256 of the identity; holds a format line, the identity and the digest (hex).
    static func digestPath(directory: String, identity: String) -> String {
        directory + "/" + hex(Array(SHA256.hash(data: Array(identity.utf8)))) + ".nlaid"
    }

    static let digestFormat = "nla-tokenizer-identity 1"

    /// The digest recorded for `identity`, or nil (no file, another identity, or not a well-formed file).
    static func loadDigest(directory: String, identity: String) -> Key? {
        let p = digestPath(directory: directory, identity: identity)
        guard let data = FileManager.default.contents(atPath: p), data.count <= 4096,
              let text = String(data: data, encoding: .utf8) else { return nil }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count == 4, lines[0] == digestFormat, lines[1] == identity, lines[3].isEmpty,
              lines[2].count == 64 else { return nil }
        var bytes: [UInt8] = []
        var i = lines[2].startIndex
        while i < lines[2].endIndex {
            let j = lines[2].index(i, offsetBy: 2)
            guard let b = UInt8(lines[2][i..<j], radix: 16) else { return nil }
            bytes.append(b)
            i = j
        }
        return bytes
    }

    /// Records `digest` for `identity`.
    static func storeDigest(directory: String, identity: String, digest: Key) {
        writeAtomically(directory: directory, final: digestPath(directory: directory, identity: identity),
                        bytes: Data("\(digestFormat)\n\(identity)\n\(hex(digest))\n".utf8))
        evict(directory: directory, suffix: ".nlaid", keeping: maxFiles * 8)
    }

    /// Offset of the checksum word in a file; the body it covers starts 8 bytes later.
    static var checksumOffset: Int { magic.count + 32 }

    /// The file's bytes: magic, key, checksum of the body; body = section lengths, then the sections.
    static func encode(key: [UInt8], root: [String: TokJSON], model: TokBPEModel) -> [UInt8] {
        var json: [UInt8] = []
        TokJSONWriter.value(.object(root), into: &json)
        let v = model.vocab.storage, m = model.merges.storage
        var sections: [[UInt8]] = []
        func add<T>(_ a: [T]) { sections.append(a.withUnsafeBytes { Array($0) }) }
        sections.append(json)
        add(v.pool); add(v.starts); add(v.values); add(v.slots)
        add(model.idToEntry)
        add([Int64(m.compact ? 1 : 0), Int64(m.capacity), Int64(m.count), Int64(MemoryLayout<TokByteTable.Slot>.stride)])
        add(m.cells); add(m.mergedIds); add(m.wide)
        precondition(sections.count == sectionCount)

        var body: [UInt8] = []
        for s in sections { appendWord(UInt64(s.count), to: &body) }
        for s in sections {
            body += s
            body += repeatElement(0, count: (8 - s.count % 8) % 8)
        }
        var file = magic + key
        appendWord(body.withUnsafeBytes { checksum($0) }, to: &file)
        return file + body
    }

    /// Removes the least recently used files ending in `suffix` (.nlatok tables, .nlaid identities) beyond `keeping`.
    static func evict(directory: String, suffix: String = ".nlatok", keeping: Int) {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: directory) else { return }
        let files = names.filter { $0.hasSuffix(suffix) }.map { directory + "/" + $0 }
        guard files.count > keeping else { return }
        let dated = files.map { ($0, ((try? fm.attributesOfItem(atPath: $0))?[.modificationDate] as? Date) ?? .distantPast) }
        for (f, _) in dated.sorted(by: { $0.1 > $1.1 }).dropFirst(keeping) { try? fm.removeItem(atPath: f) }
    }

    private static func appendWord(_ w: UInt64, to out: inout [UInt8]) {
        withUnsafeBytes(of: w.littleEndian) { out += $0 }
    }

    /// A 64-bit multiply–xor hash of the bytes (not cryptographic: it catches damage, not tampering; the file
    /// name already is the SHA-256 of the tokenizer.json it was built from).
    static func checksum(_ raw: UnsafeRawBufferPointer) -> UInt64 {
        var h: UInt64 = 0x243F_6A88_85A3_08D3 ^ UInt64(raw.count)
        var i = 0
        while i + 8 <= raw.count {
            h = (h ^ raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0x9E37_79B9_7F4A_7C15
            h ^= h >> 29
            i += 8
        }
        while i < raw.count {
            h = (h ^ UInt64(raw[i])) &* 0x9E37_79B9_7F4A_7C15
            i += 1
        }
        return h
    }

    // MARK: reading

    /// The tokenizer core stored for `key`, or nil when there is no usable file.
    static func load(directory: String, key: Key, file: String) -> TokenizerCore? {
        let p = path(directory: directory, key: key)
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: p), options: [.mappedIfSafe]) else { return nil }
        utimes(p, nil)  // recently used: kept longest by `evict`
        return data.withUnsafeBytes { decode($0, key: key, file: file) }
    }

    /// The tokenizer core in a file's bytes, or nil when they are not a usable file for `key`.
    static func decode(_ raw: UnsafeRawBufferPointer, key: [UInt8], file: String) -> TokenizerCore? {
        let head = checksumOffset + 8
        guard raw.count >= head + 8 * sectionCount, Array(raw[0..<magic.count]) == magic,
              Array(raw[magic.count..<checksumOffset]) == key else { return nil }
        let body = UnsafeRawBufferPointer(rebasing: raw[head...])
        guard checksum(body) == UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: checksumOffset, as: UInt64.self)) else {
            return nil
        }
        var sections: [UnsafeRawBufferPointer] = []
        var offset = 8 * sectionCount
        for i in 0..<sectionCount {
            let n64 = UInt64(littleEndian: body.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))
            guard offset <= body.count, n64 <= UInt64(body.count - offset) else { return nil }
            let n = Int(n64)
            sections.append(UnsafeRawBufferPointer(rebasing: body[offset..<(offset + n)]))
            offset += n + (8 - n % 8) % 8
        }
        func array<T>(_ i: Int, _: T.Type) -> [T]? {
            let s = sections[i]
            guard s.count % MemoryLayout<T>.stride == 0 else { return nil }
            let n = s.count / MemoryLayout<T>.stride
            return [T](unsafeUninitializedCapacity: n) { buf, done in
                if n > 0 { UnsafeMutableRawPointer(buf.baseAddress!).copyMemory(from: s.baseAddress!, byteCount: s.count) }
                done = n
            }
        }
        guard let pool = array(1, UInt8.self), let starts = array(2, Int32.self), let values = array(3, Int32.self),
              let slots = array(4, TokByteTable.Slot.self), let idToEntry = array(5, Int32.self),
              let meta = array(6, Int64.self), meta.count == 4, meta[3] == Int64(MemoryLayout<TokByteTable.Slot>.stride),
              let cells = array(7, UInt64.self), let mergedIds = array(8, Int32.self), let wide = array(9, SIMD2<UInt64>.self),
              let vocab = TokByteTable(storage: .init(pool: pool, starts: starts, values: values, slots: slots)),
              let merges = TokPairTable(storage: .init(compact: meta[0] == 1, capacity: Int(meta[1]), count: Int(meta[2]),
                                                       cells: cells, mergedIds: mergedIds, wide: wide), idLimit: idToEntry.count)
        else { return nil }
        for e in idToEntry where e < -1 || Int(e) >= vocab.count { return nil }
        for e in 0..<vocab.count where values[e] >= idToEntry.count { return nil }
        guard case .object(let root)? = try? TokJSONReader.parse(Data(sections[0]), file: file) else { return nil }
        return try? TokenizerCore(root: root, file: file) { node in
            try TokBPEModel(node, vocab: vocab, idToEntry: idToEntry, merges: merges)
        }
    }
}

/// The disk-cache reader as the fuzz target drives it: a valid file for a tokenizer.json, damaged at will,
/// optionally resealed (checksum recomputed) so the damage reaches the checks behind the checksum.
package enum TokenizerDiskCacheFuzzing {
    /// The file `TokenizerCache` writes for `json` (a BPE tokenizer.json).
    package static func file(for json: Data) throws -> [UInt8] {
        let parsed = try TokJSONReader.parseTokenizerFile(json, file: "tokenizer.json")
        let core = try TokenizerCore(parsed, file: "tokenizer.json")
        guard let bpe = core.model as? TokBPEModel else {
            throw TokenizerError.unsupported(file: "tokenizer.json", path: "model", problem: "not a BPE model")
        }
        return TokenizerDiskCache.encode(key: TokenizerDiskCache.key(of: json), root: parsed.root, model: bpe)
    }

    /// `bytes` with the checksum word set to the checksum of its body (unchanged when too short to hold one).
    package static func resealed(_ bytes: [UInt8]) -> [UInt8] {
        let at = TokenizerDiskCache.checksumOffset
        guard bytes.count >= at + 8 else { return bytes }
        var out = bytes
        let sum = bytes.withUnsafeBytes { TokenizerDiskCache.checksum(UnsafeRawBufferPointer(rebasing: $0[(at + 8)...])) }
        withUnsafeBytes(of: sum.littleEndian) { for k in 0..<8 { out[at + k] = $0[k] } }
        return out
    }

    /// A tokenizer for `json` through a `TokenizerCache` whose directory holds `file` as json's entry, and
    /// whether the file was used (false: refused and rebuilt from the JSON).
    package static func load(file: [UInt8], json: Data, directory: String) throws -> (Tokenizer, fromFile: Bool) {
        let path = TokenizerDiskCache.path(directory: directory, key: TokenizerDiskCache.key(of: json))
        try Data(file).write(to: URL(fileURLWithPath: path))
        defer { unlink(path) }
        let cache = TokenizerCache(capacity: 0, directory: directory)
        let tok = try Tokenizer(tokenizerJSON: TokenizerSourceFile(data: json, name: "tokenizer.json"), tokenizerConfig: nil, cache: cache)
        return (tok, cache.diskLoads == 1)
    }
}
