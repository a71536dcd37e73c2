// The AV: activation vector → explanation (spec §2).
//
// Startup (spec §1.5): injection char encodes to exactly [id]; the rendered prompt has exactly one valid
// site with the sidecar neighbors, not first/last; one BOS; d_model == hidden_size; injection_scale set.
// Per vector: scaled embedding lookup of the prompt (W[id] × f32(√d)), row p overwritten by
// v · (injection_scale / ‖v‖) in f32 (not ×√d), prefill from embeddings, decode with the model's stop ids
// (generation_config eos, plus <end_of_turn>), extract the first <explanation>…</explanation>.

import Foundation

public struct Verbalization: Sendable {
    /// Generated ids, ending with the stop id when generation stopped on one.
    public var ids: [Int]
    /// Raw generated text (the stop id not included).
    public var text: String
    /// The extracted explanation, nil when the output has no complete tag pair.
    public var explanation: String?
    public var warnings: [String]
    public var stoppedOnEOS: Bool = false

    public init(ids: [Int], text: String, explanation: String?, warnings: [String], stoppedOnEOS: Bool = false) {
        self.ids = ids; self.text = text; self.explanation = explanation; self.warnings = warnings
        self.stoppedOnEOS = stoppedOnEOS
    }
}

public final class ActivationVerbalizer: Sendable {
    public let model: LanguageModel
    public let sidecar: NLASidecar
    public let promptIds: [Int]
    public let injectionPosition: Int
    public let injectionScale: Float
    /// Generation stops on any of these (generation_config eos ids ∪ <end_of_turn>).
    public let stopIds: Set<Int>
    /// The KV of the prompt rows before the injection site, computed on the first batched call and
    /// reused by every later one (keyed on the prefix ids).
    public let prefixKV = PrefixKVStore()

    public init(model: LanguageModel, sidecar: NLASidecar, promptTemplate: String? = nil) throws {
        guard sidecar.role == .av else { throw NLAError.wrongRole(file: sidecar.file, expected: "AV", found: sidecar.role.rawValue) }
        let hidden = model.config.hiddenSize
        guard sidecar.dModel == hidden else {
            throw NLAError.dModelMismatch(file: sidecar.file, sidecar: sidecar.dModel, config: hidden, configFile: model.configFileName)
        }
        guard let scale = sidecar.injectionScale else {
            let state: String
            switch sidecar.injectionScaleState {
            case .absent: state = "absent"
            case .null: state = "null"
            default: state = "\"raw\"/\"none\" (no normalization)"
            }
            throw NLAError.injectionScaleMissing(file: sidecar.file, state: state)
        }
        try NLAPrompt.validateInjectionChar(sidecar: sidecar, tokenizer: model.tokenizer)
        let content = try NLAPrompt.avContent(sidecar: sidecar, customPrompt: promptTemplate)
        let ids = try NLAPrompt.avPromptIds(content: content, tokenizer: model.tokenizer)
        let label = promptTemplate == nil ? sidecar.file : "custom AV prompt (\(sidecar.file))"
        try NLAPrompt.validateBOS(ids, bos: model.tokenizer.bosTokenId ?? model.config.bosTokenId, label: label, anywhere: true)
        injectionPosition = try NLAPrompt.validateInjectionSite(ids, sidecar: sidecar, label: label)
        guard ids.count < model.config.maxPositionEmbeddings else {
            throw NLAError.promptTooLong(model: model.directory, tokens: ids.count, context: model.config.maxPositionEmbeddings)
        }
        self.model = model
        self.sidecar = sidecar
        self.promptIds = ids
        self.injectionScale = scale
        var stops = Set(model.generation.eosTokenIds)
        if let eot = model.tokenizer.tokenToId("<end_of_turn>") { stops.insert(eot) }
        stopIds = stops
        // A full AV always decodes through its output head: pack it now, while no KV cache or batch
        // scratch exists, so the transient pages of packing do not stack on them at the peak.
        if model.model.producesLogits {
            _ = model.model.lmHead
        }
    }

    /// An AV model directory or `.gguf`; the sidecar is read from the model's files. `promptTemplate`:
    /// a custom user prompt containing `<INJECT>` (spec §6.1), validated like the canonical one.
    /// `blocks`: load only the first blocks (1 when the AV runs elsewhere and only its prompt embeddings
    /// and tokenizer are needed here, e.g. `--backend sglang`).
    public convenience init(path: String, promptTemplate: String? = nil, blocks: Int? = nil) throws {
        let sidecar = try NLASidecar.load(files: try ModelFiles.open(path, tensors: false))
        guard sidecar.role == .av else { throw NLAError.wrongRole(file: sidecar.file, expected: "AV", found: sidecar.role.rawValue) }
        try self.init(model: try LanguageModel(directory: path, blocks: blocks), sidecar: sidecar, promptTemplate: promptTemplate)
    }

    public var dModel: Int { model.config.hiddenSize }

    public func validate(_ v: [Float]) throws {
        try NLAVectorMath.validate(v, d: dModel, label: "activation vector")
    }

    /// [T, d] input embeddings: the scaled lookup of `promptIds` with row `injectionPosition` replaced by
    /// v · (injection_scale / ‖v‖).
    public func inputEmbeddings(for v: [Float]) throws -> [Float] {
        try validate(v)
        let d = dModel
        var e = try model.model.embed(promptIds)
        let scaled = NLAVectorMath.scaledForInjection(v, scale: injectionScale)
        e.replaceSubrange((injectionPosition * d)..<((injectionPosition + 1) * d), with: scaled)
        return e
    }

    /// Logits at the last prompt position for vector `v` (a fresh session; mainly for checks).
    public func lastPromptLogits(for v: [Float]) throws -> [Float] {
        let e = try inputEmbeddings(for: v)
        let session = try model.session(for: promptIds)
        return try e.withUnsafeBufferPointer { try session.forward(embeddings: $0.baseAddress!, rows: promptIds.count, logits: .last) }
    }

    /// Verbalize one vector: prefill from the injected embeddings, decode up to `options.maxNewTokens`
    /// (greedy when temperature is 0, else sampled with the seed), stop on `stopIds`.
    public func verbalize(_ v: [Float], options: SamplingOptions, onToken: ((Int) -> Void)? = nil) throws -> Verbalization {
        try decode(v, options: options, stops: stopIds, onToken: onToken)
    }

    /// Sequential decode of exactly `maxNewTokens` tokens, ignoring stop ids (the bench's forced mode at batch 1).
    public func verbalizeIgnoringStops(_ v: [Float], options: SamplingOptions) throws -> Verbalization {
        try decode(v, options: options, stops: [], onToken: nil)
    }

    /// The sequential reference: full prompt prefill from the injected embeddings, then one token per step
    /// until a stop id in `stops`, the token cap or the context end.
    private func decode(_ v: [Float], options: SamplingOptions, stops: Set<Int>, onToken: ((Int) -> Void)?) throws -> Verbalization {
        try options.validate()
        let e = try inputEmbeddings(for: v)
        let session = try model.session(for: promptIds, extra: options.maxNewTokens)
        var sampler = Sampler(options: options)
        var out: [Int] = []
        var stopped = false
        if options.maxNewTokens > 0 {
            var logits = try e.withUnsafeBufferPointer {
                try session.forward(embeddings: $0.baseAddress!, rows: promptIds.count, logits: .last)
            }
            while out.count < options.maxNewTokens {
                let next = sampler.sample(logits)
                out.append(next)
                onToken?(next)
                if stops.contains(next) { stopped = true; break }
                if out.count == options.maxNewTokens || session.position >= session.capacity { break }
                logits = try session.forward(ids: [next], logits: .last)
            }
        }
        return verbalization(ids: out, stopped: stopped, maxNewTokens: options.maxNewTokens)
    }

    /// The Verbalization of generated ids (text without the stop id, extracted explanation, warnings).
    func verbalization(ids out: [Int], stopped: Bool, maxNewTokens: Int) -> Verbalization {
        let textIds = stopped ? Array(out.dropLast()) : out
        let text = model.tokenizer.decode(textIds)
        let explanation = NLAExplanation.extract(text)
        let warnings = NLAExplanation.warnings(text: text, explanation: explanation, stoppedOnEOS: stopped,
                                               maxNewTokens: maxNewTokens)
        return Verbalization(ids: out, text: text, explanation: explanation, warnings: warnings, stoppedOnEOS: stopped)
    }
}

extension LanguageModel {
    /// How to name this model's config.json in messages.
    var configFileName: String {
        directory.hasSuffix(".gguf") ? "\(directory)[config.json]" : (directory as NSString).appendingPathComponent("config.json")
    }
}
