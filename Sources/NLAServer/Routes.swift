// The routes: SGLang's /generate, the JSON API under /api, the page, the OpenAPI document, health.

import Foundation
import Hummingbird
import HTTPTypes
import Logging
import NIOCore
import NLARuntime

enum Routes {
    static func install(on router: Router<BasicRequestContext>, service s: NLAService) {
        router.get("/") { _, _ in
            html(Page.html)
        }
        router.get("/health") { _, _ in
            let st = s.engine.stats
            return json(["status": "ok", "uptime_s": Date().timeIntervalSince(s.started), "queue": st.queued, "active": st.active,
                         "steps": st.steps, "tokens": st.tokens,
                         "prefix_cache": ["entries": st.prefixEntries, "hits": st.prefixHits, "hit_tokens": st.prefixHitTokens]])
        }
        router.get("/openapi.yaml") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/yaml"], body: .init(byteBuffer: ByteBuffer(string: OpenAPI.yaml)))
        }
        router.get("/openapi.json") { _, _ in
            try Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: OpenAPI.json())))
        }
        router.get("/api/models") { _, _ in json(models(s)) }
        // Every POST: the body is read and the handler runs inside consumeWithCancellationOnInboundClose, so a client
        // that disconnects cancels its request (its jobs leave the engine at the next step).
        func post(_ path: RouterPath, _ handler: @escaping @Sendable (JSONValue, BasicRequestContext) async throws -> Response) {
            router.post(path) { req, ctx in
                var r = await guarded(ctx) {
                    try await req.body.consumeWithCancellationOnInboundClose { body in
                        try await handler(try await parseBody(body, s), ctx)
                    }
                }
                // The inbound-close watch consumes the connection: Hummingbird closes it after this response, so say so
                // (clients then open a new connection instead of reusing a closing one).
                r.headers[.connection] = "close"
                return r
            }
        }
        post("/generate") { v, ctx in try await Generate.handle(v, service: s, requestId: ctx.id) }
        post("/api/chat") { v, _ in try await Chat.handle(v, service: s) }
        post("/api/explain") { v, _ in
            if try Fields(v).bool("stream") ?? false { return try await Explain.stream(v, service: s) }
            return jsonData(try await Explain.run(v, service: s, progress: { _, _ in }).jsonData())
        }
        post("/api/verbalize") { v, _ in json(try await NLAEndpoints.verbalize(v, service: s)) }
        post("/api/reconstruct") { v, _ in json(try await NLAEndpoints.reconstruct(v, service: s)) }
        post("/api/score") { v, _ in json(try await NLAEndpoints.score(v, service: s)) }
    }

    static func models(_ s: NLAService) -> [String: Any] {
        var out: [[String: Any]] = []
        func describe(_ name: String, _ path: String, _ lm: LanguageModel, context: Int?) {
            var m: [String: Any] = ["name": name, "path": path, "hidden_size": lm.config.hiddenSize, "layers": lm.config.numHiddenLayers,
                                    "vocab_size": lm.config.vocabSize]
            if let context { m["context"] = context }
            out.append(m)
        }
        if let m = s.options.model, let lane = try? s.lane("model") { describe("model", m, lane.lm, context: lane.capacity) }
        if let t = s.target, let lane = try? s.lane("target") { describe("target", s.options.target!, t, context: lane.capacity) }
        if let v = s.verbalizer, let lane = try? s.lane("av") { describe("av", s.options.av!, v.model, context: lane.capacity) }
        if let r = s.reconstructor { describe("ar", s.options.ar!, r.model, context: nil) }
        var o: [String: Any] = ["mode": s.nla ? "nla" : "generate", "models": out, "generate_model": s.defaultLane,
                                "max_batch": s.options.maxBatch, "max_new_tokens_limit": s.options.maxNewTokensLimit]
        if let k = s.layer { o["layer"] = k }
        if let r = s.reconstructor, let k = s.layer {
            o["fve_baseline"] = (s.options.fveBaseline ?? FVEBaselines.builtIn(dModel: r.dModel, layer: k)).map { $0 as Any } ?? NSNull()
        }
        return o
    }

    static func parseBody(_ body: RequestBody, _ s: NLAService) async throws -> JSONValue {
        let buf: ByteBuffer
        do {
            buf = try await body.collect(upTo: s.options.maxBodyBytes)
        } catch is NIOTooManyBytesError {
            throw APIError(413, "request body exceeds the limit of \(s.options.maxBodyBytes) bytes (--max-body-bytes)")
        }
        guard buf.readableBytes > 0 else { throw APIError(400, "request body is empty: expected a JSON object") }
        return try JSONReader.parse(Array(buf.readableBytesView))
    }

    static func json(_ object: Any, status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? NLAJSON.data(object)) ?? Data("{}".utf8)
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func jsonData(_ data: Data) -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func html(_ text: String) -> Response {
        Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// The JSON error body and status of an error.
    static func errorStatus(_ error: Error) -> (Int, String) {
        switch error {
        case let e as APIError: return (e.status, e.message)
        case is EngineError, is CancellationError: return (499, "request cancelled")
        case is NIOTooManyBytesError: return (413, "request body too large")
        case let e as HTTPError: return (Int(e.status.code), e.body ?? e.status.reasonPhrase)
        case let e as ModelError: return (400, "\(e)")
        case let e as NLAError: return (400, "\(e)")
        case let e as TokenizerError: return (400, "\(e)")
        default: return (500, "internal error: \(error)")
        }
    }

    static func errorResponse(_ error: Error) -> Response {
        let (code, msg) = errorStatus(error)
        let oneLine = msg.replacingOccurrences(of: "\n", with: " ")
        return json(["error": ["message": oneLine, "code": code]], status: HTTPResponse.Status(code: code))
    }

    /// Run a handler, turning every error into its JSON error response (never a crash, never a half answer).
    static func guarded(_ ctx: BasicRequestContext, _ body: () async throws -> Response) async -> Response {
        do { return try await body() } catch {
            let (code, msg) = errorStatus(error)
            if code >= 500 { ctx.logger.error("request failed", metadata: ["status": "\(code)", "error": "\(msg)"]) }
            return errorResponse(error)
        }
    }

    /// An SSE response fed by `produce` (events are written as they come; a client that goes away cancels it).
    static func sse(_ produce: @escaping @Sendable (_ send: @escaping @Sendable (String, Any) -> Void) async throws -> Void) -> Response {
        let (stream, cont) = AsyncStream<ByteBuffer>.makeStream(bufferingPolicy: .unbounded)
        let send: @Sendable (String, Any) -> Void = { event, obj in
            let data = (try? NLAJSON.data(obj)) ?? Data("{}".utf8)
            var b = ByteBuffer(string: "event: \(event)\ndata: ")
            b.writeBytes(data)
            b.writeString("\n\n")
            cont.yield(b)
        }
        let work = Task {
            do { try await produce(send) } catch {
                let (code, msg) = errorStatus(error)
                send("error", ["error": ["message": msg.replacingOccurrences(of: "\n", with: " "), "code": code]])
            }
            cont.finish()
        }
        cont.onTermination = { _ in work.cancel() }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                        body: ResponseBody { writer in
                            do {
                                for await b in stream { try await writer.write(b) }
                                try await writer.finish(nil)
                            } catch {
                                work.cancel()
                                throw error
                            }
                        })
    }
}

// MARK: - sampling parameters

enum Sampling {
    /// SGLang's `sampling_params` (defaults as SGLang's: temperature 1, max_new_tokens 128, top_k -1 = off).
    static func sglang(_ v: JSONValue?, field: String, service s: NLAService, lm: LanguageModel) throws -> (SamplingOptions, Set<Int>, Bool) {
        var o = SamplingOptions(temperature: 1, maxNewTokens: 128)
        var stops = s.stopIds(lm)
        var skipSpecial = true
        guard let v, v != .null else { return (o, stops, skipSpecial) }
        let f = try Fields(v, field)
        if let t = try f.double("temperature") {
            guard t >= 0 else { throw APIError.bad("\(field).temperature: must be >= 0") }
            o.temperature = Float(t)
        }
        if let n = try f.int("max_new_tokens", min: 0, max: s.options.maxNewTokensLimit) { o.maxNewTokens = n }
        if let p = try f.double("top_p") {
            guard p > 0, p <= 1 else { throw APIError.bad("\(field).top_p: must be in (0, 1]") }
            o.topP = Float(p)
        }
        if let k = try f.int("top_k", min: -1) { o.topK = max(k, 0) }
        if let seed = try f.int("sampling_seed", min: 0) { o.seed = UInt64(seed) } else if let seed = try f.int("seed", min: 0) { o.seed = UInt64(seed) }
        if let n = try f.int("n"), n != 1 { throw APIError.bad("\(field).n: only n = 1 is supported") }
        for k in ["frequency_penalty", "presence_penalty", "min_p"] {
            if let x = try f.double(k), x != 0 { throw APIError.bad("\(field).\(k): not supported (only 0)") }
        }
        if let x = try f.double("repetition_penalty"), x != 1 { throw APIError.bad("\(field).repetition_penalty: not supported (only 1)") }
        if let stop = f.o["stop"], stop != .null {
            switch stop {
            case .floats(let a) where a.isEmpty: break
            case .array(let a) where a.isEmpty: break
            case .string(let str) where str.isEmpty: break
            default: throw APIError.bad("\(field).stop: stop strings are not supported (use stop_token_ids)")
            }
        }
        if try f.bool("ignore_eos") == true { stops = [] }
        if let ids = f.o["stop_token_ids"], ids != .null {
            stops.formUnion(try tokenIds(ids, "\(field).stop_token_ids", vocab: lm.config.vocabSize))
        }
        if let sk = try f.bool("skip_special_tokens") { skipSpecial = sk }
        return (o, stops, skipSpecial)
    }

    /// The API's own sampling fields (defaults: greedy).
    static func api(_ f: Fields, service s: NLAService, defaultMaxNew: Int) throws -> SamplingOptions {
        var o = SamplingOptions(temperature: 0, maxNewTokens: defaultMaxNew)
        if let t = try f.double("temperature") {
            guard t >= 0 else { throw APIError.bad("temperature: must be >= 0") }
            o.temperature = Float(t)
        }
        if let n = try f.int("max_new_tokens", min: 0, max: s.options.maxNewTokensLimit) { o.maxNewTokens = n }
        if let p = try f.double("top_p") {
            guard p > 0, p <= 1 else { throw APIError.bad("top_p: must be in (0, 1]") }
            o.topP = Float(p)
        }
        if let k = try f.int("top_k", min: 0) { o.topK = k }
        if let seed = try f.int("seed", min: 0) { o.seed = UInt64(seed) }
        return o
    }
}

// MARK: - SGLang /generate

enum Generate {
    enum Input { case embeds([Float], rows: Int), ids([Int]) }

    static func handle(_ v: JSONValue, service s: NLAService, requestId: String) async throws -> Response {
        let f = try Fields(v)
        let laneName = try f.string("model") ?? s.defaultLane
        let lane = try s.lane(laneName)
        let lm = lane.lm, d = lane.d
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
            case .string(let t): inputs = [.ids(lm.tokenizer.encode(t, addSpecialTokens: true))]
            case .array(let a):
                batched = true
                inputs = try a.enumerated().map { (i, x) in
                    guard case .string(let t) = x else { throw APIError.bad("text[\(i)]: expected a string, got \(x.typeName)") }
                    return .ids(lm.tokenizer.encode(t, addSpecialTokens: true))
                }
            case .floats(let a) where a.isEmpty: batched = true
            case let x: throw APIError.bad("text: expected a string or a list of strings, got \(x.typeName)")
            }
        default:
            let x = f.o["input_ids"]!
            switch x {
            case .floats: inputs = [.ids(try tokenIds(x, "input_ids", vocab: lm.config.vocabSize))]
            case .array(let a):
                batched = true
                inputs = try a.enumerated().map { .ids(try tokenIds($0.element, "input_ids[\($0.offset)]", vocab: lm.config.vocabSize)) }
            default: throw APIError.bad("input_ids: expected a list of token ids (or a list of them), got \(x.typeName)")
            }
        }
        guard !inputs.isEmpty else { throw APIError.bad("empty batch: nothing to generate") }
        // sampling_params: one object for all, or one per input.
        var params: [(SamplingOptions, Set<Int>, Bool)] = []
        if let sp = f.o["sampling_params"], case .array(let list) = sp {
            guard batched, list.count == inputs.count else {
                throw APIError.bad("sampling_params: a list needs one object per input (\(inputs.count))")
            }
            params = try list.enumerated().map { try Sampling.sglang($0.element, field: "sampling_params[\($0.offset)]", service: s, lm: lm) }
        } else {
            let p = try Sampling.sglang(f.o["sampling_params"], field: "sampling_params", service: s, lm: lm)
            params = Array(repeating: p, count: inputs.count)
        }
        if try f.bool("stream") == true { throw APIError.bad("stream: streaming /generate is not supported (use /api/chat for a stream)") }
        var specs: [GenJob.Spec] = []
        for (i, inp) in inputs.enumerated() {
            let name = batched ? "input \(i)" : "input"
            let t: Int
            var spec = GenJob.Spec(options: params[i].0, stopIds: params[i].1)
            switch inp {
            case .embeds(let rows, let n): t = n; spec.rows = rows
            case .ids(let ids):
                guard !ids.isEmpty else { throw APIError.bad("\(name): no tokens") }
                t = ids.count; spec.ids = ids
            }
            guard t < lane.capacity else {
                throw APIError.bad("\(name): \(t) tokens do not fit the context of \(lane.capacity) positions (--context)")
            }
            specs.append(spec)
        }
        let start = Date()
        let results = try await s.generate(lane: laneName, jobs: specs)
        let secs = Date().timeIntervalSince(start)
        var out: [[String: Any]] = []
        for (i, r) in results.enumerated() {
            let jr = try r.get()
            let textIds = jr.stoppedOnStopId ? Array(jr.ids.dropLast()) : jr.ids
            let finish: [String: Any] = jr.stoppedOnStopId ? ["type": "stop", "matched": jr.ids.last!]
                                                           : ["type": "length", "length": jr.ids.count]
            out.append(["text": lm.tokenizer.decode(textIds, skipSpecialTokens: params[i].2), "output_ids": jr.ids,
                        "meta_info": ["id": batched ? "\(requestId)-\(i)" : requestId, "prompt_tokens": jr.promptTokens,
                                      "completion_tokens": jr.ids.count, "cached_tokens": jr.cachedTokens,
                                      "finish_reason": finish, "e2e_latency": secs]])
        }
        return Routes.json(batched ? out as Any : out[0] as Any)
    }
}

// MARK: - chat (SSE)

enum Chat {
    static func handle(_ v: JSONValue, service s: NLAService) async throws -> Response {
        let f = try Fields(v)
        let laneName = s.nla ? "target" : "model"
        let lane = try s.lane(laneName)
        let lm = lane.lm
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
        let options = try Sampling.api(f, service: s, defaultMaxNew: 256)
        let promptIds: [Int]
        do { promptIds = try lm.tokenizer.encodeChat(messages, addGenerationPrompt: true) } catch {
            throw APIError.bad("messages: \(error)")
        }
        guard promptIds.count < lane.capacity else {
            throw APIError.bad("messages: \(promptIds.count) tokens do not fit the context of \(lane.capacity) positions (--context)")
        }
        let stops = s.stopIds(lm)
        let spec = GenJob.Spec(ids: promptIds, options: options, stopIds: stops)
        @Sendable func done(_ r: JobResult) -> [String: Any] {
            let textIds = r.stoppedOnStopId ? Array(r.ids.dropLast()) : r.ids
            let all = promptIds + r.ids
            return ["prompt_ids": promptIds, "ids": r.ids, "text": lm.tokenizer.decode(textIds), "prompt_length": promptIds.count,
                    "conversation_ids": all, "tokens": all.map { lm.tokenizer.decode([$0]) },
                    "finish_reason": r.stoppedOnStopId ? "stop" : "length"]
        }
        if try f.bool("stream") == false {
            let r = try await s.generate(lane: laneName, jobs: [spec])
            return Routes.json(done(try r[0].get()))
        }
        return Routes.sse { send in
            let streamer = StreamerBox()
            let r = try await s.generate(lane: laneName, jobs: [spec], onToken: { _, id in
                let piece = stops.contains(id) ? "" : streamer.push(id, lm.tokenizer)
                send("token", ["id": id, "text": piece])
            })
            send("done", done(try r[0].get()))
        }
    }
}

final class StreamerBox: @unchecked Sendable {
    private var s = TextStreamer()
    private let lock = NSLock()
    func push(_ id: Int, _ t: Tokenizer) -> String { lock.lock(); defer { lock.unlock() }; return s.push(id, tokenizer: t) }
}
