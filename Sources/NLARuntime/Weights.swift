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

/// An f32 matrix [rows, cols] in row-major order: either a zero-copy view into an f32 tensor of the
/// mapped checkpoint, or an owned widened copy of a bf16/f16 tensor.
public final class FloatMatrix: @unchecked Sendable {
    public let rows: Int
    public let cols: Int
    public let pointer: UnsafePointer<Float>
    private let owned: UnsafeMutablePointer<Float>?
    private let keepAlive: AnyObject?

    public init(view: TensorView, rows: Int, cols: Int) {
        self.rows = rows
        self.cols = cols
        if view.dtype == .f32 && Int(bitPattern: view.data) % MemoryLayout<Float>.alignment == 0 {
            pointer = view.data.assumingMemoryBound(to: Float.self)
            owned = nil
            keepAlive = view.file
        } else {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: rows * cols)
            if view.dtype == .bf16 {
                Kernels.bf16ToFloat(view.data.assumingMemoryBound(to: UInt16.self), p, count: rows * cols)
            } else {
                widenToFloat(view.dtype, view.data, p, count: rows * cols)
            }
            pointer = UnsafePointer(p)
            owned = p
            keepAlive = nil
        }
    }

    public init(copying values: [Float], rows: Int, cols: Int) {
        precondition(values.count == rows * cols)
        let p = UnsafeMutablePointer<Float>.allocate(capacity: rows * cols)
        p.initialize(from: values, count: values.count)
        self.rows = rows; self.cols = cols
        pointer = UnsafePointer(p); owned = p; keepAlive = nil
    }

    deinit { owned?.deallocate() }

    public func row(_ r: Int) -> UnsafePointer<Float> { pointer + r * cols }
}

import SIMDKernels

/// A 1-D weight vector kept as f32 values.
public typealias FloatVector = [Float]

struct LayerWeights {
    var qProj, kProj, vProj, oProj: FloatMatrix
    var gateProj, upProj, downProj: FloatMatrix
    /// Norm weights already in Gemma's (1 + w) form, computed in f32 as transformers does.
    var inputNorm, postAttentionNorm, preFeedforwardNorm, postFeedforwardNorm: FloatVector
    var qNorm, kNorm: FloatVector
}

/// Resolves checkpoint tensor names for one of the accepted layouts.
struct WeightNames {
    let checkpoint: SafetensorsCheckpoint
    let prefix: String  // e.g. "model.", "language_model.model.", "model.language_model."
    var used: Set<String> = []

    static let knownPrefixes = ["model.", "language_model.model.", "model.language_model."]
    static let ignoredPrefixes = ["vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector."]

    init(checkpoint: SafetensorsCheckpoint) throws {
        self.checkpoint = checkpoint
        let names = checkpoint.tensors.keys
        guard let p = Self.knownPrefixes.sorted(by: { $0.count > $1.count }).first(where: { names.contains($0 + "embed_tokens.weight") }) else {
            throw ModelError.weights(file: checkpoint.directory,
                reason: "no embedding tensor found (looked for \(Self.knownPrefixes.map { $0 + "embed_tokens.weight" }.joined(separator: ", ")))")
        }
        prefix = p
    }

    mutating func tensor(_ name: String, shape: [Int]) throws -> TensorView {
        let full = prefix + name
        guard let t = checkpoint.tensors[full] else {
            throw ModelError.weights(file: checkpoint.directory, reason: "missing tensor '\(full)'")
        }
        try check(t, shape: shape)
        used.insert(full)
        return t
    }

    mutating func optional(_ fullNames: [String], shape: [Int]) throws -> TensorView? {
        for n in fullNames {
            if let t = checkpoint.tensors[n] {
                try check(t, shape: shape)
                used.insert(n)
                return t
            }
        }
        return nil
    }

    private func check(_ t: TensorView, shape: [Int]) throws {
        guard t.shape == shape else {
            throw ModelError.weights(file: t.file.path, reason: "tensor '\(t.name)' has shape \(t.shape), config expects \(shape)")
        }
        guard t.dtype.isFloat else {
            throw ModelError.weights(file: t.file.path, reason: "tensor '\(t.name)' has dtype \(t.dtype.rawValue), expected F32, F16 or BF16")
        }
    }

    /// Tensors present in the checkpoint that no module consumed (vision tensors excluded).
    var unused: [String] {
        checkpoint.tensors.keys.filter { n in
            !used.contains(n) && !Self.ignoredPrefixes.contains(where: { n.hasPrefix($0) })
        }.sorted()
    }
}

func normPlusOne(_ t: TensorView) -> FloatVector {
    t.toFloatArray().map { 1 + $0 }
}
