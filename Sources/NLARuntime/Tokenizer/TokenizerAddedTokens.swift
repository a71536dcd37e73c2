import Foundation

/// One entry of tokenizer.json's `added_tokens`.
struct TokAddedToken: Sendable, Equatable {
    var id: Int32
    var content: [UInt8]
    var singleWord: Bool
    var lstrip: Bool
    var rstrip: Bool
    var normalized: Bool
    var special: Bool

    init(id: Int32, content: [UInt8], singleWord: Bool = false, lstrip: Bool = false, rstrip: Bool = false,
         normalized: Bool = false, special: Bool = false) {
        self.id = id
        self.content = content
        self.singleWord = singleWord
        self.lstrip = lstrip
        self.rstrip = rstrip
        self.normalized = normalized
        self.special = special
    }

    init(_ node: TokJSONNode) throws {
        id = try node.require("id").asTokenId()
        content = Array(try node.require("content").asString().utf8)
        singleWord = try node.bool("single_word", default: false)
        lstrip = try node.bool("lstrip", default: false)
        rstrip = try node.bool("rstrip", default: false)
        special = try node.bool("special", default: false)
        normalized = try node.bool("normalized", default: !special)
    }
}

/// A byte trie answering "longest added token starting here" (Aho-Corasick leftmost-longest semantics
/// when scanned left to right, non-overlapping).
struct TokTokenTrie: Sendable {
    /// (node << 8 | byte) -> child node
    private var edges: [Int: Int32] = [:]
    /// First-byte shortcut from the root.
    private var rootEdges = [Int32](repeating: -1, count: 256)
    /// Node -> index into the owner's token list, or -1.
    private var terminal: [Int32] = [-1]
    var isEmpty: Bool { terminal.count == 1 }

    mutating func insert(_ pattern: [UInt8], index: Int32) {
        guard !pattern.isEmpty else { return }
        var node: Int32 = 0
        for (k, b) in pattern.enumerated() {
            let next: Int32?
            if k == 0 {
                next = rootEdges[Int(b)] >= 0 ? rootEdges[Int(b)] : nil
            } else {
                next = edges[Int(node) << 8 | Int(b)]
            }
            if let next {
                node = next
            } else {
                let created = Int32(terminal.count)
                terminal.append(-1)
                if k == 0 { rootEdges[Int(b)] = created } else { edges[Int(node) << 8 | Int(b)] = created }
                node = created
            }
        }
        terminal[Int(node)] = index  // later duplicates win
    }

    /// Longest pattern starting at `start`: (token index, end offset).
    @inline(__always) func longestMatch(_ s: UnsafeBufferPointer<UInt8>, from start: Int) -> (Int32, Int)? {
        var node = rootEdges[Int(s[start])]
        if node < 0 { return nil }
        var best: (Int32, Int)?
        var i = start + 1
        while true {
            let t = terminal[Int(node)]
            if t >= 0 { best = (t, i) }
            if i >= s.count { break }
            guard let next = edges[Int(node) << 8 | Int(s[i])] else { break }
            node = next
            i += 1
        }
        return best
    }
}

/// tokenizers' `AddedVocabulary`: finds added tokens in raw text (tokens with `normalized: false`) and
/// in normalized text (`normalized: true`), honouring single_word / lstrip / rstrip.
struct TokAddedVocabulary: Sendable {
    let tokens: [TokAddedToken]
    private let rawTrie: TokTokenTrie
    private let normalizedTrie: TokTokenTrie
    /// Text used when decoding an added token: its content, or for `normalized` tokens the content
    /// passed through the normalizer (tokenizers >= 0.22 decodes the normalized spelling).
    let decodeForm: [Int32: [UInt8]]
    let contentToId: TokByteTable
    let specialIds: Set<Int32>

    init(_ tokens: [TokAddedToken], normalizer: (any TokNormalizer)?) {
        let kept = tokens.filter { !$0.content.isEmpty }
        self.tokens = kept
        var raw = TokTokenTrie()
        var norm = TokTokenTrie()
        var forms: [Int32: [UInt8]] = [:]
        var table = TokByteTable(expectedCount: kept.count)  // content -> id (later duplicates win)
        for (i, t) in kept.enumerated() {
            if t.normalized {
                let n = normalizer?.normalize(t.content) ?? t.content
                norm.insert(n, index: Int32(i))
                forms[t.id] = n
            } else {
                raw.insert(t.content, index: Int32(i))
                forms[t.id] = t.content
            }
        }
        for t in kept { t.content.withUnsafeBufferPointer { table.append($0, value: t.id) } }
        table.buildIndex()
        rawTrie = raw
        normalizedTrie = norm
        decodeForm = forms
        contentToId = table
        specialIds = Set(kept.filter(\.special).map(\.id))
    }

    var hasNormalizedTokens: Bool { !normalizedTrie.isEmpty }

    /// Splits `s` into pieces: (range, added token id or nil), covering the input.
    func split(_ s: [UInt8], normalizedTokens: Bool) -> [(start: Int, end: Int, id: Int32?)] {
        let trie = normalizedTokens ? normalizedTrie : rawTrie
        if s.isEmpty || trie.isEmpty { return [(0, s.count, nil)] }
        var out: [(Int, Int, Int32?)] = []
        var startOffset = 0
        s.withUnsafeBufferPointer { buf in
            var i = 0
            while i < buf.count {
                guard let (index, matchEnd) = trie.longestMatch(buf, from: i) else {
                    i += 1
                    continue
                }
                let tok = tokens[Int(index)]
                var start = i
                var stop = matchEnd
                i = matchEnd  // the automaton resumes after the raw match
                if tok.singleWord {
                    let before = TokUTF8.scalar(before: start, in: s)
                    let after: UInt32? = stop < s.count ? TokUTF8.decode(s, at: stop).scalar : nil
                    if let b = before, TokUTF8.isWordCharacter(b) { continue }
                    if let a = after, TokUTF8.isWordCharacter(a) { continue }
                }
                if tok.lstrip {
                    var k = start
                    while let v = TokUTF8.scalar(before: k, in: s), TokUTF8.isWhitespace(v) {
                        k -= 1
                        while s[k] & 0xC0 == 0x80 { k -= 1 }
                    }
                    start = max(k, startOffset)
                }
                if tok.rstrip {
                    while stop < s.count {
                        let (v, n) = TokUTF8.decode(s, at: stop)
                        guard TokUTF8.isWhitespace(v) else { break }
                        stop += n
                    }
                }
                start = max(start, startOffset)  // never overlap a previous (rstripped) match
                if start >= stop { continue }
                if startOffset < start { out.append((startOffset, start, nil)) }
                out.append((start, stop, tok.id))
                startOffset = stop
            }
        }
        if startOffset != s.count { out.append((startOffset, s.count, nil)) }
        return out
    }
}
