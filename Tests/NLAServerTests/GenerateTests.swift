// SGLang-compatible /generate over real HTTP (loopback): the AV's injected prompt embeddings give exactly
// the tokens `nla verbalize` produces for the same vector (greedy); batches and concurrent requests; prefix-cache
// hits (identical leading rows) change nothing and rows that differ in one bit are never shared.

import Foundation
import NLARuntime
@testable import NLAServer
import NLAWire
import Testing

enum Reference {
    static let av = Result { () throws -> ActivationVerbalizer in try Servers.require(); return try ActivationVerbalizer(path: Servers.avPath) }
    static let target = Result { () throws -> LanguageModel in try Servers.require(); return try LanguageModel(directory: Servers.targetPath) }

    /// What `nla verbalize` does for one vector (batch 1: the sequential reference path), greedy.
    static func verbalize(_ v: [Float], maxNew: Int) throws -> Verbalization {
        try av.get().verbalize(v, options: SamplingOptions(maxNewTokens: maxNew))
    }
}

func generateBody(rows: [Float], d: Int, maxNew: Int, extra: String = "") -> String {
    #"{"input_embeds":"# + jsonRows(rows, d: d) + #","sampling_params":{"temperature":0,"max_new_tokens":\#(maxNew),"skip_special_tokens":true,"top_p":1,"top_k":-1}\#(extra)}"#
}

@Suite(.serialized) struct GenerateTests {
    @Test func injectedEmbeddingsGiveTheVerbalizeTokens() async throws {
        let s = try await Servers.nla.value
        let av = try Reference.av.get()
        let maxNew = 24
        for pos in [3, 9] {
            let v = try Vectors.get(pos)
            let ref = try Reference.verbalize(v, maxNew: maxNew)
            let rows = try av.inputEmbeddings(for: v)
            let r = try await s.post("/generate", generateBody(rows: rows, d: av.dModel, maxNew: maxNew))
            #expect(r.status == 200, "\(r.text.prefix(300))")
            let o = try r.object()
            let ids = (o["output_ids"] as? [Int]) ?? []
            #expect(ids == ref.ids, "position \(pos): /generate \(ids) vs nla verbalize \(ref.ids)")
            #expect(o["text"] as? String == ref.text)
            let meta = try #require(o["meta_info"] as? [String: Any])
            #expect(meta["prompt_tokens"] as? Int == av.promptIds.count)
            #expect(meta["completion_tokens"] as? Int == ref.ids.count)
            let finish = try #require(meta["finish_reason"] as? [String: Any])
            #expect(finish["type"] as? String == (ref.stoppedOnEOS ? "stop" : "length"))
        }
    }

    @Test func batchAndConcurrentRequests() async throws {
        let s = try await Servers.nla.value
        let av = try Reference.av.get()
        let maxNew = 16
        let positions = [2, 5, 7, 11]
        let refs = try positions.map { try Reference.verbalize(try Vectors.get($0), maxNew: maxNew).ids }
        let rows = try positions.map { try av.inputEmbeddings(for: try Vectors.get($0)) }
        // One batch request: a list of inputs gives a list of replies, in order.
        let body = #"{"input_embeds":["# + rows.map { jsonRows($0, d: av.dModel) }.joined(separator: ",") +
            #"],"sampling_params":{"temperature":0,"max_new_tokens":\#(maxNew)}}"#
        let r = try await s.post("/generate", body)
        #expect(r.status == 200, "\(r.text.prefix(300))")
        let list = try #require(try r.json() as? [[String: Any]])
        #expect(list.count == positions.count)
        for (k, item) in list.enumerated() { #expect(item["output_ids"] as? [Int] == refs[k], "batch item \(k)") }
        // Concurrent single requests share the engine's batch (continuous batching).
        let stepsBefore = s.service.engine.stats.steps
        let got = try await withThrowingTaskGroup(of: (Int, [Int]).self) { g in
            for k in positions.indices {
                g.addTask {
                    let r = try await s.post("/generate", generateBody(rows: rows[k], d: av.dModel, maxNew: maxNew))
                    return (k, (try r.object()["output_ids"] as? [Int]) ?? [])
                }
            }
            var out = [Int: [Int]]()
            for try await (k, ids) in g { out[k] = ids }
            return out
        }
        for k in positions.indices { #expect(got[k] == refs[k], "concurrent request \(k)") }
        let steps = s.service.engine.stats.steps - stepsBefore
        let tokens = refs.map(\.count).reduce(0, +)
        print("[serve] 4 concurrent requests: \(tokens) tokens in \(steps) engine steps")
        #expect(steps < tokens, "concurrent requests were not batched (\(steps) steps for \(tokens) tokens)")
    }

    @Test func prefixCacheHitsChangeNothing() async throws {
        let s = try await Servers.nla.value
        let av = try Reference.av.get()
        let d = av.dModel, maxNew = 16
        let v = try Vectors.get(6)
        let rows = try av.inputEmbeddings(for: v)
        let ref = try Reference.verbalize(v, maxNew: maxNew).ids
        // The same rows twice: the second request reuses all but the last row.
        _ = try await s.post("/generate", generateBody(rows: rows, d: d, maxNew: maxNew))
        let again = try await s.post("/generate", generateBody(rows: rows, d: d, maxNew: maxNew)).object()
        let meta = try #require(again["meta_info"] as? [String: Any])
        #expect(meta["cached_tokens"] as? Int == av.promptIds.count - 1)
        #expect(again["output_ids"] as? [Int] == ref)
        // Another vector: identical rows up to the injection site, which differs → exactly those rows shared.
        let v2 = try Vectors.get(8)
        let rows2 = try av.inputEmbeddings(for: v2)
        let r2 = try await s.post("/generate", generateBody(rows: rows2, d: d, maxNew: maxNew)).object()
        #expect((r2["meta_info"] as? [String: Any])?["cached_tokens"] as? Int == av.injectionPosition)
        #expect(r2["output_ids"] as? [Int] == (try Reference.verbalize(v2, maxNew: maxNew).ids))
        // One bit changed in row 40: rows 0..<40 shared, nothing after; the output is that of the changed input.
        var rows3 = rows
        rows3[40 * d + 7] = rows3[40 * d + 7].nextUp
        let r3 = try await s.post("/generate", generateBody(rows: rows3, d: d, maxNew: maxNew)).object()
        #expect((r3["meta_info"] as? [String: Any])?["cached_tokens"] as? Int == 40)
        let session = try av.model.session(for: av.promptIds, extra: maxNew)
        let direct = try rows3.withUnsafeBufferPointer { p -> [Int] in
            var logits = try session.forward(embeddings: p.baseAddress!, rows: av.promptIds.count, logits: .last)
            var out: [Int] = []
            while out.count < maxNew {
                let t = Sampler.argmax(logits)
                out.append(t)
                if av.stopIds.contains(t) { break }
                logits = try session.forward(ids: [t], logits: .last)
            }
            return out
        }
        #expect(r3["output_ids"] as? [Int] == direct)
        let health = try await s.get("/health").object()
        let pc = try #require(health["prefix_cache"] as? [String: Any])
        #expect((pc["hits"] as? Int ?? 0) >= 3)
    }

    @Test func textAndInputIdsMatchGreedyGenerate() async throws {
        let s = try await Servers.nla.value
        let t = try Reference.target.get()
        let prompt = "The quick brown fox"
        let ids = t.tokenizer.encode(prompt, addSpecialTokens: true)
        let session = try t.session(for: ids, extra: 12)
        var stops = Set(t.generation.eosTokenIds)
        if let eot = t.tokenizer.tokenToId("<end_of_turn>") { stops.insert(eot) }
        let ref = try session.generate(promptIds: ids, options: SamplingOptions(maxNewTokens: 12), stopIds: stops).ids
        let a = try await s.post("/generate", json: ["model": "target", "text": prompt, "sampling_params": ["temperature": 0, "max_new_tokens": 12]]).object()
        #expect(a["output_ids"] as? [Int] == ref)
        let b = try await s.post("/generate", json: ["model": "target", "input_ids": [ids, ids], "sampling_params": ["temperature": 0, "max_new_tokens": 12]])
        let list = try #require(try b.json() as? [[String: Any]])
        #expect(list.count == 2)
        for item in list { #expect(item["output_ids"] as? [Int] == ref) }
        #expect((list[0]["meta_info"] as? [String: Any])?["prompt_tokens"] as? Int == ids.count)
    }

    /// The issue's size: a 108 × 5376 body (580k numbers) parsed by the server's reader.
    @Test func parsesALargeEmbeddingBodyFast() throws {
        let d = 5376, t = 108
        var rng = SplitMix64(seed: 7)
        let flat = (0..<(t * d)).map { _ in Float(Double(rng.next() % 2_000_001) / 1_000_000 - 1) * 3.7 }
        let body = Array(#"{"input_embeds":\#(jsonRows(flat, d: d)),"sampling_params":{"temperature":0}}"#.utf8)
        var best = Double.infinity
        var parsed: JSONValue = .null
        for _ in 0..<3 {
            let start = Date()
            parsed = try JSONReader.parse(body)
            best = min(best, Date().timeIntervalSince(start))
        }
        let rows = try matrix(try Fields(parsed).o["input_embeds"]!, "input_embeds", width: d)
        #expect(rows.count == t)
        #expect(rows.flatMap { $0 } == flat, "floats must read back bit-exact")
        print(String(format: "[serve] parsed a %d x %d input_embeds body (%.1f MB) in %.1f ms", t, d, Double(body.count) / 1e6, best * 1000))
    }
}
