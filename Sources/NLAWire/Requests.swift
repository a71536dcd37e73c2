// The request bodies of `nla serve`, decoded and validated without a model or a network: SGLang's `/generate`
// and the JSON API (chat, explain, verbalize, reconstruct, score). The routes (Sources/NLAServer) call these and
// then do the model work; the fuzz target `http_bodies` (fuzz/) calls exactly the same functions. Every error is
// an `APIError` (status 400) with a one-line message naming the field.

import Foundation
import NLARuntime

/// SGLang's `sampling_params` as decoded (the stop ids of the model are added by the route).
package struct SGLangParams: Sendable, Equatable {
    package var options: SamplingOptions
    /// `stop_token_ids` (checked against the vocabulary).
    package var stopTokenIds: [Int] = []
    package var ignoreEos = false
    package var skipSpecialTokens = true
    /// `stop`: strings that end generation when the decoded text contains one.
    package var stopStrings: [String] = []

    package static func == (a: SGLangParams, b: SGLangParams) -> Bool {
        a.options.temperature == b.options.temperature && a.options.topK == b.options.topK && a.options.topP == b.options.topP
            && a.options.seed == b.options.seed && a.options.maxNewTokens == b.options.maxNewTokens && a.stopTokenIds == b.stopTokenIds
            && a.ignoreEos == b.ignoreEos && a.skipSpecialTokens == b.skipSpecialTokens && a.stopStrings == b.stopStrings
    }
}

package enum WireSampling {
    /// Most stop strings per request, and the longest one (bytes).
    package static let maxStopStrings = 16
    package static let maxStopStringBytes = 256

    /// SGLang's `sampling_params` (defaults as SGLang's: temperature 1, max_new_tokens 128, top_k -1 = off).
    package static func sglang(_ v: JSONValue?, field: String, maxNewTokensLimit: Int, vocab: Int) throws -> SGLangParams {
        // SGLang's default of 128 new tokens, within the server's limit (a fuzz finding: the default passed a lower limit).
        var p = SGLangParams(options: SamplingOptions(temperature: 1, maxNewTokens: min(128, maxNewTokensLimit)))
        guard let v, v != .null else { return p }
        let f = try Fields(v, field)
        if let t = try f.double("temperature") {
            guard t >= 0 else { throw APIError.bad("\(field).temperature: must be >= 0") }
            guard t <= 1e6 else { throw APIError.bad("\(field).temperature: must be <= 1e6") }
            p.options.temperature = Float(t)
        }
        if let n = try f.int("max_new_tokens", min: 0, max: maxNewTokensLimit) { p.options.maxNewTokens = n }
        if let x = try f.double("top_p") {
            guard x > 0, x <= 1 else { throw APIError.bad("\(field).top_p: must be in (0, 1]") }
            p.options.topP = Float(x)
        }
        if let k = try f.int("top_k", min: -1) { p.options.topK = max(k, 0) }
        if let seed = try f.int("sampling_seed", min: 0) { p.options.seed = UInt64(seed) } else if let seed = try f.int("seed", min: 0) { p.options.seed = UInt64(seed) }
        if let n = try f.int("n"), n != 1 { throw APIError.bad("\(field).n: only n = 1 is supported") }
        for k in ["frequency_penalty", "presence_penalty", "min_p"] {
            if let x = try f.double(k), x != 0 { throw APIError.bad("\(field).\(k): not supported (only 0)") }
        }
        if let x = try f.double("repetition_penalty"), x != 1 { throw APIError.bad("\(field).repetition_penalty: not supported (only 1)") }
        p.stopStrings = try stopStrings(f.o["stop"], "\(field).stop")
        if try f.bool("ignore_eos") == true { p.ignoreEos = true }
        if let ids = f.o["stop_token_ids"], ids != .null {
            p.stopTokenIds = try tokenIds(ids, "\(field).stop_token_ids", vocab: vocab)
        }
        if let sk = try f.bool("skip_special_tokens") { p.skipSpecialTokens = sk }
        return p
    }

    /// `stop`: null, a string or a list of strings (empty strings are ignored, as SGLang does).
    package static func stopStrings(_ v: JSONValue?, _ field: String) throws -> [String] {
        var out: [String] = []
        switch v {
        case nil, .null?: return []
        case .string(let s)?: out = [s]
        case .floats(let a)? where a.isEmpty: return []
        case .floats?: throw APIError.bad("\(field)[0]: expected a string, got a number")
        case .array(let a)?:
            out = try a.enumerated().map { (i, x) in
                guard case .string(let s) = x else { throw APIError.bad("\(field)[\(i)]: expected a string, got \(x.typeName)") }
                return s
            }
        case let x?: throw APIError.bad("\(field): expected a string or a list of strings, got \(x.typeName)")
        }
        out = out.filter { !$0.isEmpty }
        guard out.count <= maxStopStrings else { throw APIError.bad("\(field): at most \(maxStopStrings) stop strings (got \(out.count))") }
        for (i, s) in out.enumerated() where s.utf8.count > maxStopStringBytes {
            throw APIError.bad("\(field)\(out.count > 1 ? "[\(i)]" : ""): longer than \(maxStopStringBytes) bytes")
        }
        return out
    }

    /// The API's own sampling fields (defaults: greedy).
    package static func api(_ f: Fields, maxNewTokensLimit: Int, defaultMaxNew: Int) throws -> SamplingOptions {
        var o = SamplingOptions(temperature: 0, maxNewTokens: min(defaultMaxNew, maxNewTokensLimit))
        if let t = try f.double("temperature") {
            guard t >= 0 else { throw APIError.bad("temperature: must be >= 0") }
            guard t <= 1e6 else { throw APIError.bad("temperature: must be <= 1e6") }
            o.temperature = Float(t)
        }
        if let n = try f.int("max_new_tokens", min: 0, max: maxNewTokensLimit) { o.maxNewTokens = n }
        if let p = try f.double("top_p") {
            guard p > 0, p <= 1 else { throw APIError.bad("top_p: must be in (0, 1]") }
            o.topP = Float(p)
        }
        if let k = try f.int("top_k", min: 0) { o.topK = k }
        if let seed = try f.int("seed", min: 0) { o.seed = UInt64(seed) }
        return o
    }
}

/// SGLang's `/generate` body.
package struct GenerateBody {
    package enum Input: Equatable { case embeds([Float], rows: Int), ids([Int]), text(String) }
    package var model: String?
    package var inputs: [Input]
    /// A list of inputs was given (the reply is a list).
    package var batched: Bool
    /// One per input.
    package var params: [SGLangParams]
    package var stream: Bool

    /// The lane a body asks for (`model`), read before the lane's width and vocabulary are known.
    package static func model(_ v: JSONValue) throws -> String? { try Fields(v).string("model") }

    /// Decode for a model of width `d` and vocabulary `vocab`.
    package static func decode(_ v: JSONValue, d: Int, vocab: Int, maxNewTokensLimit: Int) throws -> GenerateBody {
        let f = try Fields(v)
        let model = try f.string("model")
        let given = ["input_embeds", "text", "input_ids"].filter { f.has($0) }
        guard given.count == 1 else {
            throw APIError.bad(given.isEmpty ? "give one of input_embeds, text or input_ids"
                                             : "give only one of input_embeds, text or input_ids (got \(given.joined(separator: ", ")))")
        }
        var inputs: [Input] = []
        var batched = false
        switch given[0] {
        case "input_embeds":
            let e = f.o["input_embeds"]!
            guard case .array(let items) = e, let first = items.first else {
                throw APIError.bad("input_embeds: expected [[float × \(d)] × T] (or a list of them), got \(e.typeName == "an array" ? "an empty or flat array" : e.typeName)")
            }
            func one(_ x: JSONValue, _ name: String) throws -> Input {
                let rows = try matrix(x, name, width: d)
                guard !rows.isEmpty else { throw APIError.bad("\(name): no rows") }
                var flat: [Float] = []
                flat.reserveCapacity(rows.count * d)
                for r in rows { flat += r }
                return .embeds(flat, rows: rows.count)
            }
            if case .array = first {
                batched = true
                inputs = try items.enumerated().map { try one($0.element, "input_embeds[\($0.offset)]") }
            } else {
                inputs = [try one(e, "input_embeds")]
            }
        case "text":
            switch f.o["text"]! {
            case .string(let t): inputs = [.text(t)]
            case .array(let a):
                batched = true
                inputs = try a.enumerated().map { (i, x) in
                    guard case .string(let t) = x else { throw APIError.bad("text[\(i)]: expected a string, got \(x.typeName)") }
                    return .text(t)
                }
            case .floats(let a) where a.isEmpty: batched = true
            case let x: throw APIError.bad("text: expected a string or a list of strings, got \(x.typeName)")
            }
        default:
            let x = f.o["input_ids"]!
            switch x {
            case .floats: inputs = [.ids(try tokenIds(x, "input_ids", vocab: vocab))]
            case .array(let a):
                batched = true
                inputs = try a.enumerated().map { .ids(try tokenIds($0.element, "input_ids[\($0.offset)]", vocab: vocab)) }
            default: throw APIError.bad("input_ids: expected a list of token ids (or a list of them), got \(x.typeName)")
            }
        }
        guard !inputs.isEmpty else { throw APIError.bad("empty batch: nothing to generate") }
        for (i, inp) in inputs.enumerated() {
            if case .ids(let ids) = inp, ids.isEmpty { throw APIError.bad("\(batched ? "input \(i)" : "input"): no tokens") }
        }
        // sampling_params: one object for all, or one per input.
        var params: [SGLangParams] = []
        if let sp = f.o["sampling_params"], case .array(let list) = sp {
            guard batched, list.count == inputs.count else {
                throw APIError.bad("sampling_params: a list needs one object per input (\(inputs.count))")
            }
            params = try list.enumerated().map {
                try WireSampling.sglang($0.element, field: "sampling_params[\($0.offset)]", maxNewTokensLimit: maxNewTokensLimit, vocab: vocab)
            }
        } else {
            let p = try WireSampling.sglang(f.o["sampling_params"], field: "sampling_params", maxNewTokensLimit: maxNewTokensLimit, vocab: vocab)
            params = Array(repeating: p, count: inputs.count)
        }
        let stream = try f.bool("stream") ?? false
        return GenerateBody(model: model, inputs: inputs, batched: batched, params: params, stream: stream)
    }
}

/// `/api/chat`.
package struct ChatBody {
    package var messages: [ChatMessage]
    package var options: SamplingOptions
    /// `stream` (default true: server-sent events).
    package var stream: Bool

    package static func decode(_ v: JSONValue, maxNewTokensLimit: Int) throws -> ChatBody {
        let f = try Fields(v)
        guard let m = f.o["messages"], case .array(let list) = m, !list.isEmpty else {
            throw APIError.bad("messages: expected a non-empty list of {\"role\",\"content\"}")
        }
        let messages = try list.enumerated().map { (i, x) -> ChatMessage in
            let mf = try Fields(x, "messages[\(i)]")
            guard let role = try mf.string("role"), ["user", "assistant", "system", "model"].contains(role) else {
                throw APIError.bad("messages[\(i)].role: expected user, assistant or system")
            }
            guard let content = try mf.string("content") else { throw APIError.bad("messages[\(i)].content: missing") }
            return ChatMessage(role: role == "model" ? "assistant" : role, content: content)
        }
        let options = try WireSampling.api(f, maxNewTokensLimit: maxNewTokensLimit, defaultMaxNew: 256)
        return ChatBody(messages: messages, options: options, stream: try f.bool("stream") ?? true)
    }
}

/// `/api/explain`.
package struct ExplainBody {
    package enum Source: Equatable {
        /// Explicit conversation ids and how many of them are the prompt (nil = all).
        case ids([Int], promptLength: Int?)
        case prompt(String, chat: Bool, reply: String?, maxReplyTokens: Int)
    }
    package var sampling: SamplingOptions
    package var positions: NLAPositionSpec
    package var fveBaseline: Double?
    package var source: Source
    package var stream: Bool

    package static func decode(_ v: JSONValue, vocab: Int, maxNewTokensLimit: Int) throws -> ExplainBody {
        let f = try Fields(v)
        let stream = try f.bool("stream") ?? false
        let sampling = try WireSampling.api(f, maxNewTokensLimit: maxNewTokensLimit, defaultMaxNew: 200)
        let spec: NLAPositionSpec
        switch f.o["positions"] {
        case nil, .null?: spec = .all
        case .string(let str)?:
            do { spec = try NLAPositionSpec.parse(str) } catch { throw APIError.bad("positions: \(error)") }
        case .floats(let a)?:
            guard !a.isEmpty else { throw APIError.bad("positions: empty list") }
            let list = try a.enumerated().map { (j, x) -> String in
                guard x >= 0, x == x.rounded(), x < 1e9 else { throw APIError.bad("positions[\(j)]: \(x) is not a position") }
                return String(Int(x))
            }
            do { spec = try NLAPositionSpec.parse(list.joined(separator: ",")) } catch { throw APIError.bad("positions: \(error)") }
        case let x?: throw APIError.bad("positions: expected \"all\", a spec like \"4-\" or a list of positions, got \(x.typeName)")
        }
        let baseline = try f.double("fve_baseline")
        if let b = baseline, !(b > 0) { throw APIError.bad("fve_baseline: must be > 0 (got \(b))") }
        let source: Source
        if let idsValue = f.o["ids"], idsValue != .null {
            let ids = try tokenIds(idsValue, "ids", vocab: vocab)
            guard !ids.isEmpty else { throw APIError.bad("ids: empty") }
            source = .ids(ids, promptLength: try f.int("prompt_length", min: 0, max: ids.count))
        } else {
            guard let prompt = try f.string("prompt") else { throw APIError.bad("give ids (and prompt_length) or prompt") }
            source = .prompt(prompt, chat: try f.bool("chat") ?? true, reply: try f.string("reply"),
                             maxReplyTokens: try f.int("max_reply_tokens", min: 0, max: maxNewTokensLimit) ?? 64)
        }
        return ExplainBody(sampling: sampling, positions: spec, fveBaseline: baseline, source: source, stream: stream)
    }
}

/// `/api/verbalize`: `{"vectors": [[f32 × d] × n]}` or `{"vector": [f32 × d]}`.
package struct VerbalizeBody {
    package var sampling: SamplingOptions
    package var vectors: [[Float]]
    /// The single `vector` form (errors name `vector`, not `vectors[i]`).
    package var single: Bool

    package static func decode(_ v: JSONValue, d: Int, maxNewTokensLimit: Int, maxVectors: Int) throws -> VerbalizeBody {
        let f = try Fields(v)
        let sampling = try WireSampling.api(f, maxNewTokensLimit: maxNewTokensLimit, defaultMaxNew: 200)
        var vectors: [[Float]]
        let single: Bool
        if let one = f.o["vector"], one != .null {
            guard !f.has("vectors") else { throw APIError.bad("give vector or vectors, not both") }
            vectors = [try vector(one, "vector")]
            single = true
        } else if let many = f.o["vectors"], many != .null {
            vectors = try matrix(many, "vectors", width: nil)
            single = false
        } else {
            throw APIError.bad("vectors: missing (a list of activation vectors of \(d) floats)")
        }
        guard !vectors.isEmpty else { throw APIError.bad("vectors: empty list") }
        guard vectors.count <= maxVectors else {
            throw APIError.bad("vectors: \(vectors.count) vectors exceed the limit of \(maxVectors) per request")
        }
        return VerbalizeBody(sampling: sampling, vectors: vectors, single: single)
    }

    /// The field name of vector i in messages.
    package func name(_ i: Int) -> String { single ? "vector" : "vectors[\(i)]" }
}

/// `/api/reconstruct` and `/api/score`.
package struct ScoreBody {
    package var explanation: String
    package var gold: [Float]?
    package var fveBaseline: Double?

    package static func explanation(_ f: Fields) throws -> String {
        guard let e = try f.string("explanation") else { throw APIError.bad("explanation: missing (the text to reconstruct)") }
        return e
    }

    /// `{"explanation"}` (reconstruct).
    package static func decodeReconstruct(_ v: JSONValue) throws -> String { try explanation(try Fields(v)) }

    /// `{"explanation","gold"[,"fve_baseline"]}` with `gold` of `d` finite floats.
    package static func decodeScore(_ v: JSONValue, d: Int) throws -> ScoreBody {
        let f = try Fields(v)
        let e = try explanation(f)
        guard let gold = try f.floats("gold") else { throw APIError.bad("gold: missing (the gold activation vector, \(d) floats)") }
        do { try NLAVectorMath.validate(gold, d: d, label: "gold") } catch { throw APIError.bad("\(error)") }
        let baseline = try f.double("fve_baseline")
        if let b = baseline, !(b > 0) { throw APIError.bad("fve_baseline: must be > 0 (got \(b))") }
        return ScoreBody(explanation: e, gold: gold, fveBaseline: baseline)
    }
}
