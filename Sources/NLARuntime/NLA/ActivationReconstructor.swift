// The AR: explanation → reconstructed activation (spec §4.1–§4.2).
//
// Prompt = the sidecar's AR template with {explanation} = the stripped text, tokenized as plain text WITH
// special tokens (one BOS), no chat template. The first K+1 blocks run, no final norm, the last token's
// raw block-K output h goes through the value head: pred = W·h.
// Startup: AR role, K known, config.json has K+1 blocks, d_model == hidden_size, value head [d, d]
// present, and a sample prompt starts with exactly one BOS and ends with critic_suffix_ids.

import Foundation

public final class ActivationReconstructor: Sendable {
    public let model: LanguageModel
    public let sidecar: NLASidecar
    /// K+1: the blocks run.
    public let layers: Int
    public let valueHead: ValueHead
    /// The KV of the template's fixed prefix, computed on the first batched call and reused by every
    /// later one (keyed on the prefix ids).
    public let prefixKV = PrefixKVStore()

    /// The explanation used for the startup prompt check.
    public static let sampleExplanation = "The quick brown fox jumps over the lazy dog."

    public init(model: LanguageModel, sidecar: NLASidecar) throws {
        guard sidecar.role == .ar else { throw NLAError.wrongRole(file: sidecar.file, expected: "AR", found: sidecar.role.rawValue) }
        guard let k = sidecar.extractionLayer else { throw NLAError.extractionLayerMissing(file: sidecar.file) }
        let cfg = model.config
        guard cfg.numHiddenLayers == k + 1 else {
            throw NLAError.layerCountMismatch(file: sidecar.file, k: k, configLayers: cfg.numHiddenLayers, configFile: model.configFileName)
        }
        guard model.model.loadedBlocks >= k + 1 else {
            throw NLAError.layerCountMismatch(file: sidecar.file, k: k, configLayers: model.model.loadedBlocks, configFile: model.configFileName + " (loaded blocks)")
        }
        guard sidecar.dModel == cfg.hiddenSize else {
            throw NLAError.dModelMismatch(file: sidecar.file, sidecar: sidecar.dModel, config: cfg.hiddenSize, configFile: model.configFileName)
        }
        guard let t = sidecar.arTemplate else { throw NLAError.sidecarMissingField(file: sidecar.file, field: "prompt_templates.ar") }
        guard t.contains("{explanation}") else {
            throw NLAError.templatePlaceholderMissing(file: sidecar.file, placeholder: "{explanation}")
        }
        self.model = model
        self.sidecar = sidecar
        self.layers = k + 1
        valueHead = try ValueHead(files: model.files, d: cfg.hiddenSize)
        // Prompt checks on a sample explanation (NI NLACritic, CFG verify_critic_suffix).
        let ids = try NLAPrompt.arPromptIds(explanation: Self.sampleExplanation, sidecar: sidecar, tokenizer: model.tokenizer)
        try NLAPrompt.validateBOS(ids, bos: model.tokenizer.bosTokenId ?? cfg.bosTokenId, label: sidecar.file, anywhere: false)
        if let suffix = sidecar.criticSuffixIds, !suffix.isEmpty {
            guard ids.count >= suffix.count, Array(ids.suffix(suffix.count)) == suffix else {
                throw NLAError.criticSuffixMismatch(file: sidecar.file, expected: suffix, got: Array(ids.suffix(suffix.count)))
            }
        }
    }

    /// An AR model directory or `.gguf`; the sidecar is read from the model's files.
    public convenience init(path: String) throws {
        let sidecar = try NLASidecar.load(files: try ModelFiles.open(path, tensors: false))
        guard sidecar.role == .ar else { throw NLAError.wrongRole(file: sidecar.file, expected: "AR", found: sidecar.role.rawValue) }
        try self.init(model: try LanguageModel(directory: path), sidecar: sidecar)
    }

    public var dModel: Int { model.config.hiddenSize }

    public func promptIds(for explanation: String) throws -> [Int] {
        let ids = try NLAPrompt.arPromptIds(explanation: explanation, sidecar: sidecar, tokenizer: model.tokenizer)
        try NLAPrompt.validateBOS(ids, bos: model.tokenizer.bosTokenId ?? model.config.bosTokenId,
                                  label: "AR prompt (\(sidecar.file))", anywhere: false)
        guard ids.count <= model.config.maxPositionEmbeddings else {
            throw NLAError.promptTooLong(model: model.directory, tokens: ids.count, context: model.config.maxPositionEmbeddings)
        }
        return ids
    }

    /// h: the raw output of block K at the last token of `ids` (no final norm).
    public func lastHidden(ids: [Int]) throws -> [Float] {
        let d = dModel, last = ids.count - 1, k = layers - 1
        var h = [Float](repeating: 0, count: d)
        let session = try model.session(for: ids)
        try session.forward(ids: ids, blocks: layers, logits: .none) { point, row0, values in
            guard point == .block(k) else { return }
            let rows = values.count / d
            guard last >= row0 && last < row0 + rows else { return }
            let base = (last - row0) * d
            for i in 0..<d { h[i] = values[base + i] }
        }
        return h
    }

    /// The reconstructed activation for an explanation: W·h.
    public func reconstruct(_ explanation: String) throws -> [Float] {
        valueHead.apply(try lastHidden(ids: try promptIds(for: explanation)))
    }

    /// Spec §4.3: both vectors scaled to mse_scale (f32, norms clamped at 1e-12), mse = mean squared
    /// difference, cos, fve = 1 − mse / B when a baseline B is given. With an explicit null mse_scale
    /// (raw-MSE mode) the raw vectors are compared and no fve is given.
    public func score(prediction: [Float], gold: [Float], fveBaseline: Double?) throws -> NLAScore {
        try NLAScore.compute(prediction: prediction, gold: gold, mseScale: sidecar.mseScale, d: dModel, fveBaseline: fveBaseline)
    }

    /// The built-in fve baseline for this AR's (d, K), if it is a released pair.
    public var builtInFVEBaseline: Double? { FVEBaselines.builtIn(dModel: dModel, layer: layers - 1) }
}
