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
        let params = body.params.map { (p: SGLangParams) in (p.options, s.stops(p, lm), p.skipSpecialTokens) }
        if body.stream { throw APIError.bad("stream: streaming /generate is not supported (use /api/chat for a stream)") }
        if body.params.contains(where: { !$0.stopStrings.isEmpty }) {
            throw APIError.bad("sampling_params.stop: stop strings are not supported (use stop_token_ids)")
        }
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
