import Foundation
import NLATestSupport
import Testing
@testable import NLARuntime

/// The tokenizer.json part of a tokenizer is built once per distinct byte content and shared; the
/// per-model files (tokenizer_config.json, chat template) stay each model's own.
@Suite("Tokenizer cache")
struct TokenizerCacheTests {
    typealias S = TokTestSupport

    static let gemmaLike = """
        {{ bos_token }}{%- set loop_messages = messages -%}{%- set first_user_prefix = "" -%}\
        {{ '<start_of_turn>' + role + '\\n' }}{{ '<end_of_turn>\\n' }}
        """

    static func tokenizerJSON(extraToken: String? = nil) throws -> String {
        var vocab = ["<s>": 0, "<t>": 1, "a": 2, "b": 3, "ab": 4]
        if let t = extraToken { vocab[t] = 5 }
        return try S.tokenizerJSON(model: S.bpe(vocab, merges: ["a b"]), addedTokens: [S.added(0, "<s>"), S.added(1, "<t>")])
    }

    static func source(_ text: String, _ name: String) -> TokenizerSourceFile {
        TokenizerSourceFile(data: Data(text.utf8), name: name)
    }

    @Test("same tokenizer.json bytes: built once, reused, encodes the same; own bos and template file per model")
    func sameBytesShareTheCore() throws {
        let cache = TokenizerCache(capacity: 2)
        let json = try Self.tokenizerJSON()
        let first = try Tokenizer(tokenizerJSON: Self.source(json, "target.gguf[tokenizer.json]"),
                                  tokenizerConfig: Self.source(#"{"bos_token": "<s>", "chat_template": "{{ x }}"}"#,
                                                               "target.gguf[tokenizer_config.json]"),
                                  cache: cache)
        let second = try Tokenizer(tokenizerJSON: Self.source(json, "av.gguf[tokenizer.json]"),
                                   tokenizerConfig: Self.source(try S.json(["bos_token": "<t>", "chat_template": Self.gemmaLike]),
                                                                "av.gguf[tokenizer_config.json]"),
                                   cache: cache)
        #expect(cache.builds == 1)
        #expect(cache.reuses == 1)
        // The shared part: the same encoding and decoding.
        for text in ["ab", "aab", "ba", "<s>ab<t>"] {
            #expect(first.encode(text, addSpecialTokens: false) == second.encode(text, addSpecialTokens: false))
        }
        #expect(first.encode("aab", addSpecialTokens: false) == [2, 4])
        #expect(first.vocabSize == second.vocabSize)
        // The per-model part: bos token and chat template come from each model's own config.
        #expect(first.bosTokenId == 0)
        #expect(second.bosTokenId == 1)
        let e = #expect(throws: TokenizerError.self) { try first.renderChat([ChatMessage(role: "user", content: "a")]) }
        #expect(e?.description.contains("target.gguf[tokenizer_config.json]") == true)
        #expect(try second.renderChat([ChatMessage(role: "user", content: "a")]).hasPrefix("<t><start_of_turn>user"))
    }

    @Test("different bytes are never shared; capacity evicts the least recently used; nil cache always builds")
    func differentBytesAndEviction() throws {
        let cache = TokenizerCache(capacity: 1)
        let a = try Self.tokenizerJSON(), b = try Self.tokenizerJSON(extraToken: "bb")
        let ta = try Tokenizer(tokenizerJSON: Self.source(a, "a.json"), tokenizerConfig: nil, cache: cache)
        let tb = try Tokenizer(tokenizerJSON: Self.source(b, "b.json"), tokenizerConfig: nil, cache: cache)
        #expect(cache.builds == 2 && cache.reuses == 0)
        #expect(ta.tokenToId("bb") == nil)
        #expect(tb.tokenToId("bb") == 5)
        // Capacity 1: b evicted a, so a is built again, and then b again.
        _ = try Tokenizer(tokenizerJSON: Self.source(a, "a.json"), tokenizerConfig: nil, cache: cache)
        _ = try Tokenizer(tokenizerJSON: Self.source(b, "b.json"), tokenizerConfig: nil, cache: cache)
        #expect(cache.builds == 4 && cache.reuses == 0)
        _ = try Tokenizer(tokenizerJSON: Self.source(b, "b.json"), tokenizerConfig: nil, cache: cache)
        #expect(cache.builds == 4 && cache.reuses == 1)
        cache.removeAll()
        _ = try Tokenizer(tokenizerJSON: Self.source(b, "b.json"), tokenizerConfig: nil, cache: cache)
        #expect(cache.builds == 5)
        // One byte of difference (a trailing space) is another key.
        _ = try Tokenizer(tokenizerJSON: Self.source(b + " ", "b.json"), tokenizerConfig: nil, cache: cache)
        #expect(cache.builds == 6)
        // No cache: nothing counted anywhere.
        _ = try Tokenizer(tokenizerJSON: Self.source(a, "a.json"), tokenizerConfig: nil, cache: nil)
        #expect(cache.builds == 6)
    }

    @Test("a tokenizer.json that fails to build is not kept: the same error every time, naming its file")
    func failuresAreNotCached() throws {
        let cache = TokenizerCache(capacity: 2)
        let broken = #"{"version": "1.0", "added_tokens": []}"#  // no "model"
        for name in ["one.gguf[tokenizer.json]", "two.gguf[tokenizer.json]"] {
            let e = #expect(throws: TokenizerError.self) {
                _ = try Tokenizer(tokenizerJSON: Self.source(broken, name), tokenizerConfig: nil, cache: cache)
            }
            #expect(e?.description.contains(name) == true)
        }
        #expect(cache.builds == 0 && cache.reuses == 0)
    }

    @Test("merge table: the compact and wide layouts give every pair's (rank, merged id), later duplicates win, misses stay misses")
    func mergeTableLayoutsAgree() {
        var lcg: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next(_ n: Int) -> Int32 { lcg = lcg &* 6364136223846793005 &+ 1442695040888963407; return Int32((lcg >> 33) % UInt64(n)) }
        let n = 6000, vocab = 3000
        var keys: [UInt64] = [], newIds: [Int32] = [], expected: [UInt64: (UInt32, Int32)] = [:]
        for r in 0..<n {
            // every 10th merge repeats an earlier pair with a new rank and merged id
            let key = r % 10 == 9 && !keys.isEmpty ? keys[Int(next(keys.count))] : TokPairTable.pack(next(vocab), next(vocab))
            let newId = next(vocab)
            keys.append(key)
            newIds.append(newId)
            expected[key] = (UInt32(r), newId)
        }
        var compact = TokPairTable(expectedCount: n, maxId: Int32(vocab - 1))
        var wide = TokPairTable(expectedCount: n, maxId: TokPairTable.compactIdLimit)
        #expect(compact.isCompact && !wide.isCompact)
        // in file order, as the tokenizer inserts them; the third table grows from a small start
        var grown = TokPairTable(expectedCount: 4, maxId: Int32(vocab - 1))
        for (r, k) in keys.enumerated() {
            compact.set(k, rank: UInt32(r), newId: newIds[r])
            wide.set(k, rank: UInt32(r), newId: newIds[r])
            grown.set(k, rank: UInt32(r), newId: newIds[r])
        }
        #expect(compact.count == expected.count && wide.count == expected.count && grown.count == expected.count)
        for (k, e) in expected {
            for t in [compact, wide, grown] {
                let g = t.get(k)
                #expect(g?.rank == e.0 && g?.newId == e.1, "pair \(k >> 32),\(k & 0xFFFF_FFFF)")
            }
        }
        var misses = 0
        for _ in 0..<2000 {
            let k = TokPairTable.pack(next(vocab + 50), next(vocab + 50))
            if expected[k] == nil {
                misses += 1
                #expect(compact.get(k) == nil && wide.get(k) == nil && grown.get(k) == nil)
            }
        }
        #expect(misses > 1000)
        // ids the compact layout cannot hold are misses there, never aliases of stored pairs
        let stored = keys[0]
        let alias = (stored >> 32 | UInt64(1) << 21) << 32 | (stored & 0xFFFF_FFFF)
        #expect(compact.get(alias) == nil)
        #expect(compact.get(TokPairTable.pack(TokPairTable.compactIdLimit, 0)) == nil)
        // 8 B per cell + 4 B per merge vs 16 B per cell, with cells = 4/3 × merges: 0.69 of the wide layout
        #expect(compact.byteCount * 100 < wide.byteCount * 70, "compact \(compact.byteCount) B vs wide \(wide.byteCount) B")
        // cells at load factor 3/4 (8 B per cell) plus 4 B of merged id per merge: not a power-of-two table at load 1/2
        #expect(compact.byteCount <= (n + n / 3 + 2) * 8 + n * 4, "compact table \(compact.byteCount) B for \(n) merges")
        // a pair with an id the compact layout cannot hold turns the table wide; every pair stays
        let big = TokPairTable.pack(TokPairTable.compactIdLimit + 5, 7)
        grown.set(big, rank: UInt32(n), newId: 11)
        #expect(!grown.isCompact && grown.count == expected.count + 1)
        #expect(grown.get(big)?.rank == UInt32(n) && grown.get(big)?.newId == 11)
        for (k, e) in expected { #expect(grown.get(k)?.rank == e.0 && grown.get(k)?.newId == e.1) }
    }

    @Test("a byte table keeps no spare capacity after indexing, and every key still resolves")
    func byteTableShrinksAfterIndexing() {
        var t = TokByteTable()
        let keys = (0..<5000).map { i in Array("token-\(i)-\(String(repeating: "x", count: i % 13))".utf8) }
        for (i, k) in keys.enumerated() { k.withUnsafeBufferPointer { t.append($0, value: Int32(i)) } }
        #expect(t.pool.capacity > t.pool.count + t.pool.count / 16 + 64 || t.starts.capacity > t.starts.count + t.starts.count / 16 + 64,
                "appending left no spare capacity: the check below would pass without shrinking")
        t.buildIndex()
        for a in [t.pool.capacity - t.pool.count, t.starts.capacity - t.starts.count, t.values.capacity - t.values.count] {
            #expect(a <= 64, "spare capacity \(a) after buildIndex")
        }
        for (i, k) in keys.enumerated() {
            #expect(t.get(k) == Int32(i))
            #expect(Array(t.key(entry: i)) == k && t.length(entry: i) == k.count)
        }
        #expect(t.get(Array("token-5000".utf8)) == nil)
        // slots at load factor 3/4 (16 B each) besides the keys, offsets and values
        let slotBytes = t.byteCount - t.pool.count - t.starts.count * 4 - t.values.count * 4
        #expect(slotBytes <= (keys.count + keys.count / 3 + 2) * 16, "\(slotBytes) B of slots for \(keys.count) keys")
    }
}
