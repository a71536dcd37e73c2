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
//   - every other 2-D weight takes the requested type.
//   A width that is not a multiple of the block size is an error naming the tensor.

import Foundation
import Quant
import SIMDKernels

public struct QuantizePolicy: Sendable {
    public let target: QuantType
    /// Type of the embedding / output projection when the target is a block type.
    public var embeddingBlockType: QuantType = .q8_0

    public init(target: QuantType) { self.target = target }

    /// The output type of a tensor and the rule that chose it.
    public func decide(name: String, shape: [Int]) -> (type: QuantType, rule: String) {
        if shape.count < 2 { return (.f32, "1-D/norm → F32") }
        if name.hasPrefix("value_head.") { return (.f32, "AR value head → F32") }
        let isEmbedding = name.hasSuffix("embed_tokens.weight") || name.hasSuffix("lm_head.weight")
        if isEmbedding && target.traits.isQuantized { return (embeddingBlockType, "embedding/output → \(embeddingBlockType.traits.name)") }
        return (target, "2-D weight → \(target.traits.name)")
    }

    public var summary: String {
        "norms and 1-D tensors F32; value_head F32; embedding/lm_head " +
        (target.traits.isQuantized ? embeddingBlockType.traits.name : target.traits.name) +
        "; other 2-D weights " + target.traits.name
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

    public var bitsPerWeight: Double { parameters == 0 ? 0 : Double(tensorBytes * 8) / Double(parameters) }
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
        try writer.addMetadata(GGUFKeys.fileType, value: .string(policy.target.traits.name))
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

        var plan: [(entry: TensorEntry, type: QuantType, shift: Float)] = []
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
            try writer.addTensor(name: outName, shape: e.shape, type: type)
            plan.append((e, type, shift))
            summary.rulesByTensor.append((name, rule))
            summary.countsByType[type.traits.name, default: 0] += 1
            summary.inputBytes += e.byteCount
            summary.parameters += e.elementCount
        }

        var done = 0
        var bytesDone = 0
        let total = summary.inputBytes
        let size = try writer.write { tensor, dst in
            let item = plan[done]
            progress?(ConversionProgress(tensorsDone: done, tensorsTotal: plan.count, bytesDone: bytesDone,
                                         bytesTotal: total, currentTensor: tensor.name))
            try produce(item.entry, as: tensor.type, adding: item.shift, into: dst)
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

    /// Convert one tensor to `type` into `dst`, in chunks of rows (threaded over chunks).
    /// `shift` is added to every value in f32 first (llama.cpp's (1 + w) norms).
    static func produce(_ e: TensorEntry, as type: QuantType, adding shift: Float = 0, into dst: UnsafeMutableRawBufferPointer) throws {
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
            for r in 0..<(r1 - r0) {
                type.traits.quantizeRowReference(tmp + r * width, dstBase + (r0 + r) * dstRowBytes, width)
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
