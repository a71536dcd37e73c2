// Explanation extraction from the AV's raw output (spec §2.5) and the injection-failure smell test
// (spec §6.4: an AV that sees the literal marker instead of the vector free-associates CJK).

import Foundation

public enum NLAExplanation {
    public static let openTag = "<explanation>"
    public static let closeTag = "</explanation>"

    /// First match of `<explanation>\s*(.*?)\s*</explanation>` (dot matches newline, lazy), stripped;
    /// nil when there is no complete pair.
    public static func extract(_ text: String) -> String? {
        guard let open = text.range(of: openTag),
              let close = text.range(of: closeTag, range: open.upperBound..<text.endIndex) else { return nil }
        return NLAPrompt.pythonStrip(String(text[open.upperBound..<close.lowerBound]))
    }

    /// Whether a scalar is CJK (Han, kana, Hangul, CJK symbols/punctuation, enclosed CJK such as ㈜,
    /// compatibility forms, fullwidth forms).
    public static func isCJK(_ u: Unicode.Scalar) -> Bool {
        switch u.value {
        case 0x1100...0x11FF, 0x2E80...0x2FDF, 0x3000...0x303F, 0x3040...0x30FF, 0x3100...0x31FF,
             0x3200...0x33FF, 0x3400...0x4DBF, 0x4E00...0x9FFF, 0xA960...0xA97F, 0xAC00...0xD7FF,
             0xF900...0xFAFF, 0xFE30...0xFE4F, 0xFF00...0xFFEF, 0x20000...0x3FFFF:
            return true
        default:
            return false
        }
    }

    /// Warnings for a raw AV output: missing tags (raw text returned), a truncated explanation, output
    /// that is mostly CJK (the injection most likely failed).
    public static func warnings(text: String, explanation: String?, stoppedOnEOS: Bool, maxNewTokens: Int) -> [String] {
        var w: [String] = []
        if explanation == nil {
            if text.contains(openTag) {
                w.append("no closing \(closeTag) tag (the explanation was truncated\(stoppedOnEOS ? "" : " at \(maxNewTokens) tokens; raise --max-new-tokens")); returning the raw text")
            } else {
                w.append("no \(openTag)…\(closeTag) in the output; returning the raw text")
            }
        }
        var letters = 0, cjk = 0
        let body = text.replacingOccurrences(of: openTag, with: " ").replacingOccurrences(of: closeTag, with: " ")
        for u in body.unicodeScalars where !u.properties.isWhitespace {
            if isCJK(u) { cjk += 1; letters += 1 } else if u.properties.isAlphabetic { letters += 1 }
        }
        if cjk > 0 && cjk * 2 >= letters {
            w.append("output is mostly CJK (\(cjk) of \(letters) letters): the injection looks like it failed (wrong injection_scale, double BOS or template drift; spec §6.4)")
        }
        return w
    }
}
