// Gemma 3 text decoder, f32 activations.
//
// Ported from the math of Hugging Face transformers `models/gemma3/modeling_gemma3.py`
// (Gemma3TextScaledWordEmbedding, Gemma3RMSNorm, Gemma3Attention with eager attention,
// Gemma3MLP, Gemma3DecoderLayer, Gemma3TextModel), checked against transformers 5.24 goldens.
// Per block (x is the residual stream, [T, d]):
//   h  = x + postAttnNorm(attn(inputNorm(x)))
//   x' = h + postFFNorm(down(gelu(gate(preFFNorm(h))) * up(preFFNorm(h))))
// attn: q/k/v projections, RMSNorm over head_dim on q and k (q_norm, k_norm), RoPE (rotate-half),
// scores = (q·kᵀ)·query_pre_attn_scalar^-0.5, causal mask (sliding layers also hide keys
// j <= i - sliding_window), softmax in f32, ·v, o projection. GQA: query head h reads KV head
// h / (heads / kv_heads). Norms multiply by (1 + w).
//
// Matrix convention: weights are [out, in] as in the checkpoint; y[T, out] = x[T, in] · Wᵀ.

import Foundation
import Quant
import SIMDKernels

/// Where in the network a hidden state was observed. The transformers `hidden_states` tuple maps to
/// this as: index 0 = `.embeddings`, index i (1…N−1) = `.block(i − 1)`, index N = `.finalNorm`
/// (the raw output of the last block is `.block(N − 1)`, replaced by the normed state in transformers).
public enum HiddenPoint: Equatable, Sendable {
    case embeddings
    case block(Int)
    case finalNorm
}

public enum LogitsMode: Sendable {
    case none
    case last
    case all
}

public final class Gemma3Model: @unchecked Sendable {
    public let config: Gemma3Config
    public let directory: String
    /// The blocks loaded (all of them, or the first N for a truncated model such as the NLA AR).
    public let loadedBlocks: Int
    /// Checkpoint tensors that no module used (vision tensors excluded).
    public let unusedTensors: [String]
    /// Name prefix the checkpoint uses ("model.", "language_model.model.", "model.language_model.").
    public let weightPrefix: String

    let embedding: TensorEntry         // [vocab, d], as stored (any type), decoded per row
    let layers: [LayerWeights]
    let finalNorm: FloatVector?
    private let lmHeadView: TensorEntry?
    private var lmHeadStorage: WeightMatrix?
    private let lmHeadLock = NSLock()

    static let lmHeadNames = ["lm_head.weight", "language_model.lm_head.weight", "model.lm_head.weight"]

    /// Load a model: a Hugging Face directory (config.json + safetensors) or a `.gguf` file written by
    /// `quantize`.
    /// - Parameter blocks: load only the first `blocks` decoder blocks (default: all).
    public convenience init(directory: String, blocks: Int? = nil) throws {
        try self.init(files: try ModelFiles.open(directory), blocks: blocks)
    }

    public init(files: ModelFiles, blocks: Int? = nil) throws {
        self.directory = files.path
        let cfg = try Gemma3Config.decode(files.configJSON, file: files.configName)
        config = cfg
        var names = try WeightNames(tensors: files.tensors, source: files.path)
        weightPrefix = names.prefix
        let directory = files.path
        let n = blocks ?? cfg.numHiddenLayers
        guard n >= 1, n <= cfg.numHiddenLayers else {
            throw ModelError.input("\(directory): cannot run \(n) blocks of a \(cfg.numHiddenLayers)-block model")
        }
        loadedBlocks = n
        let d = cfg.hiddenSize, hd = cfg.headDim
        embedding = try names.tensor("embed_tokens.weight", shape: [cfg.vocabSize, d])
        var layers: [LayerWeights] = []
        for i in 0..<n {
            let p = "layers.\(i)."
            func mat(_ name: String, _ rows: Int, _ cols: Int) throws -> WeightMatrix {
                WeightMatrix(entry: try names.tensor(p + name, shape: [rows, cols]), rows: rows, cols: cols)
            }
            func norm(_ name: String, _ len: Int) throws -> FloatVector {
                normPlusOne(try names.tensor(p + name, shape: [len]))
            }
            layers.append(LayerWeights(
                qProj: try mat("self_attn.q_proj.weight", cfg.qDim, d),
                kProj: try mat("self_attn.k_proj.weight", cfg.kvDim, d),
                vProj: try mat("self_attn.v_proj.weight", cfg.kvDim, d),
                oProj: try mat("self_attn.o_proj.weight", d, cfg.qDim),
                gateProj: try mat("mlp.gate_proj.weight", cfg.intermediateSize, d),
                upProj: try mat("mlp.up_proj.weight", cfg.intermediateSize, d),
                downProj: try mat("mlp.down_proj.weight", d, cfg.intermediateSize),
                inputNorm: try norm("input_layernorm.weight", d),
                postAttentionNorm: try norm("post_attention_layernorm.weight", d),
                preFeedforwardNorm: try norm("pre_feedforward_layernorm.weight", d),
                postFeedforwardNorm: try norm("post_feedforward_layernorm.weight", d),
                qNorm: try norm("self_attn.q_norm.weight", hd),
                kNorm: try norm("self_attn.k_norm.weight", hd)))
        }
        self.layers = layers
        let isAR = files.tensors["value_head.weight"] != nil
        if n == cfg.numHiddenLayers && isAR {
            // NLA AR: blocks 0…K, no final norm applied (the released ARs do not even store one), no lm_head.
            finalNorm = nil
            lmHeadView = nil
            _ = try names.optional([names.prefix + "norm.weight"], shape: [d])
            _ = try names.optional(Gemma3Model.lmHeadNames, shape: [cfg.vocabSize, d])
            names.used.insert("value_head.weight")
        } else if n == cfg.numHiddenLayers {
            finalNorm = normPlusOne(try names.tensor("norm.weight", shape: [d]))
            lmHeadView = try names.optional(Gemma3Model.lmHeadNames, shape: [cfg.vocabSize, d])
            if lmHeadView == nil && !cfg.tieWordEmbeddings {
                throw ModelError.weights(file: directory, reason: "missing tensor 'lm_head.weight' and tie_word_embeddings is false")
            }
        } else {
            // Truncated run (NLA AR): the final norm may be stored but is not applied.
            finalNorm = nil
            lmHeadView = nil
            _ = try names.optional([names.prefix + "norm.weight"], shape: [d])
            _ = try names.optional(Gemma3Model.lmHeadNames, shape: [cfg.vocabSize, d])
            for i in n..<cfg.numHiddenLayers {
                let p = names.prefix + "layers.\(i)."
                for (k, _) in files.tensors where k.hasPrefix(p) { names.used.insert(k) }
            }
        }
        unusedTensors = names.unused
    }

    /// The output projection [vocab, d] (tied: the embedding matrix). Built on first use (a bf16 one is
    /// widened to f32 then; a quantized one is used in place).
    public var lmHead: WeightMatrix {
        lmHeadLock.lock(); defer { lmHeadLock.unlock() }
        if let m = lmHeadStorage { return m }
        let m = WeightMatrix(entry: lmHeadView ?? embedding, rows: config.vocabSize, cols: config.hiddenSize)
        lmHeadStorage = m
        return m
    }

    /// Scaled input embeddings for `ids`: W[id] × f32(√d), computed in f32 like transformers' f32 model.
    public func embed(_ ids: [Int]) throws -> [Float] {
        let d = config.hiddenSize
        var out = [Float](repeating: 0, count: ids.count * d)
        try out.withUnsafeMutableBufferPointer { buf in
            for (r, id) in ids.enumerated() {
                try embedRow(id, into: buf.baseAddress! + r * d)
            }
        }
        return out
    }

    /// Write the scaled embedding of `id` to `dst` (d floats).
    public func embedRow(_ id: Int, into dst: UnsafeMutablePointer<Float>) throws {
        let d = config.hiddenSize
        guard id >= 0 && id < config.vocabSize else {
            throw ModelError.input("token id \(id) is outside the vocabulary (0..<\(config.vocabSize))")
        }
        let rowBytes = embedding.byteCount / config.vocabSize
        // Read the row's bytes (pread), not the mapping: see MappedFile.copy.
        withUnsafeTemporaryAllocation(byteCount: rowBytes, alignment: 64) { row in
            embedding.file.copy(embedding.data + id * rowBytes, count: rowBytes, into: row.baseAddress!)
            embedding.type!.traits.dequantizeRow(UnsafeRawPointer(row.baseAddress!), dst, d)
        }
        Kernels.scale(dst, config.embedScale, d)
    }

    public func makeSession(capacity: Int) throws -> Gemma3Session {
        try Gemma3Session(model: self, capacity: capacity)
    }
}

/// One sequence being processed: the KV cache and scratch buffers, allocated once.
public final class Gemma3Session {
    public let model: Gemma3Model
    /// Maximum number of positions (prompt + generated tokens).
    public let capacity: Int
    /// Positions already in the cache.
    public private(set) var position = 0
    /// Rows processed per forward chunk (prefill is split so scratch memory stays bounded).
    public let chunkRows: Int

    private let cfg: Gemma3Config
    /// Positions the KV cache keeps per loaded block: the capacity on global blocks; on sliding blocks
    /// min(capacity, window + chunkRows − 1), all a chunk can see (query i sees i − window < j ≤ i),
    /// as a ring (position j at row j % ringLength). Long conversations cost O(window) there.
    public let ringLengths: [Int]
    // KV cache: per loaded block, (ringLengths[l], kvDim).
    private var kCache: [UnsafeMutablePointer<Float>]
    private var vCache: [UnsafeMutablePointer<Float>]
    /// Scratch and block arithmetic for chunkRows rows.
    private let blocks: DecoderBlocks
    private let tokenRow: UnsafeMutablePointer<Float>         // (hiddenSize): decode-step embedding
    private let logitsRow: UnsafeMutablePointer<Float>        // (vocab): decode-step logits
    /// Called with every linear layer's weight and input rows before the product (`nla imatrix`); nil = off.
    public var linearInputObserver: ((WeightMatrix, UnsafePointer<Float>, Int) -> Void)? {
        get { blocks.linearInputObserver }
        set { blocks.linearInputObserver = newValue }
    }

    init(model: Gemma3Model, capacity: Int, chunkRows: Int = 256) throws {
        let cfg = model.config
        guard capacity >= 1 else { throw ModelError.input("session capacity must be at least 1") }
        guard capacity <= cfg.maxPositionEmbeddings else {
            throw ModelError.input("\(capacity) positions exceed the model's context of \(cfg.maxPositionEmbeddings) tokens (max_position_embeddings)")
        }
        self.model = model
        self.cfg = cfg
        self.capacity = capacity
        self.chunkRows = min(chunkRows, capacity)
        let c = self.chunkRows
        func alloc(_ n: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(n, 1))
            p.initialize(repeating: 0, count: max(n, 1))
            return p
        }
        let rings = (0..<model.loadedBlocks).map { l in
            cfg.layerTypes[l] == .sliding ? min(capacity, cfg.slidingWindow + c - 1) : capacity
        }
        ringLengths = rings
        kCache = rings.map { alloc($0 * cfg.kvDim) }
        vCache = rings.map { alloc($0 * cfg.kvDim) }
        blocks = DecoderBlocks(model: model, rows: c)
        tokenRow = alloc(cfg.hiddenSize)
        logitsRow = alloc(model.loadedBlocks == cfg.numHiddenLayers ? cfg.vocabSize : 1)
    }

    deinit {
        for p in kCache { p.deallocate() }
        for p in vCache { p.deallocate() }
        for p in [tokenRow, logitsRow] { p.deallocate() }
    }

    /// Fewest blocks run over any cached position: a deeper run later would read empty KV entries.
    private var cachedDepth = Int.max

    /// Forget all cached positions.
    public func reset() { position = 0; cachedDepth = Int.max }

    /// Bytes of K and V this session holds.
    public var kvBytes: Int { ringLengths.reduce(0, +) * cfg.kvDim * 2 * MemoryLayout<Float>.size }

    /// Roll the cache back to `newPosition` (e.g. to reuse a prompt prefix). Fails when a sliding
    /// block's ring no longer holds the keys the next row at `newPosition` must see (rolled back more
    /// than `chunkRows` positions past a window's worth of tokens).
    public func truncate(to newPosition: Int) throws {
        guard newPosition >= 0 && newPosition <= position else {
            throw ModelError.input("cannot roll back to position \(newPosition): the session holds 0...\(position)")
        }
        let needed = max(0, newPosition - cfg.slidingWindow + 1)
        for ring in ringLengths where ring < capacity && needed < position - ring {
            throw ModelError.input("cannot roll back to position \(newPosition): the sliding-window ring of \(ring) positions no longer holds position \(needed)")
        }
        position = newPosition
        if position == 0 { cachedDepth = Int.max }
    }

    /// Run token ids through the model (embedding lookup, then `forward(embeddings:)`).
    @discardableResult
    public func forward(ids: [Int], blocks: Int? = nil, logits: LogitsMode = .last,
                        observer: ((HiddenPoint, Int, UnsafeBufferPointer<Float>) -> Void)? = nil) throws -> [Float] {
        guard !ids.isEmpty else { throw ModelError.input("empty input: nothing to run") }
        let e = try model.embed(ids)
        return try e.withUnsafeBufferPointer {
            try forward(embeddings: $0.baseAddress!, rows: ids.count, blocks: blocks, logits: logits, observer: observer)
        }
    }

    /// Run `rows` input-embedding rows ([rows, d], already scaled as the model expects: use
    /// `Gemma3Model.embed` for token rows; an NLA-injected row is written as is) at positions
    /// `position ..< position + rows`, appending to the KV cache.
    ///
    /// - Parameters:
    ///   - blocks: run only the first `blocks` decoder blocks and return no logits and no final norm
    ///     (the NLA AR). Default: all blocks, final norm, logits as `logits` says.
    ///   - observer: called with (point, first row index of the chunk, [chunkRows, d] values) for the
    ///     input embeddings, the raw output of every block, and the final-normed state.
    /// - Returns: logits, [vocab] for `.last`, [rows, vocab] for `.all`, empty for `.none`.
    @discardableResult
    public func forward(embeddings: UnsafePointer<Float>, rows: Int, blocks: Int? = nil, logits: LogitsMode = .last,
                        observer: ((HiddenPoint, Int, UnsafeBufferPointer<Float>) -> Void)? = nil) throws -> [Float] {
        guard rows >= 1 else { throw ModelError.input("empty input: nothing to run") }
        guard position + rows <= capacity else {
            throw ModelError.input("\(position + rows) tokens exceed the context of \(capacity) positions")
        }
        let nBlocks = blocks ?? model.loadedBlocks
        guard nBlocks >= 1 && nBlocks <= model.loadedBlocks else {
            throw ModelError.input("cannot run \(nBlocks) blocks; \(model.loadedBlocks) are loaded")
        }
        guard position == 0 || nBlocks <= cachedDepth else {
            throw ModelError.input("cannot run \(nBlocks) blocks after a \(cachedDepth)-block run filled the cache; reset the session first")
        }
        cachedDepth = min(cachedDepth, nBlocks)
        let full = nBlocks == cfg.numHiddenLayers && model.finalNorm != nil
        let wantLogits = full ? logits : .none
        var out: [Float] = []
        if wantLogits == .all { out = [Float](repeating: 0, count: rows * cfg.vocabSize) }
        if wantLogits == .last { out = [Float](repeating: 0, count: cfg.vocabSize) }
        out.withUnsafeMutableBufferPointer { lo in
            run(embeddings, rows: rows, blocks: nBlocks, logits: wantLogits, into: lo.baseAddress, observer: observer)
        }
        return out
    }

    /// One decode step for token `id`: no allocation. Returns the logits [vocab], valid until the next call.
    public func decodeStep(_ id: Int) throws -> UnsafeBufferPointer<Float> {
        guard position + 1 <= capacity else {
            throw ModelError.input("\(position + 1) tokens exceed the context of \(capacity) positions")
        }
        guard model.loadedBlocks == cfg.numHiddenLayers, model.finalNorm != nil else {
            throw ModelError.input("decoding needs all \(cfg.numHiddenLayers) blocks loaded")
        }
        guard position == 0 || cachedDepth >= cfg.numHiddenLayers else {
            throw ModelError.input("cannot decode after a truncated run filled the cache; reset the session first")
        }
        try model.embedRow(id, into: tokenRow)
        run(tokenRow, rows: 1, blocks: cfg.numHiddenLayers, logits: .last, into: logitsRow, observer: nil)
        return UnsafeBufferPointer(start: logitsRow, count: cfg.vocabSize)
    }

    /// The forward pass proper (inputs already validated). Logits go to `lo` ([vocab] for .last,
    /// [rows, vocab] for .all).
    private func run(_ embeddings: UnsafePointer<Float>, rows: Int, blocks nBlocks: Int, logits wantLogits: LogitsMode,
                     into lo: UnsafeMutablePointer<Float>?,
                     observer: ((HiddenPoint, Int, UnsafeBufferPointer<Float>) -> Void)?) {
        let d = cfg.hiddenSize, vocab = cfg.vocabSize, x = blocks.x
        var done = 0
        while done < rows {
            let t = min(chunkRows, rows - done)
            x.update(from: embeddings + done * d, count: t * d)
            observer?(.embeddings, done, UnsafeBufferPointer(start: x, count: t * d))
            blocks.setPositions(row: 0, count: t, position: position)
            for l in 0..<nBlocks {
                blocks.block(l, rows: t) { sliding in attention(l, rows: t, start: position, sliding: sliding) }
                observer?(.block(l), done, UnsafeBufferPointer(start: x, count: t * d))
            }
            if nBlocks == cfg.numHiddenLayers, model.finalNorm != nil {
                blocks.finalNorm(x, rows: t)
                observer?(.finalNorm, done, UnsafeBufferPointer(start: x, count: t * d))
                switch wantLogits {
                case .all: blocks.headLogits(x, rows: t, into: lo! + done * vocab)
                case .last where done + t == rows: blocks.headLogits(x + (t - 1) * d, rows: 1, into: lo!)
                default: break
                }
            }
            position += t
            done += t
        }
    }

    /// Block l's attention for rows at absolute positions start..<start+rows: their keys / values into the
    /// ring, then causal attention over the cache (sliding layers: keys i − window < j ≤ i), one C call.
    private func attention(_ l: Int, rows t: Int, start p0: Int, sliding: Bool) {
        let kvDim = cfg.kvDim, qDim = cfg.qDim
        let kc = kCache[l], vc = vCache[l], ring = ringLengths[l]
        for r in 0..<t {
            let idx = (p0 + r) % ring
            (kc + idx * kvDim).update(from: blocks.k + r * kvDim, count: kvDim)
            (vc + idx * kvDim).update(from: blocks.v + r * kvDim, count: kvDim)
        }
        Kernels.attention(cfg.attentionShape(sliding: sliding), q: blocks.q, ldq: qDim, k: kc, v: vc, ldkv: kvDim, ring: ring,
                          out: blocks.attn, ldo: qDim, rows: t, pos0: p0, scratch: blocks.attnScratch)
    }
}


/// Hidden states in transformers' `output_hidden_states` indexing: `states[0]` = scaled input
/// embeddings, `states[i]` = raw output of block i−1 for 1 ≤ i < N, `states[N]` = output of the last
/// block after the final norm. Each is [T, d]. `lastBlockRaw` is the last block's output before the norm.
public struct HiddenStates: Sendable {
    public var states: [[Float]]
    public var lastBlockRaw: [Float]
    public var logits: [Float]
}

extension Gemma3Session {
    /// Run all blocks over `ids` and collect every hidden state.
    public func forwardHiddenStates(ids: [Int], logits: LogitsMode = .last) throws -> HiddenStates {
        let n = model.config.numHiddenLayers, d = model.config.hiddenSize, t = ids.count
        guard model.loadedBlocks == n else { throw ModelError.input("hidden states need all \(n) blocks loaded") }
        var states = [[Float]](repeating: [Float](repeating: 0, count: t * d), count: n + 1)
        var raw = [Float](repeating: 0, count: t * d)
        let lg = try forward(ids: ids, logits: logits) { point, row0, values in
            func store(_ dst: inout [Float]) {
                dst.withUnsafeMutableBufferPointer { (($0.baseAddress! + row0 * d)).update(from: values.baseAddress!, count: values.count) }
            }
            switch point {
            case .embeddings: store(&states[0])
            case .block(let b) where b == n - 1: store(&raw)
            case .block(let b): store(&states[b + 1])
            case .finalNorm: store(&states[n])
            }
        }
        return HiddenStates(states: states, lastBlockRaw: raw, logits: lg)
    }
}

extension Gemma3Config {
    /// The attention kernel's geometry for a sliding or a global layer.
    func attentionShape(sliding: Bool) -> AttentionShape {
        AttentionShape(heads: numAttentionHeads, kvHeads: numKeyValueHeads, headDim: headDim,
                       window: sliding ? slidingWindow : nil, scale: attentionScale, softcap: attnLogitSoftcapping)
    }
}

extension Gemma3Model {
    /// Materialize lazily-built weights (the f32 output projection) so timings exclude them.
    @discardableResult
    public func warmUp() -> Int { lmHead.rows }
}
