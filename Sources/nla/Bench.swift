import ArgumentParser
import Foundation
import NLARuntime

/// Timing of prefill and decode on a synthetic prompt (repeating the ids of a fixed text).
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Measure prefill and decode speed (used by bench/run.sh).")

    @OptionGroup var options: ModelOptions
    @Option(name: .customLong("prompt-tokens")) var promptTokens: Int = 512
    @Option(name: .customLong("decode-tokens")) var decodeTokens: Int = 128
    @Option(help: "Decode this many sequences together after one shared prompt (like llama-batched-bench -pps); 0 = one sequence, no batching.") var batch: Int = 0
    @Flag var json = false

    func run() throws {
        try runReportingErrors {
            try options.validateThreads()
            guard promptTokens >= 1, decodeTokens >= 0 else { throw ModelError.input("token counts must be positive") }
            guard batch >= 0 else { throw ModelError.input("--batch must be >= 0") }
            let lm = try LanguageModel(directory: options.model)
            try requireLogits(lm, options.model)
            let ctx = lm.config.maxPositionEmbeddings
            guard promptTokens <= ctx, decodeTokens <= ctx - promptTokens else {
                throw ModelError.input("--prompt-tokens \(promptTokens) + --decode-tokens \(decodeTokens) exceed the model's context of \(ctx) tokens")
            }
            if batch > 0 {
                // Every sequence holds its own KV cache: refuse a count whose caches cannot fit in memory
                // (`--batch 1000000000` aborted in the allocator).
                let capacity = min(promptTokens + decodeTokens + 1, ctx)
                let perSequence = KVCache.bytes(config: lm.config, blocks: lm.model.loadedBlocks, capacity: capacity, chunk: min(256, capacity))
                let ram = Int(clamping: ProcessInfo.processInfo.physicalMemory)
                guard batch <= max(1, ram / max(perSequence, 1)) else {
                    throw ModelError.input(String(format: "--batch %d needs %.1f GB of KV cache (%.2f MB per sequence); this machine has %.1f GB",
                                                  batch, Double(batch) * Double(perSequence) / 1e9, Double(perSequence) / 1e6, Double(ram) / 1e9))
                }
            }
            if batch > 0 { try benchBatched(lm, promptTokens: promptTokens, decodeTokens: decodeTokens, sequences: batch, json: json); return }
            let base = lm.tokenizer.encode("The history of science is the study of the development of science and scientific knowledge, including both the natural and social sciences. ", addSpecialTokens: false)
            var ids = [lm.generation.bosTokenId ?? lm.config.bosTokenId]
            while ids.count < promptTokens { ids.append(base[(ids.count - 1) % base.count]) }
            let session = try lm.session(for: ids, extra: decodeTokens)
            _ = lm.model.warmUp()
            // Warm-up pass, like llama-bench's: a short prompt and one decode step touch every weight page
            // (the file is memory-mapped) and start the thread pools, so neither lands in the timings.
            let warm = Array(ids.prefix(min(ids.count, 16)))
            let wl = try session.forward(ids: warm, logits: .last)
            _ = try session.forward(ids: [Sampler.argmax(wl)], logits: .last)
            session.reset()
            let t0 = DispatchTime.now().uptimeNanoseconds
            let prompt = try session.forward(ids: ids, logits: .last)
            let t1 = DispatchTime.now().uptimeNanoseconds
            // Decode as generation does: the allocation-free step API, greedy.
            var next = Sampler.argmax(prompt)
            for _ in 0..<decodeTokens {
                next = Sampler.argmax(try session.decodeStep(next))
            }
            let t2 = DispatchTime.now().uptimeNanoseconds
            let prefill = Double(promptTokens) / (Double(t1 - t0) / 1e9)
            let decode = decodeTokens == 0 ? 0 : Double(decodeTokens) / (Double(t2 - t1) / 1e9)
            let rssMB = Double(peakRSSBytes()) / 1e6
            if json {
                try printJSON(["prompt_tokens": promptTokens, "decode_tokens": decodeTokens, "threads": options.threads,
                               "prefill_tok_s": prefill, "decode_tok_s": decode, "peak_rss_mb": rssMB])
            } else {
                print(String(format: "prefill %.1f tok/s (%d tokens), decode %.1f tok/s (%d tokens), peak RSS %.0f MB",
                             prefill, promptTokens, decode, decodeTokens, rssMB))
            }
        }
    }
}
