// Every way an NLA pair, its sidecar or its inputs can be refused. Each case is one distinct failure
// (the silent-garbage failure modes of the reference, spec §1.5 and §6.4); the description is one line
// that names the file (or input) and says what drifted.

import Foundation
import Quant

public enum NLAError: Error, CustomStringConvertible, Equatable {
    // --- sidecar (nla_meta.yaml) ---
    /// The model has no nla_meta.yaml (directory file or GGUF metadata).
    case sidecarMissing(model: String)
    case sidecarUnreadable(file: String, reason: String)
    case sidecarMalformed(file: String, reason: String)
    /// `kind` is not `nla_model`.
    case sidecarWrongKind(file: String, kind: String)
    /// `role` is not one of av / actor / ar / critic.
    case sidecarUnknownRole(file: String, role: String)
    case sidecarMissingField(file: String, field: String)
    case sidecarBadField(file: String, field: String, reason: String)
    /// Two of the places K may be stored disagree.
    case sidecarConflictingLayer(file: String, values: String)
    /// An AV sidecar given to the AR or the other way round.
    case wrongRole(file: String, expected: String, found: String)

    // --- startup validation (spec §1.5) ---
    /// `encode(injection_char)` is not exactly `[injection_token_id]`.
    case injectionCharTokenization(file: String, char: String, expectedId: Int, got: [Int])
    /// The AV template (or custom prompt) has no place for the injection character.
    case templatePlaceholderMissing(file: String, placeholder: String)
    /// A `{name}` the template formatter does not know, or an unbalanced brace.
    case templateFormat(file: String, reason: String)
    /// The rendered AV prompt does not contain the injection token at all.
    case injectionSiteMissing(file: String, tokenId: Int, promptLength: Int)
    /// The injection token occurs, but never between the sidecar's neighbors.
    case injectionNeighborsDrifted(file: String, position: Int, expectedLeft: Int, expectedRight: Int, gotLeft: Int?, gotRight: Int?)
    /// The injection token sits at the first or last prompt position (no valid neighbors).
    case injectionSiteAtEdge(file: String, position: Int, promptLength: Int)
    /// More than one valid injection site for one vector.
    case injectionSiteCount(file: String, sites: [Int])
    /// The prompt starts with BOS twice (or carries a second BOS).
    case doubleBOS(file: String, positions: [Int])
    /// The prompt does not start with BOS.
    case missingBOS(file: String, bos: Int, first: Int?)
    /// AV: injection_scale absent or null/raw.
    case injectionScaleMissing(file: String, state: String)
    case dModelMismatch(file: String, sidecar: Int, config: Int, configFile: String)
    /// The sidecar names no extraction layer K.
    case extractionLayerMissing(file: String)
    /// AR: config.json does not have K+1 blocks.
    case layerCountMismatch(file: String, k: Int, configLayers: Int, configFile: String)
    case valueHeadMissing(model: String)
    case valueHeadShape(model: String, shape: [Int], d: Int)
    case valueHeadType(model: String, type: String)
    /// AR prompt does not end with `critic_suffix_ids`.
    case criticSuffixMismatch(file: String, expected: [Int], got: [Int])

    // --- inputs ---
    case vectorLength(label: String, got: Int, expected: Int)
    case vectorNotFinite(label: String, index: Int, value: Float)
    case vectorZeroNorm(label: String)
    case vectorFile(file: String, reason: String)
    case layerOutOfRange(model: String, layer: Int, blocks: Int)
    case promptTooLong(model: String, tokens: Int, context: Int)
    /// The caller cancelled a running pipeline.
    case cancelled

    /// One line: control characters quoted from the input (keys, names) are escaped.
    public var description: String { oneLineMessage(unescapedDescription) }

    private var unescapedDescription: String {
        switch self {
        case .sidecarMissing(let m):
            return "\(m): no nla_meta.yaml (an NLA model needs its sidecar next to the weights, or embedded in the .gguf)"
        case .sidecarUnreadable(let f, let r):
            return "\(f): cannot read the NLA sidecar: \(r)"
        case .sidecarMalformed(let f, let r):
            return "\(f): malformed YAML in the NLA sidecar: \(r)"
        case .sidecarWrongKind(let f, let k):
            return "\(f): kind is '\(k)', expected 'nla_model' (a dataset sidecar or another file?)"
        case .sidecarUnknownRole(let f, let r):
            return "\(f): role '\(r)' is not one of av, actor, ar, critic"
        case .sidecarMissingField(let f, let field):
            return "\(f): missing required field '\(field)'"
        case .sidecarBadField(let f, let field, let r):
            return "\(f): field '\(field)' \(r)"
        case .sidecarConflictingLayer(let f, let v):
            return "\(f): the extraction layer K is stored in several places with different values (\(v))"
        case .wrongRole(let f, let e, let found):
            return "\(f): role is '\(found)', but this needs an \(e) sidecar (AV and AR swapped?)"
        case .injectionCharTokenization(let f, let c, let id, let got):
            return "\(f): injection_char \(Self.quote(c)) encodes to \(got), expected exactly [\(id)] (tokenizer or injection_char drifted)"
        case .templatePlaceholderMissing(let f, let p):
            return "\(f): the AV prompt template has no \(p) placeholder, so no injection site can exist"
        case .templateFormat(let f, let r):
            return "\(f): prompt template cannot be formatted: \(r)"
        case .injectionSiteMissing(let f, let id, let t):
            return "\(f): the rendered AV prompt (\(t) tokens) does not contain injection_token_id \(id) (template or tokenizer drifted)"
        case .injectionNeighborsDrifted(let f, let p, let el, let er, let gl, let gr):
            return "\(f): injection token at position \(p) has neighbors \(gl.map(String.init) ?? "none") / \(gr.map(String.init) ?? "none"), expected \(el) / \(er) (template drifted around <concept>…</concept>)"
        case .injectionSiteAtEdge(let f, let p, let t):
            return "\(f): injection token at position \(p) of a \(t)-token prompt: the first and last positions are never valid sites"
        case .injectionSiteCount(let f, let sites):
            return "\(f): \(sites.count) valid injection sites at positions \(sites), expected exactly 1 for one vector"
        case .doubleBOS(let f, let pos):
            return "\(f): the prompt carries BOS at positions \(pos), expected exactly one at position 0 (double BOS shifts every position)"
        case .missingBOS(let f, let bos, let first):
            return "\(f): the prompt starts with \(first.map(String.init) ?? "nothing"), expected BOS \(bos) (tokenized without special tokens?)"
        case .injectionScaleMissing(let f, let state):
            return "\(f): extraction.injection_scale is \(state); an AV needs a numeric scale (there is no default; see spec §1.3)"
        case .dModelMismatch(let f, let s, let c, let cf):
            return "\(f): d_model \(s) does not match hidden_size \(c) of \(cf)"
        case .extractionLayerMissing(let f):
            return "\(f): no extraction layer K (looked for critic.extraction_layer_index, critic.num_hidden_layers, ar.num_hidden_layers, extraction_layer_index, extraction.layer_index)"
        case .layerCountMismatch(let f, let k, let n, let cf):
            return "\(f): extraction layer K = \(k) needs an AR with K+1 = \(k + 1) blocks, but \(cf) has num_hidden_layers \(n)"
        case .valueHeadMissing(let m):
            return "\(m): no value head (value_head.safetensors with tensor 'weight', or 'value_head.weight' in the .gguf)"
        case .valueHeadShape(let m, let s, let d):
            return "\(m): value_head.weight has shape \(s), expected [\(d), \(d)]"
        case .valueHeadType(let m, let t):
            return "\(m): value_head.weight has dtype \(t); expected F32, F16, BF16, Q8_0 or Q4_0"
        case .criticSuffixMismatch(let f, let e, let g):
            return "\(f): the AR prompt ends with \(g), expected critic_suffix_ids \(e) (AR template or tokenizer drifted)"
        case .vectorLength(let l, let g, let e):
            return "\(l): vector has \(g) values, expected d_model = \(e)"
        case .vectorNotFinite(let l, let i, let v):
            return "\(l): vector value [\(i)] is \(v); NaN and Inf are refused"
        case .vectorZeroNorm(let l):
            return "\(l): vector has zero norm; it has no direction to verbalize or score"
        case .vectorFile(let f, let r):
            return "\(f): \(r)"
        case .layerOutOfRange(let m, let l, let b):
            return "\(m): layer \(l) is outside the model's blocks 0..<\(b)"
        case .promptTooLong(let m, let t, let c):
            return "\(m): \(t) tokens exceed the model's context of \(c) positions"
        case .cancelled:
            return "cancelled"
        }
    }

    static func quote(_ s: String) -> String {
        let escaped = s.unicodeScalars.map { u -> String in
            u.value < 0x20 || u.value > 0x7E ? String(format: "\\u{%04X}", u.value) : String(u)
        }.joined()
        return "\"\(escaped)\" (\(s))"
    }
}
