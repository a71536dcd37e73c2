// `nla explain|verbalize --backend sglang --url URL`: the CLI (a separate process) sends the AV's input
// embeddings to an `nla serve` started in this process on loopback and must print exactly what the local
// backend prints (greedy; f32 and q8_0); every transport or server error is one stderr line naming the URL and
// the problem, exit 1 (connection refused, timeout, HTTP 400 with the server's message, 401, malformed reply,
// a reply with the wrong number of results).

import Foundation
import NLARuntime
import NLATestSupport
@testable import NLAServer
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Run the nla binary on a plain thread (the CLI runner blocks; the in-process server needs the cooperative pool).
func runCLI(_ args: [String]) async throws -> CLIResult {
    try await withCheckedThrowingContinuation { (c: CheckedContinuation<CLIResult, Error>) in
        let t = Thread { c.resume(with: Result { try CLI.run(args) }) }
        t.start()
    }
}

/// A failed backend run: exit 1, and apart from the informational "nla: AV on …" line exactly one stderr line, the
/// error, naming each of `mentions`.
func expectBackendFailure(_ r: CLIResult, mentions: [String], sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(r.status == 1, "exit status \(r.status), stderr: \(r.stderr)", sourceLocation: sourceLocation)
    let lines = r.stderr.split(separator: "\n").filter { !$0.hasPrefix("nla: AV on ") }
    #expect(lines.count == 1, "the error should be one line: \(r.stderr)", sourceLocation: sourceLocation)
    for m in mentions {
        #expect(r.stderr.contains(m), "stderr should mention '\(m)': \(r.stderr)", sourceLocation: sourceLocation)
    }
    #expect(r.stdout.isEmpty, "no output on failure: \(r.stdout.prefix(200))", sourceLocation: sourceLocation)
}

/// Activation vectors of the test prompt as a .jsonl vector file (floats in shortest round-trip form).
func vectorFile(_ positions: [Int]) throws -> String {
    let path = CLI.tempDir() + "/vectors.jsonl"
    let lines = try positions.map { p in
        #"{"activation_vector":["# + (try Vectors.get(p)).map(\.description).joined(separator: ",") + "]}"
    }
    try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

/// A loopback TCP server for the error cases: it answers every request with `reply` (raw HTTP), or with nothing
/// (`reply == nil`: accepts, reads, never answers).
final class CannedServer: @unchecked Sendable {
    let fd: Int32
    let port: Int

    init(reply: String?) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        port = try CannedServer.bindLoopback(fd)
        guard listen(fd, 16) == 0 else { throw ModelError.input("listen failed: errno \(errno)") }
        let fd = self.fd
        let t = Thread {
            while true {
                let c = accept(fd, nil, nil)
                if c < 0 { return }
                var got: [UInt8] = []
                var buf = [UInt8](repeating: 0, count: 65536)
                // Read the head, then Content-Length bytes of body.
                var need = -1
                while need < 0 || got.count < need {
                    let n = read(c, &buf, buf.count)
                    if n <= 0 { break }
                    got += buf[0..<n]
                    if need < 0, let r = got.firstRange(of: Array("\r\n\r\n".utf8)) {
                        let head = String(decoding: got[..<r.lowerBound], as: UTF8.self).lowercased()
                        let len = head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                            .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
                        need = r.upperBound + len
                    }
                }
                if let reply {
                    let bytes = Array(reply.utf8)
                    _ = bytes.withUnsafeBytes { write(c, $0.baseAddress, $0.count) }
                    close(c)
                }  // else: keep the connection open, never answer
            }
        }
        t.start()
    }

    static func bindLoopback(_ fd: Int32) throws -> Int {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = 0
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        let ok = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard ok == 0 else { throw ModelError.input("bind failed: errno \(errno)") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: a.sin_port))
    }

    /// A loopback port nothing listens on (bound, then closed).
    static func closedPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        return try bindLoopback(fd)
    }

    var base: String { "http://127.0.0.1:\(port)" }

    func stop() { shutdown(fd, Int32(SHUT_RDWR)); close(fd) }

    static func http(_ status: String, _ body: String) -> String {
        "HTTP/1.1 \(status)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
    }
}

@Suite(.serialized) struct BackendTests {
    static let positions = [3, 8, 12]

    @Test func verbalizeMatchesTheLocalAV() async throws {
        guard CLI.require() else { return }
        let s = try await Servers.nla.value
        let file = try vectorFile(BackendTests.positions)
        let args = ["verbalize", "--av", Servers.avPath, "--vectors", file, "--max-new-tokens", "20", "--batch", "2", "--json"]
        let local = try await runCLI(args)
        let remote = try await runCLI(args + ["--backend", "sglang", "--url", s.base + "/"])
        #expect(local.status == 0, "\(local.stderr)")
        #expect(remote.status == 0, "\(remote.stderr)")
        #expect(remote.stderr.contains("nla: AV on \(s.base)/generate, 2 vectors per request"), "\(remote.stderr)")
        let list = try #require(try JSONSerialization.jsonObject(with: Data(local.stdout.utf8)) as? [[String: Any]])
        #expect(list.count == BackendTests.positions.count)
        #expect(list.allSatisfy { (($0["ids"] as? [Int]) ?? []).count > 0 })
        #expect(remote.stdout == local.stdout, "remote:\n\(remote.stdout)\nlocal:\n\(local.stdout)")
    }

    @Test func explainMatchesTheLocalAV() async throws {
        guard CLI.require() else { return }
        let s = try await Servers.nla.value
        let args = ["explain", "--target", Servers.targetPath, "--av", Servers.avPath, "--ar", Servers.arPath,
                    "--max-reply-tokens", "3", "--positions", "2,5,8", "--max-new-tokens", "16", "--batch", "2",
                    "--fve-baseline", "0.05", "--json", "The capital of France is"]
        let local = try await runCLI(args)
        let remote = try await runCLI(args + ["--backend", "sglang", "--url", s.base])
        #expect(local.status == 0, "\(local.stderr)")
        #expect(remote.status == 0, "\(remote.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(local.stdout.utf8)) as? [String: Any])
        let rows = try #require(report["positions"] as? [[String: Any]])
        #expect(rows.map { $0["position"] as? Int } == [2, 5, 8])
        #expect(rows.allSatisfy { $0["explanation"] is String && $0["mse_nrm"] is Double && $0["cos"] is Double && $0["fve_nrm"] is Double })
        // Same explanations, same AR scores (the AR runs locally on the same text), same report.
        #expect(remote.stdout == local.stdout, "remote:\n\(remote.stdout)\nlocal:\n\(local.stdout)")
    }

    @Test func q8_0VerbalizeMatchesTheLocalAV() async throws {
        guard CLI.require() else { return }
        // `make demo` / `make test-ui` leave the q8_0 AV beside the demo pair; on a fresh machine `make test` runs
        // before them, so the test quantizes its own copy (what `quantize --type q8_0` does).
        var q8 = NLACache.demoPair + "/av-q8_0.gguf"
        if !FileManager.default.fileExists(atPath: q8) {
            let dir = TestPaths.tempDirectory("backend-q8")
            q8 = dir + "/av-q8_0.gguf"
            _ = try Converter.convert(input: NLACache.demoPair + "/av", output: q8, policy: QuantizePolicy(target: .q8_0))
        }
        var o = ServerOptions()
        o.model = q8
        o.maxBatch = 2; o.context = 256; o.prefixEntries = 2; o.maxQueue = 16; o.timeout = 1800
        let s = try await TestServer.start(o)
        let file = try vectorFile(BackendTests.positions)
        let args = ["verbalize", "--av", q8, "--vectors", file, "--max-new-tokens", "16", "--batch", "3", "--json"]
        let local = try await runCLI(args)
        let remote = try await runCLI(args + ["--backend", "sglang", "--url", s.base])
        #expect(local.status == 0, "\(local.stderr)")
        #expect(remote.status == 0, "\(remote.stderr)")
        #expect(!local.stdout.isEmpty)
        #expect(remote.stdout == local.stdout, "remote:\n\(remote.stdout)\nlocal:\n\(local.stdout)")
    }

    @Test func errorsAreOneLineNamingTheURL() async throws {
        guard CLI.require() else { return }
        let s = try await Servers.nla.value
        let file = try vectorFile([3])
        func verbalize(_ url: String, _ extra: [String] = []) async throws -> CLIResult {
            try await runCLI(["verbalize", "--av", Servers.avPath, "--vectors", file, "--max-new-tokens", "4", "--json",
                              "--backend", "sglang", "--url", url] + extra)
        }
        // Nothing listens.
        let closed = "http://127.0.0.1:\(try CannedServer.closedPort())"
        expectBackendFailure(try await verbalize(closed), mentions: ["sglang backend \(closed)/generate", "connection refused"])
        // The server refuses the request (400 with its message): max_new_tokens above the server's limit (2048).
        expectBackendFailure(try await verbalize(s.base, ["--max-new-tokens", "5000"]),
                             mentions: ["sglang backend \(s.base)/generate", "HTTP 400", "max_new_tokens", "2048"])
        // A server with an API key: wrong key, no key → 401 reported.
        let keyed = try await Servers.limits.value
        expectBackendFailure(try await verbalize(keyed.base, ["--api-key", "wrong"]), mentions: ["\(keyed.base)/generate", "HTTP 401", "invalid API key"])
        expectBackendFailure(try await verbalize(keyed.base), mentions: ["\(keyed.base)/generate", "HTTP 401", "missing Authorization"])
        // A server that never answers.
        let silent = try CannedServer(reply: nil)
        defer { silent.stop() }
        expectBackendFailure(try await verbalize(silent.base, ["--timeout", "1"]), mentions: ["\(silent.base)/generate", "no reply within 1 s"])
        // Replies that are not what /generate answers.
        let cases: [(String, [String])] = [
            (CannedServer.http("200 OK", "not json"), ["malformed reply: not JSON"]),
            (CannedServer.http("200 OK", #"{"text":"x"}"#), ["malformed reply: expected a list of 1 results"]),
            (CannedServer.http("200 OK", #"[{"text":"a"},{"text":"b"}]"#), ["the reply has 2 results for 1 inputs"]),
            (CannedServer.http("200 OK", #"[{"output_ids":[1]}]"#), ["malformed reply: result 0 has no \"text\" string"]),
            (CannedServer.http("200 OK", #"[{"text":"a","output_ids":[-4]}]"#), ["output_ids[0]", "not a token id"]),
            (CannedServer.http("503 Service Unavailable", #"{"detail":"overloaded\nretry"}"#), ["HTTP 503: overloaded retry"]),
        ]
        for (reply, mentions) in cases {
            let canned = try CannedServer(reply: reply)
            defer { canned.stop() }
            expectBackendFailure(try await verbalize(canned.base), mentions: ["sglang backend \(canned.base)/generate"] + mentions)
        }
    }

    @Test func badBackendOptionsAreRefused() async throws {
        guard CLI.require() else { return }
        let file = try vectorFile([3])
        let base = ["verbalize", "--av", Servers.avPath, "--vectors", file]
        for (extra, mention) in [(["--backend", "gpu"], "--backend 'gpu': expected local or sglang"),
                                 (["--backend", "sglang"], "--backend sglang needs --url"),
                                 (["--url", "http://127.0.0.1:1"], "--url and --api-key need --backend sglang"),
                                 (["--backend", "sglang", "--url", "ftp://example.org"], "expected http://HOST[:PORT]"),
                                 (["--backend", "sglang", "--url", "http://127.0.0.1:1", "--timeout", "0"], "--timeout must be a positive")] {
            let r = try await runCLI(base + extra)
            expectCleanFailure(r, mentions: [mention])
        }
    }
}
