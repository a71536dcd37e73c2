// `--backend local|sglang --url URL [--api-key K] [--timeout S]` of `nla explain` and `nla verbalize`: where the AV runs.
// sglang: the AV's input embeddings go to URL/generate (an SGLang server or another `nla serve`); capture and the
// AR stay local (Sources/NLAServer/SGLangBackend.swift).

import ArgumentParser
import Foundation
import NLARuntime
import NLAServer

struct BackendOptions: ParsableArguments {
    @Option(help: "Where the AV runs: local (this process) or sglang (POST URL/generate: an SGLang server or `nla serve`; capture and AR stay local).")
    var backend: String = "local"
    @Option(help: "Base URL of the sglang backend, e.g. http://127.0.0.1:8080 (requests go to URL/generate).") var url: String?
    @Option(name: .customLong("api-key"), help: "Bearer token for the sglang backend (Authorization: Bearer K).") var apiKey: String?
    @Option(help: "sglang backend: seconds allowed per request.") var timeout: Double = 600

    /// The remote AV, or nil for the local one; one-line errors for options that do not go together.
    func make() throws -> SGLangBackend? {
        switch backend {
        case "local":
            if url != nil || apiKey != nil { throw ModelError.input("--url and --api-key need --backend sglang") }
            return nil
        case "sglang":
            guard let url else { throw ModelError.input("--backend sglang needs --url URL (the server's base URL)") }
            return try SGLangBackend(url: url, apiKey: apiKey, timeout: timeout)
        default:
            throw ModelError.input("--backend '\(backend)': expected local or sglang")
        }
    }

    /// The stderr line naming where the AV runs.
    static func describe(_ b: SGLangBackend, perRequest: Int, automatic: Bool) -> String {
        "nla: AV on \(b.endpoint), \(perRequest) vector\(perRequest == 1 ? "" : "s") per request\(automatic ? " (automatic; --batch N to choose)" : "")"
    }
}
