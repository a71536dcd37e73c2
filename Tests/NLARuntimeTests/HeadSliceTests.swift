// The unscreened batched head (AVX2 CPUs): logits one vocabulary slice at a time, each row's top 2 merged
// across slices. The merge must give exactly the top 2 of one scan of the whole row, and a slice of the
// packed matmul exactly the same outputs as the whole-head call.

import Foundation
import Testing
@testable import NLARuntime
import Quant
import SIMDKernels

@Suite("Batched head in vocabulary slices")
struct HeadSliceTests {
    @Test("merging the slices' top 2 equals one scan of the row (ties across slice borders, NaN, ±inf, all -inf)")
    func mergeEqualsWholeRow() {
        var g = LCG(seed: 0x5EED)
        for trial in 0..<400 {
            let n = 1 + g.next(600)
            var x = (0..<n).map { _ in Float(g.next(12)) - 6 }  // many repeats, so ties cross borders
            switch trial % 5 {
            case 1: for _ in 0..<3 { x[g.next(n)] = .nan }
            case 2: x[g.next(n)] = .infinity
            case 3: x = x.map { _ in -.infinity }
            case 4: x[g.next(n)] = .nan; x[n - 1] = x.filter { !$0.isNaN }.max() ?? 0  // the maximum again at the end
            default: break
            }
            var cuts = Set<Int>([0, n])
            for _ in 0..<(1 + g.next(6)) { cuts.insert(g.next(n + 1)) }
            let borders = cuts.sorted()
            var best: (index: Int, first: Float, second: Float) = (0, -.infinity, -.infinity)
            for (lo, hi) in zip(borders, borders.dropFirst()) where hi > lo {
                let t = x[lo..<hi].withUnsafeBufferPointer { Kernels.top2($0) }
                best = Gemma3Batch.mergeTop2(best, t, offset: lo)
            }
            let whole = x.withUnsafeBufferPointer { Kernels.top2($0) }
            #expect(best.index == whole.index && best.first == whole.first && best.second == whole.second,
                    "trial \(trial), n \(n), borders \(borders): merged \(best) vs whole \(whole)")
        }
    }

    @Test("a packed matmul in row slices (X quantized once) gives exactly the whole call's outputs, slice by slice")
    func rowSlicesMatchWhole() throws {
        guard PackedWeights.isAvailable else { print("[head slices] skipped: no packed kernels"); return }
        let (n, k, m) = (96, 128, 5)
        var g = LCG(seed: 77)
        var w = [UInt8]()
        for _ in 0..<(n * k / 32) {
            let d = Float16(Float(1 + g.next(8)) / 256).bitPattern
            w += [UInt8(d & 0xFF), UInt8(d >> 8)] + (0..<32).map { _ in UInt8(truncatingIfNeeded: g.next(256)) }
        }
        let p = try #require(w.withUnsafeBytes { PackedWeights(.q8_0, blocks: $0.baseAddress!, rows: n, cols: k) })
        let x = (0..<(m * k)).map { _ in Float(g.next(2001)) / 1000 - 1 }
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: m * GemvActivation.q16.rowBytes(cols: k), alignment: 64)
        defer { scratch.deallocate() }
        var whole = [Float](repeating: .nan, count: m * n)
        x.withUnsafeBufferPointer { xp in whole.withUnsafeMutableBufferPointer { yp in
            p.matmul(x: xp.baseAddress!, y: yp.baseAddress!, m: m, scratch: scratch)
        } }
        for width in [16, 48, 80, 96, 128] {
            var part = [Float](repeating: .nan, count: m * width)
            var covered = 0
            x.withUnsafeBufferPointer { xp in part.withUnsafeMutableBufferPointer { yp in
                p.matmulSlices(x: xp.baseAddress!, m: m, width: width, y: yp.baseAddress!, scratch: scratch) { lo, count in
                    #expect(lo == covered && count == min(width, n - lo), "width \(width): slice \(lo) of \(count) rows")
                    covered = lo + count
                    for r in 0..<m {
                        let want = Array(whole[(r * n + lo)..<(r * n + lo + count)]), got = Array(yp[(r * count)..<((r + 1) * count)])
                        #expect(want.map(\.bitPattern) == got.map(\.bitPattern), "width \(width), rows \(lo)..<\(lo + count), activation row \(r)")
                    }
                }
            } }
            #expect(covered == n, "width \(width): slices cover \(covered) of \(n) rows")
        }
    }
}

/// A small deterministic generator for the tests above.
private struct LCG {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next(_ bound: Int) -> Int {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Int((state >> 33) % UInt64(bound))
    }
}
