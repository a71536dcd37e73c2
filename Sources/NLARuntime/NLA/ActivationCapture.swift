// Activation capture on a target model (spec §3): layer K = the raw output of decoder block K
// (post-MLP residual, before any final norm) = transformers `hidden_states[K+1]`, at every position of
// one forward over the whole sequence (prompt + reply), running only blocks 0…K.

import Foundation

public struct CapturedActivations: Sendable {
    public var ids: [Int]
    /// Decoded text of each id alone.
    public var tokens: [String]
    /// Positions < promptLength are the prompt, the rest the reply.
    public var promptLength: Int
    /// [T][d], raw (never normalized).
    public var vectors: [[Float]]
    /// Raw L2 norm of each vector.
    public var norms: [Double]

    public init(ids: [Int], tokens: [String], promptLength: Int, vectors: [[Float]], norms: [Double]) {
        self.ids = ids; self.tokens = tokens; self.promptLength = promptLength; self.vectors = vectors; self.norms = norms
    }
}

public enum ActivationCapture {
    /// - Parameters:
    ///   - layer: K (0-based block index).
    ///   - prompt: the user message (`chat`) or plain text (BOS prepended).
    ///   - reply: assistant reply text appended after the prompt (encoded without special tokens); when nil
    ///     and `maxReplyTokens` > 0 the reply is generated greedily (up to `maxReplyTokens`, stop id kept, as
    ///     transformers' generate returns it).
    public static func capture(target: LanguageModel, layer: Int, prompt: String, chat: Bool, reply: String?,
                               maxReplyTokens: Int) throws -> CapturedActivations {
        let cfg = target.config
        guard layer >= 0 && layer < target.model.loadedBlocks else {
            throw NLAError.layerOutOfRange(model: target.directory, layer: layer, blocks: target.model.loadedBlocks)
        }
        let promptIds = try target.promptIds(prompt, chat: chat)
        var ids = promptIds
        if let reply {
            ids += target.tokenizer.encode(reply, addSpecialTokens: false)
        } else if maxReplyTokens > 0 {
            guard target.model.loadedBlocks == cfg.numHiddenLayers else {
                throw ModelError.input("\(target.directory): generating a reply needs all \(cfg.numHiddenLayers) blocks loaded")
            }
            var stops = Set(target.generation.eosTokenIds)
            if chat, let eot = target.tokenizer.tokenToId("<end_of_turn>") { stops.insert(eot) }
            let session = try target.session(for: promptIds, extra: maxReplyTokens)
            let r = try session.generate(promptIds: promptIds, options: SamplingOptions(maxNewTokens: maxReplyTokens), stopIds: stops)
            ids += r.ids
        }
        return try capture(target: target, layer: layer, ids: ids, promptLength: promptIds.count)
    }

    /// Block-K output at every position of `ids` (one forward).
    public static func capture(target: LanguageModel, layer: Int, ids: [Int], promptLength: Int) throws -> CapturedActivations {
        let d = target.config.hiddenSize
        guard layer >= 0 && layer < target.model.loadedBlocks else {
            throw NLAError.layerOutOfRange(model: target.directory, layer: layer, blocks: target.model.loadedBlocks)
        }
        guard ids.count <= target.config.maxPositionEmbeddings else {
            throw NLAError.promptTooLong(model: target.directory, tokens: ids.count, context: target.config.maxPositionEmbeddings)
        }
        var flat = [Float](repeating: 0, count: ids.count * d)
        let session = try target.session(for: ids)
        try session.forward(ids: ids, blocks: layer + 1, logits: .none) { point, row0, values in
            guard point == .block(layer) else { return }
            flat.withUnsafeMutableBufferPointer { dst in
                (dst.baseAddress! + row0 * d).update(from: values.baseAddress!, count: values.count)
            }
        }
        let vectors = (0..<ids.count).map { Array(flat[($0 * d)..<(($0 + 1) * d)]) }
        return CapturedActivations(ids: ids, tokens: ids.map { target.tokenizer.decode([$0]) }, promptLength: promptLength,
                                   vectors: vectors, norms: vectors.map(NLAVectorMath.norm))
    }
}
