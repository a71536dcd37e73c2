// `nla serve`: Hummingbird 2 server with the page, the JSON API and SGLang's `/generate`.

import Foundation
import Hummingbird
import HTTPTypes
import Logging
import NIOCore
import NLARuntime
import NLAWire

public struct ServerOptions: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    public var apiKey: String?
    /// Generate-only mode: one model.
    public var model: String?
    /// NLA mode: the target and the pair.
    public var target: String?
    public var av: String?
    public var ar: String?
    /// Sequences decoded together per model.
    public var maxBatch = 8
    /// Positions per sequence (prompt + generated), capped by the model's context.
    public var context = 2048
    /// Prefix-cache entries per model (0 = off).
    public var prefixEntries = 8
    /// Waiting jobs (one per sequence, all models) before 429; above --max-positions so one explain-all fits.
    public var maxQueue = 2048
    /// Request body limit (413 above).
    public var maxBodyBytes = 64 << 20
    /// Upper bound of max_new_tokens (400 above).
    public var maxNewTokensLimit = 4096
    /// Positions per explain request (400 above).
    public var maxExplainPositions = 1024
    /// Seconds before a request gives up (504).
    public var timeout: Double = 600
    public var fveBaseline: Double?

    public init() {}

    public static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.")
    }

    /// The one-line refusals (flags that make no sense together, a public bind without a key).
    public func validate() throws {
        if model != nil, target != nil || av != nil || ar != nil {
            throw ModelError.input("serve: give either --model M (generate only) or --target, --av and --ar, not both")
        }
        if model == nil, target == nil || av == nil || ar == nil {
            throw ModelError.input("serve: needs --target, --av and --ar (or --model M to serve /generate only)")
        }
        if !ServerOptions.isLoopback(host), (apiKey ?? "").isEmpty {
            throw ModelError.input("serve: --host \(host) is not a loopback address: pass --api-key K (requests then need 'Authorization: Bearer K')")
        }
        guard (0...65535).contains(port) else { throw ModelError.input("serve: --port \(port) is not in 0…65535") }
        guard maxBatch >= 1 else { throw ModelError.input("serve: --max-batch must be >= 1") }
        guard context >= 2 else { throw ModelError.input("serve: --context must be >= 2") }
        guard prefixEntries >= 0 else { throw ModelError.input("serve: --prefix-cache must be >= 0") }
        guard maxQueue >= 1 else { throw ModelError.input("serve: --max-queue must be >= 1") }
        guard timeout > 0 else { throw ModelError.input("serve: --timeout must be > 0") }
    }
}

/// The loaded models and the engine.
public final class NLAService: @unchecked Sendable {
    public let options: ServerOptions
    public let engine: Engine
    /// Lane names: "model" (generate-only) or "target" and "av".
    let defaultLane: String
    let verbalizer: ActivationVerbalizer?
    let reconstructor: ActivationReconstructor?
    let target: LanguageModel?
    let layer: Int?
    let started = Date()

    public init(options: ServerOptions) throws {
        try options.validate()
        self.options = options
        engine = Engine(maxQueue: options.maxQueue, timeout: options.timeout)
        if let m = options.model {
            let lm = try LanguageModel(directory: m)
            engine.addLane(try Lane(name: "model", lm: lm, maxSequences: options.maxBatch, context: options.context,
                                    prefixEntries: options.prefixEntries, timeout: options.timeout))
            defaultLane = "model"
            verbalizer = nil; reconstructor = nil; target = nil; layer = nil
        } else {
            let v = try ActivationVerbalizer(path: options.av!)
            let r = try ActivationReconstructor(path: options.ar!)
            guard let k = v.sidecar.extractionLayer ?? r.sidecar.extractionLayer else {
                throw ModelError.input("\(v.sidecar.file): no extraction layer (K) in the AV or AR sidecar")
            }
            let t = try LanguageModel(directory: options.target!)
            guard t.config.hiddenSize == v.dModel else {
                throw ModelError.input("serve: target hidden size \(t.config.hiddenSize) differs from the AV's d_model \(v.dModel)")
            }
            engine.addLane(try Lane(name: "target", lm: t, maxSequences: options.maxBatch, context: options.context,
                                    prefixEntries: options.prefixEntries, timeout: options.timeout))
            engine.addLane(try Lane(name: "av", lm: v.model, maxSequences: options.maxBatch,
                                    context: min(options.context, v.promptIds.count + options.maxNewTokensLimit),
                                    prefixEntries: options.prefixEntries, timeout: options.timeout))
            verbalizer = v; reconstructor = r; target = t; layer = k
            defaultLane = "av"
        }
        engine.start()
    }

    deinit { engine.stop() }

    var nla: Bool { verbalizer != nil }

    func lane(_ name: String) throws -> Lane {
        guard let l = engine.lane(name) else { throw APIError(400, "model: no model '\(name)' is loaded (serving: \(nla ? "target, av" : "model"))") }
        return l
    }

    /// Stop ids of a lane's model: generation_config eos ∪ <end_of_turn> (what `nla verbalize` and chat stop on).
    func stopIds(_ lm: LanguageModel) -> Set<Int> {
        var s = Set(lm.generation.eosTokenIds)
        if let eot = lm.tokenizer.tokenToId("<end_of_turn>") { s.insert(eot) }
        return s
    }

    /// Run jobs on a lane and wait for all of them (cancelled with the calling task).
    func generate(lane name: String, jobs: [GenJob.Spec], onToken: (@Sendable (Int, Int) -> Void)? = nil,
                  onDone: (@Sendable (Int, Result<JobResult, Error>) -> Void)? = nil) async throws -> [Result<JobResult, Error>] {
        let collector = Collector(count: jobs.count)
        let deadline = Date().addingTimeInterval(options.timeout)
        let sinks = jobs.indices.map { i in
            JobSink(deadline: deadline, onToken: { id in onToken?(i, id) }, onFinish: { r in
                onDone?(i, r)
                collector.put(i, r)
            })
        }
        let built = jobs.enumerated().map { (i, s) in GenJob(rows: s.rows, ids: s.ids, options: s.options, stopIds: s.stopIds, sink: sinks[i], stopCheck: s.stopCheck) }
        if built.isEmpty { return [] }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<[Result<JobResult, Error>], Error>) in
                collector.setContinuation(c)
                do { try engine.submit(lane: name, built) } catch { collector.fail(error) }
            }
        } onCancel: {
            for s in sinks { s.cancel() }
        }
    }
}

extension GenJob {
    struct Spec: Sendable {
        var rows: [Float] = []
        var ids: [Int]? = nil
        var options: SamplingOptions
        var stopIds: Set<Int>
        var stopCheck: (@Sendable ([Int]) -> Bool)? = nil
    }
}

/// Gathers n results, then resumes one continuation.
final class Collector: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [Result<JobResult, Error>?]
    private var left: Int
    private var cont: CheckedContinuation<[Result<JobResult, Error>], Error>?
    private var failed: Error?

    init(count: Int) { results = Array(repeating: nil, count: count); left = count }

    func setContinuation(_ c: CheckedContinuation<[Result<JobResult, Error>], Error>) {
        lock.lock()
        if let f = failed { lock.unlock(); c.resume(throwing: f); return }
        if left == 0 { let r = results.map { $0! }; lock.unlock(); c.resume(returning: r); return }
        cont = c
        lock.unlock()
    }

    func put(_ i: Int, _ r: Result<JobResult, Error>) {
        lock.lock()
        guard results[i] == nil else { lock.unlock(); return }
        results[i] = r
        left -= 1
        if left == 0, let c = cont {
            cont = nil
            let all = results.map { $0! }
            lock.unlock()
            c.resume(returning: all)
            return
        }
        lock.unlock()
    }

    func fail(_ e: Error) {
        lock.lock()
        if let c = cont { cont = nil; lock.unlock(); c.resume(throwing: e); return }
        failed = e
        lock.unlock()
    }
}

// MARK: - the application

public enum NLAServer {
    /// Build the Hummingbird application for a loaded service. `onRunning` gets the bound port.
    public static func application(service: NLAService, logger: Logger? = nil,
                                   onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        var log = logger ?? Logger(label: "nla.serve")
        if logger == nil { log.logLevel = ProcessInfo.processInfo.environment["NLA_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info }
        let router = Router()
        router.add(middleware: RequestLogMiddleware())
        if let key = service.options.apiKey, !key.isEmpty {
            router.add(middleware: BearerAuthMiddleware(key: key))
        }
        Routes.install(on: router, service: service)
        return Application(router: router,
                           configuration: .init(address: .hostname(service.options.host, port: service.options.port), serverName: "nla-serve"),
                           onServerRunning: { ch in await onRunning(ch.localAddress?.port ?? 0) },
                           logger: log)
    }
}

extension NLAServer {
    /// Serve until SIGINT/SIGTERM (or cancellation).
    public static func run(service: NLAService, onRunning: @escaping @Sendable (Int) async -> Void) async throws {
        try await application(service: service, onRunning: onRunning).runService()
    }
}

/// One structured log line per request (method, path, status, duration, request id) and an X-Request-Id header.
struct RequestLogMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = Date()
        let id = context.id
        do {
            var r = try await next(request, context)
            r.headers[HTTPField.Name("X-Request-Id")!] = id
            context.logger.info("request", metadata: [
                "method": "\(request.method)", "path": "\(request.uri.path)", "status": "\(r.status.code)",
                "ms": "\(Int(Date().timeIntervalSince(start) * 1000))",
            ])
            return r
        } catch {
            let status = (error as? HTTPResponseError)?.status.code ?? 500
            context.logger.info("request", metadata: [
                "method": "\(request.method)", "path": "\(request.uri.path)", "status": "\(status)",
                "ms": "\(Int(Date().timeIntervalSince(start) * 1000))", "error": "\(error)",
            ])
            throw error
        }
    }
}

/// `Authorization: Bearer K` on every request (401 otherwise), except the static page itself.
struct BearerAuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let key: String
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.method == .get, request.uri.path == "/" { return try await next(request, context) }
        let h = request.headers[.authorization] ?? ""
        guard h == "Bearer " + key else {
            var headers = HTTPFields()
            headers[.wwwAuthenticate] = "Bearer"
            headers[.contentType] = "application/json"
            let msg = h.isEmpty ? "missing Authorization: Bearer <key> header" : "invalid API key"
            return Response(status: .unauthorized, headers: headers,
                            body: .init(byteBuffer: ByteBuffer(bytes: (try? NLAJSON.data(["error": ["message": msg, "code": 401]])) ?? Data())))
        }
        return try await next(request, context)
    }
}
