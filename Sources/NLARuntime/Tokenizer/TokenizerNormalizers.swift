import Foundation

/// Stage 1 of encoding: rewrites each piece of input text that is not an added token.
///
/// `firstSpan` is the number of leading bytes of the text that come from the first original character
/// (0 when the text no longer starts with it). tokenizers tracks a full original<->normalized alignment;
/// this is the part of it that is observable, through Metaspace `prepend_scheme: first` ("does this
/// piece start at original offset 0?"). Each normalizer updates it the way tokenizers' alignments move.
protocol TokNormalizer: Sendable {
    func normalize(_ s: [UInt8], firstSpan: inout Int) -> [UInt8]
}

extension TokNormalizer {
    func normalize(_ s: [UInt8]) -> [UInt8] {
        var span = s.isEmpty ? 0 : TokUTF8.sequenceLength(s[0])
        return normalize(s, firstSpan: &span)
    }
}

/// `normalizer.type` values understood by this implementation (raw values are the tokenizer.json strings).
enum TokNormalizerType: String, Sendable, CaseIterable {
    case sequence = "Sequence"
    case replace = "Replace"
    case prepend = "Prepend"
    case append = "Append"
    case nfc = "NFC"
    case nfd = "NFD"
    case nfkc = "NFKC"
    case nfkd = "NFKD"
    case lowercase = "Lowercase"
    case strip = "Strip"
}

enum TokNormalizerFactory {
    static func make(_ node: TokJSONNode) throws -> any TokNormalizer {
        let typeName = try node.componentType()
        guard let type = TokNormalizerType(rawValue: typeName) else {
            throw TokenizerError.unknownComponentType(file: node.file, stage: "normalizer", type: typeName, path: node.path)
        }
        switch type {
        case .sequence:
            let items = try node.require("normalizers").asArray()
            return TokSequenceNormalizer(normalizers: try items.map(make))
        case .replace:
            return TokReplaceNormalizer(
                pattern: try TokPattern.parse(node.require("pattern")),
                content: Array(try node.require("content").asString().utf8))
        case .prepend:
            return TokPrependNormalizer(prefix: Array(try node.require("prepend").asString().utf8))
        case .append:
            return TokAppendNormalizer(suffix: Array(try node.require("append").asString().utf8))
        case .nfc: return TokUnicodeNormalizer(form: .nfc)
        case .nfd: return TokUnicodeNormalizer(form: .nfd)
        case .nfkc: return TokUnicodeNormalizer(form: .nfkc)
        case .nfkd: return TokUnicodeNormalizer(form: .nfkd)
        case .lowercase: return TokLowercaseNormalizer()
        case .strip:
            return TokStripNormalizer(
                left: try node.bool("strip_left", default: true),
                right: try node.bool("strip_right", default: true))
        }
    }
}

struct TokSequenceNormalizer: TokNormalizer {
    let normalizers: [any TokNormalizer]
    func normalize(_ s: [UInt8], firstSpan: inout Int) -> [UInt8] {
        var out = s
        for n in normalizers { out = n.normalize(out, firstSpan: &firstSpan) }
        return out
    }
}

/// Replaces every occurrence of a literal string or regex match.
struct TokReplaceNormalizer: TokNormalizer {
    let pattern: TokPattern
    let content: [UInt8]
    func normalize(_ s: [UInt8], firstSpan: inout Int) -> [UInt8] {
        pattern.replace(in: s, with: content, firstSpan: &firstSpan)
    }
}

/// Prepends a string to non-empty input.
struct TokPrependNormalizer: TokNormalizer {
    let prefix: [UInt8]
    func normalize(_ s: [UInt8], firstSpan: inout Int) -> [UInt8] {
        if s.isEmpty { return s }
        if firstSpan > 0 { firstSpan += prefix.count }  // the prefix is aligned with the first character
        return prefix + s
    }
}

/// Appends a string to non-empty input.
struct TokAppendNormalizer: TokNormalizer {
    let suffix: [UInt8]
    func normalize(_ s: [UInt8], firstSpan: inout Int) -> [UInt8] { s.isEmpty ? s : s + suffix }
}

/// NFC / NFD / NFKC / NFKD via Foundation.
struct TokUnicodeNormalizer: TokNormalizer {
    enum Form: Sendable { case nfc, nfd, nfkc, nfkd }
    let form: Form

    private func apply(_ s: [UInt8]) -> [UInt8] {
        if s.allSatisfy({ $0 < 0x80 }) { return s }  // ASCII is invariant under all four forms
        let str = String(decoding: s, as: UTF8.self)
        let out: String
        switch form {
        case .nfc: out = str.precomposedStringWithCanonicalMapping
        case .nfd: out = str.decomposedStringWithCanonicalMapping
        case .nfkc: out = str.precomposedStringWithCompatibilityMapping
        case .nfkd: out = str.decomposedStringWithCompatibilityMapping
        }
        return Array(out.utf8)
    }

    func normalize(_ s: [UInt8], firstSpan: inout Int) -> [UInt8] {
        let out = apply(s)
        // What the first character's bytes turn into (e.g. NFKC "˜" -> " \u{303}"), at least one byte.
        if firstSpan > 0 && firstSpan <= s.count {
            // Composition with what follows can make this end inside a character: round up.
            var k = min(max(apply(Array(s[0..<firstSpan])).count, 1), out.count)
            while k < out.count && out[k] & 0xC0 == 0x80 { k += 1 }
            firstSpan = k
        }
        return out
    }
}

/// Per-scalar full lowercase mapping (Rust `char::to_lowercase`, no context-sensitive rules).
struct TokLowercaseNormalizer: TokNormalizer {
    func normalize(_ s: [UInt8], firstSpan: inout Int) -> [UInt8] {
        if firstSpan > 0 && firstSpan <= s.count { firstSpan = lower(Array(s[0..<firstSpan])).count }
        return lower(s)
    }

    private func lower(_ s: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(s.count)
        var i = 0
        while i < s.count {
            let b = s[i]
            if b < 0x80 {
                out.append(b >= 0x41 && b <= 0x5A ? b + 32 : b)
                i += 1
                continue
            }
            let (v, n) = TokUTF8.decode(s, at: i)
            if let sc = Unicode.Scalar(v) {
                out.append(contentsOf: sc.properties.lowercaseMapping.utf8)
            }
            i += n
        }
        return out
    }
}

/// Strips leading and/or trailing whitespace (Unicode White_Space).
struct TokStripNormalizer: TokNormalizer {
    let left: Bool
    let right: Bool
    func normalize(_ s: [UInt8], firstSpan: inout Int) -> [UInt8] {
        var start = 0
        var end = s.count
        if left {
            while start < end {
                let (v, n) = TokUTF8.decode(s, at: start)
                guard TokUTF8.isWhitespace(v) else { break }
                start += n
            }
        }
        if right {
            while end > start, let v = TokUTF8.scalar(before: end, in: s), TokUTF8.isWhitespace(v) {
                var len = 1
                while s[end - len] & 0xC0 == 0x80 { len += 1 }
                end -= len
            }
        }
        firstSpan = max(firstSpan - start, 0)
        return (start == 0 && end == s.count) ? s : Array(s[start..<end])
    }
}
