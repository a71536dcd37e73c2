import Foundation

/// A piece of (normalized) text on its way to the model.
struct TokPiece: Sendable, Equatable {
    var bytes: [UInt8]
    /// Leading bytes that come from the first character of the original input (see `TokNormalizer`);
    /// non-zero means the piece starts at original offset 0 (Metaspace `prepend_scheme: first`).
    var firstSpan: Int
    var isFirst: Bool { firstSpan > 0 }

    init(bytes: [UInt8], firstSpan: Int) {
        self.bytes = bytes
        self.firstSpan = firstSpan
    }
}

/// Stage 2 of encoding: splits normalized pieces into words for the model.
protocol TokPreTokenizer: Sendable {
    /// Splits one piece; empty results are dropped by the caller.
    func split(_ piece: TokPiece) -> [TokPiece]
    func preTokenize(_ pieces: [TokPiece]) -> [TokPiece]
}

extension TokPreTokenizer {
    func preTokenize(_ pieces: [TokPiece]) -> [TokPiece] {
        var out: [TokPiece] = []
        out.reserveCapacity(pieces.count)
        for p in pieces {
            for q in split(p) where !q.bytes.isEmpty { out.append(q) }
        }
        return out
    }

    /// Slices `piece` into the given byte ranges.
    func slices(_ piece: TokPiece, _ ranges: [(Int, Int)]) -> [TokPiece] {
        ranges.map { TokPiece(bytes: Array(piece.bytes[$0.0..<$0.1]), firstSpan: max(piece.firstSpan - $0.0, 0)) }
    }
}

/// `pre_tokenizer.type` values understood by this implementation.
enum TokPreTokenizerType: String, Sendable, CaseIterable {
    case sequence = "Sequence"
    case split = "Split"
    case metaspace = "Metaspace"
    case whitespaceSplit = "WhitespaceSplit"
    case byteLevel = "ByteLevel"
}

enum TokPreTokenizerFactory {
    static func make(_ node: TokJSONNode) throws -> any TokPreTokenizer {
        let typeName = try node.componentType()
        guard let type = TokPreTokenizerType(rawValue: typeName) else {
            throw TokenizerError.unknownComponentType(file: node.file, stage: "pre_tokenizer", type: typeName, path: node.path)
        }
        switch type {
        case .sequence:
            return TokSequencePreTokenizer(preTokenizers: try node.require("pretokenizers").asArray().map(make))
        case .split:
            let behaviorNode = try node.require("behavior")
            let behaviorName = try behaviorNode.asString()
            guard let behavior = TokSplitBehavior(rawValue: behaviorName) else {
                throw behaviorNode.invalid("unknown split behavior '\(behaviorName)' (expected one of \(TokSplitBehavior.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            return TokSplitPreTokenizer(
                pattern: try TokPattern.parse(node.require("pattern")),
                behavior: behavior,
                invert: try node.bool("invert", default: false))
        case .metaspace:
            return try TokMetaspacePreTokenizer(node)
        case .whitespaceSplit:
            return TokWhitespaceSplitPreTokenizer()
        case .byteLevel:
            return try TokByteLevelPreTokenizer(
                addPrefixSpace: node.bool("add_prefix_space", default: true),
                useRegex: node.bool("use_regex", default: true))
        }
    }
}

struct TokSequencePreTokenizer: TokPreTokenizer {
    let preTokenizers: [any TokPreTokenizer]
    func split(_ piece: TokPiece) -> [TokPiece] { preTokenize([piece]) }
    func preTokenize(_ pieces: [TokPiece]) -> [TokPiece] {
        preTokenizers.reduce(pieces) { $1.preTokenize($0) }
    }
}

/// Splits on a literal or regex with one of the five delimiter behaviors, optionally inverted.
struct TokSplitPreTokenizer: TokPreTokenizer {
    let pattern: TokPattern
    let behavior: TokSplitBehavior
    let invert: Bool
    func split(_ piece: TokPiece) -> [TokPiece] {
        var m = pattern.findMatches(piece.bytes)
        if invert { m = m.map { ($0.start, $0.end, !$0.isMatch) } }
        return slices(piece, behavior.apply(m))
    }
}

/// Metaspace: spaces become the replacement character (default "▁"), which may be prepended and split on.
struct TokMetaspacePreTokenizer: TokPreTokenizer {
    enum PrependScheme: String, Sendable { case always, never, first }
    let replacement: [UInt8]
    let prependScheme: PrependScheme
    let splitOnReplacement: Bool

    init(replacement: String = "\u{2581}", prependScheme: PrependScheme = .always, split: Bool = true) {
        self.replacement = Array(replacement.utf8)
        self.prependScheme = prependScheme
        self.splitOnReplacement = split
    }

    /// Reads `replacement`, `prepend_scheme` (or the legacy `add_prefix_space`) and `split`.
    init(_ node: TokJSONNode) throws {
        let rep = try node.string("replacement", default: "\u{2581}")
        guard rep.unicodeScalars.count == 1 else {
            throw (node.child("replacement") ?? node).invalid("replacement must be a single character")
        }
        var scheme = PrependScheme.always
        if let s = node.optional("prepend_scheme") {
            let name = try s.asString()
            guard let v = PrependScheme(rawValue: name) else {
                throw s.invalid("unknown prepend_scheme '\(name)' (expected first, always or never)")
            }
            scheme = v
        } else if let legacy = node.optional("add_prefix_space") {
            scheme = try legacy.asBool() ? .always : .never
        }
        self.init(replacement: rep, prependScheme: scheme, split: try node.bool("split", default: true))
    }

    func split(_ piece: TokPiece) -> [TokPiece] {
        var span = piece.firstSpan
        var s = TokPattern.string([0x20]).replace(in: piece.bytes, with: replacement, firstSpan: &span)
        switch prependScheme {
        case .always:
            if !TokUTF8.hasPrefix(s, replacement) {
                s = replacement + s
                if span > 0 { span += replacement.count }
            }
        case .first:
            if piece.isFirst && !TokUTF8.hasPrefix(s, replacement) {
                s = replacement + s
                span += replacement.count
            }
        case .never:
            break
        }
        let replaced = TokPiece(bytes: s, firstSpan: span)
        guard splitOnReplacement else { return [replaced] }
        let matches = TokPattern.string(replacement).findMatches(s)
        return slices(replaced, TokSplitBehavior.mergedWithNext.apply(matches))
    }
}

/// Splits on Unicode whitespace, dropping it.
struct TokWhitespaceSplitPreTokenizer: TokPreTokenizer {
    func split(_ piece: TokPiece) -> [TokPiece] {
        var ranges: [(Int, Int)] = []
        var start = -1
        var i = 0
        let s = piece.bytes
        while i < s.count {
            let (v, n) = TokUTF8.decode(s, at: i)
            if TokUTF8.isWhitespace(v) {
                if start >= 0 { ranges.append((start, i)); start = -1 }
            } else if start < 0 {
                start = i
            }
            i += n
        }
        if start >= 0 { ranges.append((start, s.count)) }
        return slices(piece, ranges)
    }
}

/// GPT-2 style byte-level pre-tokenization: optional prefix space, the GPT-2 split regex, then every byte
/// mapped to a printable character.
struct TokByteLevelPreTokenizer: TokPreTokenizer {
    let addPrefixSpace: Bool
    let useRegex: Bool
    let regex: TokRegex

    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#

    init(addPrefixSpace: Bool, useRegex: Bool) throws {
        self.addPrefixSpace = addPrefixSpace
        self.useRegex = useRegex
        regex = try TokRegex(Self.gpt2Pattern)
    }

    func split(_ piece: TokPiece) -> [TokPiece] {
        var s = piece.bytes
        var span = piece.firstSpan
        if addPrefixSpace && s.first != 0x20 {
            s = [0x20] + s
            if span > 0 { span += 1 }
        }
        let prefixed = TokPiece(bytes: s, firstSpan: span)
        let parts: [TokPiece]
        if useRegex {
            let m = TokPattern.regex(regex).findMatches(s)
            parts = slices(prefixed, TokSplitBehavior.isolated.apply(m))
        } else {
            parts = [prefixed]
        }
        return parts.map { p in
            var out: [UInt8] = []
            out.reserveCapacity(p.bytes.count * 2)
            for b in p.bytes { out.append(contentsOf: TokByteLevelTables.byteToUTF8[Int(b)]) }
            return TokPiece(bytes: out, firstSpan: p.isFirst ? out.count : 0)
        }
    }
}

/// GPT-2's reversible byte <-> printable-character map.
enum TokByteLevelTables {
    /// Scalar used for each byte.
    static let byteToScalar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var extra: UInt32 = 0
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable {
                table[b] = UInt32(b)
            } else {
                table[b] = 256 + extra
                extra += 1
            }
        }
        return table
    }()

    static let byteToUTF8: [[UInt8]] = byteToScalar.map { v in
        var out: [UInt8] = []
        TokUTF8.append(scalar: v, to: &out)
        return out
    }

    static let scalarToByte: [UInt32: UInt8] = {
        var d: [UInt32: UInt8] = [:]
        for (b, v) in byteToScalar.enumerated() { d[v] = UInt8(b) }
        return d
    }()
}
