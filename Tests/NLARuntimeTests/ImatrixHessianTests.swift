// `nla imatrix --hessian` on a synthetic checkpoint: the Hessians' diagonals are the imatrix columns (two
// independent accumulations: f64 sums of x² and the sgemm of Xᵀ X), they are symmetric and positive definite once damped
// (the GPTQ factor exists), the file round-trips, k/v_proj share q_proj's input and up_proj gate_proj's, and
// collecting Hessians leaves the imatrix columns unchanged.

import Foundation
import Quant
import Testing
@testable import NLARuntime
import NLATestSupport

@Suite struct ImatrixHessianTests {
    @Test func hessianDiagonalIsTheImatrixAndTheFileRoundTrips() throws {
        try withSyntheticCheckpoint(layout: .flat(dtype: .f32)) { dir in
            let model = try Gemma3Model(directory: dir)
            let spec = SyntheticSpec()
            let withH = ImatrixCollector(model: model, hessian: true)
            let plain = ImatrixCollector(model: model)
            for ids in [[1, 5, 7, 3, 2, 9, 4], [2, 4, 4, 8, 1], [3, 3, 6]] {
                try withH.observe(ids: ids.map { $0 % spec.vocabSize })
                try plain.observe(ids: ids.map { $0 % spec.vocabSize })
            }
            #expect(withH.means == plain.means)
            let out = dir + "/h.imatrix.safetensors", outPlain = dir + "/p.imatrix.safetensors"
            try withH.write(to: out, textSHA256: "test")
            try plain.write(to: outPlain, textSHA256: "test")
            #expect(try Imatrix(path: outPlain).hessians.isEmpty)
            let im = try Imatrix(path: out)
            #expect(im.hessians.count == 4 * spec.numLayers)
            let p = model.weightPrefix
            var worstDiag: Float = 0
            for i in 0..<spec.numLayers {
                for (w, owner) in [("self_attn.q_proj", "self_attn.q_proj"), ("self_attn.k_proj", "self_attn.q_proj"),
                                   ("self_attn.v_proj", "self_attn.q_proj"), ("self_attn.o_proj", "self_attn.o_proj"),
                                   ("mlp.gate_proj", "mlp.gate_proj"), ("mlp.up_proj", "mlp.gate_proj"), ("mlp.down_proj", "mlp.down_proj")] {
                    let name = "\(p)layers.\(i).\(w).weight"
                    let cols = im.columns[name]!.count
                    guard let h = try im.hessian(for: name, width: cols) else { Issue.record("no Hessian for \(name)"); continue }
                    #expect(h.owner == "\(p)layers.\(i).\(owner).weight")
                    // The owner's and the sharer's imatrix columns agree (same input), and equal diag H.
                    let col = im.columns[name]!
                    for j in 0..<cols {
                        let d = h.values[j * cols + j]
                        worstDiag = max(worstDiag, abs(d - col[j]) / max(col[j], 1e-30))
                        // Symmetric up to the f32 summation order of the two triangles.
                        for k in 0..<j where abs(h.values[j * cols + k] - h.values[k * cols + j])
                            > 1e-5 * (h.values[j * cols + j] * h.values[k * cols + k]).squareRoot() {
                            Issue.record("\(name): H not symmetric at (\(j), \(k))"); break
                        }
                    }
                    _ = try GPTQ.inverseCholeskyUpper(h.values, n: cols)
                    #expect(throws: ModelError.self) { try im.hessian(for: name, width: cols + 1) }
                }
            }
            print("[imatrix] max relative |diag H − imatrix| = \(worstDiag)")
            #expect(worstDiag < 1e-4)
        }
    }
}
