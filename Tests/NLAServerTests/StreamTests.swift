// Streaming `/generate` (SGLang's server-sent events: `data: {reply so far}` per new token, then `data: [DONE]`)
// and stop strings (`sampling_params.stop`), over real HTTP on loopback.

import AsyncHTTPClient
import Foundation
import NIOCore
import NLARuntime
@testable import NLAServer
import Testing

extension Servers {
    /// Generate-only on the 270M (f32), one sequence at a time: nothing else runs on it, so the disconnect test can
    /// watch its engine.
    static let stream = Task { () throws -> TestServer in
        try require()
        var o = ServerOptions()
        o.model = targetPath
        o.maxBatch = 2; o.context = 1024; o.prefixEntries = 2; o.maxQueue = 16; o.timeout = 1800
        return try await TestServer.start(o)
    }
}

/// The `data:` events of an SGLang stream: JSON objects, and whether it ended with [DONE].
func dataEvents(_ text: String) throws -> (events: [[String: Any]], done: Bool) {
    var out: [[String: Any]] = []
    var done = false
    for chunk in text.components(separatedBy: "\n\n") where !chunk.isEmpty {
        #expect(chunk.hasPrefix("data: "), "not an SSE data event: \(chunk.prefix(80))")
        let payload = String(chunk.dropFirst(6))
        if payload == "[DONE]" { done = true; continue }
        #expect(!done, "an event after [DONE]")
        out.append(try #require(try JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any]))
    }
    return (out, done)
}

func finish(_ o: [String: Any]) -> [String: Any]? { (o["meta_info"] as? [String: Any])?["finish_reason"] as? [String: Any] }

@Suite(.serialized) struct StreamTests {
    /// Checks a stream of one input against the non-streamed reply: one event per token, cumulative ids and text,
    /// finish_reason only on the last, which equals the reply.
    func expectStreamMatches(_ events: [[String: Any]], _ ref: [String: Any], _ label: String) {
        let refIds = ref["output_ids"] as? [Int] ?? []
        #expect(events.count == max(refIds.count, 1), "\(label): \(events.count) events for \(refIds.count) tokens")
        for (k, e) in events.enumerated() {
            let ids = e["output_ids"] as? [Int] ?? []
            let last = k == events.count - 1
            #expect(ids == Array(refIds.prefix(k + 1)), "\(label): event \(k) ids \(ids)")
            #expect(last == (finish(e) != nil), "\(label): finish_reason on event \(k) of \(events.count)")
        }
        if let final = events.last {
            #expect(final["text"] as? String == ref["text"] as? String, "\(label): streamed text \(final["text"] ?? "nil") vs \(ref["text"] ?? "nil")")
            #expect(final["output_ids"] as? [Int] == refIds)
            #expect(finish(final).map { NSDictionary(dictionary: $0) } == finish(ref).map { NSDictionary(dictionary: $0) }, "\(label): finish_reason")
            let fm = final["meta_info"] as? [String: Any], rm = ref["meta_info"] as? [String: Any]
            #expect(fm?["prompt_tokens"] as? Int == rm?["prompt_tokens"] as? Int)
            #expect(fm?["completion_tokens"] as? Int == rm?["completion_tokens"] as? Int)
        }
    }

    @Test func streamEqualsTheNonStreamedReply() async throws {
        let s = try await Servers.nla.value
        let av = try Reference.av.get()
        let maxNew = 12
        let rows = try av.inputEmbeddings(for: try Vectors.get(4))
        let plain = try await s.post("/generate", generateBody(rows: rows, d: av.dModel, maxNew: maxNew)).object()
        let r = try await s.post("/generate", generateBody(rows: rows, d: av.dModel, maxNew: maxNew, extra: #","stream":true"#))
        #expect(r.status == 200)
        #expect(r.header("Content-Type")?.hasPrefix("text/event-stream") == true)
        let (events, done) = try dataEvents(r.text)
        #expect(done, "no [DONE]")
        expectStreamMatches(events, plain, "AV stream")
        #expect(events.allSatisfy { $0["index"] == nil })
        // A batch streams every input, interleaved, each event with its index; per index the same as the batch reply.
        let t = try await Servers.stream.value
        let batch = #"{"text":["The quick brown fox","Once upon a time"],"sampling_params":{"temperature":0,"max_new_tokens":8}"#
        let plainList = try #require(try await t.post("/generate", batch + "}").json() as? [[String: Any]])
        let rb = try await t.post("/generate", batch + #","stream":true}"#)
        let (bev, bdone) = try dataEvents(rb.text)
        #expect(bdone)
        for i in 0..<2 {
            expectStreamMatches(bev.filter { $0["index"] as? Int == i }, plainList[i], "batch stream item \(i)")
        }
        #expect(bev.count == bev.filter { $0["index"] is Int }.count)
    }

    @Test func streamDisconnectFreesTheSlot() async throws {
        let t = try await Servers.stream.value
        let body = #"{"text":"Count from one to a thousand:","sampling_params":{"max_new_tokens":900,"ignore_eos":true,"temperature":0},"stream":true}"#
        let seen = Counter()
        let reader = Task {
            var req = HTTPClientRequest(url: t.base + "/generate")
            req.method = .POST
            req.headers.add(name: "Content-Type", value: "application/json")
            req.body = .bytes(ByteBuffer(string: body))
            let r = try await testHTTPClient.execute(req, timeout: .seconds(600))
            for try await chunk in r.body {
                for _ in String(buffer: chunk).components(separatedBy: "data: ").dropFirst() { _ = seen.next() }
            }
        }
        // Wait for a few events, then go away.
        for _ in 0..<600 where seen.value < 3 { try await Task.sleep(for: .milliseconds(50)) }
        #expect(seen.value >= 3, "the stream did not start")
        #expect(t.service.engine.stats.active == 1)
        reader.cancel()
        _ = await reader.result
        var active = -1
        for _ in 0..<100 {
            try await Task.sleep(for: .milliseconds(100))
            active = t.service.engine.stats.active
            if active == 0 { break }
        }
        #expect(active == 0, "the disconnected stream is still decoding")
        let tokens = t.service.engine.stats.tokens
        try await Task.sleep(for: .milliseconds(500))
        #expect(t.service.engine.stats.tokens == tokens, "tokens are still being generated")
        #expect(tokens < 900)
    }

    @Test func stopStringsEndGenerationAndCutTheText() async throws {
        let t = try await Servers.stream.value
        let lm = try Reference.target.get()
        let prompt = "The quick brown fox"
        let ref = try await t.post("/generate", json: ["text": prompt, "sampling_params": ["temperature": 0, "max_new_tokens": 24, "ignore_eos": true]]).object()
        let refText = try #require(ref["text"] as? String)
        let refIds = try #require(ref["output_ids"] as? [Int])
        // A stop string from the middle of the greedy reply (3 characters starting at the 10th).
        try #require(refText.count >= 16, "reply too short: \(refText.debugDescription)")
        let start = refText.index(refText.startIndex, offsetBy: 9)
        let stop = String(refText[start..<refText.index(start, offsetBy: 3)])
        let cut = String(refText[..<refText.range(of: stop)!.lowerBound])
        for form in [stop as Any, ["never-in-this-text", stop] as Any] {
            let o = try await t.post("/generate", json: ["text": prompt, "sampling_params": ["temperature": 0, "max_new_tokens": 24, "ignore_eos": true, "stop": form]]).object()
            #expect(o["text"] as? String == cut, "stop \(stop.debugDescription): text \((o["text"] as? String)?.debugDescription ?? "nil") vs \(cut.debugDescription)")
            #expect(finish(o)?["type"] as? String == "stop")
            #expect(finish(o)?["matched"] as? String == stop)
            // Generation ended at the token that completed the stop string: a prefix of the reference ids.
            let ids = try #require(o["output_ids"] as? [Int])
            #expect(!ids.isEmpty && ids == Array(refIds.prefix(ids.count)))
            #expect(lm.tokenizer.decode(ids, skipSpecialTokens: true).contains(stop))
            #expect(!lm.tokenizer.decode(Array(ids.dropLast()), skipSpecialTokens: true).contains(stop))
            #expect((o["meta_info"] as? [String: Any])?["completion_tokens"] as? Int == ids.count)
        }
        // Streamed with a stop string: the last event is the same reply.
        let plain = try await t.post("/generate", json: ["text": prompt, "sampling_params": ["temperature": 0, "max_new_tokens": 24, "stop": [stop]]]).object()
        let r = try await t.post("/generate", json: ["text": prompt, "sampling_params": ["temperature": 0, "max_new_tokens": 24, "stop": [stop]], "stream": true])
        let (events, done) = try dataEvents(r.text)
        #expect(done)
        expectStreamMatches(events, plain, "stream with a stop string")
        // A stop string that never occurs changes nothing.
        let none = try await t.post("/generate", json: ["text": prompt, "sampling_params": ["temperature": 0, "max_new_tokens": 24, "ignore_eos": true, "stop": "\u{1F996}\u{1F996}"]]).object()
        #expect(none["output_ids"] as? [Int] == refIds)
        #expect(finish(none)?["type"] as? String == "length")
    }
}
