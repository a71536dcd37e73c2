// The JSON API over real HTTP: every endpoint against the library (the CLI's code paths), and every error
// status: 400, 401, 404, 413, 429, 504, and cancellation when the client goes away.

import Foundation
import NLARuntime
@testable import NLAServer
import Testing

/// Server-sent events of a reply body: (event, data object).
func events(_ text: String) throws -> [(String, Any)] {
    try text.components(separatedBy: "\n\n").compactMap { chunk -> (String, Any)? in
        var ev = "message", data = ""
        for line in chunk.split(separator: "\n") {
            if line.hasPrefix("event: ") { ev = String(line.dropFirst(7)) }
            if line.hasPrefix("data: ") { data += line.dropFirst(6) }
        }
        guard !data.isEmpty else { return nil }
        return (ev, try JSONSerialization.jsonObject(with: Data(data.utf8)))
    }
}

@Suite(.serialized) struct APITests {
    @Test func healthModelsOpenAPIAndPage() async throws {
        let s = try await Servers.nla.value
        let h = try await s.get("/health")
        #expect(h.status == 200)
        #expect(try h.object()["status"] as? String == "ok")
        #expect(h.header("X-Request-Id") != nil)
        let m = try await s.get("/api/models").object()
        #expect(m["mode"] as? String == "nla")
        #expect((m["models"] as? [[String: Any]])?.map { $0["name"] as? String } == ["target", "av", "ar"])
        #expect(m["layer"] as? Int == (try Reference.av.get().sidecar.extractionLayer))
        let y = try await s.get("/openapi.yaml")
        #expect(y.status == 200 && y.text.hasPrefix("openapi: 3.0.3"))
        let j = try await s.get("/openapi.json").object()
        let paths = try #require(j["paths"] as? [String: Any])
        for p in ["/generate", "/api/chat", "/api/explain", "/api/verbalize", "/api/reconstruct", "/api/score", "/api/models", "/health"] {
            #expect(paths[p] != nil, "openapi.json lacks \(p)")
        }
        let page = try await s.get("/")
        #expect(page.status == 200)
        #expect(page.text.contains(#"id="tokens""#) && page.text.contains("/api/chat"))
        #expect(!page.text.contains("http://") && !page.text.contains("https://"), "the page must not load anything from elsewhere")
    }

    @Test func chatStreamsTheGreedyReply() async throws {
        let s = try await Servers.nla.value
        let t = try Reference.target.get()
        let q = "What is the capital of France?"
        let ids = try t.promptIds(q, chat: true)
        var stops = Set(t.generation.eosTokenIds)
        if let eot = t.tokenizer.tokenToId("<end_of_turn>") { stops.insert(eot) }
        let ref = try t.session(for: ids, extra: 16).generate(promptIds: ids, options: SamplingOptions(maxNewTokens: 16), stopIds: stops)
        let r = try await s.post("/api/chat", json: ["messages": [["role": "user", "content": q]], "max_new_tokens": 16])
        #expect(r.status == 200)
        #expect(r.header("Content-Type")?.hasPrefix("text/event-stream") == true)
        let evs = try events(r.text)
        let tokens = evs.filter { $0.0 == "token" }.compactMap { ($0.1 as? [String: Any])?["id"] as? Int }
        #expect(tokens == ref.ids)
        let done = try #require(evs.last { $0.0 == "done" }?.1 as? [String: Any])
        #expect(done["conversation_ids"] as? [Int] == ids + ref.ids)
        #expect(done["prompt_length"] as? Int == ids.count)
        #expect((done["tokens"] as? [String])?.count == ids.count + ref.ids.count)
        let streamed = evs.filter { $0.0 == "token" }.compactMap { ($0.1 as? [String: Any])?["text"] as? String }.joined()
        #expect(streamed == done["text"] as? String)
        // stream false: the done object as JSON.
        let plain = try await s.post("/api/chat", json: ["messages": [["role": "user", "content": q]], "max_new_tokens": 16, "stream": false]).object()
        #expect(plain["ids"] as? [Int] == ref.ids)
    }

    @Test func explainMatchesThePipeline() async throws {
        let s = try await Servers.nla.value
        let req = ExplainRequest(target: Servers.targetPath, av: Servers.avPath, ar: Servers.arPath, prompt: "What is the capital of France?",
                                 chat: true, reply: "Paris.", positions: try NLAPositionSpec.parse("10-13"),
                                 sampling: SamplingOptions(maxNewTokens: 24))
        let ref = try NLAPipeline.explain(req)
        let r = try await s.post("/api/explain", json: ["prompt": req.prompt, "chat": true, "reply": "Paris.", "positions": "10-13", "max_new_tokens": 24])
        #expect(r.status == 200, "\(r.text.prefix(300))")
        let o = try r.object()
        #expect(o["ids"] as? [Int] == ref.ids)
        #expect(o["prompt_length"] as? Int == ref.promptLength)
        #expect(o["layer"] as? Int == ref.layer)
        let rows = try #require(o["positions"] as? [[String: Any]])
        #expect(rows.count == ref.positions.count)
        for (row, want) in zip(rows, ref.positions) {
            #expect(row["position"] as? Int == want.position)
            #expect(row["token"] as? String == want.token)
            #expect(row["explanation"] as? String == want.explanation)
            let mse = try #require(row["mse_nrm"] as? Double), cos = try #require(row["cos"] as? Double)
            #expect(abs(mse - want.mseNrm!) < 1e-4 && abs(cos - want.cos!) < 1e-5, "position \(want.position): \(mse), \(cos) vs \(want.mseNrm!), \(want.cos!)")
            #expect(row.keys.contains("fve_nrm"))
        }
        // The same conversation by ids, streamed: progress events, one position event per row, then the report.
        let st = try await s.post("/api/explain", json: ["ids": ref.ids, "prompt_length": ref.promptLength, "positions": [11, 12],
                                                         "max_new_tokens": 24, "stream": true])
        let evs = try events(st.text)
        #expect(evs.contains { $0.0 == "progress" && (($0.1 as? [String: Any])?["phase"] as? String) == "verbalize" })
        #expect(evs.filter { $0.0 == "position" }.count == 2)
        let rep = try #require(evs.last { $0.0 == "report" }?.1 as? [String: Any])
        let prow = try #require((rep["positions"] as? [[String: Any]])?.first)
        #expect(prow["explanation"] as? String == ref.positions[1].explanation)
        // A failure after the stream has started (a position past the conversation) ends it with one `error`
        // event carrying the status and message, and no report.
        let bad = try await s.post("/api/explain", json: ["ids": ref.ids, "prompt_length": ref.promptLength,
                                                          "positions": [ref.ids.count + 3], "max_new_tokens": 4, "stream": true])
        #expect(bad.status == 200)
        let bevs = try events(bad.text)
        #expect(!bevs.contains { $0.0 == "report" })
        #expect(bevs.last?.0 == "error")
        let err = try #require((bevs.last?.1 as? [String: Any])?["error"] as? [String: Any])
        #expect(err["code"] as? Int == 400)
        #expect((err["message"] as? String)?.contains("position") == true, "\(err)")
    }

    @Test func verbalizeReconstructScore() async throws {
        let s = try await Servers.nla.value
        let v = try Vectors.get(4)
        let ref = try Reference.verbalize(v, maxNew: 20)
        let vr = try await s.post("/api/verbalize", json: ["vectors": [v.map(Double.init)], "max_new_tokens": 20])
        #expect(vr.status == 200, "\(vr.text.prefix(300))")
        let item = try #require((try vr.json() as? [[String: Any]])?.first)
        #expect(item["ids"] as? [Int] == ref.ids)
        #expect(item["text"] as? String == ref.text)
        #expect(Set(item.keys) == ["ids", "text", "explanation"])
        let ar = try ActivationReconstructor(path: Servers.arPath)
        let text = "The capital city of France."
        let want = try ar.reconstruct(text)
        let rr = try await s.post("/api/reconstruct", json: ["explanation": text]).object()
        let got = try #require(rr["vector"] as? [Double])
        #expect(got.count == want.count)
        #expect(zip(got, want).allSatisfy { abs($0 - Double($1)) <= 1e-5 * max(1, abs(Double($1))) })
        #expect(abs((rr["norm"] as? Double ?? 0) - NLAVectorMath.norm(want)) < 1e-3)
        let sc = try await s.post("/api/score", json: ["explanation": text, "gold": v.map(Double.init)]).object()
        let wantScore = try ar.score(prediction: want, gold: v, fveBaseline: nil)
        #expect(abs((sc["mse_nrm"] as? Double ?? -1) - wantScore.mseNrm) < 1e-5)
        #expect(abs((sc["cos"] as? Double ?? -1) - wantScore.cos) < 1e-6)
        #expect(sc.keys.contains("fve_nrm"))
    }

    @Test func badRequestsAre400WithAMessage() async throws {
        let s = try await Servers.nla.value
        let d = try Reference.av.get().dModel
        let cases: [(String, String, String)] = [
            ("/generate", "{not json", "not valid JSON"),
            ("/generate", "[1,2]", "expected an object"),
            ("/generate", #"{"sampling_params":{}}"#, "give one of input_embeds"),
            ("/generate", #"{"text":"a","input_ids":[2]}"#, "give only one"),
            ("/generate", #"{"input_embeds":[[1,2,3]]}"#, "input_embeds[0]: 3 values, expected \(d)"),
            ("/generate", #"{"input_ids":[2, 99999999]}"#, "input_ids[1]"),
            ("/generate", #"{"text":"hi","sampling_params":{"temperature":-1}}"#, "sampling_params.temperature"),
            ("/generate", #"{"text":"hi","sampling_params":{"max_new_tokens":100000}}"#, "sampling_params.max_new_tokens"),
            ("/generate", #"{"text":"hi","sampling_params":{"stop":[5]}}"#, "sampling_params.stop[0]: expected a string"),
            ("/generate", #"{"text":"hi","stream":"yes"}"#, "stream: expected true or false"),
            ("/generate", #"{"text":"hi","model":"nope"}"#, "no model 'nope'"),
            ("/generate", #"{"input_ids":[\#(Array(repeating: "2", count: 1100).joined(separator: ","))]}"#, "do not fit the context"),
            ("/api/chat", #"{"messages":[]}"#, "messages"),
            ("/api/chat", #"{"messages":[{"role":"robot","content":"x"}]}"#, "messages[0].role"),
            ("/api/explain", #"{"ids":[2,3],"positions":"9"}"#, "positions"),
            ("/api/explain", #"{"positions":"all"}"#, "give ids"),
            ("/api/verbalize", #"{"vectors":[[1,2]]}"#, "vectors[0]"),
            ("/api/verbalize", #"{"vector":[\#(Array(repeating: "0", count: d).joined(separator: ","))]}"#, "vector"),
            ("/api/score", #"{"explanation":"x","gold":[1,2]}"#, "gold"),
            ("/api/reconstruct", #"{"explanation":5}"#, "explanation: expected a string"),
            ("/api/reconstruct", "", "empty"),
        ]
        for (path, body, needle) in cases {
            let r = try await s.post(path, body)
            #expect(r.status == 400, "\(path) \(body.prefix(60)): status \(r.status) \(r.text.prefix(200))")
            let msg = r.errorMessage ?? ""
            #expect(msg.contains(needle) && !msg.contains("\n"), "\(path) \(body.prefix(60)): message '\(msg)' should mention '\(needle)'")
        }
        let nf = try await s.get("/nope")
        #expect(nf.status == 404)
    }

    @Test func limitsAuthQueueTimeout() async throws {
        let s = try await Servers.limits.value
        let key = [("Authorization", "Bearer sekret")]
        // 401 without or with a wrong key; the page itself is served.
        #expect(try await s.get("/health").status == 401)
        #expect(try await s.get("/health", headers: [("Authorization", "Bearer nope")]).status == 401)
        #expect(try await s.post("/generate", #"{"text":"hi"}"#).status == 401)
        #expect(try await s.get("/").status == 200)
        #expect(try await s.get("/health", headers: key).status == 200)
        // 404: the NLA endpoints on a generate-only server.
        let e = try await s.post("/api/explain", #"{"ids":[2]}"#, headers: key)
        #expect(e.status == 404 && (e.errorMessage ?? "").contains("generate-only"))
        // 413: a body over --max-body-bytes.
        let big = #"{"text":""# + String(repeating: "a", count: 5000) + #""}"#
        let tl = try await s.post("/generate", big, headers: key)
        #expect(tl.status == 413, "\(tl.status) \(tl.text.prefix(200))")
        #expect((tl.errorMessage ?? "").contains("4096"))
        // 429: more jobs than the queue holds (a batch of 3 with --max-queue 2 is refused whole).
        let q = try await s.post("/generate", #"{"text":["a","b","c"],"sampling_params":{"max_new_tokens":2}}"#, headers: key)
        #expect(q.status == 429, "\(q.status) \(q.text.prefix(200))")
        // A short request first (it also builds the lazily widened output projection, so later timings are steady).
        let warm = try await s.post("/generate", #"{"text":"Hello","sampling_params":{"max_new_tokens":3,"temperature":0}}"#, headers: key)
        #expect(warm.status == 200, "\(warm.status) \(warm.text.prefix(200))")
        // 504: a request that runs past --timeout (5 s).
        // (The 504 itself shows the deadline cut the 1000-token generation short: finishing would give 200.
        // No wall-clock bound: under a parallel test run the client can wait minutes for a thread.)
        let to = try await s.post("/generate", #"{"text":"Tell me a long story.","sampling_params":{"max_new_tokens":1000,"ignore_eos":true,"temperature":0}}"#, headers: key)
        #expect(to.status == 504, "\(to.status) \(to.text.prefix(200))")
        // The server still answers.
        let ok = try await s.post("/generate", #"{"text":"Hello","sampling_params":{"max_new_tokens":3,"temperature":0}}"#, headers: key)
        #expect(ok.status == 200)
        #expect(try ok.object()["output_ids"] as? [Int] != nil)
    }

    @Test func clientDisconnectCancelsTheRequest() async throws {
        let s = try await Servers.nla.value
        let body = #"{"model":"target","text":"Count from one to a thousand:","sampling_params":{"max_new_tokens":900,"ignore_eos":true,"temperature":0}}"#
        do {
            _ = try await s.post("/generate", body, timeout: .seconds(2))
            Issue.record("a 900-token request finished within 2 s: cannot test cancellation")
        } catch {}
        // The job must leave the engine soon after the client went away (it would run for minutes otherwise).
        var active = -1
        for _ in 0..<100 {
            try await Task.sleep(for: .milliseconds(100))
            active = s.service.engine.stats.active
            if active == 0 { break }
        }
        #expect(active == 0, "the disconnected request is still decoding")
    }

    @Test func nonLoopbackWithoutKeyIsRefused() throws {
        var o = ServerOptions()
        o.model = "/nonexistent"; o.host = "0.0.0.0"
        #expect(throws: ModelError.self) { try o.validate() }
        do { try o.validate() } catch { #expect("\(error)".contains("--api-key") && !"\(error)".contains("\n")) }
        o.apiKey = "k"
        #expect(throws: Never.self) { try o.validate() }
        o.host = "127.0.0.1"; o.apiKey = nil
        #expect(throws: Never.self) { try o.validate() }
    }
}
