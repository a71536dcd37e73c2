// `nla serve`: the local page, the JSON API and SGLang's /generate (Sources/NLAServer).

import ArgumentParser
import Foundation
import NLARuntime
import NLAServer

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the page, the NLA JSON API and SGLang-compatible /generate over HTTP (loopback by default).")

    @Option(help: "Target model (directory or .gguf); with --av and --ar.") var target: String?
    @Option(help: "Activation verbalizer (directory or .gguf).") var av: String?
    @Option(help: "Activation reconstructor (directory or .gguf).") var ar: String?
    @Option(help: "Serve only /generate and chat for this model (directory or .gguf).") var model: String?
    @Option(help: "Address to bind (loopback by default; any other address needs --api-key).") var host: String = "127.0.0.1"
    @Option(help: "Port (0 = any free port).") var port: Int = 8080
    @Option(name: .customLong("api-key"), help: "Require 'Authorization: Bearer K' on every request.") var apiKey: String?
    @Option(name: .customLong("max-batch"), help: "Sequences decoded together per model.") var maxBatch: Int = 8
    @Option(help: "Positions per sequence (prompt + generated), capped by the model's context.") var context: Int = 2048
    @Option(name: .customLong("prefix-cache"), help: "Prefix-cache entries per model (0 = off).") var prefixCache: Int = 8
    @Option(name: .customLong("max-queue"), help: "Waiting sequences (all requests) before 429.") var maxQueue: Int = 2048
    @Option(name: .customLong("max-body-bytes"), help: "Request body limit (413 above).") var maxBodyBytes: Int = 64 << 20
    @Option(name: .customLong("max-new-tokens-limit"), help: "Largest max_new_tokens a request may ask for (400 above).") var maxNewTokensLimit: Int = 4096
    @Option(name: .customLong("max-positions"), help: "Positions (explain) or vectors (verbalize) per request (400 above).") var maxPositions: Int = 1024
    @Option(help: "Seconds before a request gives up (504).") var timeout: Double = 600
    @Option(name: .customLong("fve-baseline"), help: "Predict-the-mean baseline B for fve_nrm.") var fveBaseline: Double?
    @OptionGroup var threads: ThreadsOption

    func run() throws {
        try runReportingErrors {
            try threads.apply()
            var o = ServerOptions()
            o.target = target; o.av = av; o.ar = ar; o.model = model
            o.host = host; o.port = port; o.apiKey = apiKey
            o.maxBatch = maxBatch; o.context = context; o.prefixEntries = prefixCache; o.maxQueue = maxQueue
            o.maxBodyBytes = maxBodyBytes; o.maxNewTokensLimit = maxNewTokensLimit; o.timeout = timeout; o.fveBaseline = fveBaseline
            o.maxExplainPositions = maxPositions
            try o.validate()
            let service = try NLAService(options: o)
            let host = self.host
            let done = DispatchSemaphore(value: 0)
            let failure = ErrorBox()
            Task {
                do {
                    try await NLAServer.run(service: service, onRunning: { port in
                        let shown = host.contains(":") ? "[\(host)]" : host
                        log("nla: serving on http://\(shown):\(port)/  (page at /, API description at /openapi.yaml)")
                    })
                } catch { failure.error = error }
                done.signal()
            }
            done.wait()
            if let e = failure.error { throw ModelError.input("serve: \(e)") }
        }
    }
}

final class ErrorBox: @unchecked Sendable { var error: Error? }
