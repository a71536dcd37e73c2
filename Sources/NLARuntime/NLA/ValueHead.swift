// The AR value head: Linear(d, d, bias=False), y = W·h with W [out = d, in = d] (spec §4.1), stored as
// `value_head.safetensors` (tensor `weight`) next to an HF AR, or `value_head.weight` in a `.gguf`.
// Uses the same WeightMatrix / QuantLinear math as the decoder's linears, so a quantized head works too
// (a bf16 head is widened to f32 once; an f32 head is used in place).

import Foundation
import SIMDKernels

public final class ValueHead: @unchecked Sendable {
    public let d: Int
    let weight: WeightMatrix
    private let scratch: ActivationScratch
    private let lock = NSLock()

    public static let tensorName = "value_head.weight"

    /// The head of a model's files; `model` names the model in messages.
    public init(files: ModelFiles, d: Int) throws {
        guard let entry = files.tensors[Self.tensorName] else { throw NLAError.valueHeadMissing(model: files.path) }
        guard entry.shape == [d, d] else { throw NLAError.valueHeadShape(model: files.path, shape: entry.shape, d: d) }
        guard let type = entry.type, type == .f32 || type == .f16 || type == .bf16 || type.traits.isQuantized else {
            throw NLAError.valueHeadType(model: files.path, type: entry.typeName)
        }
        self.d = d
        weight = WeightMatrix(entry: entry, rows: d, cols: d)
        scratch = ActivationScratch(rows: 1, maxCols: d)
    }

    /// Storage type of the head ("f32", "q8_0", …) — bf16/f16 heads are widened to f32 on load.
    public var typeName: String { "\(weight.type)" }

    /// pred = W·h.
    public func apply(_ h: [Float]) -> [Float] {
        precondition(h.count == d)
        var y = [Float](repeating: 0, count: d)
        h.withUnsafeBufferPointer { hp in
            y.withUnsafeMutableBufferPointer { yp in
                if let f = weight.floats {
                    Kernels.matmulNT(hp.baseAddress!, f, yp.baseAddress!, m: 1, n: d, k: d)
                } else {
                    lock.lock(); defer { lock.unlock() }
                    QuantLinear.apply(weight, hp.baseAddress!, rows: 1, into: yp.baseAddress!, scratch: scratch)
                }
            }
        }
        return y
    }
}
