import Foundation

/// A regular expression applied to UTF-8 byte strings, returning byte ranges.
///
/// tokenizers compiles `{"Regex": ...}` patterns with Oniguruma; here ICU (NSRegularExpression) is used,
/// which accepts the same syntax for the patterns found in tokenizer.json files (\p{L}, \p{N}, (?i:...),
/// look-ahead, possessive/atomic groups).
final class TokRegex: @unchecked Sendable {
    // NSRegularExpression is immutable and documented as safe to use from several threads.
    let source: String
    private let regex: NSRegularExpression

    init(_ pattern: String) throws {
        source = pattern
        regex = try NSRegularExpression(pattern: pattern, options: [])
    }

    /// Non-overlapping matches, left to right, as UTF-8 byte ranges (empty matches included).
    func matches(in bytes: [UInt8]) -> [(Int, Int)] {
        if bytes.isEmpty { return [] }
        let s = String(decoding: bytes, as: UTF8.self)
        // utf16 offset -> utf8 offset
        var map = [Int](repeating: 0, count: s.utf16.count + 1)
        var u16 = 0
        var u8 = 0
        for sc in s.unicodeScalars {
            let n16 = sc.value > 0xFFFF ? 2 : 1
            let n8 = sc.value < 0x80 ? 1 : sc.value < 0x800 ? 2 : sc.value < 0x10000 ? 3 : 4
            map[u16] = u8
            if n16 == 2 { map[u16 + 1] = u8 }
            u16 += n16
            u8 += n8
        }
        map[u16] = u8
        let found = regex.matches(in: s, options: [], range: NSRange(location: 0, length: u16))
        return found.map { m in (map[m.range.location], map[m.range.location + m.range.length]) }
    }
}

/// `{"String": "..."}` or `{"Regex": "..."}` as used by Replace and Split.
enum TokPattern: Sendable {
    case string([UInt8])
    case regex(TokRegex)

    static func parse(_ node: TokJSONNode) throws -> TokPattern {
        let obj = try node.asObject()
        if let s = node.optional("String") {
            return .string(Array(try s.asString().utf8))
        }
        if let r = node.optional("Regex") {
            let src = try r.asString()
            do {
                return .regex(try TokRegex(src))
            } catch {
                throw r.invalid("cannot compile regular expression: \(error.localizedDescription)")
            }
        }
        throw node.invalid("pattern must be {\"String\": ...} or {\"Regex\": ...}, found keys \(obj.keys.sorted())")
    }

    /// tokenizers' `Pattern::find_matches`: contiguous pieces covering the input, flagged as match or not.
    func findMatches(_ s: [UInt8]) -> [(start: Int, end: Int, isMatch: Bool)] {
        if s.isEmpty { return [(0, 0, false)] }
        let ranges: [(Int, Int)]
        switch self {
        case let .string(needle):
            if needle.isEmpty { return [(0, s.count, false)] }
            ranges = TokUTF8.findAll(needle, in: s)
        case let .regex(re):
            ranges = re.matches(in: s)
        }
        var out: [(Int, Int, Bool)] = []
        out.reserveCapacity(ranges.count * 2 + 1)
        var prev = 0
        for (a, b) in ranges {
            if prev != a { out.append((prev, a, false)) }
            out.append((a, b, true))
            prev = b
        }
        if prev != s.count { out.append((prev, s.count, false)) }
        return out
    }

    /// Replaces every match with `content` (tokenizers' `NormalizedString::replace`).
    func replace(in s: [UInt8], with content: [UInt8]) -> [UInt8] {
        var span = 0
        return replace(in: s, with: content, firstSpan: &span)
    }

    /// As `replace(in:with:)`, updating `firstSpan` (see `TokNormalizer`): tokenizers aligns replacement
    /// text with the last character it replaces, so a match at the start keeps the text "first" only if
    /// that character came from the first original character.
    func replace(in s: [UInt8], with content: [UInt8], firstSpan: inout Int) -> [UInt8] {
        let pieces = findMatches(s)
        if !pieces.contains(where: { $0.isMatch }) { return s }
        if firstSpan > 0, let first = pieces.first {
            if !first.isMatch {
                firstSpan = min(firstSpan, first.end)
            } else if first.end <= firstSpan {
                firstSpan = content.count + (firstSpan - first.end)
            } else {
                firstSpan = 0
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(s.count + 8)
        for p in pieces {
            if p.isMatch { out.append(contentsOf: content) } else { out.append(contentsOf: s[p.start..<p.end]) }
        }
        return out
    }
}

/// How Split (and Metaspace) treat the delimiter. Raw values are the tokenizer.json strings.
enum TokSplitBehavior: String, Sendable, CaseIterable {
    case removed = "Removed"
    case isolated = "Isolated"
    case mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext"
    case contiguous = "Contiguous"

    /// tokenizers' `NormalizedString::split` on already computed matches; empty pieces are dropped
    /// (as `PreTokenizedString::split` does).
    func apply(_ matches: [(start: Int, end: Int, isMatch: Bool)]) -> [(Int, Int)] {
        var acc: [(Int, Int)] = []
        switch self {
        case .isolated:
            acc = matches.map { ($0.start, $0.end) }
        case .removed:
            acc = matches.filter { !$0.isMatch }.map { ($0.start, $0.end) }
        case .contiguous:
            var previous = false
            for m in matches {
                if m.isMatch == previous, !acc.isEmpty {
                    acc[acc.count - 1].1 = m.end
                } else {
                    acc.append((m.start, m.end))
                }
                previous = m.isMatch
            }
        case .mergedWithPrevious:
            var previous = false
            for m in matches {
                if m.isMatch && !previous, !acc.isEmpty {
                    acc[acc.count - 1].1 = m.end
                } else {
                    acc.append((m.start, m.end))
                }
                previous = m.isMatch
            }
        case .mergedWithNext:
            var previous = false
            for m in matches.reversed() {
                if m.isMatch && !previous, !acc.isEmpty {
                    acc[acc.count - 1].0 = m.start
                } else {
                    acc.append((m.start, m.end))
                }
                previous = m.isMatch
            }
            acc.reverse()
        }
        return acc.filter { $0.0 != $0.1 }
    }
}
