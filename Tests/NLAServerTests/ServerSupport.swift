// Test servers started in-process on 127.0.0.1, port 0, and a small HTTP client over loopback (AsyncHTTPClient).

import AsyncHTTPClient
import Foundation
import NIOCore
import NLARuntime
@testable import NLAServer
import Testing

struct HTTPReply {
    var status: Int
    var body: Data
    var headers: [(String, String)]
    var text: String { String(decoding: body, as: UTF8.self) }
    func json() throws -> Any { try JSONSerialization.jsonObject(with: body, options: [.fragmentsAllowed]) }
    func object() throws -> [String: Any] {
        guard let o = try json() as? [String: Any] else { throw ModelError.input("reply is not a JSON object: \(text.prefix(200))") }
        return o
    }
    /// The message of an error reply.
    func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    var errorMessage: String? { ((try? object())?["error"] as? [String: Any])?["message"] as? String }
}

/// The tests' HTTP client. Not `HTTPClient.shared`: its read timeout (no byte for a while) cut off
/// /generate requests on a 2-core CI box where every other suite runs beside the server tests; here only
/// the per-request deadline applies, with a long read timeout as a backstop.
let testHTTPClient = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup,
                                configuration: HTTPClient.Configuration(timeout: .init(connect: .seconds(30), read: .seconds(1800))))

final class TestServer: @unchecked Sendable {
    let port: Int
    let service: NLAService
    private let task: Task<Void, Error>

    init(port: Int, service: NLAService, task: Task<Void, Error>) { self.port = port; self.service = service; self.task = task }

    static func start(_ options: ServerOptions) async throws -> TestServer {
        var o = options
        o.host = "127.0.0.1"
        o.port = 0
        let service = try NLAService(options: o)
        let (stream, cont) = AsyncStream<Int>.makeStream()
        let task = Task { try await NLAServer.run(service: service, onRunning: { port in cont.yield(port); cont.finish() }) }
        var port = 0
        for await p in stream { port = p }
        guard port > 0 else { throw ModelError.input("test server did not start") }
        return TestServer(port: port, service: service, task: task)
    }

    var base: String { "http://127.0.0.1:\(port)" }

    func request(post: Bool, _ path: String, body: Data? = nil, headers: [(String, String)] = [],
                 timeout: TimeAmount = .seconds(1800)) async throws -> HTTPReply {
        var req = HTTPClientRequest(url: base + path)
        req.method = post ? .POST : .GET
        for (k, v) in headers { req.headers.add(name: k, value: v) }
        if let body {
            req.headers.add(name: "Content-Type", value: "application/json")
            req.body = .bytes(ByteBuffer(bytes: body))
        }
        let r = try await testHTTPClient.execute(req, timeout: timeout)
        let b = try await r.body.collect(upTo: 256 << 20)
        return HTTPReply(status: Int(r.status.code), body: Data(b.readableBytesView), headers: r.headers.map { ($0.name, $0.value) })
    }

    func get(_ path: String, headers: [(String, String)] = []) async throws -> HTTPReply {
        try await request(post: false, path, headers: headers)
    }

    func post(_ path: String, _ body: String, headers: [(String, String)] = [], timeout: TimeAmount = .seconds(1800)) async throws -> HTTPReply {
        try await request(post: true, path, body: Data(body.utf8), headers: headers, timeout: timeout)
    }

    func post(_ path: String, json: Any, headers: [(String, String)] = []) async throws -> HTTPReply {
        try await request(post: true, path, body: try JSONSerialization.data(withJSONObject: json), headers: headers)
    }
}

enum Servers {
    static var targetPath: String { NLACache.testModel }
    static var avPath: String { NLACache.demoPair + "/av" }
    static var arPath: String { NLACache.demoPair + "/ar" }

    static func require() throws {
        for f in [targetPath + "/config.json", avPath + "/nla_meta.yaml", arPath + "/value_head.safetensors"]
        where !FileManager.default.fileExists(atPath: f) {
            Issue.record("model missing (\(f)): run `make test-model demo-models`")
            throw ModelError.input("model missing (\(f)): run `make test-model demo-models`")
        }
    }

    /// Target + demo pair (f32), 4 sequences per forward, prefix cache on.
    static let nla = Task { () throws -> TestServer in
        try require()
        var o = ServerOptions()
        o.target = targetPath; o.av = avPath; o.ar = arPath
        o.maxBatch = 4; o.context = 1024; o.prefixEntries = 8; o.maxQueue = 64; o.maxNewTokensLimit = 2048
        o.timeout = 1800  // the suites run in parallel on 2 cores in CI: generous, the limits server tests the 504
        return try await TestServer.start(o)
    }

    /// Generate-only on the 270M with tight limits: 4 KB bodies, queue of 2, 5 s timeout, an API key.
    static let limits = Task { () throws -> TestServer in
        try require()
        var o = ServerOptions()
        o.model = targetPath
        o.maxBatch = 2; o.context = 512; o.prefixEntries = 0; o.maxQueue = 2; o.maxBodyBytes = 4096; o.timeout = 5
        o.maxNewTokensLimit = 1000
        o.apiKey = "sekret"
        return try await TestServer.start(o)
    }
}

/// `[[f, ...], ...]` with each float in its shortest round-trip form (reads back bit-exact).
func jsonRows(_ flat: [Float], d: Int) -> String {
    var s = "["
    s.reserveCapacity(flat.count * 12)
    for r in 0..<(flat.count / d) {
        if r > 0 { s += "," }
        s += "["
        for j in 0..<d {
            if j > 0 { s += "," }
            s += flat[r * d + j].description
        }
        s += "]"
    }
    return s + "]"
}

/// A few activation vectors of the target at layer K (the demo pair's), positions of one prompt.
enum Vectors {
    static let captured = Result { () throws -> CapturedActivations in
        try Servers.require()
        let t = try LanguageModel(directory: Servers.targetPath)
        let av = try ActivationVerbalizer(path: Servers.avPath)
        return try ActivationCapture.capture(target: t, layer: av.sidecar.extractionLayer!, prompt: "The capital of France is Paris, and the capital of Italy is Rome.",
                                             chat: false, reply: nil, maxReplyTokens: 0)
    }
    static func get(_ i: Int) throws -> [Float] { try captured.get().vectors[i] }
}
