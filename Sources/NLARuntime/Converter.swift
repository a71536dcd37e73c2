// Hugging Face checkpoint → one GGUF file (what `quantize` runs).
//
// Streams tensor by tensor from the memory-mapped safetensors (bf16, f16 or f32 on disk): each output
// tensor is produced in row chunks (widen a few rows to f32, quantize them with the reference
// quantizer), so peak memory is about one output tensor plus a small f32 scratch, never the model.
//
// Per-tensor policy (printed in the summary, recorded in the file as `nla.quantize.policy`):
//   - 1-D tensors (norm weights) stay f32;
//   - the AR `value_head.weight` stays f32: it is the readout of the reconstruction (d×d, 0.3 % of
//     the 27B AR's parameters), so quantizing it would save almost nothing and add error directly to
//     the predicted vector;
//   - the embedding / tied output projection (`embed_tokens`, `lm_head`) is Q8_0 whenever the target is
//     a block type: with 4-bit blocks it is the most sensitive matrix (it forms every logit), see the
//     README's measurements; with --type bf16 / f32 it takes that type;
//   - every other 2-D weight takes the requested type, except:
//     - a row width that is not a multiple of the type's block size falls back to a type of the same budget
//       with a smaller block: Q4_K → IQ4_NL (32-value blocks, 4.5 bits/weight), Q6_K → Q8_0 (the 270M's
//       640-wide rows are 2.5 super-blocks); for the 32-value types such a width is an error naming the tensor;
//     - the `q4_k_m` mix: Q4_K with the upgrades of `q4kmUpgrades` (attn_v, ffn_up, ffn_down → Q5_0 in every
//       layer, chosen by measured sensitivity on calibration text; README), each with the fallback above. (Until this session it
//       was llama.cpp's Q4_K_M rule: Q6_K for attn_v and ffn_down in the `moreBits` layers.)
//   Quantizers: the importance-weighted search of the type table (`quantizeRowImportance`, weights = the
//   imatrix column of the tensor when `--imatrix` is given, else the default weighting) unless
//   `referenceQuantizers` is set; Q8_0 and the float types always use the reference.

import Foundation
import Quant
import SIMDKernels

public struct QuantizePolicy: Sendable {
    /// Per-tensor mixes.
    public enum Mix: String, Sendable {
        /// Q4_K with the upgrades of `q4kmUpgrades`.
        case q4_k_m
    }

    public let target: QuantType
    public var mix: Mix?
    /// Type of the embedding / output projection when the target is a block type.
    public var embeddingBlockType: QuantType = .q8_0
    /// Importance matrix for the search quantizers (nil: default weighting).
    public var imatrix: Imatrix?
    /// Use the reference quantizers (plain rounding; Q4_0 byte-identical to ggml) instead of the search.
    public var referenceQuantizers = false
    /// Number of decoder blocks (for the mix's layer rule).
    public var numLayers = 0
    /// Error-feedback (GPTQ) quantization with the imatrix file's Hessians (`nla imatrix --hessian`).
    public var gptq = false

    public init(target: QuantType, mix: Mix? = nil) {
        self.target = target
        self.mix = mix
    }

    /// `--type` value: a table type name or a mix ("q4_k_m").
    public init(scheme: String) throws {
        if let m = Mix(rawValue: scheme.lowercased()) {
            self.init(target: .q4_k, mix: m)
        } else {
            self.init(target: try QuantType(name: scheme))
        }
    }

    /// The scheme's name as stored in the file ("Q4_K_M", "Q4_K", …).
    public var schemeName: String { mix.map { $0.rawValue.uppercased() } ?? target.traits.name }

    /// The `q4_k_m` mix: these weights get a larger type in every layer (before the block-size fallback).
    /// Chosen by measured sensitivity on calibration text (README, "4-bit quality"): upgrading one class of the
    /// q4_k (+ GPTQ) file to Q5_0 at a time, ffn_up, ffn_down and ffn_gate lowered the KLD most per added bit
    /// (about −0.02 per bit/weight each), attn_v somewhat (within the noise), attn_q/k/output not measurably. Q5_0
    /// (+1 bit over Q4_K / IQ4_NL) for attn_v, ffn_up and ffn_down puts the blocks at exactly 5.0 bits/weight.
    public static let q4kmUpgrades: [(suffix: String, type: QuantType)] = [
        ("self_attn.v_proj.weight", .q5_0), ("mlp.up_proj.weight", .q5_0), ("mlp.down_proj.weight", .q5_0),
    ]

    /// llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third one in between.
    public static func moreBits(layer i: Int, of n: Int) -> Bool {
        i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
    }

    static func layerIndex(_ name: String) -> Int? {
        guard let r = name.range(of: "layers.") else { return nil }
        return Int(name[r.upperBound...].prefix { $0.isNumber })
    }

    /// The output type of a tensor and the rule that chose it (before the block-size fallback).
    func baseDecision(name: String, shape: [Int]) -> (type: QuantType, rule: String) {
        if shape.count < 2 { return (.f32, "1-D/norm → F32") }
        if name.hasPrefix("value_head.") { return (.f32, "AR value head → F32") }
        let isEmbedding = name.hasSuffix("embed_tokens.weight") || name.hasSuffix("lm_head.weight")
        if isEmbedding && target.traits.isQuantized { return (embeddingBlockType, "embedding/output → \(embeddingBlockType.traits.name)") }
        if mix == .q4_k_m, let i = Self.layerIndex(name), let up = Self.q4kmUpgrades.first(where: { name.hasSuffix($0.suffix) }) {
            return (up.type, "q4_k_m: \(up.suffix) of layer \(i) → \(up.type.traits.name)")
        }
        return (target, "2-D weight → \(target.traits.name)")
    }

    /// The output type of a tensor and the rule that chose it, with the block-size fallback applied.
    public func decide(name: String, shape: [Int]) -> (type: QuantType, rule: String) {
        var (t, rule) = baseDecision(name: name, shape: shape)
        if t.traits.isQuantized, let w = shape.last, w % t.traits.blockSize != 0 {
            let fallback: QuantType? = t == .q4_k ? .iq4_nl : t == .q6_k ? .q8_0 : nil
            if let f = fallback, w % f.traits.blockSize == 0 {
                rule += "; width \(w) not whole \(t.traits.name) blocks → \(f.traits.name)"
                t = f
            }
        }
        return (t, rule)
    }

    public var summary: String {
        var s = "norms and 1-D tensors F32; value_head F32; embedding/lm_head " +
            (target.traits.isQuantized ? embeddingBlockType.traits.name : target.traits.name) +
            "; other 2-D weights " + target.traits.name
        if mix == .q4_k_m { s += " (" + Self.q4kmUpgrades.map { "\($0.type.traits.name) for \($0.suffix)" }.joined(separator: ", ") + " in every layer)" }
        if target == .q4_k || mix != nil { s += "; widths not whole 256-blocks: Q4_K → IQ4_NL, Q6_K → Q8_0" }
        if target == .q6_k { s += "; widths not whole 256-blocks → Q8_0" }
        if gptq { s += "; GPTQ error feedback with the imatrix Hessians" }
        if target.traits.isQuantized {
            s += referenceQuantizers ? "; reference quantizers" :
                (imatrix != nil ? "; importance-weighted quantizers with imatrix \((imatrix!.path as NSString).lastPathComponent)"
                                : "; importance-weighted quantizers (default weighting)")
        }
        return s
    }
}

public struct ConversionProgress: Sendable {
    public var tensorsDone: Int
    public var tensorsTotal: Int
    public var bytesDone: Int
    public var bytesTotal: Int
    public var currentTensor: String
}

public struct ConversionSummary: Sendable {
    public var inputBytes: Int = 0
    public var outputBytes: Int = 0
    public var parameters: Int = 0
    public var tensorBytes: Int = 0
    public var countsByType: [String: Int] = [:]
    public var rulesByTensor: [(String, String)] = []
    public var skipped: [String] = []
    public var seconds: Double = 0
    public var policy: String = ""
    /// Parameters and bytes of the decoder blocks' 2-D weights ("layers.N." tensors, norms excluded).
    public var blockParameters: Int = 0
    public var blockTensorBytes: Int = 0

    public var bitsPerWeight: Double { parameters == 0 ? 0 : Double(tensorBytes * 8) / Double(parameters) }
    /// Bits per weight of the decoder blocks' 2-D weights (what the 4-bit targets are stated in).
    public var blockBitsPerWeight: Double { blockParameters == 0 ? 0 : Double(blockTensorBytes * 8) / Double(blockParameters) }
}

public enum Converter {
    /// Tensor name prefixes that are not part of the text model and are not written.
    static let skippedPrefixes = ["vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector."]

    /// Convert the checkpoint in `input` (HF directory; an NLA AR directory also has
    /// value_head.safetensors and nla_meta.yaml) to `output` (.gguf) with `policy`.
    public static func convert(input: String, output: String, policy: QuantizePolicy, names: TensorNaming = .hf,
                               progress: ((ConversionProgress) -> Void)? = nil,
                               writerCreated: ((GGUFWriter) -> Void)? = nil) throws -> ConversionSummary {
        let start = Date()
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: input, isDirectory: &isDir), isDir.boolValue else {
            throw ModelError.input("\(input): not a model directory")
        }
        guard output.hasSuffix(".gguf") else { throw ModelError.input("\(output): the output file must end in .gguf") }
        let files = try ModelFiles.openDirectory(input)
        // Validate the config (and that the tensors form a Gemma 3 model) before writing anything.
        let config = try Gemma3Config.decode(files.configJSON, file: files.configName)
        try checkRequiredTensors(files: files, config: config)
        removeStaleTemporaries(of: output)
        var policy = policy
        policy.numLayers = config.numHiddenLayers
        var llamaMetadata: [(String, GGUFValue)] = []
        if names == .llamaCpp {
            guard let tok = files.files["tokenizer.json"] else {
                throw ModelError.input("\(files.fileName("tokenizer.json")): missing (--names llama.cpp writes the tokenizer as tokenizer.ggml.*)")
            }
            llamaMetadata = try LlamaCppGGUF.metadata(config: config, configName: files.configName, tokenizerJSON: tok,
                                                      tokenizerName: files.fileName("tokenizer.json"),
                                                      tokenizerConfig: files.files["tokenizer_config.json"], fileType: policy.target)
        }
        var summary = ConversionSummary()
        summary.policy = policy.summary

        let writer = try GGUFWriter(path: output)
        writerCreated?(writer)
        try writer.addMetadata(GGUFKeys.architecture, value: .string("gemma3"))
        try writer.addMetadata(GGUFKeys.name, value: .string((input as NSString).lastPathComponent))
        try writer.addMetadata(GGUFKeys.fileType, value: .string(policy.schemeName))
        try writer.addMetadata(GGUFKeys.policy, value: .string(policy.summary))
        for (k, v) in llamaMetadata { try writer.addMetadata(k, value: v) }
        try writer.addMetadata(GGUFKeys.filePrefix + "config.json", value: .string(String(decoding: files.configJSON, as: UTF8.self)))
        for name in GGUFKeys.embeddedFiles where name != "config.json" {
            if let d = files.files[name] {
                guard let s = String(data: d, encoding: .utf8) else {
                    throw ModelError.input("\(files.fileName(name)): not valid UTF-8")
                }
                try writer.addMetadata(GGUFKeys.filePrefix + name, value: .string(s))
            }
        }

        var plan: [(entry: TensorEntry, type: QuantType, importance: [Float]?, shift: Float, hessian: String?)] = []
        for name in files.tensors.keys.sorted() {
            let e = files.tensors[name]!
            if skippedPrefixes.contains(where: { name.hasPrefix($0) }) { summary.skipped.append(name); continue }
            guard let srcType = e.type, !srcType.traits.isQuantized else {
                throw ModelError.weights(file: e.file.path, reason: "tensor '\(name)' has dtype \(e.typeName); expected F32, F16 or BF16")
            }
            var (type, rule) = policy.decide(name: name, shape: e.shape)
            if type.traits.isQuantized, let w = e.shape.last, w % type.traits.blockSize != 0 {
                throw ModelError.weights(file: e.file.path,
                    reason: "tensor '\(name)' has row width \(w), not a multiple of the \(type.traits.name) block size \(type.traits.blockSize)")
            }
            var outName = name
            var shift: Float = 0
            if names == .llamaCpp {
                if name.hasSuffix("lm_head.weight") && config.tieWordEmbeddings {
                    summary.skipped.append(name)  // llama.cpp's converter never writes a tied head
                    continue
                }
                guard let ll = LlamaCppGGUF.llamaName(hf: name) else {
                    throw ModelError.weights(file: e.file.path, reason: "tensor '\(name)' has no llama.cpp name (--names llama.cpp writes plain Gemma 3 models only)")
                }
                outName = ll
                if LlamaCppGGUF.isShiftedNorm(hf: name) {
                    shift = 1
                    type = .f32
                    rule = "norm → F32 as (1 + w) (llama.cpp)"
                }
            }
                        let imp = type.traits.isQuantized ? try policy.imatrix?.importance(for: name, width: e.shape.last ?? 1) : nil
            var hessianOwner: String?
            if policy.gptq, type.traits.isQuantized, type.traits.quantizeRowImportance != nil, e.shape.count == 2,
               let h = try policy.imatrix?.hessian(for: name, width: e.shape[1]) {
                hessianOwner = h.owner
                rule += "; GPTQ"
            }
            try writer.addTensor(name: outName, shape: e.shape, type: type)
            plan.append((e, type, imp, shift, hessianOwner))
            if e.shape.count == 2 && PolicyNames.isBlockWeight(name) {
                summary.blockParameters += e.elementCount
                summary.blockTensorBytes += try type.byteCount(shape: e.shape)
            }
            summary.rulesByTensor.append((name, rule))
            summary.countsByType[type.traits.name, default: 0] += 1
            summary.inputBytes += e.byteCount
            summary.parameters += e.elementCount
        }

        var done = 0
        var bytesDone = 0
        let total = summary.inputBytes
        var factor: (owner: String, u: [Float])?  // the last Hessian factor (k/v and up reuse q's and gate's)
        let size = try writer.write { tensor, dst in
            let item = plan[done]
            progress?(ConversionProgress(tensorsDone: done, tensorsTotal: plan.count, bytesDone: bytesDone,
                                         bytesTotal: total, currentTensor: tensor.name))
            if let owner = item.hessian, let im = policy.imatrix {
                let cols = item.entry.shape[1]
                if factor?.owner != owner {
                    let h = try im.hessian(for: item.entry.name, width: cols)!
                    do { factor = (owner, try GPTQ.inverseCholeskyUpper(h.values, n: cols)) } catch {
                        throw ModelError.input("\(im.path): Hessian of '\(owner)': \(error)")
                    }
                }
                try produceGPTQ(item.entry, as: tensor.type, into: dst, u: factor!.u)
            } else {
                try produce(item.entry, as: tensor.type, adding: item.shift, into: dst, importance: item.importance,
                            search: !policy.referenceQuantizers)
            }
            summary.tensorBytes += tensor.byteCount
            done += 1
            bytesDone += item.entry.byteCount
        }
        progress?(ConversionProgress(tensorsDone: done, tensorsTotal: plan.count, bytesDone: bytesDone,
                                     bytesTotal: total, currentTensor: ""))
        summary.outputBytes = size
        summary.seconds = Date().timeIntervalSince(start)
        return summary
    }

    /// Every tensor the Gemma 3 architecture needs, with the shape config.json implies (the same names
    /// and shapes `Gemma3Model` loads), so that a checkpoint missing one is refused before the output
    /// file is created rather than producing a GGUF that `nla` then refuses.
    static func checkRequiredTensors(files: ModelFiles, config cfg: Gemma3Config) throws {
        var names = try WeightNames(tensors: files.tensors, source: files.path)
        let d = cfg.hiddenSize, hd = cfg.headDim
        _ = try names.tensor("embed_tokens.weight", shape: [cfg.vocabSize, d])
        for i in 0..<cfg.numHiddenLayers {
            let p = "layers.\(i)."
            for (name, shape) in [("self_attn.q_proj.weight", [cfg.qDim, d]), ("self_attn.k_proj.weight", [cfg.kvDim, d]),
                                  ("self_attn.v_proj.weight", [cfg.kvDim, d]), ("self_attn.o_proj.weight", [d, cfg.qDim]),
                                  ("mlp.gate_proj.weight", [cfg.intermediateSize, d]), ("mlp.up_proj.weight", [cfg.intermediateSize, d]),
                                  ("mlp.down_proj.weight", [d, cfg.intermediateSize]),
                                  ("input_layernorm.weight", [d]), ("post_attention_layernorm.weight", [d]),
                                  ("pre_feedforward_layernorm.weight", [d]), ("post_feedforward_layernorm.weight", [d]),
                                  ("self_attn.q_norm.weight", [hd]), ("self_attn.k_norm.weight", [hd])] {
                _ = try names.tensor(p + name, shape: shape)
            }
        }
        if files.tensors["value_head.weight"] != nil {
            // NLA AR: no final norm or lm_head needed (the released ARs store neither).
            _ = try names.optional([names.prefix + "norm.weight"], shape: [d])
        } else {
            _ = try names.tensor("norm.weight", shape: [d])
            let head = try names.optional(Gemma3Model.lmHeadNames, shape: [cfg.vocabSize, d])
            if head == nil && !cfg.tieWordEmbeddings {
                throw ModelError.weights(file: files.path, reason: "missing tensor 'lm_head.weight' and tie_word_embeddings is false")
            }
        }
    }

    /// Remove `<output>.tmp-<pid>-<n>` files left by a writer process that no longer exists (a
    /// `quantize` killed with SIGKILL cannot clean up; SIGINT/SIGTERM/SIGHUP already do). Files of a
    /// live process (another `quantize` writing the same path) are left alone.
    /// Returns the removed paths.
    @discardableResult
    public static func removeStaleTemporaries(of output: String) -> [String] {
        let dir = (output as NSString).deletingLastPathComponent
        let base = (output as NSString).lastPathComponent + ".tmp-"
        let listDir = dir.isEmpty ? "." : dir
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: listDir) else { return [] }
        var removed: [String] = []
        for name in entries where name.hasPrefix(base) {
            let parts = name.dropFirst(base.count).split(separator: "-", omittingEmptySubsequences: false)
            guard parts.count == 2, let pid = Int32(parts[0]), pid > 0, UInt32(parts[1]) != nil else { continue }
            guard pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            let path = (listDir as NSString).appendingPathComponent(name)
            if unlink(path) == 0 { removed.append(path) }
        }
        return removed
    }

    /// Quantize one 2-D tensor with GPTQ error feedback (whole tensor in f32; threaded over rows).
    static func produceGPTQ(_ e: TensorEntry, as type: QuantType, into dst: UnsafeMutableRawBufferPointer, u: [Float]) throws {
        let rows = e.shape[0], cols = e.shape[1]
        let w = UnsafeMutablePointer<Float>.allocate(capacity: rows * cols)
        defer { w.deallocate() }
        e.type!.traits.dequantizeRow(e.data, w, rows * cols)
        for i in 0..<(rows * cols) where !w[i].isFinite {
            throw ModelError.weights(file: e.file.path, reason: "tensor '\(e.name)' contains NaN or Inf (row \(i / cols))")
        }
        do { try GPTQ.quantize(w, rows: rows, cols: cols, type: type, u: u, into: dst.baseAddress!) } catch {
            throw ModelError.weights(file: e.file.path, reason: "tensor '\(e.name)': \(error)")
        }
        e.file.dropPages(e.data, count: e.byteCount)
    }

    /// Convert one tensor to `type` into `dst`, in chunks of rows (threaded over chunks).
    /// `shift` is added to every value in f32 first (llama.cpp's (1 + w) norms).
    static func produce(_ e: TensorEntry, as type: QuantType, adding shift: Float = 0, into dst: UnsafeMutableRawBufferPointer,
                        importance: [Float]? = nil, search: Bool = false) throws {
        let src = e.type!
        let width = e.shape.last ?? 1
        let rows = e.elementCount / max(width, 1)
        let srcRowBytes = width * src.traits.bytesPerBlock
        let dstRowBytes = try type.rowByteCount(width: width)
        if src == type && shift == 0 {
            dst.baseAddress!.copyMemory(from: e.data, byteCount: e.byteCount)
            e.file.dropPages(e.data, count: e.byteCount)
            return
        }
        let chunk = max(1, min(rows, 65_536 / max(width, 1)))
        let chunks = (rows + chunk - 1) / chunk
        let dstAddress = Int(bitPattern: dst.baseAddress!)  // raw pointers are not Sendable
        let failure = LockedError()
        let weighted = search ? type.traits.quantizeRowImportance : nil
        let imp = importance
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            let r0 = c * chunk, r1 = min(rows, r0 + chunk)
            let dstBase = UnsafeMutableRawPointer(bitPattern: dstAddress)!
            let n = (r1 - r0) * width
            let tmp = UnsafeMutablePointer<Float>.allocate(capacity: n)
            defer { tmp.deallocate() }
            src.traits.dequantizeRow(e.data + r0 * srcRowBytes, tmp, n)
            if shift != 0 { for i in 0..<n { tmp[i] += shift } }
            for i in 0..<n where !tmp[i].isFinite {
                failure.set(ModelError.weights(file: e.file.path, reason: "tensor '\(e.name)' contains NaN or Inf (row \(r0 + i / width))"))
                return
            }
            if let f = weighted {
                imp.withUnsafeBufferPointerOrNil { ip in
                    for r in 0..<(r1 - r0) { f(tmp + r * width, dstBase + (r0 + r) * dstRowBytes, width, ip) }
                }
            } else {
                for r in 0..<(r1 - r0) {
                    type.traits.quantizeRowReference(tmp + r * width, dstBase + (r0 + r) * dstRowBytes, width)
                }
            }
            e.file.dropPages(e.data + r0 * srcRowBytes, count: (r1 - r0) * srcRowBytes)
        }
        if let err = failure.error { throw err }
    }
}

/// First error recorded by concurrent workers.
final class LockedError: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var error: Error?
    func set(_ e: Error) { lock.lock(); if error == nil { error = e }; lock.unlock() }
}

enum PolicyNames {
    /// A decoder block's weight ("…layers.N.…").
    static func isBlockWeight(_ name: String) -> Bool { name.contains("layers.") && !name.hasPrefix("value_head.") }
}

extension Optional where Wrapped == [Float] {
    func withUnsafeBufferPointerOrNil<R>(_ body: (UnsafePointer<Float>?) -> R) -> R {
        switch self {
        case .some(let a): return a.withUnsafeBufferPointer { body($0.baseAddress) }
        case .none: return body(nil)
        }
    }
}
