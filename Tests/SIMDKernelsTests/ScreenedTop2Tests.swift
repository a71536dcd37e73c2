// Screened exact top-2 over a packed Q8_0 matrix (PackedWeights.top2, ck_packed_top2_q8): the result must
// be bit for bit what the full int16 packed matmul + Kernels.top2 gives, on random, planted, adversarial
// (exact ties, one-quant-step differences) and non-finite inputs; the screen's error bound must hold for
// every weight row; and the packed Q8_0 × int8 kernel (the screen) must match a float64 reference of its
// quantized operands and the unpacked gemv Q8_0 × Q8 path within the documented accuracy contract.

import CKernels
import Foundation
import Testing
import SIMDKernels
import Quant

private typealias Top2 = (index: Int, first: Float, second: Float)

/// Q8_0 weights: Gaussian rows quantized by the reference quantizer, so rows have realistic norms.
private func gaussianQ8Weights(rows: Int, k: Int, seed: UInt64) -> [UInt8] {
    var rng = TestRNG(seed: seed)
    return quantizeWeights(rng.gaussians(rows * k, scale: 0.05), rows: rows, k: k, .q8_0)
}

private func pack(_ w: [UInt8], rows: Int, k: Int) throws -> PackedWeights {
    try #require(w.withUnsafeBytes { PackedWeights(.q8_0, blocks: $0.baseAddress!, rows: rows, cols: k) })
}

/// The full path: every logit with int16 activations (PackedWeights.matmul), then Kernels.top2 per row.
private func fullTop2(_ p: PackedWeights, _ x: [Float], m: Int, threads: Int = 0) -> (top: [Top2], logits: [Float]) {
    let scratch = UnsafeMutableRawPointer.allocate(byteCount: m * GemvActivation.q16.rowBytes(cols: p.cols), alignment: 64)
    defer { scratch.deallocate() }
    var y = [Float](repeating: .nan, count: m * p.rows)
    x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in
        p.matmul(x: xp.baseAddress!, y: yp.baseAddress!, m: m, scratch: scratch, threads: threads)
    } }
    let top = (0..<m).map { i in y.withUnsafeBufferPointer { Kernels.top2(UnsafeBufferPointer(rebasing: $0[(i * p.rows)..<((i + 1) * p.rows)])) } }
    return (top, y)
}

private struct Screened {
    var top: [Top2]
    var candidates: [Int]
    var screen: [Float]
}

private func screenedTop2(_ p: PackedWeights, _ x: [Float], m: Int, threads: Int = 0) -> Screened {
    let scratch = UnsafeMutableRawPointer.allocate(byteCount: p.top2ScratchBytes(m: m), alignment: 64)
    defer { scratch.deallocate() }
    var cand = [Int](repeating: -1, count: m)
    var screen = [Float](repeating: .nan, count: m * p.rows)
    let top = x.withUnsafeBufferPointer { xp in
        cand.withUnsafeMutableBufferPointer { cp in
            screen.withUnsafeMutableBufferPointer { sp in
                p.top2(x: xp.baseAddress!, m: m, scratch: scratch, candidates: cp.baseAddress!, screen: sp.baseAddress!, threads: threads)
            }
        }
    }
    return Screened(top: top, candidates: cand, screen: screen)
}

/// Bit-for-bit comparison of two top-2 lists; the message names the first row that differs.
private func sameTop2(_ a: [Top2], _ b: [Top2]) -> String? {
    guard a.count == b.count else { return "count \(a.count) vs \(b.count)" }
    for i in 0..<a.count where a[i].index != b[i].index || a[i].first.bitPattern != b[i].first.bitPattern
        || a[i].second.bitPattern != b[i].second.bitPattern {
        return "row \(i): screened \(a[i]) vs full \(b[i])"
    }
    return nil
}

/// Activation rows of several kinds: plain outlier rows, one huge outlier, tiny and huge scales.
private func mixedRows(_ m: Int, _ k: Int, seed: UInt64) -> [Float] {
    var x = activationRows(m, k, seed: seed)
    for r in 0..<m {
        let row = (r * k)..<((r + 1) * k)
        switch r % 6 {
        case 1: x[r * k + (r * 37) % k] = 400                      // one large outlier
        case 2: for i in row { x[i] *= 1e-30 }                      // tiny scale (subnormal dw·dx products)
        case 3: for i in row { x[i] *= 1e20 }                       // huge scale, still inside the guards
        case 4: for i in row { x[i] *= 1e-36 }                      // tinier: some blocks quantize to d = 0
        default: break
        }
    }
    return x
}

/// Rows planted on weight rows (a logit well above the rest, as a trained LM head gives), plus noise.
private func plantedRows(_ p: PackedWeights, targets: [Int], k: Int, strength: Float, seed: UInt64) -> [Float] {
    var rng = TestRNG(seed: seed)
    var x = [Float]()
    var w = [Float](repeating: 0, count: k)
    for t in targets {
        w.withUnsafeMutableBufferPointer { p.dequantizeRow(t, into: $0.baseAddress!) }
        let norm = w.reduce(0) { $0 + $1 * $1 }.squareRoot()
        x += (0..<k).map { strength * w[$0] / norm + rng.gaussian() }
    }
    return x
}

@Suite("Screened exact top-2 over a packed Q8_0 matrix")
struct ScreenedTop2Tests {
    @Test("random matrices (K = 640, 1152) and mixed activation rows, M = 1…17, 1 and 2 threads: == full matmul + top2 bit for bit",
          arguments: [640, 1152])
    func matchesFullPath(k: Int) throws {
        guard PackedWeights.screensTop2 else { print("[screen] skipped: no AVX-512 VNNI"); return }
        let n = 4096
        let p = try pack(gaussianQ8Weights(rows: n, k: k, seed: UInt64(k)), rows: n, k: k)
        var screenedRows = 0, rowsSeen = 0
        for m in [1, 2, 3, 4, 5, 8, 9, 16, 17] {
            var x = mixedRows(m, k, seed: UInt64(1000 * k + m))
            // Half the rows planted on a weight row so the screen has something to find.
            let planted = plantedRows(p, targets: (0..<m).map { ($0 * 977 + m) % n }, k: k, strength: 60, seed: UInt64(m))
            for r in 0..<m where r % 2 == 0 && r % 6 != 2 && r % 6 != 3 && r % 6 != 4 {
                for i in 0..<k { x[r * k + i] = planted[r * k + i] }
            }
            let full = fullTop2(p, x, m: m)
            for threads in [1, 2] {
                let s = screenedTop2(p, x, m: m, threads: threads)
                #expect(sameTop2(s.top, full.top) == nil, "K \(k) M \(m) threads \(threads): \(sameTop2(s.top, full.top) ?? "")")
                if threads == 1 { screenedRows += s.candidates.filter { $0 < n }.count; rowsSeen += m }
            }
        }
        print("[screen] K \(k): \(screenedRows) of \(rowsSeen) rows took the screened path")
        #expect(screenedRows >= rowsSeen / 3, "the screened path (not the full fallback) must be exercised")
    }

    @Test("adversarial near-ties: duplicate rows give the first index and second == first; one-quant-step neighbours stay exact")
    func nearTies() throws {
        guard PackedWeights.screensTop2 else { print("[screen] skipped: no AVX-512 VNNI"); return }
        let n = 4096, k = 640, nb = k / 32, bb = 34
        var w = gaussianQ8Weights(rows: n, k: k, seed: 77)
        let rowBytes = nb * bb
        func copyRow(_ from: Int, _ to: Int) {
            for i in 0..<rowBytes { w[to * rowBytes + i] = w[from * rowBytes + i] }
        }
        // Row 1000 duplicated into rows 1003 (same tile), 2000 and 3999 (other tiles), and before it at 999.
        for dst in [1003, 2000, 3999] { copyRow(1000, dst) }
        // Rows differing from row 1500 by one quant step in one value (up and down) in several places.
        let bumps: [(row: Int, value: Int, delta: Int)] = [(1501, 5, 1), (1502, 5, -1), (1517, 300, 1), (2500, 639, -1), (40, 0, 1)]
        for b in bumps {
            copyRow(1500, b.row)
            let off = b.row * rowBytes + (b.value / 32) * bb + 2 + b.value % 32
            let q = Int8(bitPattern: w[off])
            let nq = q == 127 && b.delta > 0 ? q - 1 : q == -128 && b.delta < 0 ? q + 1 : q + Int8(b.delta)
            w[off] = UInt8(bitPattern: nq)
        }
        let p = try pack(w, rows: n, k: k)
        // Rows planted on 1000 (exact 4-way tie) and on 1500 (neighbours within one quant step); several
        // strengths and noise seeds so the int8 screen orders some near-ties wrongly.
        var x = [Float]()
        var m = 0
        for (si, strength) in [Float(30), 60, 120, 400].enumerated() {
            x += plantedRows(p, targets: [1000, 1500, 1003, 1501], k: k, strength: strength, seed: UInt64(si + 5))
            m += 4
        }
        // Value 5 (where rows 1501 / 1502 differ from 1500 by ±1 quant) small and positive: int16 keeps
        // it (so exactly 1501 > 1500 > 1502), int8 rounds it to 0 (so the screen sees a three-way tie
        // and orders 1500 first): the screen is wrong about the order, the result must not be.
        for r in 0..<m { x[r * k + 5] = 1e-3 }
        let full = fullTop2(p, x, m: m)
        let s = screenedTop2(p, x, m: m)
        #expect(sameTop2(s.top, full.top) == nil, "\(sameTop2(s.top, full.top) ?? "")")
        for r in 0..<m where r % 4 == 0 || r % 4 == 2 {  // planted on the duplicated row
            if full.top[r].index == 1000 {
                #expect(s.top[r].index == 1000 && s.top[r].second == s.top[r].first, "row \(r): exact tie → first index, second == first")
            }
        }
        let tiesWon = (0..<m).filter { full.top[$0].index == 1000 }.count
        #expect(tiesWon >= 2, "the duplicated row wins on its planted rows (got \(tiesWon))")
        // Somewhere the screen must have ordered a near-tie differently from the exact values, and the
        // result still be exact: count rows where the screen's (argmax, runner-up) indices differ from
        // the exact ones.
        func topTwoIndices(_ v: ArraySlice<Float>) -> (Int, Int) {
            let base = v.startIndex
            var a = base, b = -1
            for i in v.indices where v[i] > v[a] { a = i }
            for i in v.indices where i != a && (b < 0 || v[i] > v[b]) { b = i }
            return (a - base, b - base)
        }
        var misordered = 0
        for r in 0..<m where topTwoIndices(s.screen[(r * n)..<((r + 1) * n)]) != topTwoIndices(full.logits[(r * n)..<((r + 1) * n)]) {
            misordered += 1
        }
        print("[screen] near-ties: \(misordered) of \(m) rows where the int8 screen's top-2 differs from the exact one; candidates \(s.candidates)")
        #expect(misordered > 0, "the adversarial data should fool the screen somewhere (else this test proves little)")
        #expect(s.candidates.allSatisfy { $0 < n }, "these rows take the screened path")
    }

    @Test("adversarial: the exact argmax is strictly below two other rows in the int8 screen (another tile); still found")
    func screenRanksTheWinnerThird() throws {
        guard PackedWeights.screensTop2 else { print("[screen] skipped: no AVX-512 VNNI"); return }
        let n = 4096, k = 640, rowBytes = k / 32 * 34
        var w = gaussianQ8Weights(rows: n, k: k, seed: 91)
        func copyRow(_ from: Int, _ to: Int) { for i in 0..<rowBytes { w[to * rowBytes + i] = w[from * rowBytes + i] } }
        copyRow(1500, 3000)   // an exact duplicate: the screen's top value twice
        copyRow(1500, 2600)   // the winner: +1 quant at value 5 (block 0), −1 quant at value 40 (block 1)
        func bump(_ row: Int, _ value: Int, _ delta: Int8) {
            let off = row * rowBytes + (value / 32) * 34 + 2 + value % 32
            let q = Int8(bitPattern: w[off])
            w[off] = UInt8(bitPattern: q.addingReportingOverflow(delta).overflow ? q &- delta : q + delta)
        }
        bump(2600, 5, 1)
        bump(2600, 40, -1)
        let p = try pack(w, rows: n, k: k)
        var x = plantedRows(p, targets: [1500], k: k, strength: 60, seed: 12)
        // Block 0 has a large value, so its int8 step d0 is coarse: value 5 = 0.45·d0 rounds to 0 in int8.
        // Block 1's step d1 is fine: value 40 = 0.55·d1 rounds to 1. Exactly, row 2600 gains w·x5 − w·x40 > 0
        // over row 1500; in the screen it loses one int8 step of block 1.
        x[0] = 50
        let d0 = 50 / Float(127)
        x[5] = 0.45 * d0
        let amax1 = (32..<64).map { abs(x[$0]) }.max()!
        x[40] = 0.55 * amax1 / 127
        let full = fullTop2(p, x, m: 1)
        let s = screenedTop2(p, x, m: 1)
        #expect(full.top[0].index == 2600, "setup: row 2600 wins exactly (got \(full.top[0]))")
        #expect(s.screen[2600] < s.screen[1500] && s.screen[1500] == s.screen[3000],
                "setup: the screen ranks 2600 below two rows (\(s.screen[2600]) vs \(s.screen[1500]), \(s.screen[3000]))")
        #expect(sameTop2(s.top, full.top) == nil, "\(sameTop2(s.top, full.top) ?? "")")
        #expect(s.candidates[0] < n, "the screened path was taken")
    }

    @Test("the bound bounds: |screen_j − exact_j| <= rowNorms[j]·β + A for every weight row; screen == packed Q8_0×Q8 matmul")
    func boundHolds() throws {
        guard PackedWeights.screensTop2 else { print("[screen] skipped: no AVX-512 VNNI"); return }
        for k in [640, 1152] {
            let n = 4096, m = 12
            let p = try pack(gaussianQ8Weights(rows: n, k: k, seed: UInt64(k + 3)), rows: n, k: k)
            var x = mixedRows(m, k, seed: UInt64(k + 9))
            x.replaceSubrange(0..<k, with: plantedRows(p, targets: [17], k: k, strength: 80, seed: 1))
            let full = fullTop2(p, x, m: m)
            let s = screenedTop2(p, x, m: m)
            // The screen values are the (Q8_0, int8) packed matmul bit for bit.
            let q8scratch = UnsafeMutableRawPointer.allocate(byteCount: m * GemvActivation.q8.rowBytes(cols: k), alignment: 64)
            defer { q8scratch.deallocate() }
            var y8 = [Float](repeating: .nan, count: m * n)
            x.withUnsafeBufferPointer { xp in y8.withUnsafeMutableBufferPointer { yp in
                p.matmul(x: xp.baseAddress!, y: yp.baseAddress!, m: m, scratch: q8scratch, act: .q8)
            } }
            #expect(firstMismatch(y8, s.screen) == nil, "K \(k): screen == packed Q8_0 × Q8 matmul")
            let norms = p.rowNorms
            var checked = 0, worst = 0.0
            for r in 0..<m {
                guard let b = x.withUnsafeBufferPointer({ p.top2Bound(x: $0.baseAddress! + r * k) }) else { continue }
                for j in 0..<n {
                    let bound = Double(norms[j]) * b.beta + b.abs
                    let err = abs(Double(s.screen[r * n + j]) - Double(full.logits[r * n + j]))
                    #expect(err <= bound, "K \(k) row \(r) weight row \(j): |Δ| \(err) > bound \(bound)")
                    if bound > 0 { worst = max(worst, err / bound) }
                    checked += 1
                }
            }
            print("[screen] K \(k): bound checked on \(checked) pairs, largest |Δ| / bound = \(worst)")
            #expect(checked >= (m - 2) * n, "most rows have a finite bound")
        }
    }

    @Test("the norms are upper bounds of the exact row norms, tight to f32 rounding")
    func rowNormsBound() throws {
        guard PackedWeights.isAvailable else { print("[screen] skipped: no packed kernels"); return }
        let n = 64, k = 640
        let p = try pack(randomRawBlocks(.q8_0, blocks: n * k / 32, seed: 4), rows: n, k: k)
        var row = [Float](repeating: 0, count: k)
        for j in 0..<n {
            row.withUnsafeMutableBufferPointer { p.dequantizeRow(j, into: $0.baseAddress!) }
            let exact = row.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            #expect(Double(p.rowNorms[j]) >= exact && Double(p.rowNorms[j]) <= exact * (1 + 1e-6), "row \(j)")
        }
        #expect(p.rowNorms[n] == (0..<n).map { p.rowNorms[$0] }.max()!, "stats[0] = max norm")
    }

    @Test("non-finite activations, non-finite weight scales and rows beyond the guards: same as the full path")
    func nonFinite() throws {
        guard PackedWeights.screensTop2 else { print("[screen] skipped: no AVX-512 VNNI"); return }
        let n = 4096, k = 640
        var w = gaussianQ8Weights(rows: n, k: k, seed: 5)
        let p = try pack(w, rows: n, k: k)
        let m = 7
        var x = plantedRows(p, targets: [3, 4, 5, 6, 7, 8, 9], k: k, strength: 50, seed: 3)
        x[0 * k + 10] = .nan
        x[1 * k + 600] = .infinity
        x[2 * k + 0] = -.infinity
        for i in 0..<k { x[3 * k + i] = .nan }                 // every logit NaN: (0, −inf, −inf)
        for i in 0..<k { x[4 * k + i] *= 1e34 }                // beyond the magnitude guard
        x[5 * k + 31] = .greatestFiniteMagnitude               // one value at the top of the f32 range
        let full = fullTop2(p, x, m: m)
        let s = screenedTop2(p, x, m: m)
        #expect(sameTop2(s.top, full.top) == nil, "\(sameTop2(s.top, full.top) ?? "")")
        #expect(s.top[3].index == 0 && s.top[3].first == -.infinity && s.top[3].second == -.infinity, "all-NaN row")
        #expect(Array(s.candidates[0..<6]) == Array(repeating: n, count: 6), "rows 0…5 take the full path")
        #expect(s.candidates[6] < n, "row 6 is ordinary")
        // A weight block scale that is inf / NaN: every row takes the full path, results still equal.
        for bad: UInt16 in [0x7C00, 0x7E00] {
            let off = 123 * (k / 32) * 34 + 34 * 3
            w[off] = UInt8(bad & 0xFF); w[off + 1] = UInt8(bad >> 8)
            let q = try pack(w, rows: n, k: k)
            let xs = plantedRows(q, targets: [123, 124], k: k, strength: 50, seed: 9)
            let f = fullTop2(q, xs, m: 2), g = screenedTop2(q, xs, m: 2)
            #expect(sameTop2(g.top, f.top) == nil, "scale \(String(bad, radix: 16)): \(sameTop2(g.top, f.top) ?? "")")
            #expect(g.candidates == [n, n])
        }
    }

    @Test("packed Q8_0 × int8 activations: float64 reference of the quantized operands, and the unpacked gemv Q8_0 × Q8, within the contract")
    func packedQ8Q8() throws {
        guard PackedWeights.screensTop2 else { print("[screen] skipped: no AVX-512 VNNI"); return }
        for (si, s) in [(1, 16, 1), (1, 48, 33), (3, 32, 31), (5, 64, 20), (8, 16, 168), (70, 32, 7), (17, 48, 3)].enumerated() {
            let (m, n, blocks) = s
            let k = blocks * 32
            let w = randomRawBlocks(.q8_0, blocks: n * blocks, seed: UInt64(300 + si))
            let p = try pack(w, rows: n, k: k)
            let x = activationRows(m, k, seed: UInt64(17 + si))
            let rb = GemvActivation.q8.rowBytes(cols: k)
            let scratch = UnsafeMutableRawPointer.allocate(byteCount: m * rb, alignment: 64)
            defer { scratch.deallocate() }
            var ys: [[Float]] = []
            for threads in [1, 2] {
                var y = [Float](repeating: .nan, count: m * n)
                x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in
                    p.matmul(x: xp.baseAddress!, y: yp.baseAddress!, m: m, scratch: scratch, act: .q8, threads: threads)
                } }
                ys.append(y)
            }
            #expect(firstMismatch(ys[0], ys[1]) == nil, "thread count changes nothing")
            // float64 reference from the very quantized rows in scratch and the dequantized weights.
            let pad = (blocks * 4 + 63) / 64 * 64
            let xq: [[Double]] = (0..<m).map { r in
                (0..<k).map { j in
                    let base = scratch + r * rb
                    return Double(base.loadUnaligned(fromByteOffset: (j / 32) * 4, as: Float.self))
                        * Double(base.loadUnaligned(fromByteOffset: 2 * pad + j, as: Int8.self))
                }
            }
            var wrow = [Float](repeating: 0, count: k)
            var gemv = [Float](repeating: .nan, count: m * n)
            w.withUnsafeBytes { wp in x.withUnsafeBufferPointer { xp in gemv.withUnsafeMutableBufferPointer { yp in
                QuantKernels.gemv(.q8_0, act: .q8, weights: wp.baseAddress!, x: xp.baseAddress!, y: yp.baseAddress!,
                                  m: m, n: n, k: k, scratch: scratch)
            } } }
            for j in 0..<n {
                wrow.withUnsafeMutableBufferPointer { p.dequantizeRow(j, into: $0.baseAddress!) }
                for r in 0..<m {
                    var ref = 0.0, mag = 0.0
                    for c in 0..<k { let t = xq[r][c] * Double(wrow[c]); ref += t; mag += abs(t) }
                    let tol = Double(blocks + 2) * 0x1p-23 * mag + 1e-30
                    #expect(abs(Double(ys[0][r * n + j]) - ref) <= tol, "shape \(s) out (\(r), \(j)): \(ys[0][r * n + j]) vs \(ref)")
                    #expect(abs(Double(ys[0][r * n + j]) - Double(gemv[r * n + j])) <= 2 * tol, "shape \(s) vs gemv (\(r), \(j))")
                }
            }
        }
    }

    @Test("API checks: only Q8_0; scratch size grows with m; m = 0 gives nothing")
    func apiChecks() throws {
        guard PackedWeights.screensTop2 else { print("[screen] skipped: no AVX-512 VNNI"); return }
        let p = try pack(gaussianQ8Weights(rows: 32, k: 64, seed: 1), rows: 32, k: 64)
        #expect(p.top2ScratchBytes(m: 2) > p.top2ScratchBytes(m: 1))
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: p.top2ScratchBytes(m: 1), alignment: 64)
        defer { scratch.deallocate() }
        let x = [Float](repeating: 1, count: 64)
        #expect(x.withUnsafeBufferPointer { p.top2(x: $0.baseAddress!, m: 0, scratch: scratch) }.isEmpty)
        // Tiny matrices (2 tiles: the candidate cap is always reached or nearly): still exact.
        let xs = activationRows(3, 64, seed: 2)
        let s = screenedTop2(p, xs, m: 3), f = fullTop2(p, xs, m: 3)
        #expect(sameTop2(s.top, f.top) == nil)
    }
}
