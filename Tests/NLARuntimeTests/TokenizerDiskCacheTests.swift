import Foundation
import NLATestSupport
import Quant
import Testing
@testable import NLARuntime

/// Built BPE tables go to disk once and are read back by later processes; a damaged file is never used.
@Suite("Tokenizer disk cache")
struct TokenizerDiskCacheTests {
    typealias S = TokTestSupport

    /// A small BPE tokenizer with a normalizer, a pre-tokenizer, byte fallback and added tokens, so the JSON
    /// written beside the tables carries options of every kind.
    static func tokenizerJSON() throws -> String {
        var vocab: [String: Int] = ["<unk>": 0, "<s>": 1, "▁": 2, "a": 3, "b": 4, "c": 5, "ab": 6, "▁ab": 7, "abc": 8, "\"q\"": 9]
        for b in 0..<256 { vocab[String(format: "<0x%02X>", b)] = 10 + b }
        let model: [String: Any] = ["type": "BPE", "vocab": vocab, "merges": ["a b", "▁ ab", "ab c"], "unk_token": "<unk>",
                                    "byte_fallback": true, "fuse_unk": true, "dropout": NSNull()]
        let doc: [String: Any] = [
            "version": "1.0",
            "added_tokens": [S.added(0, "<unk>"), S.added(1, "<s>")],
            "normalizer": ["type": "Replace", "pattern": ["String": " "], "content": "▁"],
            "pre_tokenizer": NSNull(),
            "post_processor": NSNull(),
            "decoder": ["type": "Sequence", "decoders": [["type": "Replace", "pattern": ["String": "▁"], "content": " "], ["type": "ByteFallback"]]],
            "model": model,
        ]
        return String(decoding: try JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys]), as: UTF8.self)
    }

    static let texts = ["ab", " abc", "aab c", "é\u{1}\"q\"", "<s>ab<unk>", "", "🎉 ab", "\t\n"]

    static func tokenizer(_ json: String, _ cache: TokenizerCache?) throws -> Tokenizer {
        try Tokenizer(tokenizerJSON: TokenizerSourceFile(data: Data(json.utf8), name: "m.gguf[tokenizer.json]"),
                      tokenizerConfig: nil, cache: cache)
    }

    static func files(_ dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".nlatok") }
    }

    @Test("the first build writes the tables; a new cache on the same directory reads them and encodes and decodes the same")
    func roundTrip() throws {
        let dir = TestPaths.tempDirectory("tok-disk")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let json = try Self.tokenizerJSON()
        let fresh = try Self.tokenizer(json, nil)
        let first = TokenizerCache(capacity: 2, directory: dir)
        _ = try Self.tokenizer(json, first)
        #expect(first.builds == 1 && first.diskLoads == 0)
        #expect(Self.files(dir).count == 1, "one .nlatok file in \(dir)")
        #expect(!((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).contains { $0.contains(".tmp.") })

        let second = TokenizerCache(capacity: 2, directory: dir)
        let loaded = try Self.tokenizer(json, second)
        #expect(second.builds == 0 && second.diskLoads == 1)
        #expect(loaded.vocabSize == fresh.vocabSize)
        for t in Self.texts {
            for special in [false, true] {
                let ids = fresh.encode(t, addSpecialTokens: special)
                #expect(loaded.encode(t, addSpecialTokens: special) == ids, "\(t.debugDescription)")
                #expect(loaded.decode(ids) == fresh.decode(ids))
            }
        }
        #expect(fresh.encode(" abc", addSpecialTokens: false) == [7, 5])  // the normalizer and the merges (by rank) took part
        // Another tokenizer.json is another file.
        _ = try Self.tokenizer(json + " ", second)
        #expect(second.builds == 1 && Self.files(dir).count == 2)
    }

    @Test("a truncated, bit-flipped or foreign file is ignored and rebuilt, and the rebuilt file is good")
    func damagedFilesAreRebuilt() throws {
        let dir = TestPaths.tempDirectory("tok-disk-bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let json = try Self.tokenizerJSON()
        let fresh = try Self.tokenizer(json, nil)
        _ = try Self.tokenizer(json, TokenizerCache(capacity: 1, directory: dir))
        let path = dir + "/" + Self.files(dir)[0]
        let good = try Data(contentsOf: URL(fileURLWithPath: path))
        var flipped = good
        flipped[good.count / 2] ^= 0x10
        var foreign = good
        foreign[3] ^= 0x01  // the format tag
        for (what, bytes) in [("truncated", good.prefix(good.count - 100)), ("half", good.prefix(good.count / 2)),
                              ("bit-flipped", flipped), ("foreign", foreign), ("empty", Data())] {
            try bytes.write(to: URL(fileURLWithPath: path))
            let cache = TokenizerCache(capacity: 1, directory: dir)
            let t = try Self.tokenizer(json, cache)
            #expect(cache.builds == 1 && cache.diskLoads == 0, "\(what) file was used")
            for s in Self.texts { #expect(t.encode(s) == fresh.encode(s), "\(what): \(s.debugDescription)") }
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == good, "\(what) file was not rewritten")
        }
    }

    @Test("at most maxFiles files stay in the directory; the least recently used go first")
    func leastRecentlyUsedFilesAreRemoved() throws {
        let dir = TestPaths.tempDirectory("tok-disk-lru")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let json = try Self.tokenizerJSON()
        let n = TokenizerDiskCache.maxFiles
        var names: [String] = []  // file of tokenizer i, in creation order
        for i in 0..<n {
            _ = try Self.tokenizer(json + String(repeating: " ", count: i), TokenizerCache(capacity: 0, directory: dir))
            let new = Set(Self.files(dir)).subtracting(names)
            #expect(new.count == 1)
            names += new
        }
        // Ages in creation order (file 0 oldest), one minute apart.
        for (i, f) in names.enumerated() {
            try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: Double(i - n) * 60)], ofItemAtPath: dir + "/" + f)
        }
        // Loading tokenizer 0 makes its file the newest; a new file then removes file 1, now the oldest.
        let cache = TokenizerCache(capacity: 0, directory: dir)
        _ = try Self.tokenizer(json, cache)
        #expect(cache.diskLoads == 1)
        _ = try Self.tokenizer(json + String(repeating: " ", count: n), cache)
        let after = Set(Self.files(dir))
        #expect(after.count == n)
        #expect(after.contains(names[0]), "the recently loaded file was removed")
        #expect(!after.contains(names[1]), "the least recently used file was kept")
    }

    @Test("a directory that cannot be written only costs the rebuild")
    func unwritableDirectory() throws {
        let dir = TestPaths.tempDirectory("tok-disk-ro")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let blocker = dir + "/file"
        try Data("x".utf8).write(to: URL(fileURLWithPath: blocker))
        let cache = TokenizerCache(capacity: 1, directory: blocker + "/sub")  // a directory under a regular file
        let t = try Self.tokenizer(try Self.tokenizerJSON(), cache)
        #expect(cache.builds == 1 && t.encode("ab", addSpecialTokens: false) == [6])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["file"])
    }

    @Test("stored tables that are not a consistent index are refused")
    func inconsistentTablesAreRefused() throws {
        var t = TokByteTable()
        for (i, k) in ["a", "bb", "a-long-token-key"].enumerated() { Array(k.utf8).withUnsafeBufferPointer { t.append($0, value: Int32(i)) } }
        t.buildIndex()
        let st = t.storage
        #expect(TokByteTable(storage: st)?.get(Array("a-long-token-key".utf8)) == 2)
        let occupied = st.slots.indices.filter { st.slots[$0].meta != 0 }
        var bad = st; bad.slots[occupied[0]].entry = 7
        #expect(TokByteTable(storage: bad) == nil, "slot names a missing entry")
        bad = st; bad.starts[1] = bad.starts[2] + 1
        #expect(TokByteTable(storage: bad) == nil, "offsets out of order")
        bad = st; bad.starts[3] += 1
        #expect(TokByteTable(storage: bad) == nil, "offsets past the pool")
        bad = st; bad.slots[occupied[0]].word ^= 1
        #expect(TokByteTable(storage: bad) == nil, "key word differs from the entry")
        bad = st; for i in bad.slots.indices where bad.slots[i].meta == 0 { bad.slots[i] = st.slots[occupied[0]] }
        #expect(TokByteTable(storage: bad) == nil, "no empty slot ends a probe")

        var p = TokPairTable(expectedCount: 4, maxId: 10)
        p.set(TokPairTable.pack(1, 2), rank: 0, newId: 3)
        p.set(TokPairTable.pack(3, 4), rank: 1, newId: 5)
        let ps = p.storage
        #expect(TokPairTable(storage: ps, idLimit: 11)?.get(TokPairTable.pack(3, 4))?.newId == 5)
        #expect(TokPairTable(storage: ps, idLimit: 5) == nil, "merged id 5 outside 0..<5")
        var pb = ps; pb.count = 3
        #expect(TokPairTable(storage: pb, idLimit: 11) == nil, "count differs from the cells")
        pb = ps; pb.capacity += 1
        #expect(TokPairTable(storage: pb, idLimit: 11) == nil, "capacity differs from the cells")
        pb = ps; pb.mergedIds = [3]
        #expect(TokPairTable(storage: pb, idLimit: 11) == nil, "a rank past the merged-id list")
        pb = ps; pb.mergedIds[1] = -1
        #expect(TokPairTable(storage: pb, idLimit: 11) == nil, "a stored pair without a merged id")
    }

    @Test("the JSON beside the tables reads back to the same document")
    func jsonRoundTrip() throws {
        let doc: TokJSON = .object(["s": .string("q\"\\ \u{0}\u{1f}\t\n é 🎉 /"), "n": .array([.number(3), .number(-0.0), .number(1e-5),
                                    .number(1.5e300), .number(-2.25), .number(9007199254740993)]), "b": .bool(false), "z": .null,
                                    "o": .object([:]), "a": .array([])])
        var out: [UInt8] = []
        TokJSONWriter.value(doc, into: &out)
        let back = try TokJSONReader.parse(Data(out), file: "x")
        var again: [UInt8] = []
        TokJSONWriter.value(back, into: &again)
        #expect(again == out)
        guard case .object(let o) = back, case .string(let s)? = o["s"], case .array(let n)? = o["n"] else {
            Issue.record("not an object with s and n"); return
        }
        #expect(s == "q\"\\ \u{0}\u{1f}\t\n é 🎉 /")
        let nums = n.compactMap { if case .number(let d) = $0 { return d } else { return nil } }
        #expect(nums == [3, 0, 1e-5, 1.5e300, -2.25, 9007199254740993])
        #expect(nums[1].sign == .minus)
    }

    @Test("real Gemma 3 tokenizer: read back from disk, every golden text encodes and decodes as a fresh build")
    func realTokenizerRoundTrip() throws {
        let url = URL(fileURLWithPath: TestPaths.testModel).appendingPathComponent("tokenizer.json")
        guard FileManager.default.fileExists(atPath: url.path) else { throw S.MissingModel(path: url.path) }
        let source = TokenizerSourceFile(data: try Data(contentsOf: url), name: url.path)
        let dir = TestPaths.tempDirectory("tok-disk-real")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fresh = try Tokenizer(tokenizerJSON: source, tokenizerConfig: nil, cache: nil)
        _ = try Tokenizer(tokenizerJSON: source, tokenizerConfig: nil, cache: TokenizerCache(capacity: 1, directory: dir))
        let cache = TokenizerCache(capacity: 1, directory: dir)
        let loaded = try Tokenizer(tokenizerJSON: source, tokenizerConfig: nil, cache: cache)
        #expect(cache.diskLoads == 1 && cache.builds == 0)
        let cases = S.goldenCases
        #expect(cases.count > 10)
        for c in cases {
            let ids = fresh.encode(c.text, addSpecialTokens: false)
            #expect(ids == c.ids_no_special, "\(c.name)")
            #expect(loaded.encode(c.text, addSpecialTokens: false) == ids, "\(c.name)")
            #expect(loaded.encode(c.text) == fresh.encode(c.text), "\(c.name)")
            #expect(loaded.decode(ids) == fresh.decode(ids), "\(c.name)")
        }
    }
}

/// A tokenizer.json that is an unchanged range of a file (a model directory's file, or the string embedded in
/// a GGUF) is found again by the file's identity, without reading or hashing its bytes; any change to the file
/// makes it a new source.
@Suite("Tokenizer identity cache")
struct TokenizerIdentityTests {
    typealias S = TokTestSupport

    /// The test tokenizer padded past the size from which model files are mapped instead of copied.
    static func bigJSON(merges: [String] = ["a b", "▁ ab", "ab c"]) throws -> String {
        var doc = try JSONSerialization.jsonObject(with: Data(try TokenizerDiskCacheTests.tokenizerJSON().utf8)) as! [String: Any]
        var model = doc["model"] as! [String: Any]
        model["merges"] = merges
        doc["model"] = model
        doc["comment"] = String(repeating: "x", count: ModelFiles.mappedFileMinBytes)
        return String(decoding: try JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys]), as: UTF8.self)
    }

    static func writeDirectory(_ dir: String, json: String, mtime: time_t) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let p = dir + "/tokenizer.json"
        try Data(json.utf8).write(to: URL(fileURLWithPath: p))
        var times = [timespec(tv_sec: mtime, tv_nsec: 0), timespec(tv_sec: mtime, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, p, &times, 0) == 0)
    }

    @Test("a model directory's tokenizer.json: hashed once, then found by identity across caches; a rewritten file is hashed again")
    func directory() throws {
        let root = TestPaths.tempDirectory("tok-identity")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let model = root + "/model", cacheDir = root + "/cache"
        let json = try Self.bigJSON()
        try Self.writeDirectory(model, json: json, mtime: 1_700_000_000)
        let files = try ModelFiles.open(model, tensors: false)
        let id = try #require(files.identities["tokenizer.json"])
        #expect(files.files["tokenizer.json"] == Data(json.utf8))

        let first = TokenizerCache(capacity: 2, directory: cacheDir)
        let fresh = try Tokenizer(files: files, cache: first)
        #expect(first.hashes == 1 && first.builds == 1)
        _ = try Tokenizer(files: files, cache: first)
        #expect(first.hashes == 1 && first.reuses == 1, "the second load in a process finds the digest in memory")

        // A later process: the identity file gives the digest, the tables come from disk; the bytes are not hashed.
        let second = TokenizerCache(capacity: 2, directory: cacheDir)
        let again = try Tokenizer(files: try ModelFiles.open(model, tensors: false), cache: second)
        #expect(second.hashes == 0 && second.diskLoads == 1 && second.builds == 0)
        for t in TokenizerDiskCacheTests.texts { #expect(again.encode(t, addSpecialTokens: false) == fresh.encode(t, addSpecialTokens: false)) }

        // A replaced file with the same modification time (other merges: other bytes, another size, and " abc"
        // encodes otherwise).
        let changed = try Self.bigJSON(merges: ["a b"])
        try FileManager.default.removeItem(atPath: model + "/tokenizer.json")
        try Self.writeDirectory(model, json: changed, mtime: 1_700_000_000)
        let files2 = try ModelFiles.open(model, tensors: false)
        #expect(files2.identities["tokenizer.json"] != id)
        let third = TokenizerCache(capacity: 2, directory: cacheDir)
        let rebuilt = try Tokenizer(files: files2, cache: third)
        #expect(third.hashes == 1 && third.builds == 1)
        let reference = try Tokenizer(tokenizerJSON: TokenizerSourceFile(data: Data(changed.utf8), name: "t"), tokenizerConfig: nil, cache: nil)
        #expect(rebuilt.encode(" abc", addSpecialTokens: false) == reference.encode(" abc", addSpecialTokens: false))
        #expect(rebuilt.encode(" abc", addSpecialTokens: false) != fresh.encode(" abc", addSpecialTokens: false))

        // Rewritten in place (same inode) with a new modification time: hashed again.
        try Self.writeDirectory(model, json: json, mtime: 1_700_000_100)
        let fourth = TokenizerCache(capacity: 2, directory: cacheDir)
        let back = try Tokenizer(files: try ModelFiles.open(model, tensors: false), cache: fourth)
        #expect(fourth.hashes == 1 && fourth.diskLoads == 1, "the first file's tables are still on disk")
        #expect(back.encode(" abc", addSpecialTokens: false) == fresh.encode(" abc", addSpecialTokens: false))
    }

    @Test("an identity file that names another identity, or is damaged, is ignored")
    func damagedIdentityFile() throws {
        let root = TestPaths.tempDirectory("tok-identity-bad")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let model = root + "/model", cacheDir = root + "/cache"
        try Self.writeDirectory(model, json: try Self.bigJSON(), mtime: 1_700_000_000)
        let files = try ModelFiles.open(model, tensors: false)
        let id = try #require(files.identities["tokenizer.json"])
        _ = try Tokenizer(files: files, cache: TokenizerCache(capacity: 1, directory: cacheDir))
        let path = TokenizerDiskCache.digestPath(directory: cacheDir, identity: id)
        let good = try String(contentsOfFile: path, encoding: .utf8)
        for bad in [good.replacingOccurrences(of: id, with: id + "0"), String(good.dropLast(3)), "", good.replacingOccurrences(of: "\n", with: " ")] {
            try bad.write(toFile: path, atomically: true, encoding: .utf8)
            let cache = TokenizerCache(capacity: 1, directory: cacheDir)
            _ = try Tokenizer(files: files, cache: cache)
            #expect(cache.hashes == 1, "\(bad.prefix(60).debugDescription)")
        }
    }

    @Test("a GGUF's embedded tokenizer.json is a view of the mapping with an identity, and builds the same tokenizer")
    func gguf() throws {
        let root = TestPaths.tempDirectory("tok-identity-gguf")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let path = root + "/m.gguf"
        let json = try Self.bigJSON()
        let w = try GGUFWriter(path: path)
        try w.addMetadata(GGUFKeys.filePrefix + "config.json", value: .string("{}"))
        try w.addMetadata(GGUFKeys.filePrefix + "tokenizer.json", value: .string(json))
        _ = try w.write { _, _ in }
        let files = try ModelFiles.open(path)
        #expect(files.files["tokenizer.json"] == Data(json.utf8))
        let id = try #require(files.identities["tokenizer.json"])
        #expect(files.dropping(["tokenizer.json"]).identities["tokenizer.json"] == nil)
        let cacheDir = root + "/cache"
        let first = TokenizerCache(capacity: 1, directory: cacheDir)
        let a = try Tokenizer(files: files, cache: first)
        let second = TokenizerCache(capacity: 1, directory: cacheDir)
        let b = try Tokenizer(files: try ModelFiles.open(path), cache: second)
        #expect(first.hashes == 1 && second.hashes == 0 && second.diskLoads == 1)
        #expect(try ModelFiles.open(path).identities["tokenizer.json"] == id)
        for t in TokenizerDiskCacheTests.texts { #expect(a.encode(t) == b.encode(t)) }
    }
}
