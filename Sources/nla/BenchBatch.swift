// `nla bench --batch N`: the batched decode measurement of issue 8, shaped like llama.cpp's
// `llama-batched-bench -pps` (one shared prompt of P tokens, then N sequences decode T tokens each).
// The prompt is prefilled once and its KV read in place by the N sequences (exact prefix sharing, stored
// once, like llama.cpp's shared cells); every step is one forward over N rows (continuous batching with
// forced lengths).

import Foundation
import NLARuntime

func benchBatched(_ lm: LanguageModel, promptTokens: Int, decodeTokens: Int, sequences: Int, json: Bool) throws {
    let base = lm.tokenizer.encode("The history of science is the study of the development of science and scientific knowledge, including both the natural and social sciences. ", addSpecialTokens: false)
    var ids = [lm.generation.bosTokenId ?? lm.config.bosTokenId]
    while ids.count < promptTokens { ids.append(base[(ids.count - 1) % base.count]) }
    let batch = try Gemma3Batch(model: lm.model, maxSequences: sequences, capacity: min(promptTokens + decodeTokens + 1, lm.config.maxPositionEmbeddings))
    _ = lm.model.warmUp()
    let t0 = DispatchTime.now().uptimeNanoseconds
    // Shared prompt: all rows but the last once; each sequence then runs the last prompt row itself.
    let prefix = batch.makeCache(capacity: max(ids.count - 1, 1))
    if ids.count > 1 {
        let e = try lm.model.embed(Array(ids.dropLast()))
        try e.withUnsafeBufferPointer { _ = try batch.forward([.init(cache: prefix, rows: ids.count - 1)], embeddings: $0.baseAddress!, output: .none) }
    }
    let t1 = DispatchTime.now().uptimeNanoseconds
    let last = try lm.model.embed([ids.last!])
    var decodeSeconds = 0.0, decoded = 0
    let shared = ids.count > 1 ? (cache: prefix, count: ids.count - 1) : nil
    try BatchDecoder.run(batch: batch, count: sequences, shared: shared, prepare: { _ in
        DecodeJob(rows: last, options: SamplingOptions(maxNewTokens: decodeTokens), stopIds: [])
    }, onEvent: { e in
        if case .step(let n, let rows, let secs) = e, n == rows { decodeSeconds += secs; decoded += n }
    })
    let t2 = DispatchTime.now().uptimeNanoseconds
    let prefill = Double(ids.count - 1) / (Double(t1 - t0) / 1e9)
    let total = Double(sequences * decodeTokens) / (Double(t2 - t1) / 1e9)
    let decode = decodeSeconds > 0 ? Double(decoded) / decodeSeconds : 0
    let rssMB = Double(peakRSSBytes()) / 1e6
    let kvMB = Double(batch.kvBytesPerSequence(shared: shared?.count ?? 0)) / 1e6
    let sharedMB = Double(shared == nil ? 0 : prefix.bytes) / 1e6
    if json {
        try printJSON(["prompt_tokens": promptTokens, "decode_tokens": decodeTokens, "sequences": sequences,
                       "prefill_tok_s": prefill, "batched_tok_s": total, "decode_tok_s": decode,
                       "kv_mb_per_sequence": kvMB, "shared_kv_mb": sharedMB, "peak_rss_mb": rssMB])
    } else {
        print(String(format: "shared prompt %d tokens: prefill %.1f tok/s; %d sequences × %d tokens: %.1f tok/s overall (first rows included), decode-only steps %.1f tok/s; KV %.2f MB/sequence + %.2f MB shared prompt; peak RSS %.0f MB",
                     promptTokens, prefill, sequences, decodeTokens, total, decode, kvMB, sharedMB, rssMB))
    }
}
