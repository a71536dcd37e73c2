// NLA prompts: template formatting (Python `str.format` with named fields), the canonical AV prompt
// (spec §2.1–§2.2), the injection-site scan (spec §2.3 step 5, INJ `inject_at_marked_positions`) and the
// BOS checks (spec §1.5, §2.2, §4.2). Pure functions on ids so each check can be tested on its own.

import Foundation

public enum NLAPrompt {
    /// The literal a custom AV prompt uses for the injection site (spec §6.1).
    public static let injectMarker = "<INJECT>"

    /// Python `template.format(**fields)`: `{name}` → value, `{{` → `{`, `}}` → `}`; any other brace use
    /// (unknown field, format spec, stray brace) is refused, as Python would raise.
    public static func format(_ template: String, _ fields: [String: String], file: String) throws -> String {
        var out = ""
        var i = template.startIndex
        while i < template.endIndex {
            let c = template[i]
            let next = template.index(after: i)
            if c == "{" {
                if next < template.endIndex && template[next] == "{" { out.append("{"); i = template.index(after: next); continue }
                guard let close = template[next...].firstIndex(of: "}") else {
                    throw NLAError.templateFormat(file: file, reason: "single '{' without a closing '}'")
                }
                let name = String(template[next..<close])
                guard let v = fields[name] else {
                    throw NLAError.templateFormat(file: file, reason: "unknown field {\(name)} (known: \(fields.keys.sorted().map { "{\($0)}" }.joined(separator: ", ")))")
                }
                out += v
                i = template.index(after: close)
            } else if c == "}" {
                guard next < template.endIndex && template[next] == "}" else {
                    throw NLAError.templateFormat(file: file, reason: "single '}' encountered")
                }
                out.append("}")
                i = template.index(after: next)
            } else {
                out.append(c)
                i = next
            }
        }
        return out
    }

    /// The AV user-message content: the sidecar template formatted with the injection char, or a custom
    /// prompt with `<INJECT>` replaced by it (spec §6.1).
    public static func avContent(sidecar: NLASidecar, customPrompt: String?) throws -> String {
        if let custom = customPrompt {
            guard custom.contains(injectMarker) else {
                throw NLAError.templatePlaceholderMissing(file: "custom AV prompt", placeholder: injectMarker)
            }
            return custom.replacingOccurrences(of: injectMarker, with: sidecar.injectionChar)
        }
        guard let t = sidecar.avTemplate else {
            throw NLAError.sidecarMissingField(file: sidecar.file, field: "prompt_templates.av")
        }
        guard t.contains("{injection_char}") else {
            throw NLAError.templatePlaceholderMissing(file: sidecar.file, placeholder: "{injection_char}")
        }
        return try format(t, ["injection_char": sidecar.injectionChar], file: sidecar.file)
    }

    /// The AV prompt ids: one user message through the chat template (which adds the only BOS), encoded
    /// without special tokens (spec §2.2).
    public static func avPromptIds(content: String, tokenizer: Tokenizer) throws -> [Int] {
        try tokenizer.encodeChat([ChatMessage(role: "user", content: content)], addGenerationPrompt: true)
    }

    /// Valid injection sites (spec §2.3 step 5): p ∉ {0, T−1}, ids[p] == token, ids[p−1] == left,
    /// ids[p+1] == right.
    public static func injectionSites(_ ids: [Int], tokenId: Int, left: Int, right: Int) -> [Int] {
        guard ids.count >= 3 else { return [] }
        return (1..<(ids.count - 1)).filter { p in ids[p] == tokenId && ids[p - 1] == left && ids[p + 1] == right }
    }

    /// Exactly one valid site, else an error saying how the prompt drifted. `label` names the source.
    public static func validateInjectionSite(_ ids: [Int], sidecar: NLASidecar, label: String) throws -> Int {
        let sites = injectionSites(ids, tokenId: sidecar.injectionTokenId, left: sidecar.leftNeighborId, right: sidecar.rightNeighborId)
        if sites.count == 1 { return sites[0] }
        if sites.count > 1 { throw NLAError.injectionSiteCount(file: label, sites: sites) }
        let occurrences = ids.indices.filter { ids[$0] == sidecar.injectionTokenId }
        guard let p = occurrences.first(where: { $0 != 0 && $0 != ids.count - 1 }) ?? occurrences.first else {
            throw NLAError.injectionSiteMissing(file: label, tokenId: sidecar.injectionTokenId, promptLength: ids.count)
        }
        if p == 0 || p == ids.count - 1 {
            throw NLAError.injectionSiteAtEdge(file: label, position: p, promptLength: ids.count)
        }
        throw NLAError.injectionNeighborsDrifted(file: label, position: p, expectedLeft: sidecar.leftNeighborId,
                                                 expectedRight: sidecar.rightNeighborId, gotLeft: ids[p - 1], gotRight: ids[p + 1])
    }

    /// The prompt starts with BOS, and BOS does not follow it again (the double-BOS of
    /// `add_special_tokens=True` on an already rendered chat, INF debugging #3). With `anywhere`, any later
    /// BOS is refused too (the AV prompt must carry exactly one).
    public static func validateBOS(_ ids: [Int], bos: Int?, label: String, anywhere: Bool) throws {
        guard let bos else { return }
        guard ids.first == bos else { throw NLAError.missingBOS(file: label, bos: bos, first: ids.first) }
        let extra = anywhere ? ids.indices.filter { $0 > 0 && ids[$0] == bos } : (ids.count > 1 && ids[1] == bos ? [1] : [])
        if !extra.isEmpty { throw NLAError.doubleBOS(file: label, positions: [0] + extra) }
    }

    /// `encode(injection_char, add_special_tokens=False)` must be exactly `[injection_token_id]` and not
    /// the unknown token (spec §1.5 step 1).
    public static func validateInjectionChar(sidecar: NLASidecar, tokenizer: Tokenizer) throws {
        let ids = tokenizer.encode(sidecar.injectionChar, addSpecialTokens: false)
        let unk = tokenizer.tokenToId("<unk>")
        guard ids == [sidecar.injectionTokenId], ids.first != unk else {
            throw NLAError.injectionCharTokenization(file: sidecar.file, char: sidecar.injectionChar,
                                                     expectedId: sidecar.injectionTokenId, got: ids)
        }
    }

    /// The AR prompt: the sidecar's template with `{explanation}` = the stripped explanation, tokenized as
    /// plain text WITH special tokens (one BOS), no chat template (spec §4.2).
    public static func arPromptIds(explanation: String, sidecar: NLASidecar, tokenizer: Tokenizer) throws -> [Int] {
        guard let t = sidecar.arTemplate else {
            throw NLAError.sidecarMissingField(file: sidecar.file, field: "prompt_templates.ar")
        }
        let text = try format(t, ["explanation": pythonStrip(explanation)], file: sidecar.file)
        return tokenizer.encode(text, addSpecialTokens: true)
    }

    /// Python `str.strip()` (Unicode whitespace).
    public static func pythonStrip(_ s: String) -> String {
        TokChatTemplate.jinjaTrim(s)
    }
}
