// `nla explain|verbalize --backend sglang --url URL`: the AV runs on an SGLang server (or another `nla serve`);
// capture and the AR stay local. Each vector's AV input is the exact [T, d] rows the local AV would consume
// (`ActivationVerbalizer.inputEmbeddings`: the scaled prompt embeddings with the injected row), and `/generate`
// takes `input_embeds` as the model's scaled input embeddings, so both run the same forward. Vectors go out in
// chunks, one batch request per chunk (a list of input_embeds), with the local path's sampling (temperature,
// top_k/top_p off, the seed, max_new_tokens) and the AV's stop ids; only the text (and output_ids when the server
// sends them) comes back, and the explanation is extracted and checked exactly as for the local AV.
// Every failure is one line naming the URL and the problem.

import AsyncHTTPClient
import Foundation
import NIOCore
import NLARuntime
import NLAWire
#if canImport(Glibc)
import Glibc
#endif

public struct SGLangBackend: VerbalizeBackend {
    /// Base URL (scheme, host, port, optional path), without a trailing slash.
    public let base: String
    public let apiKey: String?
    /// Seconds per request (connect + generate + reply).
    public let timeout: Double
    /// Upper bound of one request body when choosing the chunk size automatically.
    public var maxBodyBytes = 32 << 20
    /// Upper bound of vectors per request when choosing automatically.
    public var maxAutoBatch = 16

    public var endpoint: String { base + "/generate" }

    public init(url: String, apiKey: String? = nil, timeout: Double = 600) throws {
        guard let u = URL(string: url), let scheme = u.scheme?.lowercased(), scheme == "http" || scheme == "https",
              let host = u.host, !host.isEmpty, u.query == nil, u.fragment == nil else {
            throw ModelError.input("--url \(SGLangBackend.quoted(url)): expected http://HOST[:PORT] (the server's base URL; requests go to URL/generate)")
        }
        guard timeout.isFinite, timeout > 0 else { throw ModelError.input("--timeout must be a positive number of seconds (got \(timeout))") }
        if let k = apiKey, k.isEmpty || k.contains(where: { $0.isNewline }) {
            throw ModelError.input("--api-key must be a non-empty single-line token")
        }
        var b = url
        while b.hasSuffix("/") { b.removeLast() }
        base = b
        self.apiKey = apiKey
        self.timeout = timeout
    }

    static func quoted(_ s: String) -> String {
        var out = "'"
        for u in s.unicodeScalars.prefix(200) {
            if u.value < 0x20 || u.value == 0x7F { out += String(format: "\\x%02x", u.value) } else { out.unicodeScalars.append(u) }
        }
        return out + "'"
    }

    /// Chunk size: at most `maxAutoBatch` vectors and about `maxBodyBytes` of JSON per request.
    public func batchSize(items: Int, verbalizer: ActivationVerbalizer) -> Int {
        let perItem = max(1, verbalizer.promptIds.count * verbalizer.dModel * 16)
        return max(1, min(maxAutoBatch, max(items, 1), maxBodyBytes / perItem))
    }

    /// One failure of the backend: "sglang backend URL/generate: problem".
    public struct Failure: Error, CustomStringConvertible {
        public var endpoint: String
        public var problem: String
        public var description: String { "sglang backend \(endpoint): \(problem)" }
    }

    func fail(_ problem: String) -> Failure {
        Failure(endpoint: endpoint, problem: problem.replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " "))
    }

    // MARK: - request

    /// The `/generate` body of one chunk: `{"input_embeds": [[[f32 × d] × T] × n], "sampling_params": {...}}`, floats in
    /// their shortest round-trip form (read back bit-exact by `nla serve`; SGLang casts them as it casts any input).
    public static func requestBody(rows: [[Float]], d: Int, options: SamplingOptions, stopIds: [Int], ignoreStopIds: Bool) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(rows.reduce(0) { $0 + $1.count } * 13 + 512)
        out += Array(#"{"input_embeds":["#.utf8)
        for (k, r) in rows.enumerated() {
            if k > 0 { out.append(UInt8(ascii: ",")) }
            out.append(UInt8(ascii: "["))
            let t = r.count / d
            for i in 0..<t {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                out.append(UInt8(ascii: "["))
                for j in 0..<d {
                    if j > 0 { out.append(UInt8(ascii: ",")) }
                    out += Array(r[i * d + j].description.utf8)
                }
                out.append(UInt8(ascii: "]"))
            }
            out.append(UInt8(ascii: "]"))
        }
        out += Array("],\"sampling_params\":".utf8)
        var sp: [String: Any] = ["temperature": Double(options.temperature), "max_new_tokens": options.maxNewTokens,
                                 "top_k": options.topK > 0 ? options.topK : -1, "top_p": Double(options.topP),
                                 "skip_special_tokens": false]
        if options.temperature > 0 { sp["sampling_seed"] = Int(clamping: options.seed) }
        if ignoreStopIds { sp["ignore_eos"] = true } else { sp["stop_token_ids"] = stopIds.sorted() }
        out += Array(((try? NLAJSON.data(sp)) ?? Data("{}".utf8)))
        out.append(UInt8(ascii: "}"))
        return out
    }

    // MARK: - the backend

    public func verbalize(_ verbalizer: ActivationVerbalizer, vectors: [[Float]], options: SamplingOptions, batch: Int, ignoreStopIds: Bool,
                          onEvent: ((BatchDecodeEvent) -> Void)?, isCancelled: () -> Bool) throws -> [Result<Verbalization, Error>] {
        try options.validate()
        guard batch >= 1 else { throw ModelError.input("batch size must be at least 1 (got \(batch))") }
        var results = [Result<Verbalization, Error>?](repeating: nil, count: vectors.count)
        // Vectors that cannot be injected fail alone, as in the local path; the rest go out.
        var ready: [(index: Int, rows: [Float])] = []
        for (i, v) in vectors.enumerated() {
            do { ready.append((i, try verbalizer.inputEmbeddings(for: v))) } catch {
                results[i] = .failure(error)
                onEvent?(.failed(index: i, error))
            }
        }
        if ready.isEmpty { return results.map { $0! } }
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup,
                                configuration: HTTPClient.Configuration(timeout: .init(connect: .milliseconds(Int64(min(timeout, 60) * 1000)),
                                                                                       read: .milliseconds(Int64(timeout * 1000)))))
        defer { try? client.syncShutdown() }
        var start = 0
        while start < ready.count {
            if isCancelled() { throw NLAError.cancelled }
            let chunk = Array(ready[start..<min(start + batch, ready.count)])
            for (slot, item) in chunk.enumerated() { onEvent?(.started(index: item.index, slot: slot)) }
            let body = SGLangBackend.requestBody(rows: chunk.map(\.rows), d: verbalizer.dModel, options: options,
                                                 stopIds: Array(verbalizer.stopIds), ignoreStopIds: ignoreStopIds)
            let began = Date()
            let replies = try post(client, body: body, count: chunk.count)
            onEvent?(.step(sequences: chunk.count, rows: 0, seconds: Date().timeIntervalSince(began)))
            for (k, item) in chunk.enumerated() {
                switch verbalization(k, replies[k], verbalizer: verbalizer, options: options) {
                case .success(let v):
                    for id in v.ids { onEvent?(.token(index: item.index, id: id, margin: .nan)) }
                    results[item.index] = .success(v)
                    onEvent?(.finished(index: item.index, DecodeOutcome(ids: v.ids, stoppedOnStopId: v.stoppedOnEOS)))
                case .failure(let e):
                    results[item.index] = .failure(e)
                    onEvent?(.failed(index: item.index, e))
                }
            }
            start += chunk.count
        }
        return results.map { $0! }
    }

    /// Send one chunk; the reply list (one object per input) or a one-line failure.
    func post(_ client: HTTPClient, body: [UInt8], count: Int) throws -> [[String: JSONValue]] {
        var req: HTTPClient.Request
        do { req = try HTTPClient.Request(url: endpoint, method: .POST) } catch { throw fail("invalid URL (\(error))") }
        req.headers.add(name: "Content-Type", value: "application/json")
        req.headers.add(name: "Accept", value: "application/json")
        if let k = apiKey { req.headers.add(name: "Authorization", value: "Bearer \(k)") }
        req.body = .byteBuffer(ByteBuffer(bytes: body))
        let response: HTTPClient.Response
        do {
            response = try client.execute(request: req, deadline: .now() + .milliseconds(Int64(timeout * 1000))).wait()
        } catch {
            throw fail(SGLangBackend.describe(error, timeout: timeout))
        }
        let bytes = response.body.map { Array($0.readableBytesView) } ?? []
        let status = Int(response.status.code)
        guard status == 200 else {
            throw fail("HTTP \(status)\(SGLangBackend.errorMessage(bytes).map { ": " + $0 } ?? "")")
        }
        let json: JSONValue
        do { json = try JSONReader.parse(bytes) } catch {
            throw fail("malformed reply: not JSON (\(bytes.count) bytes: \(SGLangBackend.snippet(bytes)))")
        }
        let list: [JSONValue]
        switch json {
        case .array(let a): list = a
        case .floats(let a) where a.isEmpty: list = []
        default: throw fail("malformed reply: expected a list of \(count) results for the batch request, got \(json.typeName)")
        }
        guard list.count == count else {
            throw fail("the reply has \(list.count) results for \(count) inputs")
        }
        return try list.enumerated().map { (k, x) in
            guard case .object(let o) = x else { throw fail("malformed reply: result \(k) is \(x.typeName), not an object") }
            return o
        }
    }

    /// One reply object → the Verbalization the local AV would give for the same generated text.
    func verbalization(_ k: Int, _ o: [String: JSONValue], verbalizer: ActivationVerbalizer, options: SamplingOptions) -> Result<Verbalization, Error> {
        guard case .string(let text)? = o["text"] else {
            return .failure(fail("malformed reply: result \(k) has no \"text\" string"))
        }
        var finish: [String: JSONValue] = [:]
        if case .object(let meta)? = o["meta_info"], case .object(let f)? = meta["finish_reason"] { finish = f }
        var type: String?
        if case .string(let t)? = finish["type"] { type = t }
        if type == "abort" {
            var msg = "no message"
            if case .string(let m)? = finish["message"] { msg = SGLangBackend.oneLine(m) }
            return .failure(fail("result \(k) was aborted by the server: \(msg)"))
        }
        let stopped = type == "stop"
        var matched: Int?
        // A matched stop id is a number; a matched stop string is a string.
        if case .number(let x)? = finish["matched"], let m = Int(exactly: x) { matched = m }
        let vocab = verbalizer.model.config.vocabSize
        var ids: [Int]
        switch o["output_ids"] {
        case .floats(let raw)?:
            var parsed: [Int] = []
            for (j, x) in raw.enumerated() {
                guard x.isFinite, x == x.rounded(), x >= 0, x < Float(vocab) else {
                    return .failure(fail("malformed reply: result \(k) output_ids[\(j)] = \(x) is not a token id of the AV (0..<\(vocab))"))
                }
                parsed.append(Int(x))
            }
            ids = parsed
        case nil, .null?:
            // Only the text came back: its tokens, as the local tokenizer reads them.
            ids = verbalizer.model.tokenizer.encode(text, addSpecialTokens: false)
        case let x?:
            return .failure(fail("malformed reply: result \(k) output_ids is \(x.typeName), not a list of token ids"))
        }
        if stopped, let m = matched, ids.last != m { ids.append(m) }
        let explanation = NLAExplanation.extract(text)
        let warnings = NLAExplanation.warnings(text: text, explanation: explanation, stoppedOnEOS: stopped, maxNewTokens: options.maxNewTokens)
        return .success(Verbalization(ids: ids, text: text, explanation: explanation, warnings: warnings, stoppedOnEOS: stopped))
    }

    // MARK: - messages

    /// A transport error in words: connection refused, timed out, closed, …
    static func describe(_ e: Error, timeout: Double) -> String {
        let secs = timeout == timeout.rounded() ? String(Int(timeout)) : String(timeout)
        if let h = e as? HTTPClientError {
            if h == .deadlineExceeded || h == .readTimeout || h == .writeTimeout {
                return "no reply within \(secs) s (--timeout)"
            }
            if h == .connectTimeout || h == .getConnectionFromPoolTimeout { return "could not connect within \(secs) s (--timeout)" }
            if h == .remoteConnectionClosed { return "the server closed the connection before replying" }
        }
        if refused(e) { return "connection refused (is the server running at this address?)" }
        if let io = e as? IOError { return "\(String(cString: strerror(io.errnoCode)).lowercased())" }
        let text = "\(e)"
        if text.lowercased().contains("connection refused") { return "connection refused (is the server running at this address?)" }
        return "request failed: \(text.prefix(300))"
    }

    static func refused(_ e: Error) -> Bool {
        if let io = e as? IOError { return io.errnoCode == ECONNREFUSED }
        return false
    }

    /// The server's message from an error body: SGLang/nla `{"error": {"message"}}`, `{"message"}` or FastAPI's `{"detail"}`.
    static func errorMessage(_ body: [UInt8]) -> String? {
        guard !body.isEmpty else { return nil }
        if case .object(let o)? = try? JSONReader.parse(body) {
            if case .object(let e)? = o["error"], case .string(let m)? = e["message"] { return oneLine(m) }
            for k in ["error", "message", "detail"] { if case .string(let m)? = o[k] { return oneLine(m) } }
        }
        return snippet(body)
    }

    static func oneLine(_ s: String) -> String {
        let t = s.replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
        return t.count > 500 ? String(t.prefix(500)) + "…" : t
    }

    static func snippet(_ d: [UInt8]) -> String {
        let s = String(decoding: d.prefix(120), as: UTF8.self)
        return SGLangBackend.quoted(oneLine(s)) + (d.count > 120 ? "…" : "")
    }
}
