// Checkpoint → Gemma 3 weights: the single place where checkpoint names are mapped to modules,
// shapes are checked against the config, tied embeddings are resolved and unused tensors reported.
//
// Accepted name prefixes (ref: transformers Gemma3ForCausalLM / Gemma3ForConditionalGeneration
// state dicts across 4.x and 5.x):
//   model.layers.N.…                   (text-only Gemma3ForCausalLM)
//   language_model.model.layers.N.…    (multimodal wrapper, transformers < 4.52)
//   model.language_model.layers.N.…    (multimodal wrapper, transformers >= 4.52)
// `vision_tower.*` and `multi_modal_projector.*` are ignored; `lm_head.weight` (or its prefixed
// variants) is optional: when absent the embedding matrix is used (tied).

import Foundation
import Quant
import SIMDKernels

/// A weight matrix [rows = out, cols = in], row-major, as the forward pass consumes it:
/// - `.f32`: f32 values, either a zero-copy view into an f32 tensor of the mapped file or an owned copy
///   widened once from bf16/f16 (the reference path);
/// - `.q8_0` / `.q4_0`: the blocks, used in place from the mapped GGUF file.
public final class WeightMatrix: @unchecked Sendable {
    public let rows: Int
    public let cols: Int
    public let type: QuantType
    /// The values, for `.f32`.
    public let floats: UnsafePointer<Float>?
    /// The blocks, for quantized types; `rowBytes` bytes per row.
    public let blocks: UnsafeRawPointer?
    public let rowBytes: Int
    /// The blocks re-laid in 16-row tiles for the AVX-512 VNNI / AVX2 kernels (nil on other CPUs, for other
    /// types or shapes). When present the kernels read only this copy.
    public let packed: PackedWeights?
    private let owned: UnsafeMutablePointer<Float>?
    private let keepAlive: AnyObject?

    init(entry: TensorEntry, rows: Int, cols: Int) {
        let type = entry.type!
        self.rows = rows
        self.cols = cols
        if type.traits.isQuantized {
            self.type = type
            floats = nil
            blocks = entry.data
            rowBytes = entry.byteCount / rows
            owned = nil
            keepAlive = entry.file
            if GemvActivation.modelTypes.contains(type),
               let p = PackCache.packed(entry, type: type, rows: rows, cols: cols, consumed: releasePages) {
                // Mapped from the pack cache, or packed now: then the mapped blocks are not read again and
                // their pages are given back slice by slice as they are packed (they fault in again from
                // the file if a slow path ever reads them).
                packed = p
            } else {
                packed = nil
            }
        } else if type == .f32 && Int(bitPattern: entry.data) % MemoryLayout<Float>.alignment == 0 {
            self.type = .f32
            floats = entry.data.assumingMemoryBound(to: Float.self)
            blocks = nil; rowBytes = cols * 4
            packed = nil
            owned = nil
            keepAlive = entry.file
        } else {
            self.type = .f32
            let p = UnsafeMutablePointer<Float>.allocate(capacity: rows * cols)
            if type == .bf16 {
                Kernels.bf16ToFloat(entry.data.assumingMemoryBound(to: UInt16.self), p, count: rows * cols)
            } else {
                type.traits.dequantizeRow(entry.data, p, rows * cols)
            }
            floats = UnsafePointer(p)
            blocks = nil; rowBytes = cols * 4
            packed = nil
            owned = p
            keepAlive = nil
        }
    }

    deinit { owned?.deallocate() }

    /// Decode row `r` to f32 (any type).
    func decodeRow(_ r: Int, into dst: UnsafeMutablePointer<Float>) {
        if let f = floats { dst.update(from: f + r * cols, count: cols) } else if let p = packed {
            p.dequantizeRow(r, into: dst)
        } else {
            type.traits.dequantizeRow(blocks! + r * rowBytes, dst, cols)
        }
    }
}

/// Drop the resident pages of a read-only file mapping inside [p, p + byteCount) (whole pages only).
func releasePages(_ p: UnsafeRawPointer, byteCount: Int) {
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    let start = (Int(bitPattern: p) + page - 1) / page * page
    let end = (Int(bitPattern: p) + byteCount) / page * page
    guard end > start, let base = UnsafeMutableRawPointer(bitPattern: start) else { return }
    _ = madvise(base, end - start, Int32(MADV_DONTNEED))
}

/// A 1-D weight vector kept as f32 values.
public typealias FloatVector = [Float]

struct LayerWeights {
    var qProj, kProj, vProj, oProj: WeightMatrix
    var gateProj, upProj, downProj: WeightMatrix
    /// Norm weights already in Gemma's (1 + w) form, computed in f32 as transformers does.
    var inputNorm, postAttentionNorm, preFeedforwardNorm, postFeedforwardNorm: FloatVector
    var qNorm, kNorm: FloatVector
}

/// Resolves checkpoint tensor names for one of the accepted layouts.
struct WeightNames {
    let tensors: [String: TensorEntry]
    /// The checkpoint directory or model file, for messages.
    let source: String
    let prefix: String  // e.g. "model.", "language_model.model.", "model.language_model."
    var used: Set<String> = []

    static let knownPrefixes = ["model.", "language_model.model.", "model.language_model."]
    static let ignoredPrefixes = ["vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector."]

    init(tensors: [String: TensorEntry], source: String) throws {
        self.tensors = tensors
        self.source = source
        let names = tensors.keys
        guard let p = Self.knownPrefixes.sorted(by: { $0.count > $1.count }).first(where: { names.contains($0 + "embed_tokens.weight") }) else {
            throw ModelError.weights(file: source,
                reason: "no embedding tensor found (looked for \(Self.knownPrefixes.map { $0 + "embed_tokens.weight" }.joined(separator: ", ")))")
        }
        prefix = p
    }

    mutating func tensor(_ name: String, shape: [Int]) throws -> TensorEntry {
        let full = prefix + name
        guard let t = tensors[full] else {
            throw ModelError.weights(file: source, reason: "missing tensor '\(full)'")
        }
        try check(t, shape: shape)
        used.insert(full)
        return t
    }

    mutating func optional(_ fullNames: [String], shape: [Int]) throws -> TensorEntry? {
        for n in fullNames {
            if let t = tensors[n] {
                try check(t, shape: shape)
                used.insert(n)
                return t
            }
        }
        return nil
    }

    private func check(_ t: TensorEntry, shape: [Int]) throws {
        guard t.shape == shape else {
            throw ModelError.weights(file: t.file.path, reason: "tensor '\(t.name)' has shape \(t.shape), config expects \(shape)")
        }
        guard let type = t.type else {
            throw ModelError.weights(file: t.file.path, reason: "tensor '\(t.name)' has dtype \(t.typeName), expected F32, F16 or BF16 (or Q8_0/Q4_0 in GGUF)")
        }
        if type.traits.isQuantized && shape.count != 2 {
            throw ModelError.weights(file: t.file.path, reason: "tensor '\(t.name)' is \(t.typeName) but only 2-D weights may be quantized")
        }
    }

    /// Tensors present in the checkpoint that no module consumed (vision tensors excluded).
    var unused: [String] {
        tensors.keys.filter { n in
            !used.contains(n) && !Self.ignoredPrefixes.contains(where: { n.hasPrefix($0) })
        }.sorted()
    }
}

/// Gemma's norm weights in (1 + w) form, computed in f32 as transformers does.
func normPlusOne(_ t: TensorEntry) -> FloatVector {
    var v = [Float](repeating: 0, count: t.elementCount)
    v.withUnsafeMutableBufferPointer { t.type!.traits.dequantizeRow(t.data, $0.baseAddress!, t.elementCount) }
    return v.map { 1 + $0 }
}
