// Vector checks and the reference's f32 normalizations (spec §2.3 step 4, §4.3).

import Foundation

public enum NLAVectorMath {
    /// Length `d`, every value finite, nonzero norm; otherwise an error naming `label`.
    public static func validate(_ v: [Float], d: Int, label: String) throws {
        guard v.count == d else { throw NLAError.vectorLength(label: label, got: v.count, expected: d) }
        var nonzero = false
        for (i, x) in v.enumerated() {
            guard x.isFinite else { throw NLAError.vectorNotFinite(label: label, index: i, value: x) }
            if x != 0 { nonzero = true }
        }
        guard nonzero else { throw NLAError.vectorZeroNorm(label: label) }
    }

    /// ‖v‖₂ as an f32 value (accumulated in f64, rounded once: what torch's f32 norm gives up to its
    /// summation order).
    public static func normF32(_ v: [Float]) -> Float {
        var s = 0.0
        for x in v { s += Double(x) * Double(x) }
        return Float(s.squareRoot())
    }

    /// ‖v‖₂ in f64 (reports).
    public static func norm(_ v: [Float]) -> Double {
        var s = 0.0
        for x in v { s += Double(x) * Double(x) }
        return s.squareRoot()
    }

    /// The AV injection: v · (scale / max(‖v‖, 1e-12)), all in f32 — one division for the factor, then
    /// one multiply per element (the golden recipe; NI's v / (‖v‖ / scale) differs by ≤ 1 ulp-scale).
    /// NOT multiplied by the embedding scale √d.
    public static func scaledForInjection(_ v: [Float], scale: Float) -> [Float] {
        let v = withFiniteNorm(v)
        let factor = scale / max(normF32(v), 1e-12)
        return v.map { $0 * factor }
    }

    /// pred/‖pred‖·s in f32, norm clamped at 1e-12 (spec §4.3).
    public static func normalizedTo(_ v: [Float], scale: Float) -> [Float] {
        let v = withFiniteNorm(v)
        let n = max(normF32(v), 1e-12)
        return v.map { ($0 / n) * scale }
    }

    /// `v` itself when its f32 norm is finite; otherwise `v` times a power of two (exact, same
    /// direction) that brings the norm near 1, so that a finite but huge vector (values near 3e38,
    /// whose norm overflows f32) normalizes to the same direction instead of to zeros.
    static func withFiniteNorm(_ v: [Float]) -> [Float] {
        let n = norm(v)
        guard n.isFinite, n > Double(Float.greatestFiniteMagnitude) else { return v }
        let k = Int(n.exponent)  // n in [2^k, 2^(k+1))
        let f = Float(sign: .plus, exponent: -k, significand: 1)
        return v.map { $0 * f }
    }
}
