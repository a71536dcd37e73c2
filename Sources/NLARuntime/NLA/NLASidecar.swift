// The NLA model sidecar `nla_meta.yaml` (spec §1): parsed with a real YAML 1.1 parser (Yams/libyaml),
// because the released sidecars are PyYAML dumps (`"\u321C"` escapes, folded quoted templates).
//
// Rules implemented (spec §1.2–§1.3, code of the reference wins over its docs):
// - `kind` must be `nla_model`; `role` av/actor → .av, ar/critic → .ar.
// - `d_model`: top level, else `extraction.d_model` (dataset-sidecar place).
// - K (extraction layer), first present wins, in this order:
//     critic.extraction_layer_index > critic.num_hidden_layers (schema v1) > ar.num_hidden_layers (INF example)
//     > extraction_layer_index (top level, added by the release script) > extraction.layer_index.
//   All of them hold K (the AR then has K+1 blocks). If two present ones disagree the sidecar is refused.
// - Scales (`resolve_target_scale`): null, "raw", "none" → nil (no normalization); "sqrt_d_model" → √d;
//   a numeric string → its value; a number → its value. Absent injection_scale → nil (NO default: an AV
//   refuses it at startup); absent mse_scale → √d; explicit null mse_scale → nil (raw-MSE mode).
// - Templates: av = prompt_templates.av, falling back to prompt_templates.actor when av is missing or empty
//   (Python `or`); ar = prompt_templates.ar or prompt_templates.critic.

import Foundation
import Yams

public struct NLASidecar: Sendable {
    public enum Role: String, Sendable { case av, ar }

    /// How a scale field was written.
    public enum ScaleState: String, Sendable {
        case absent        // key not present
        case null          // explicit null
        case raw           // "raw" or "none": no normalization
        case sqrtDModel    // "sqrt_d_model"
        case number        // a number or numeric string
    }

    public var role: Role
    public var dModel: Int
    /// K: the activation is the raw output of block K (hidden_states[K+1]).
    public var extractionLayer: Int?
    /// Where K was read from (e.g. "critic.extraction_layer_index"), nil when absent.
    public var extractionLayerKey: String?
    public var injectionScale: Float?
    public var injectionScaleState: ScaleState
    public var mseScale: Float?
    public var mseScaleState: ScaleState
    /// Empty / −1 when an AR sidecar omits the token fields (an AV requires them).
    public var injectionChar: String
    public var injectionTokenId: Int
    public var leftNeighborId: Int
    public var rightNeighborId: Int
    public var criticSuffixIds: [Int]?
    public var avTemplate: String?
    public var arTemplate: String?
    public var schemaVersion: Int?
    public var stage: String?
    /// The file it came from (a path, or "model.gguf[nla_meta.yaml]"), for messages.
    public var file: String

    public static func load(path: String) throws -> NLASidecar {
        guard let data = FileManager.default.contents(atPath: path) else {
            let exists = FileManager.default.fileExists(atPath: path)
            throw NLAError.sidecarUnreadable(file: path, reason: exists ? "cannot read the file" : "no such file")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw NLAError.sidecarUnreadable(file: path, reason: "not UTF-8 text")
        }
        return try decode(yaml: text, file: path)
    }

    /// The sidecar of a model directory or `.gguf` (embedded by `quantize`).
    public static func load(files: ModelFiles) throws -> NLASidecar {
        guard let data = files.files["nla_meta.yaml"] else { throw NLAError.sidecarMissing(model: files.path) }
        let name = files.fileName("nla_meta.yaml")
        guard let text = String(data: data, encoding: .utf8) else {
            throw NLAError.sidecarUnreadable(file: name, reason: "not UTF-8 text")
        }
        return try decode(yaml: text, file: name)
    }

    public static func decode(yaml: String, file: String) throws -> NLASidecar {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            let first = String(describing: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            throw NLAError.sidecarMalformed(file: file, reason: first)
        }
        guard let root, case .mapping = root else {
            throw NLAError.sidecarMalformed(file: file, reason: "the top level is not a mapping of fields")
        }
        let r = SidecarReader(root: root, file: file)

        guard let kind = try r.string("kind") else { throw NLAError.sidecarMissingField(file: file, field: "kind") }
        guard kind == "nla_model" else { throw NLAError.sidecarWrongKind(file: file, kind: kind) }
        guard let roleName = try r.string("role") else { throw NLAError.sidecarMissingField(file: file, field: "role") }
        let role: Role
        switch roleName {
        case "av", "actor": role = .av
        case "ar", "critic": role = .ar
        default: throw NLAError.sidecarUnknownRole(file: file, role: roleName)
        }

        guard let d = try r.int("d_model") ?? r.int("extraction.d_model") else {
            throw NLAError.sidecarMissingField(file: file, field: "d_model")
        }
        guard d > 0 else { throw NLAError.sidecarBadField(file: file, field: "d_model", reason: "must be positive, got \(d)") }

        // K, first present wins; disagreeing places are refused.
        let layerKeys = ["critic.extraction_layer_index", "critic.num_hidden_layers", "ar.num_hidden_layers",
                         "extraction_layer_index", "extraction.layer_index"]
        var found: [(String, Int)] = []
        for k in layerKeys { if let v = try r.int(k) { found.append((k, v)) } }
        if Set(found.map(\.1)).count > 1 {
            throw NLAError.sidecarConflictingLayer(file: file, values: found.map { "\($0.0)=\($0.1)" }.joined(separator: ", "))
        }
        if let (k, v) = found.first, v < 0 {
            throw NLAError.sidecarBadField(file: file, field: k, reason: "must be >= 0, got \(v)")
        }

        let (inj, injState) = try r.scale("extraction.injection_scale", dModel: d)
        var (mse, mseState) = try r.scale("extraction.mse_scale", dModel: d)
        if mseState == .absent { mse = Float(Double(d).squareRoot()) }

        let tokenFields = ["tokens.injection_char", "tokens.injection_token_id",
                           "tokens.injection_left_neighbor_id", "tokens.injection_right_neighbor_id"]
        if role == .av {
            for f in tokenFields where r.node(f) == nil || r.isNull(f) {
                throw NLAError.sidecarMissingField(file: file, field: f)
            }
        }
        let char = try r.string("tokens.injection_char") ?? ""
        if role == .av && char.isEmpty {
            throw NLAError.sidecarBadField(file: file, field: "tokens.injection_char", reason: "is empty")
        }

        func template(_ primary: String, _ fallback: String) throws -> String? {
            if let t = try r.string(primary), !t.isEmpty { return t }
            if let t = try r.string(fallback), !t.isEmpty { return t }
            return nil
        }

        return NLASidecar(
            role: role, dModel: d, extractionLayer: found.first?.1, extractionLayerKey: found.first?.0,
            injectionScale: inj, injectionScaleState: injState, mseScale: mse, mseScaleState: mseState,
            injectionChar: char,
            injectionTokenId: try r.int("tokens.injection_token_id") ?? -1,
            leftNeighborId: try r.int("tokens.injection_left_neighbor_id") ?? -1,
            rightNeighborId: try r.int("tokens.injection_right_neighbor_id") ?? -1,
            criticSuffixIds: try r.intList("tokens.critic_suffix_ids"),
            avTemplate: try template("prompt_templates.av", "prompt_templates.actor"),
            arTemplate: try template("prompt_templates.ar", "prompt_templates.critic"),
            schemaVersion: try r.int("schema_version"), stage: try r.string("stage"), file: file)
    }
}

/// The resolved tag of a node (implicit plain scalars resolved by the YAML 1.1 rules, quoted ones → str).
private func tagName(_ n: Node) -> Tag.Name { Tag.Name(rawValue: n.tag.description) }

/// Typed access to dotted paths of the YAML tree, with errors naming the field.
private struct SidecarReader {
    let root: Node
    let file: String

    func node(_ path: String) -> Node? {
        var cur = root
        for part in path.split(separator: ".") {
            guard case .mapping(let m) = cur, let next = m[String(part)] else { return nil }
            cur = next
        }
        return cur
    }

    func isNull(_ path: String) -> Bool {
        guard let n = node(path) else { return false }
        return tagName(n) == .null
    }

    private func bad(_ path: String, _ why: String) -> NLAError {
        NLAError.sidecarBadField(file: file, field: path, reason: why)
    }

    private func shown(_ n: Node) -> String {
        if case .scalar(let s) = n { return "'\(s.string)'" }
        if case .mapping = n { return "a mapping" }
        if case .sequence = n { return "a list" }
        return "an alias"
    }

    /// nil when absent or null.
    func string(_ path: String) throws -> String? {
        guard let n = node(path), tagName(n) != .null else { return nil }
        guard case .scalar(let s) = n, tagName(n) == .str else { throw bad(path, "must be a string, got \(shown(n))") }
        return s.string
    }

    /// nil when absent or null.
    func int(_ path: String) throws -> Int? {
        guard let n = node(path), tagName(n) != .null else { return nil }
        guard tagName(n) == .int, let v = n.int else { throw bad(path, "must be an integer, got \(shown(n))") }
        return v
    }

    func intList(_ path: String) throws -> [Int]? {
        guard let n = node(path), tagName(n) != .null else { return nil }
        guard case .sequence(let seq) = n else { throw bad(path, "must be a list of integers, got \(shown(n))") }
        return try seq.map { e in
            guard tagName(e) == .int, let v = e.int else { throw bad(path, "must be a list of integers, has \(shown(e))") }
            return v
        }
    }

    /// SCH `resolve_target_scale`.
    func scale(_ path: String, dModel: Int) throws -> (Float?, NLASidecar.ScaleState) {
        guard let n = node(path) else { return (nil, .absent) }
        if tagName(n) == .null { return (nil, .null) }
        guard case .scalar(let s) = n else { throw bad(path, "must be a number, null, \"raw\", \"none\" or \"sqrt_d_model\", got \(shown(n))") }
        let value: Double
        let state: NLASidecar.ScaleState
        switch tagName(n) {
        case .int, .float:
            guard let v = n.float else { throw bad(path, "is not a number: '\(s.string)'") }
            value = v; state = .number
        case .str:
            let t = s.string.trimmingCharacters(in: .whitespaces)
            switch t.lowercased() {
            case "raw", "none": return (nil, .raw)
            case "sqrt_d_model": value = Double(dModel).squareRoot(); state = .sqrtDModel
            default:
                guard let v = Double(t) else {
                    throw bad(path, "'\(s.string)' is not a number, null, \"raw\", \"none\" or \"sqrt_d_model\"")
                }
                value = v; state = .number
            }
        default:
            throw bad(path, "must be a number, null, \"raw\", \"none\" or \"sqrt_d_model\", got \(shown(n))")
        }
        guard value.isFinite, value > 0 else { throw bad(path, "must be a positive finite number, got \(value)") }
        return (Float(value), state)
    }
}
