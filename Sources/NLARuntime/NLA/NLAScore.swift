// AR scoring (spec §4.3, NI `score`): pred_n = pred/‖pred‖·s, gold_n = gold/‖gold‖·s (f32, norms clamped
// at 1e-12), mse_nrm = mean over d of (pred_n − gold_n)² (= 2(1 − cos)·s²/d; with s = √d: 2(1 − cos)),
// cos = pred_n·gold_n / (‖pred_n‖‖gold_n‖), fve_nrm = 1 − mse_nrm / B with B the predict-the-mean
// baseline of the training set. Normalized vectors are f32 like the reference; reductions are f64.

import Foundation

public struct NLAScore: Sendable, Equatable {
    public var mseNrm: Double
    public var cos: Double
    /// nil when no baseline is known (or in raw-MSE mode).
    public var fveNrm: Double?

    public init(mseNrm: Double, cos: Double, fveNrm: Double?) {
        self.mseNrm = mseNrm; self.cos = cos; self.fveNrm = fveNrm
    }

    /// - Parameter mseScale: s; nil = raw-MSE mode (explicit null mse_scale): raw vectors, no fve.
    public static func compute(prediction: [Float], gold: [Float], mseScale: Float?, d: Int, fveBaseline: Double?) throws -> NLAScore {
        try validateBaseline(fveBaseline)
        try NLAVectorMath.validate(prediction, d: d, label: "predicted vector")
        try NLAVectorMath.validate(gold, d: d, label: "gold vector")
        let a: [Float], b: [Float]
        if let s = mseScale {
            a = NLAVectorMath.normalizedTo(prediction, scale: s)
            b = NLAVectorMath.normalizedTo(gold, scale: s)
        } else {
            a = prediction; b = gold
        }
        var sq = 0.0, dot = 0.0, na = 0.0, nb = 0.0
        for i in 0..<d {
            let x = Double(a[i]), y = Double(b[i])
            let df = a[i] - b[i]  // f32 like the reference; in f64 only where f32 overflows (raw mode)
            let diff = df.isFinite ? Double(df) : x - y
            sq += diff * diff; dot += x * y; na += x * x; nb += y * y
        }
        let mse = sq / Double(d)
        let cos = dot / max(na.squareRoot() * nb.squareRoot(), 1e-30)
        let fve = (mseScale != nil) ? fveBaseline.map { 1 - mse / $0 } : nil
        return NLAScore(mseNrm: mse, cos: cos, fveNrm: fve)
    }
}

extension NLAScore {
    /// The fve baseline B divides: it must be a positive finite number.
    public static func validateBaseline(_ b: Double?) throws {
        if let b, !(b.isFinite && b > 0) { throw ModelError.input("fve baseline B is \(b); it must be a positive finite number") }
    }
}

/// fve_nrm denominators (the "raw-variance" predict-the-mean baseline, spec §4.3) of the released pairs.
public enum FVEBaselines {
    /// 27B L41 (d 5376): 0.0579 (EX27, Neuronpedia's `norm`); 12B L32 (d 3840): 0.0302 (EX12).
    public static let table: [(dModel: Int, layer: Int, baseline: Double, name: String)] = [
        (5376, 41, 0.0579, "gemma-3-27b L41"),
        (3840, 32, 0.0302, "gemma-3-12b L32"),
    ]

    public static func builtIn(dModel: Int, layer: Int) -> Double? {
        table.first { $0.dModel == dModel && $0.layer == layer }?.baseline
    }
}
