// Token generation: greedy or sampled (temperature → top-k → top-p, the order transformers applies
// its logits warpers in), stopping on any id of generation_config.json's `eos_token_id`.

import Foundation
import Quant
import SIMDKernels

/// `generation_config.json`: only the fields that change what generation does.
public struct GenerationConfig: Sendable {
    public var eosTokenIds: [Int]
    public var bosTokenId: Int?
    public var padTokenId: Int?

    public init(eosTokenIds: [Int], bosTokenId: Int? = nil, padTokenId: Int? = nil) {
        self.eosTokenIds = eosTokenIds; self.bosTokenId = bosTokenId; self.padTokenId = padTokenId
    }

    /// Decode `generation_config.json` contents; fields it lacks come from the model config.
    public static func decode(_ data: Data, file: String, fallback: Gemma3Config) throws -> GenerationConfig {
        guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw ModelError.config(file: file, reason: "malformed JSON")
        }
        if let dup = JSONDuplicateKeys.first(in: data) {
            throw ModelError.config(file: file, reason: "duplicate key '\(dup)'")
        }
        let f = JSONFields(obj, file: file, path: "")
        let eos = try f.intArray("eos_token_id") ?? f.int("eos_token_id").map { [$0] } ?? fallback.eosTokenIds
        let g = GenerationConfig(eosTokenIds: eos, bosTokenId: try f.int("bos_token_id") ?? fallback.bosTokenId,
                                 padTokenId: try f.int("pad_token_id") ?? fallback.padTokenId)
        // Ids index the vocabulary: out-of-range ids would never match (eos) or index past the embedding.
        // (An eos id past the vocabulary can never be generated: allowed, like in config.json.)
        if let bad = g.eosTokenIds.first(where: { $0 < 0 || $0 > Int(Int32.max) }) {
            throw ModelError.config(file: file, reason: "eos_token_id is \(bad); must be in 0...\(Int32.max)")
        }
        let vocab = 0..<fallback.vocabSize
        for (name, id) in [("bos_token_id", g.bosTokenId), ("pad_token_id", g.padTokenId)] {
            if let id, !vocab.contains(id) {
                throw ModelError.config(file: file, reason: "\(name) is \(id); must be in 0..<\(fallback.vocabSize) (vocab_size)")
            }
        }
        return g
    }
}

public struct SamplingOptions: Sendable {
    /// 0 = greedy (argmax).
    public var temperature: Float = 0
    /// 0 = no top-k filtering.
    public var topK: Int = 0
    /// 1 = no nucleus filtering.
    public var topP: Float = 1
    public var seed: UInt64 = 0
    public var maxNewTokens: Int = 128

    public init(temperature: Float = 0, topK: Int = 0, topP: Float = 1, seed: UInt64 = 0, maxNewTokens: Int = 128) {
        self.temperature = temperature; self.topK = topK; self.topP = topP; self.seed = seed; self.maxNewTokens = maxNewTokens
    }

    public func validate() throws {
        guard temperature >= 0, temperature.isFinite else { throw ModelError.input("--temperature must be >= 0") }
        guard topK >= 0 else { throw ModelError.input("--top-k must be >= 0") }
        guard topP > 0, topP <= 1 else { throw ModelError.input("--top-p must be in (0, 1]") }
        guard maxNewTokens >= 0 else { throw ModelError.input("--max-new-tokens must be >= 0") }
    }
}

/// SplitMix64: small, fast, seedable; good enough for sampling.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

public struct Sampler {
    public var options: SamplingOptions
    private var rng: SplitMix64

    public init(options: SamplingOptions) {
        self.options = options
        rng = SplitMix64(seed: options.seed)
    }

    /// Index of the largest value (the first one on ties, like torch.argmax).
    public static func argmax(_ logits: [Float]) -> Int {
        logits.withUnsafeBufferPointer { argmax($0) }
    }

    public static func argmax(_ logits: UnsafeBufferPointer<Float>) -> Int {
        Kernels.top2(logits).index
    }

    public mutating func sample(_ logits: [Float]) -> Int {
        logits.withUnsafeBufferPointer { sample($0) }
    }

    /// Greedy (temperature 0) allocates nothing; sampling builds a sorted candidate list.
    public mutating func sample(_ logits: UnsafeBufferPointer<Float>) -> Int {
        if options.temperature == 0 { return Sampler.argmax(logits) }
        // Candidates sorted by logit, descending; top-k cut first.
        var idx = Array(logits.indices)
        let k = options.topK > 0 ? min(options.topK, logits.count) : logits.count
        if k < logits.count {
            idx = Array(idx.sorted { logits[$0] > logits[$1] }.prefix(k))
        } else {
            idx.sort { logits[$0] > logits[$1] }
        }
        let t = options.temperature
        let m = logits[idx[0]] / t
        var probs = idx.map { expf(logits[$0] / t - m) }
        let total = probs.reduce(0, +)
        for i in probs.indices { probs[i] /= total }
        // Nucleus: the smallest prefix whose cumulative probability reaches top_p.
        var n = probs.count
        if options.topP < 1 {
            var cum: Float = 0
            for i in probs.indices {
                cum += probs[i]
                if cum >= options.topP { n = i + 1; break }
            }
        }
        let mass = probs[0..<n].reduce(0, +)
        var u = Float(Double(rng.next() >> 11) / Double(1 << 53)) * mass
        for i in 0..<n {
            u -= probs[i]
            if u <= 0 { return idx[i] }
        }
        return idx[n - 1]
    }
}

public struct GenerationResult: Sendable {
    public var promptIds: [Int]
    /// New ids, ending with the stop id when generation stopped on one (as transformers returns them).
    public var ids: [Int]
    public var stoppedOnEOS: Bool
}

/// Incremental detokenization: emits only text that can no longer change (holds back a trailing
/// incomplete UTF-8 sequence from byte-fallback tokens).
public struct TextStreamer {
    private var emitted = ""
    private var ids: [Int] = []
    public init() {}

    public mutating func push(_ id: Int, tokenizer: Tokenizer) -> String {
        ids.append(id)
        let text = tokenizer.decode(ids)
        if text.hasSuffix("\u{FFFD}") { return "" }
        guard text.hasPrefix(emitted) else { emitted = text; return "" }
        let new = String(text.dropFirst(emitted.count))
        emitted = text
        return new
    }
}

extension Gemma3Session {
    /// Prefill `promptIds` (from the current position) and generate up to `options.maxNewTokens` ids.
    /// `onToken` is called after each new id (for streaming).
    public func generate(promptIds: [Int], options: SamplingOptions, stopIds: Set<Int>,
                         onToken: ((Int) -> Void)? = nil) throws -> GenerationResult {
        try options.validate()
        guard !promptIds.isEmpty else { throw ModelError.input("empty prompt: nothing to generate from") }
        guard position + promptIds.count <= capacity else {
            throw ModelError.input("prompt of \(promptIds.count) tokens exceeds the context of \(capacity) positions")
        }
        if options.maxNewTokens == 0 { return GenerationResult(promptIds: promptIds, ids: [], stoppedOnEOS: false) }
        var sampler = Sampler(options: options)
        let promptLogits = try forward(ids: promptIds, logits: .last)
        var next = sampler.sample(promptLogits)
        var out: [Int] = []
        out.reserveCapacity(options.maxNewTokens)
        var stopped = false
        while true {
            out.append(next)
            onToken?(next)
            if stopIds.contains(next) { stopped = true; break }
            if out.count >= options.maxNewTokens || position >= capacity { break }
            next = sampler.sample(try decodeStep(next))
        }
        return GenerationResult(promptIds: promptIds, ids: out, stoppedOnEOS: stopped)
    }
}
