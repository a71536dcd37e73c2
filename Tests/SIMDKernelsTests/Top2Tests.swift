// Kernels.top2 (C, AVX-512, AVX2 or scalar) against the scalar loop it replaces, on random logits with
// repeated maxima, NaNs, infinities and every tail length.

import Testing
import SIMDKernels

private func scalarTop2(_ x: [Float]) -> (Int, Float, Float) {
    var a = -Float.infinity, b = -Float.infinity, best = 0
    for (j, v) in x.enumerated() {
        if v > a { b = a; a = v; best = j } else if v > b { b = v }
    }
    return (best, a, b)
}

@Suite("Top-2 of a logit row")
struct Top2Tests {
    @Test("same index and values as the scalar loop (ties, NaN, ±inf, lengths 0…300 and a 262144 vocabulary)")
    func matchesScalar() {
        var rng = TestRNG(seed: 0x7092)
        var lengths = Array(0...300)
        lengths.append(262_144)
        for n in lengths {
            for variant in 0..<4 {
                var x = (0..<n).map { _ in Float(rng.int(0...40)) - 20 }  // many repeats
                if variant == 1 && n > 0 { x[rng.int(0...(n - 1))] = .nan; x[rng.int(0...(n - 1))] = .nan }
                if variant == 2 && n > 0 { x[rng.int(0...(n - 1))] = .infinity }
                if variant == 3 { x = x.map { _ in -Float.infinity } }
                let want = scalarTop2(x)
                let got = x.withUnsafeBufferPointer { Kernels.top2($0) }
                let same = got.index == want.0 && got.first == want.1 && got.second == want.2
                #expect(same, "n \(n) variant \(variant): got \(got), want \(want)")
            }
        }
    }
}
