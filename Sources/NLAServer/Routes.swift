// The routes: SGLang's /generate, the JSON API under /api, the page, the OpenAPI document, health.

import Foundation
import Hummingbird
import HTTPTypes
import Logging
import NIOCore
import NLARuntime
import NLAWire

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

    /// SGLang's stream format: `data: {json}` events from `produce`, then `data: [DONE]`; an error becomes a last
    /// `data: {"error": {"message", "code"}}` event before [DONE]. A client that goes away cancels `produce`.
    static func sseData(_ produce: @escaping @Sendable (_ send: @escaping @Sendable (Any) -> Void) async throws -> Void) -> Response {
        eventStream(errorEvent: nil, trailer: "data: [DONE]\n\n") { send in try await produce { send(nil, $0) } }
    }

    /// An SSE response fed by `produce`: `event: name` + `data: {json}` per event; an error becomes a last
    /// `error` event. A client that goes away cancels `produce`.
    static func sse(_ produce: @escaping @Sendable (_ send: @escaping @Sendable (String, Any) -> Void) async throws -> Void) -> Response {
        eventStream(errorEvent: "error", trailer: nil) { send in try await produce { send($0, $1) } }
    }

    /// The text/event-stream response both formats share: each `send(event, object)` is written as it comes
    /// (an `event:` line when named, then `data: {json}`); an error thrown by `produce` is sent as
    /// `{"error": {"message", "code"}}` under `errorEvent`; `trailer` closes the stream. The client going away
    /// cancels `produce`.
    private static func eventStream(errorEvent: String?, trailer: String?,
                                    _ produce: @escaping @Sendable (_ send: @escaping @Sendable (String?, Any) -> Void) async throws -> Void) -> Response {
        let (stream, cont) = AsyncStream<ByteBuffer>.makeStream(bufferingPolicy: .unbounded)
        let send: @Sendable (String?, Any) -> Void = { event, obj in
            var b = ByteBuffer(string: event.map { "event: \($0)\ndata: " } ?? "data: ")
            b.writeBytes((try? NLAJSON.data(obj)) ?? Data("{}".utf8))
            b.writeString("\n\n")
            cont.yield(b)
        }
        let work = Task {
            do { try await produce(send) } catch {
                let (code, msg) = errorStatus(error)
                send(errorEvent, ["error": ["message": msg.replacingOccurrences(of: "\n", with: " "), "code": code]])
            }
            if let trailer { cont.yield(ByteBuffer(string: trailer)) }
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

extension NLAService {
    /// The stop ids of a decoded `sampling_params` on a lane's model: the model's (unless ignore_eos) ∪ stop_token_ids.
    func stops(_ p: SGLangParams, _ lm: LanguageModel) -> Set<Int> {
        var s = p.ignoreEos ? Set<Int>() : stopIds(lm)
        s.formUnion(p.stopTokenIds)
        return s
    }
}

// MARK: - SGLang /generate

enum Generate {
    enum Input { case embeds([Float], rows: Int), ids([Int]) }

    static func handle(_ v: JSONValue, service s: NLAService, requestId: String) async throws -> Response {
        let laneName = try GenerateBody.model(v) ?? s.defaultLane
        let lane = try s.lane(laneName)
        let lm = lane.lm
        let body = try GenerateBody.decode(v, d: lane.d, vocab: lm.config.vocabSize, maxNewTokensLimit: s.options.maxNewTokensLimit)
        let batched = body.batched
        let inputs: [Input] = body.inputs.map {
            switch $0 {
            case .embeds(let rows, let n): return .embeds(rows, rows: n)
            case .ids(let ids): return .ids(ids)
            case .text(let t): return .ids(lm.tokenizer.encode(t, addSpecialTokens: true))
            }
        }
        let params = body.params
        var specs: [GenJob.Spec] = []
        for (i, inp) in inputs.enumerated() {
            let name = batched ? "input \(i)" : "input"
            let t: Int
            let p = params[i]
            var spec = GenJob.Spec(options: p.options, stopIds: s.stops(p, lm))
            if !p.stopStrings.isEmpty {
                let strings = p.stopStrings, skip = p.skipSpecialTokens
                spec.stopCheck = { ids in StopStrings.first(in: lm.tokenizer.decode(ids, skipSpecialTokens: skip), strings) != nil }
            }
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
        if body.stream { return stream(specs, params: params, batched: batched, lane: laneName, lm: lm, service: s, requestId: requestId) }
        let start = Date()
        let results = try await s.generate(lane: laneName, jobs: specs)
        let secs = Date().timeIntervalSince(start)
        var out: [[String: Any]] = []
        for (i, r) in results.enumerated() {
            let jr = try r.get()
            out.append(reply(lm, ids: jr.ids, result: jr, params: params[i], id: batched ? "\(requestId)-\(i)" : requestId,
                             promptTokens: jr.promptTokens, cachedTokens: jr.cachedTokens, seconds: secs))
        }
        return Routes.json(batched ? out as Any : out[0] as Any)
    }

    /// One reply object (SGLang's shape). `result` nil = in progress (a stream event before the last): finish_reason null.
    static func reply(_ lm: LanguageModel, ids: [Int], result: JobResult?, params: SGLangParams, id: String,
                      promptTokens: Int, cachedTokens: Int?, seconds: Double) -> [String: Any] {
        let onStopId = result?.stoppedOnStopId ?? false
        let textIds = onStopId ? Array(ids.dropLast()) : ids
        var text = lm.tokenizer.decode(textIds, skipSpecialTokens: params.skipSpecialTokens)
        var matched: String?
        if !params.stopStrings.isEmpty, let (m, at) = StopStrings.first(in: text, params.stopStrings) {
            // The text is cut before the stop string (SGLang's default trim).
            text = String(text[..<at])
            matched = m
        }
        let finish: Any
        if let m = matched, result != nil {
            finish = ["type": "stop", "matched": m]
        } else if let r = result {
            finish = r.stoppedOnStopId ? ["type": "stop", "matched": ids.last!] as [String: Any] : ["type": "length", "length": ids.count]
        } else {
            finish = NSNull()
        }
        var meta: [String: Any] = ["id": id, "prompt_tokens": promptTokens, "completion_tokens": ids.count,
                                   "finish_reason": finish, "e2e_latency": seconds]
        // Known once the prompt ran; stream events before the last leave it out.
        if let cachedTokens { meta["cached_tokens"] = cachedTokens }
        return ["text": text, "output_ids": ids, "meta_info": meta]
    }

    /// `"stream": true`: server-sent events as SGLang sends them, `data: {reply so far}` per new token (cumulative
    /// text and output_ids, finish_reason null until the last token, whose event carries it), then `data: [DONE]`.
    /// A batch streams every input's events interleaved, each with its `index`. An error ends the stream with
    /// `data: {"error": {"message", "code"}}` before [DONE]. A client that goes away cancels the jobs.
    static func stream(_ specs: [GenJob.Spec], params: [SGLangParams], batched: Bool, lane: String, lm: LanguageModel,
                       service s: NLAService, requestId: String) -> Response {
        Routes.sseData { send in
            let start = Date()
            let state = StreamState(count: specs.count)
            let prompts = specs.map { $0.ids?.count ?? $0.rows.count / lm.config.hiddenSize }
            @Sendable func event(_ i: Int, ids: [Int], result: JobResult?, prompt: Int, cached: Int?) -> [String: Any] {
                var o = reply(lm, ids: ids, result: result, params: params[i], id: batched ? "\(requestId)-\(i)" : requestId,
                              promptTokens: prompt, cachedTokens: cached, seconds: Date().timeIntervalSince(start))
                if batched { o["index"] = i }
                return o
            }
            // Each token's event is sent when the next token (or the finish) of the same input arrives, so the
            // last token's event carries the finish reason and every event is one new token.
            let results = try await s.generate(lane: lane, jobs: specs, onToken: { i, id in
                if let prev = state.push(i, id) { send(event(i, ids: prev, result: nil, prompt: prompts[i], cached: nil)) }
            }, onDone: { i, r in
                if case .success(let jr) = r { send(event(i, ids: jr.ids, result: jr, prompt: jr.promptTokens, cached: jr.cachedTokens)) }
            })
            for r in results { _ = try r.get() }
        }
    }
}

/// Per input of a stream: the ids so far; `push` returns the ids of the event to send now (all but the new token).
final class StreamState: @unchecked Sendable {
    private let lock = NSLock()
    private var ids: [[Int]]
    init(count: Int) { ids = Array(repeating: [], count: count) }
    func push(_ i: Int, _ id: Int) -> [Int]? {
        lock.lock(); defer { lock.unlock() }
        let prev = ids[i]
        ids[i].append(id)
        return prev.isEmpty ? nil : prev
    }
}

/// Stop strings: the earliest occurrence of any of them in a text.
enum StopStrings {
    static func first(in text: String, _ strings: [String]) -> (String, String.Index)? {
        var best: (String, String.Index)?
        for s in strings {
            if let r = text.range(of: s), best == nil || r.lowerBound < best!.1 { best = (s, r.lowerBound) }
        }
        return best
    }
}

// MARK: - chat (SSE)

enum Chat {
    static func handle(_ v: JSONValue, service s: NLAService) async throws -> Response {
        let laneName = s.nla ? "target" : "model"
        let lane = try s.lane(laneName)
        let lm = lane.lm
        let body = try ChatBody.decode(v, maxNewTokensLimit: s.options.maxNewTokensLimit)
        let messages = body.messages, options = body.options
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
        if !body.stream {
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
