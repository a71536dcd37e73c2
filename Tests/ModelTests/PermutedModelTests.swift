// The permuted test model and demo AR (scripts/permute-model) compute the same function as the originals:
// logits and every hidden state (permuted) within f32 tolerance, AR vectors equal. Runs when the permuted
// copies exist (they are made by `scripts/permute-model`, which also verifies itself); records nothing
// otherwise, since they are an optional measurement asset, not a build product of `make test-model`.

import Foundation
import Testing
import NLATestSupport
@testable import NLARuntime

enum PermutedModels {
    static var cache: String { TestPaths.cache }
    static var model: String { cache + "/models/gemma-3-270m-permuted" }
    static var ar: String { cache + "/models/nla-demo-permuted/ar" }
    static func exists(_ dir: String) -> Bool { FileManager.default.fileExists(atPath: dir + "/model.safetensors") }
}

@Suite(.serialized) struct PermutedModelTests {
    @Test func permutedModelHasTheSameLogits() throws {
        guard PermutedModels.exists(PermutedModels.model) else {
            print("[permuted] \(PermutedModels.model) missing: run scripts/permute-model (test skipped)")
            return
        }
        let ref = try TestModel.load()
        let perm = try LanguageModel(directory: PermutedModels.model)
        let ids = ref.tokenizer.encode("The lighthouse keeper recorded the weather four times a day.")
        #expect(perm.tokenizer.encode("The lighthouse keeper recorded the weather four times a day.") == ids)
        let a = try ref.model.makeSession(capacity: ids.count).forwardHiddenStates(ids: ids, logits: .last)
        let b = try perm.model.makeSession(capacity: ids.count).forwardHiddenStates(ids: ids, logits: .last)
        let la = a.logits, lb = b.logits
        #expect(la.count == lb.count && !la.isEmpty)
        let amax = la.map(abs).max()!
        var worst: Float = 0
        for i in la.indices { worst = max(worst, abs(la[i] - lb[i])) }
        print("[permuted] last logits max |Δ| \(worst) (max |logit| \(amax))")
        #expect(worst <= 1e-4 * amax)
        #expect(la.firstIndex(of: la.max()!) == lb.firstIndex(of: lb.max()!))
        // The hidden states are a permutation of each other: same sorted values per row, same norms.
        let d = ref.config.hiddenSize
        for (x, y) in zip(a.states, b.states) {
            for r in 0..<ids.count {
                let xs = x[(r * d)..<((r + 1) * d)].sorted(), ys = y[(r * d)..<((r + 1) * d)].sorted()
                let m = xs.map(abs).max()!
                var e: Float = 0
                for j in 0..<d { e = max(e, abs(xs[j] - ys[j])) }
                #expect(e <= 1e-4 * m, "hidden state row \(r): sorted values differ by \(e)")
            }
        }
    }

    @Test func permutedARReconstructsTheSameVectors() throws {
        guard PermutedModels.exists(PermutedModels.ar) else {
            print("[permuted] \(PermutedModels.ar) missing: run scripts/permute-model (test skipped)")
            return
        }
        let orig = try ActivationReconstructor(path: NLADemoPair.arDir)
        let perm = try ActivationReconstructor(path: PermutedModels.ar)
        for text in ["The text is about a recipe for bread.", "A list of board games for four players."] {
            let u = try orig.reconstruct(text), v = try perm.reconstruct(text)
            #expect(u.count == v.count)
            let m = u.map(abs).max()!
            var e: Float = 0
            var dot = 0.0, nu = 0.0, nv = 0.0
            for i in u.indices {
                e = max(e, abs(u[i] - v[i]))
                dot += Double(u[i]) * Double(v[i]); nu += Double(u[i] * u[i]); nv += Double(v[i] * v[i])
            }
            let cos = dot / (nu * nv).squareRoot()
            print("[permuted] AR '\(text)': max |Δ| \(e) of \(m), cos \(cos)")
            #expect(e <= 1e-4 * m && cos >= 0.99999)
        }
    }
}
