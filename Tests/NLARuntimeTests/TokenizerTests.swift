import Foundation
import NLARuntime
import Testing
import NLATestSupport

// Tests for the tokenizer (Sources/NLARuntime/Tokenizer).
//
// * Golden tests compare against Tests/Fixtures/tokenizer_golden.json (computed with transformers) using
//   the real Gemma 3 tokenizer.json found at $NLA_TEST_MODEL/tokenizer.json (default
//   ~/.cache/nla/models/gemma-3-270m). They FAIL, not skip, when that file is missing.
// * Component tests build tiny tokenizers from inline tokenizer.json snippets; their expected values were
//   produced with huggingface/tokenizers 0.23.3.
//
// Strings are compared as UTF-8 bytes: Swift's `==` on String uses canonical equivalence and would accept
// "é" for "e\u{301}".

// MARK: - Support

enum TokTestSupport {
    struct MissingModel: Error, CustomStringConvertible {
        let path: String
        var description: String {
            "tokenizer test model not found: \(path) does not exist. Run `make test-model` (or set NLA_TEST_MODEL to a directory containing tokenizer.json and tokenizer_config.json)."
        }
    }

    static var modelDirectory: URL { URL(fileURLWithPath: TestPaths.testModel) }

    static let sharedReal: Result<Tokenizer, any Error> = Result {
        let json = modelDirectory.appendingPathComponent("tokenizer.json")
        guard FileManager.default.fileExists(atPath: json.path) else { throw MissingModel(path: json.path) }
        return try Tokenizer(directory: modelDirectory)
    }

    /// The real Gemma 3 tokenizer; throws (failing the test) with a `make test-model` hint when missing.
    static func real() throws -> Tokenizer { try sharedReal.get() }

    // Golden file, located relative to this source file (symlinks resolved).
    static let goldenURL = URL(fileURLWithPath: TestPaths.fixture("tokenizer_golden.json"))

    static let golden: Result<TokGoldenFile, any Error> = Result {
        try JSONDecoder().decode(TokGoldenFile.self, from: Data(contentsOf: goldenURL))
    }
    static var goldenCases: [TokGoldenCase] { (try? golden.get().cases) ?? [] }
    static var goldenChats: [TokGoldenChat] { (try? golden.get().chat) ?? [] }

    // Inline tokenizers.
    static func tempDirectory() throws -> URL {
        URL(fileURLWithPath: TestPaths.tempDirectory("tok-tests"))
    }

    static func write(_ text: String, named name: String, in dir: URL? = nil) throws -> URL {
        let url = try (dir ?? tempDirectory()).appendingPathComponent(name)
        try Data(text.utf8).write(to: url)
        return url
    }

    static func json(_ object: Any) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }

    static func bpe(_ vocab: [String: Int], merges: Any = [String](), _ extra: [String: Any] = [:]) -> [String: Any] {
        var m: [String: Any] = [
            "type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
            "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        ]
        for (k, v) in extra { m[k] = v }
        return m
    }

    static func added(_ id: Int, _ content: String, special: Bool = true, normalized: Bool = false,
                      lstrip: Bool = false, rstrip: Bool = false, singleWord: Bool = false) -> [String: Any] {
        ["id": id, "content": content, "special": special, "normalized": normalized,
         "lstrip": lstrip, "rstrip": rstrip, "single_word": singleWord]
    }

    static func tokenizerJSON(model: [String: Any], normalizer: Any = NSNull(), preTokenizer: Any = NSNull(),
                              postProcessor: Any = NSNull(), decoder: Any = NSNull(),
                              addedTokens: [[String: Any]] = []) throws -> String {
        try json([
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": addedTokens,
            "normalizer": normalizer, "pre_tokenizer": preTokenizer, "post_processor": postProcessor,
            "decoder": decoder, "model": model,
        ] as [String: Any])
    }

    static func make(model: [String: Any], normalizer: Any = NSNull(), preTokenizer: Any = NSNull(),
                     postProcessor: Any = NSNull(), decoder: Any = NSNull(),
                     addedTokens: [[String: Any]] = [], config: String? = nil) throws -> Tokenizer {
        let dir = try tempDirectory()
        let url = try write(
            tokenizerJSON(model: model, normalizer: normalizer, preTokenizer: preTokenizer,
                          postProcessor: postProcessor, decoder: decoder, addedTokens: addedTokens),
            named: "tokenizer.json", in: dir)
        let cfg = try config.map { try write($0, named: "tokenizer_config.json", in: dir) }
        return try Tokenizer(tokenizerJSON: url, tokenizerConfig: cfg)
    }

    static func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    static func scalars(_ s: String) -> String {
        s.unicodeScalars.map { String(format: "U+%04X", $0.value) }.joined(separator: " ")
    }
}

struct TokGoldenFile: Decodable, Sendable {
    let notes: String
    let cases: [TokGoldenCase]
    let chat: [TokGoldenChat]
}

struct TokGoldenCase: Decodable, Sendable, CustomTestStringConvertible {
    let name: String
    let text: String
    let ids_no_special: [Int]
    let ids_with_special: [Int]
    let pieces_no_special: [String]
    let decode_no_special: String
    let decode_with_special: String
    let decode_with_special_skip_special: String
    var testDescription: String { name }
}

struct TokGoldenChat: Decodable, Sendable, CustomTestStringConvertible {
    struct Message: Decodable, Sendable {
        let role: String
        let content: String
    }
    let name: String
    let messages: [Message]
    let add_generation_prompt: Bool
    let rendered: String
    let ids: [Int]
    let pieces: [String]
    var testDescription: String { name }
    var chatMessages: [ChatMessage] { messages.map { ChatMessage(role: $0.role, content: $0.content) } }
}

// MARK: - Golden tests against the real Gemma 3 tokenizer

@Suite("Tokenizer goldens (real Gemma 3 tokenizer.json)")
struct TokenizerGoldenTests {
    @Test("golden file loads with 53 cases and 3 chats")
    func goldenFileLoads() throws {
        let g = try TokTestSupport.golden.get()
        #expect(g.cases.count == 53)
        #expect(g.chat.count == 3)
    }

    @Test("real tokenizer loads", .timeLimit(.minutes(1)))
    func loads() throws {
        let tok = try TokTestSupport.real()
        #expect(tok.vocabSize == 262_144)
        #expect(tok.bosTokenId == 2)
    }

    @Test("ids without special tokens", arguments: TokTestSupport.goldenCases)
    func idsNoSpecial(_ c: TokGoldenCase) throws {
        let tok = try TokTestSupport.real()
        #expect(tok.encode(c.text, addSpecialTokens: false) == c.ids_no_special, "text: \(TokTestSupport.scalars(c.text))")
    }

    @Test("ids with special tokens", arguments: TokTestSupport.goldenCases)
    func idsWithSpecial(_ c: TokGoldenCase) throws {
        let tok = try TokTestSupport.real()
        #expect(tok.encode(c.text) == c.ids_with_special)
        #expect(tok.encode(c.text, addSpecialTokens: true) == c.ids_with_special)
    }

    @Test("pieces", arguments: TokTestSupport.goldenCases)
    func pieces(_ c: TokGoldenCase) throws {
        let tok = try TokTestSupport.real()
        let pieces = tok.encode(c.text, addSpecialTokens: false).map { tok.idToToken($0) ?? "<nil>" }
        #expect(pieces.map(TokTestSupport.bytes) == c.pieces_no_special.map(TokTestSupport.bytes), "\(pieces) vs \(c.pieces_no_special)")
        for (id, piece) in zip(c.ids_no_special, c.pieces_no_special) {
            #expect(tok.tokenToId(piece) == id, "tokenToId(\(piece))")
        }
    }

    @Test("decodes (plain, with special, skipping special)", arguments: TokTestSupport.goldenCases)
    func decodes(_ c: TokGoldenCase) throws {
        let tok = try TokTestSupport.real()
        let plain = tok.decode(c.ids_no_special)
        #expect(TokTestSupport.bytes(plain) == TokTestSupport.bytes(c.decode_no_special), "\(TokTestSupport.scalars(plain))")
        let withSpecial = tok.decode(c.ids_with_special)
        #expect(TokTestSupport.bytes(withSpecial) == TokTestSupport.bytes(c.decode_with_special))
        let skipped = tok.decode(c.ids_with_special, skipSpecialTokens: true)
        #expect(TokTestSupport.bytes(skipped) == TokTestSupport.bytes(c.decode_with_special_skip_special))
    }

    @Test("chat rendering", arguments: TokTestSupport.goldenChats)
    func renderChat(_ c: TokGoldenChat) throws {
        let tok = try TokTestSupport.real()
        let text = try tok.renderChat(c.chatMessages, addGenerationPrompt: c.add_generation_prompt)
        #expect(TokTestSupport.bytes(text) == TokTestSupport.bytes(c.rendered), "\(text.debugDescription)")
    }

    @Test("chat ids", arguments: TokTestSupport.goldenChats)
    func encodeChat(_ c: TokGoldenChat) throws {
        let tok = try TokTestSupport.real()
        let ids = try tok.encodeChat(c.chatMessages, addGenerationPrompt: c.add_generation_prompt)
        #expect(ids == c.ids)
        #expect(ids.map { tok.idToToken($0) ?? "<nil>" }.map(TokTestSupport.bytes) == c.pieces.map(TokTestSupport.bytes))
        #expect(tok.encode(c.rendered, addSpecialTokens: false) == c.ids)
    }

    @Test("vocabulary accessors")
    func vocabulary() throws {
        let tok = try TokTestSupport.real()
        #expect(tok.tokenToId("<bos>") == 2)
        #expect(tok.tokenToId("<eos>") == 1)
        #expect(tok.tokenToId("<start_of_turn>") == 105)
        #expect(tok.tokenToId("<end_of_turn>") == 106)
        #expect(tok.tokenToId("\n") == 107)
        #expect(tok.tokenToId("no such token \u{1}") == nil)
        #expect(tok.idToToken(238) == "<0x00>")
        #expect(tok.idToToken(493) == "<0xFF>")
        #expect(tok.idToToken(262_144) == nil)
        #expect(tok.idToToken(-1) == nil)
        #expect(tok.isSpecial(2) && tok.isSpecial(105) && tok.isSpecial(106))
        #expect(!tok.isSpecial(107))  // "\n" is an added but non-special token
        #expect(!tok.isSpecial(9259))
        #expect(tok.decode([2, 9259, 1902, 1], skipSpecialTokens: true) == "Hello world")
        #expect(tok.decode([999_999_999, 9259]) == "Hello")  // unknown ids are skipped
    }

    @Test("chat edge cases")
    func chatEdgeCases() throws {
        let tok = try TokTestSupport.real()
        #expect(try tok.renderChat([ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: false)
            == "<bos><start_of_turn>user\nHi<end_of_turn>\n")
        #expect(try tok.renderChat([ChatMessage(role: "system", content: "S ")]) == "<bos><start_of_turn>model\n")
        // system content is not trimmed (Jinja adds it verbatim), user content is (Python str.strip)
        #expect(try tok.renderChat([ChatMessage(role: "system", content: " S "), ChatMessage(role: "user", content: "\u{1F}\u{3000} x \t")])
            == "<bos><start_of_turn>user\n S \n\nx<end_of_turn>\n<start_of_turn>model\n")
        for bad in [
            [ChatMessage(role: "assistant", content: "a")],
            [ChatMessage(role: "user", content: "a"), ChatMessage(role: "user", content: "b")],
            [ChatMessage(role: "system", content: "s"), ChatMessage(role: "assistant", content: "a")],
            [],
        ] {
            let e = #expect(throws: TokenizerError.self) { try tok.renderChat(bad) }
            if case .invalidConversation = e {} else { Issue.record("expected invalidConversation, got \(String(describing: e))") }
        }
    }

    @Test("concurrent use from many tasks gives identical results")
    func concurrentUse() async throws {
        let tok = try TokTestSupport.real()
        let cases = TokTestSupport.goldenCases
        try #require(!cases.isEmpty)
        let mismatches = await withTaskGroup(of: Int.self) { group in
            for t in 0..<8 {
                group.addTask {
                    var bad = 0
                    for c in cases.shuffled() where tok.encode(c.text, addSpecialTokens: t % 2 == 0)
                        != (t % 2 == 0 ? c.ids_with_special : c.ids_no_special) { bad += 1 }
                    return bad
                }
            }
            return await group.reduce(0, +)
        }
        #expect(mismatches == 0)
    }

    @Test("long input encodes quickly and round-trips")
    func longInput() throws {
        let tok = try TokTestSupport.real()
        let paragraph = "The quick brown fox jumps over the lazy dog; naïve café 東京 ㈜ 😀. "
        let text = String(repeating: paragraph, count: 200)  // one 14 kB BPE word between newlines
        // Only the result is asserted: how fast a long word encodes is a benchmark's business, not a test's.
        let ids = tok.encode(text, addSpecialTokens: false)
        #expect(TokTestSupport.bytes(tok.decode(ids)) == TokTestSupport.bytes(text))
        // BPE never merges across the repetition boundary differently from a single repetition
        let one = tok.encode(paragraph, addSpecialTokens: false)
        #expect(ids.count <= one.count * 200)
    }
}

// MARK: - Component tests (inline tokenizer.json snippets)

@Suite("Tokenizer components (inline snippets)")
struct TokenizerComponentTests {
    typealias S = TokTestSupport

    static let tinyVocab = ["<unk>": 0, "a": 1, "b": 2, "c": 3, "ab": 4, "bc": 5, "abc": 6, "d": 7, "cd": 8, "abcd": 9]
    static let tinyMerges = ["b c", "a b", "a bc", "c d", "ab cd"]

    @Test("BPE applies the lowest-rank merge first")
    func bpeRanks() throws {
        let tok = try S.make(model: S.bpe(Self.tinyVocab, merges: Self.tinyMerges, ["unk_token": "<unk>"]))
        #expect(tok.encode("abcd") == [6, 7])  // (b,c) first, then (a,bc); "ab cd" never gets a chance
        #expect(tok.encode("abab") == [4, 4])
        #expect(tok.encode("cdab") == [8, 4])
        #expect(tok.encode("axb") == [1, 0, 2])
        #expect(tok.encode("axxb") == [1, 0, 0, 2])  // fuse_unk false
        #expect(tok.encode("ab cd") == [4, 0, 8])
        #expect(tok.encode("") == [])
        #expect(tok.vocabSize == 10)
        #expect(tok.bosTokenId == nil)
    }

    @Test("BPE merges in [a, b] array form, fuse_unk")
    func bpeArrayMergesFuseUnk() throws {
        let tok = try S.make(model: S.bpe(Self.tinyVocab, merges: Self.tinyMerges.map { $0.split(separator: " ").map(String.init) },
                                          ["unk_token": "<unk>", "fuse_unk": true]))
        #expect(tok.encode("abcd") == [6, 7])
        #expect(tok.encode("axxb") == [1, 0, 2])
        #expect(tok.encode("xx") == [0])
    }

    @Test("BPE without unk_token drops unknown characters")
    func bpeNoUnk() throws {
        let tok = try S.make(model: S.bpe(Self.tinyVocab, merges: Self.tinyMerges))
        #expect(tok.encode("axxb") == [4])
    }

    @Test("BPE continuing_subword_prefix and end_of_word_suffix")
    func bpePrefixSuffix() throws {
        let p = try S.make(model: S.bpe(["a": 0, "##b": 1, "##c": 2, "##bc": 3, "abc": 4, "ab": 5], merges: ["##b ##c", "a ##bc"],
                                        ["continuing_subword_prefix": "##"]))
        #expect(p.encode("abc") == [4])
        #expect(p.encode("ab") == [0, 1])
        let s = try S.make(model: S.bpe(["a": 0, "b": 1, "c</w>": 2, "bc</w>": 3, "abc</w>": 4], merges: ["b c</w>", "a bc</w>"],
                                        ["end_of_word_suffix": "</w>"]))
        #expect(s.encode("abc") == [4])
    }

    @Test("BPE ignore_merges uses whole-word vocabulary hits")
    func bpeIgnoreMerges() throws {
        let tok = try S.make(model: S.bpe(["a": 0, "b": 1, "ab": 2, "abab": 3], merges: ["a b"], ["ignore_merges": true]))
        #expect(tok.encode("abab") == [3])
        #expect(tok.encode("ababab") == [2, 2, 2])
    }

    @Test("byte_fallback and the ByteFallback + Fuse decoders")
    func byteFallback() throws {
        let vocab = ["<unk>": 0, "a": 1, "<0xC3>": 2, "<0xA9>": 3, "<0xE2>": 4, "<0x82>": 5, "<0xAC>": 6]
        let tok = try S.make(model: S.bpe(vocab, merges: [String](), ["unk_token": "<unk>", "byte_fallback": true, "fuse_unk": true]),
                             decoder: ["type": "Sequence", "decoders": [["type": "ByteFallback"], ["type": "Fuse"]]])
        #expect(tok.encode("aéa") == [1, 2, 3, 1])
        #expect(tok.encode("€") == [4, 5, 6])
        #expect(tok.encode("a😀") == [1, 0])  // missing byte tokens -> unk
        #expect(tok.decode([1, 2, 3, 1]) == "aéa")
        #expect(S.bytes(tok.decode([1, 2, 1])) == S.bytes("a\u{FFFD}a"))
        #expect(S.bytes(tok.decode([2, 3, 4, 5])) == S.bytes(String(repeating: "\u{FFFD}", count: 4)))
    }

    static let splitVocab = ["a": 0, "b": 1, "-": 2, "a-": 3, "-b": 4, "--": 5, "a--": 6, "--b": 7, "a-b": 8, "a--b": 9]

    @Test("Split pre-tokenizer behaviors", arguments: [
        ("Removed", false, [0, 1], [0]), ("Removed", true, [2, 2], [2, 2]),
        ("Isolated", false, [0, 2, 2, 1], [2, 0, 2]), ("Isolated", true, [0, 2, 2, 1], [2, 0, 2]),
        ("MergedWithPrevious", false, [3, 2, 1], [2, 3]), ("MergedWithPrevious", true, [0, 2, 4], [2, 0, 2]),
        ("MergedWithNext", false, [0, 2, 4], [2, 0, 2]), ("MergedWithNext", true, [3, 2, 1], [2, 3]),
        ("Contiguous", false, [0, 5, 1], [2, 0, 2]), ("Contiguous", true, [0, 5, 1], [2, 0, 2]),
    ])
    func splitBehaviors(_ behavior: String, _ invert: Bool, _ expected1: [Int], _ expected2: [Int]) throws {
        let tok = try S.make(model: S.bpe(Self.splitVocab, merges: [String](), ["ignore_merges": true]),
                             preTokenizer: ["type": "Split", "pattern": ["String": "-"], "behavior": behavior, "invert": invert])
        #expect(tok.encode("a--b") == expected1)
        #expect(tok.encode("-a-") == expected2)
    }

    @Test("Split with a Regex pattern, inside a Sequence")
    func splitRegex() throws {
        let tok = try S.make(model: S.bpe(Self.splitVocab, merges: [String](), ["ignore_merges": true]),
                             preTokenizer: ["type": "Sequence", "pretokenizers": [
                                ["type": "Split", "pattern": ["Regex": "-+"], "behavior": "Isolated", "invert": false],
                             ]])
        #expect(tok.encode("a--b-a") == [0, 5, 1, 2, 0])
    }

    @Test("Metaspace pre-tokenizer and decoder", arguments: [
        ("always", [0, 1], [5, 0, 1], [0, 2, 1], "hello world", "hello world", " hello"),
        ("first", [0, 1], [5, 3, 1], [0, 2, 1], "hello world", "hello world", " hello"),
        ("never", [3, 1], [5, 3, 1], [3, 2, 1], " hello world", "hello world", "  hello"),
    ])
    func metaspace(_ scheme: String, _ e1: [Int], _ e2: [Int], _ e3: [Int], _ d1: String, _ d2: String, _ d3: String) throws {
        let vocab = ["▁hello": 0, "▁world": 1, "▁": 2, "hello": 3, "world": 4, "<s>": 5, "h": 6, "e": 7, "l": 8, "o": 9]
        let meta: [String: Any] = ["type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme, "split": true]
        let tok = try S.make(model: S.bpe(vocab, merges: [String](), ["ignore_merges": true]),
                             preTokenizer: meta, decoder: meta, addedTokens: [S.added(5, "<s>")])
        #expect(tok.encode("hello world") == e1)
        #expect(tok.encode("<s>hello world") == e2)
        #expect(tok.encode("hello  world") == e3)
        #expect(tok.decode([0, 1]) == d1)
        #expect(tok.decode([3, 1]) == d2)
        #expect(tok.decode([2, 0]) == d3)
    }

    @Test("Metaspace legacy add_prefix_space")
    func metaspaceLegacy() throws {
        let vocab = ["▁hello": 0, "▁world": 1, "hello": 3]
        let tok = try S.make(model: S.bpe(vocab, merges: [String](), ["ignore_merges": true]),
                             preTokenizer: ["type": "Metaspace", "replacement": "▁", "add_prefix_space": false])
        #expect(tok.encode("hello world") == [3, 1])
    }

    @Test("Metaspace prepend_scheme first after normalizers that move the start")
    func metaspaceFirstAlignment() throws {
        let vocab = ["▁": 0, "a": 1, "b": 2, "x": 4, "y": 5]
        func make(_ normalizer: [String: Any]) throws -> Tokenizer {
            try S.make(model: S.bpe(vocab, merges: [String]()), normalizer: normalizer,
                       preTokenizer: ["type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true])
        }
        let strip = try make(["type": "Strip", "strip_left": true, "strip_right": true])
        #expect(strip.encode(" ab") == [1, 2])  // leading text removed: not at original offset 0
        #expect(strip.encode("ab") == [0, 1, 2])
        let one = try make(["type": "Replace", "pattern": ["String": "x"], "content": "y"])
        #expect(one.encode("xab") == [0, 5, 1, 2])
        let two = try make(["type": "Replace", "pattern": ["String": "xx"], "content": "y"])
        #expect(two.encode("xxab") == [5, 1, 2])  // tokenizers aligns "y" with the second "x"
        let gone = try make(["type": "Replace", "pattern": ["String": "x"], "content": ""])
        #expect(gone.encode("xab") == [1, 2])
    }

    @Test("Metaspace first after NFKC + Lowercase + Strip (alignment of expanded characters)")
    func metaspaceFirstAfterNFKC() throws {
        let chars = ["▁", "a", "b", "x", "\u{303}", "\u{301}", "\u{E9}"]  // no "e": it would collide with "é" as a key
        var vocab: [String: Int] = [:]
        for (i, c) in chars.enumerated() { vocab[c] = i }
        let tok = try S.make(
            model: S.bpe(vocab, merges: [String]()),
            normalizer: ["type": "Sequence", "normalizers": [["type": "NFKC"], ["type": "Lowercase"],
                                                             ["type": "Strip", "strip_left": true, "strip_right": true]]],
            preTokenizer: ["type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true])
        #expect(tok.encode("\u{2DC}a") == [0, 4, 1])  // NFKC "˜" = " \u{303}": the stripped space came from char 0
        #expect(tok.encode("e\u{301}X") == [0, 6, 3])  // NFC composition across the first character
        #expect(tok.encode(" ab") == [1, 2])
        #expect(tok.encode("\u{384}b") == [0, 5, 2])
        #expect(tok.encode("X") == [0, 3])
    }

    @Test("Strip, Replace decoders; no decoder joins with spaces")
    func stripReplaceDecoders() throws {
        let vocab = [" a": 0, " b": 1, "  c ": 2, "x▁y": 3]
        let strip = try S.make(model: S.bpe(vocab, merges: [String](), ["ignore_merges": true]),
                               decoder: ["type": "Sequence", "decoders": [["type": "Strip", "content": " ", "start": 1, "stop": 1]]])
        #expect(strip.decode([0, 1, 2]) == "ab c")
        let rs = try S.make(model: S.bpe(vocab, merges: [String](), ["ignore_merges": true]),
                            decoder: ["type": "Sequence", "decoders": [
                                ["type": "Replace", "pattern": ["String": "▁"], "content": " "],
                                ["type": "Strip", "content": " ", "start": 2, "stop": 0],
                            ]])
        #expect(rs.decode([3, 2, 0]) == "x yc a")
        let none = try S.make(model: S.bpe(vocab, merges: [String](), ["ignore_merges": true]))
        #expect(none.decode([0, 1, 3]) == " a  b x▁y")
    }

    // No "é"/"e\u{301}" here: they are equal as Swift dictionary keys (see `unicodeForms`).
    static let normVocab = ["fi": 0, "le": 1, "abc": 2, "x": 3, "y": 4, "▁hi": 5, "▁there": 6, "hi": 7, "there": 8, " ": 9]

    @Test("NFKC, Lowercase, Strip, Replace(Regex) normalizers with WhitespaceSplit")
    func normalizerSequence() throws {
        let tok = try S.make(
            model: S.bpe(Self.normVocab, merges: [String](), ["ignore_merges": true]),
            normalizer: ["type": "Sequence", "normalizers": [
                ["type": "NFKC"], ["type": "Lowercase"], ["type": "Strip", "strip_left": true, "strip_right": true],
                ["type": "Replace", "pattern": ["Regex": "\\s+"], "content": " "],
            ]],
            preTokenizer: ["type": "WhitespaceSplit"])
        #expect(tok.encode("  ﬁ   LE\tABC  ") == [0, 1, 2])
        #expect(tok.encode("X\u{A0}Y") == [3, 4])
    }

    @Test("Prepend + Replace normalizers (Llama style)")
    func prependNormalizer() throws {
        let tok = try S.make(
            model: S.bpe(Self.normVocab, merges: [String](), ["ignore_merges": true]),
            normalizer: ["type": "Sequence", "normalizers": [
                ["type": "Prepend", "prepend": "▁"], ["type": "Replace", "pattern": ["String": " "], "content": "▁"],
            ]],
            preTokenizer: ["type": "Split", "pattern": ["String": "▁"], "behavior": "MergedWithNext", "invert": false])
        #expect(tok.encode("hi there") == [5, 6])
        #expect(tok.encode("") == [])
    }

    @Test("NFC and NFD normalizers keep canonically equivalent tokens apart")
    func unicodeForms() throws {
        // Written by hand: "\u00e9" and "e\u0301" are distinct tokens but equal Swift dictionary keys.
        func make(_ normalizer: String) throws -> Tokenizer {
            let text = """
            {"version": "1.0", "added_tokens": [], "normalizer": \(normalizer), "pre_tokenizer": null,
             "post_processor": null, "decoder": null,
             "model": {"type": "BPE", "dropout": null, "unk_token": null, "ignore_merges": true,
                       "vocab": {"x": 0, "\\u00e9": 10, "e\\u0301": 11}, "merges": []}}
            """
            return try Tokenizer(tokenizerJSON: S.write(text, named: "tokenizer.json"), tokenizerConfig: nil)
        }
        let nfc = try make(#"{"type": "NFC"}"#)
        #expect(nfc.encode("\u{E9}") == [10])
        #expect(nfc.encode("e\u{301}") == [10])
        let nfd = try make(#"{"type": "NFD"}"#)
        #expect(nfd.encode("\u{E9}") == [11])
        #expect(nfd.encode("e\u{301}") == [11])
        let none = try make("null")
        #expect(none.tokenToId("\u{E9}") == 10)
        #expect(none.tokenToId("e\u{301}") == 11)
        #expect(none.encode("e\u{301}") == [11])  // whole-word hit (ignore_merges)
        #expect(none.encode("\u{E9}e\u{301}") == [10])  // "e" and U+0301 alone are unknown and dropped
        #expect(none.idToToken(11).map(S.bytes) == S.bytes("e\u{301}"))
        #expect(none.vocabSize == 12)
    }

    @Test("added tokens: lstrip/rstrip, single_word, normalized, TemplateProcessing, skip special")
    func addedTokens() throws {
        let vocab = ["hi": 0, "there": 1, "anthony": 2, "<mask>": 3, "ony": 4, "[CLS]": 5, "[SEP]": 6, "yesterday": 7,
                     "a": 8, "n": 9, "t": 10, "h": 11, "o": 12, "y": 13, "A": 14]
        let special: [String: Any] = [
            "[CLS]": ["id": "[CLS]", "ids": [5], "tokens": ["[CLS]"]],
            "[SEP]": ["id": "[SEP]", "ids": [6], "tokens": ["[SEP]"]],
        ]
        let tok = try S.make(
            model: S.bpe(vocab, merges: [String](), ["ignore_merges": true]),
            normalizer: ["type": "Lowercase"],
            preTokenizer: ["type": "WhitespaceSplit"],
            postProcessor: ["type": "TemplateProcessing",
                            "single": [["SpecialToken": ["id": "[CLS]", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]],
                                       ["SpecialToken": ["id": "[SEP]", "type_id": 0]]],
                            "pair": [["Sequence": ["id": "A", "type_id": 0]], ["Sequence": ["id": "B", "type_id": 1]]],
                            "special_tokens": special],
            addedTokens: [
                S.added(3, "<mask>", lstrip: true, rstrip: true),
                S.added(4, "ony", special: false, singleWord: true),
                S.added(5, "[CLS]"), S.added(6, "[SEP]"),
                S.added(7, "yesterday", special: false, normalized: true),
            ])
        #expect(tok.encode("hi <mask> there") == [5, 0, 3, 1, 6])
        #expect(tok.encode("anthony ony") == [5, 2, 4, 6])
        #expect(tok.encode("Yesterday ony") == [5, 7, 4, 6])
        #expect(tok.encode("hi<mask>there") == [5, 0, 3, 1, 6])
        #expect(tok.encode("ony") == [5, 4, 6])
        #expect(tok.encode("hi <mask> there", addSpecialTokens: false) == [0, 3, 1])
        #expect(tok.decode([5, 0, 3, 1, 6]) == "[CLS] hi <mask> there [SEP]")
        #expect(tok.decode([5, 0, 3, 1, 6], skipSpecialTokens: true) == "hi there")
        #expect(tok.isSpecial(5) && tok.isSpecial(3) && !tok.isSpecial(4) && !tok.isSpecial(0))
        #expect(tok.bosTokenId == 5)
    }

    @Test("ByteLevel pre-tokenizer and decoder")
    func byteLevel() throws {
        let vocab = ["hi": 0, "Ġthere": 1, "Ġ": 2, "h": 3, "i": 4, "!": 5, "ĠðŁĺ": 6, "Ģ": 7, "Ċ": 8]
        let tok = try S.make(model: S.bpe(vocab, merges: [String](), ["ignore_merges": true]),
                             preTokenizer: ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true],
                             decoder: ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true])
        #expect(tok.encode("hi there!") == [0, 1, 5])
        #expect(tok.encode("hi \n") == [0, 2, 8])
        #expect(S.bytes(tok.decode([0, 1, 6, 7])) == S.bytes("hi there 😀"))
        #expect(S.bytes(tok.decode([0, 6])) == S.bytes("hi \u{FFFD}"))
    }

    @Test("chat template from chat_template.jinja / template list; bos from special_tokens_map.json")
    func templateSources() throws {
        let gemmaLike = """
            {{ bos_token }}{%- set loop_messages = messages -%}{%- set first_user_prefix = "" -%}\
            {{ '<start_of_turn>' + role + '\n' }}{{ '<end_of_turn>\n' }}
            """
        let model = S.bpe(["<s>": 0, "a": 1], merges: [String]())
        // 1. chat_template.jinja beside a config without a template, bos from special_tokens_map.json
        let dir = try S.tempDirectory()
        _ = try S.write(S.tokenizerJSON(model: model, addedTokens: [S.added(0, "<s>")]), named: "tokenizer.json", in: dir)
        _ = try S.write("{}", named: "tokenizer_config.json", in: dir)
        _ = try S.write(gemmaLike, named: "chat_template.jinja", in: dir)
        _ = try S.write(#"{"bos_token": {"content": "<s>", "lstrip": false}}"#, named: "special_tokens_map.json", in: dir)
        let tok = try Tokenizer(directory: dir)
        #expect(tok.bosTokenId == 0)
        #expect(try tok.renderChat([ChatMessage(role: "user", content: " a ")]) == "<s><start_of_turn>user\na<end_of_turn>\n<start_of_turn>model\n")
        #expect(try tok.encodeChat([ChatMessage(role: "user", content: "a")], addGenerationPrompt: false).first == 0)
        // 2. list form
        let cfg = try S.json(["bos_token": "<s>", "chat_template": [["name": "tool_use", "template": "x"], ["name": "default", "template": gemmaLike]]])
        let listed = try S.make(model: model, config: cfg)
        #expect(try listed.renderChat([ChatMessage(role: "user", content: "a")], addGenerationPrompt: false) == "<s><start_of_turn>user\na<end_of_turn>\n")
    }

    @Test("merges: '#version' header lines are skipped; duplicate vocab keys keep the last id")
    func mergesHeaderAndDuplicates() throws {
        let text = """
            {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "ab": 5}, "merges": ["#version: 0.2", "a b"]}}
            """
        let tok = try Tokenizer(tokenizerJSON: S.write(text, named: "tokenizer.json"), tokenizerConfig: nil)
        #expect(tok.encode("ab") == [5])
        #expect(tok.tokenToId("ab") == 5)
        #expect(tok.idToToken(2) == nil)
        #expect(tok.vocabSize == 6)
    }

    @Test("chat template: non-Gemma template only fails when rendering")
    func unsupportedTemplate() throws {
        let cfg = try S.json(["bos_token": "<s>", "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"])
        let tok = try S.make(model: S.bpe(["<s>": 0, "a": 1], merges: [String]()), config: cfg)
        #expect(tok.encode("a") == [1])
        #expect(tok.bosTokenId == 0)
        let e = #expect(throws: TokenizerError.self) { try tok.renderChat([ChatMessage(role: "user", content: "a")]) }
        guard case .unsupportedChatTemplate = e else { Issue.record("got \(String(describing: e))"); return }
        #expect(e?.description.contains("tokenizer_config.json") == true)
        let noConfig = try S.make(model: S.bpe(["a": 1], merges: [String]()))
        #expect(throws: TokenizerError.self) { try noConfig.encodeChat([ChatMessage(role: "user", content: "a")]) }
    }
}

// MARK: - Error tests

@Suite("Tokenizer loading errors")
struct TokenizerErrorTests {
    typealias S = TokTestSupport

    func loadError(_ text: String, config: String? = nil) throws -> (TokenizerError?, URL, URL?) {
        let dir = try S.tempDirectory()
        let url = try S.write(text, named: "tokenizer.json", in: dir)
        let cfg = try config.map { try S.write($0, named: "tokenizer_config.json", in: dir) }
        let e = #expect(throws: TokenizerError.self) { try Tokenizer(tokenizerJSON: url, tokenizerConfig: cfg) }
        if let e { #expect(!e.description.contains("\n"), "one line: \(e.description)") }
        return (e, url, cfg)
    }

    static var goodModel: [String: Any] { TokTestSupport.bpe(["a": 0, "b": 1, "ab": 2], merges: ["a b"]) }

    @Test("malformed JSON names the file")
    func malformed() throws {
        let (e, url, _) = try loadError("{\"model\": {\"type\": \"BPE\",\n  \"vocab\": {\"a\": 0,}}")
        guard case let .malformedJSON(file, line, _, _)? = e else { Issue.record("got \(String(describing: e))"); return }
        #expect(file == url.path)
        #expect(line == 2)
        #expect(e!.description.contains(url.path))
        for bad in ["", "[1, 2", "{\"a\": tru}", "{\"a\": \"\\x\"}", "{\"a\": 01}", "{\"a\": 1} x", "{\"a\": \"\u{1}\"}"] {
            let (e2, url2, _) = try loadError(bad)
            #expect(e2?.description.contains(url2.path) == true, "\(bad)")
        }
    }

    @Test("unknown normalizer type names the file and the type")
    func unknownNormalizer() throws {
        let (e, url, _) = try loadError(S.tokenizerJSON(model: Self.goodModel, normalizer: ["type": "Foo"]))
        guard case let .unknownComponentType(file, stage, type, _)? = e else { Issue.record("got \(String(describing: e))"); return }
        #expect(file == url.path && stage == "normalizer" && type == "Foo")
        #expect(e!.description == "\(url.path): unknown normalizer type 'Foo' (at normalizer)")
    }

    @Test("missing model names the file")
    func missingModel() throws {
        let (e, url, _) = try loadError(try S.json(["version": "1.0", "normalizer": NSNull()]))
        guard case let .missingKey(file, path)? = e else { Issue.record("got \(String(describing: e))"); return }
        #expect(file == url.path && path == "model")
        #expect(e!.description.contains(url.path))
    }

    @Test("other component errors")
    func otherComponents() throws {
        let nested = try loadError(S.tokenizerJSON(model: Self.goodModel, preTokenizer: ["type": "Sequence", "pretokenizers": [
            ["type": "WhitespaceSplit"], ["type": "Bar"],
        ]]))
        #expect(nested.0?.description == "\(nested.1.path): unknown pre_tokenizer type 'Bar' (at pre_tokenizer.pretokenizers[1])")
        let dec = try loadError(S.tokenizerJSON(model: Self.goodModel, decoder: ["type": "CTC"]))
        #expect(dec.0?.description.contains("unknown decoder type 'CTC'") == true)
        let post = try loadError(S.tokenizerJSON(model: Self.goodModel, postProcessor: ["type": "Nope"]))
        #expect(post.0?.description.contains("unknown post_processor type 'Nope'") == true)
        let model = try loadError(S.tokenizerJSON(model: ["type": "Unigram", "vocab": [["a", 0.0]]]))
        #expect(model.0?.description.contains("unknown model type 'Unigram'") == true)
        let dropout = try loadError(S.tokenizerJSON(model: S.bpe(["a": 0], merges: [String](), ["dropout": 0.1])))
        guard case .unsupported? = dropout.0 else { Issue.record("got \(String(describing: dropout.0))"); return }
        let merge = try loadError(S.tokenizerJSON(model: S.bpe(["a": 0, "b": 1], merges: ["a b"])))
        #expect(merge.0?.description.contains("model.merges[0]") == true)
        let badMerge = try loadError(S.tokenizerJSON(model: S.bpe(["a": 0, "b": 1, "ab": 2], merges: ["a b c"])))
        #expect(badMerge.0?.description.contains(badMerge.1.path) == true)
        let noType = try loadError(S.tokenizerJSON(model: Self.goodModel, normalizer: ["pattern": "x"]))
        guard case .missingKey(_, "normalizer.type")? = noType.0 else { Issue.record("got \(String(describing: noType.0))"); return }
        let behavior = try loadError(S.tokenizerJSON(model: Self.goodModel, preTokenizer: ["type": "Split", "pattern": ["String": " "], "behavior": "Sideways"]))
        #expect(behavior.0?.description.contains("Sideways") == true)
        let noVocab = try loadError(S.tokenizerJSON(model: ["type": "BPE", "merges": [String]()]))
        #expect(noVocab.0?.description.contains("model.vocab") == true)
    }

    @Test("missing files and bad tokenizer_config.json name the file")
    func files() throws {
        let missing = URL(fileURLWithPath: "/nonexistent-nla-dir/tokenizer.json")
        let e = #expect(throws: TokenizerError.self) { try Tokenizer(tokenizerJSON: missing, tokenizerConfig: nil) }
        #expect(e?.description.contains(missing.path) == true)
        let (ce, _, cfg) = try loadError(S.tokenizerJSON(model: Self.goodModel), config: "{\"bos_token\": ")
        #expect(ce?.description.contains(cfg!.path) == true)
        #expect(throws: TokenizerError.self) { try Tokenizer(directory: URL(fileURLWithPath: "/nonexistent-nla-dir")) }
    }
}
