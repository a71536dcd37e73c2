// The attention kernel (CKernels/attention_kernels.c): every instruction-set path against a float64
// reference (causal + sliding window, GQA, soft-capping, a wrapped KV ring), and its batch-invariance
// contract — a row's output is bit-identical whether computed in a multi-row call or alone, with 1 or
// 2 threads — which the batched-vs-sequential exactness of the model rests on.

import CKernels
import Foundation
import Testing
import SIMDKernels

private struct AttnCase: CustomStringConvertible, Sendable {
    var heads: Int, kvHeads: Int, headDim: Int
    var window: Int?, softcap: Float?
    var rows: Int, pos0: Int, ring: Int
    var description: String {
        "H\(heads)/G\(kvHeads) hd\(headDim) win \(window.map(String.init) ?? "-") cap \(softcap.map { "\($0)" } ?? "-") rows \(rows) pos0 \(pos0) ring \(ring)"
    }
    var shape: AttentionShape {
        AttentionShape(heads: heads, kvHeads: kvHeads, headDim: headDim, window: window, scale: 1 / Float(headDim).squareRoot(), softcap: softcap)
    }
}

private let attnCases: [AttnCase] = [
    AttnCase(heads: 4, kvHeads: 1, headDim: 256, window: nil, softcap: nil, rows: 9, pos0: 0, ring: 9),
    AttnCase(heads: 4, kvHeads: 2, headDim: 128, window: 5, softcap: nil, rows: 7, pos0: 11, ring: 11 + 7),
    AttnCase(heads: 2, kvHeads: 2, headDim: 48, window: 6, softcap: 50, rows: 3, pos0: 20, ring: 8),   // ring wraps
    AttnCase(heads: 8, kvHeads: 4, headDim: 16, window: nil, softcap: 30, rows: 1, pos0: 40, ring: 41),
    AttnCase(heads: 3, kvHeads: 1, headDim: 20, window: 4, softcap: nil, rows: 5, pos0: 2, ring: 12),  // hd % 16 != 0: generic
]

/// Random q (rows × H·hd) and a KV ring (ring × G·hd) holding keys/values of positions 0..<pos0+rows.
private func operands(_ c: AttnCase, seed: UInt64) -> (q: [Float], k: [Float], v: [Float]) {
    var rng = TestRNG(seed: seed)
    let q = rng.gaussians(c.rows * c.heads * c.headDim, scale: 2)
    let k = rng.gaussians(c.ring * c.kvHeads * c.headDim, scale: 2)
    let v = rng.gaussians(c.ring * c.kvHeads * c.headDim)
    return (q, k, v)
}

private func referenceAttention(_ c: AttnCase, q: [Float], k: [Float], v: [Float]) -> [Double] {
    let hd = c.headDim, qd = c.heads * hd, kvd = c.kvHeads * hd, group = c.heads / c.kvHeads
    var out = [Double](repeating: 0, count: c.rows * qd)
    for r in 0..<c.rows {
        let i = c.pos0 + r
        let lo = c.window.map { max(0, i - $0 + 1) } ?? 0
        for h in 0..<c.heads {
            let g = h / group
            var s = [Double]()
            for j in lo...i {
                var dot = 0.0
                for d in 0..<hd { dot += Double(q[r * qd + h * hd + d]) * Double(k[(j % c.ring) * kvd + g * hd + d]) }
                var x = dot * Double(c.shape.scale)
                if let cap = c.softcap { x = Foundation.tanh(x / Double(cap)) * Double(cap) }
                s.append(x)
            }
            let m = s.max()!
            let e = s.map { Foundation.exp($0 - m) }
            let sum = e.reduce(0, +)
            for (n, j) in (lo...i).enumerated() {
                for d in 0..<hd { out[r * qd + h * hd + d] += e[n] / sum * Double(v[(j % c.ring) * kvd + g * hd + d]) }
            }
        }
    }
    return out
}

private func run(_ c: AttnCase, q: [Float], k: [Float], v: [Float], rows: Int? = nil, rowOffset: Int = 0,
                 isa: CKernelISA?, threads: Int) -> [Float] {
    let qd = c.heads * c.headDim, n = rows ?? c.rows
    var out = [Float](repeating: .nan, count: n * qd)
    let scratch = AttentionScratch()
    q.withUnsafeBufferPointer { qp in
        k.withUnsafeBufferPointer { kp in
            v.withUnsafeBufferPointer { vp in
                out.withUnsafeMutableBufferPointer { op in
                    Kernels.attention(c.shape, q: qp.baseAddress! + rowOffset * qd, ldq: qd, k: kp.baseAddress!, v: vp.baseAddress!,
                                      ldkv: c.kvHeads * c.headDim, ring: c.ring, out: op.baseAddress!, ldo: qd,
                                      rows: n, pos0: c.pos0 + rowOffset, scratch: scratch, isa: isa, threads: threads)
                }
            }
        }
    }
    return out
}

@Suite("Attention kernel")
struct AttentionKernelTests {
    @Test("every path matches a float64 reference (causal, sliding window, GQA, soft-capping, wrapped ring)",
          arguments: attnCases)
    fileprivate func matchesReference(_ c: AttnCase) {
        let (q, k, v) = operands(c, seed: 0xA77E + UInt64(c.headDim))
        let ref = referenceAttention(c, q: q, k: k, v: v)
        for isa in CKernelISA.available {
            for threads in [1, 2] {
                let got = run(c, q: q, k: k, v: v, isa: isa, threads: threads)
                var worst = 0.0
                for i in 0..<ref.count { worst = max(worst, abs(Double(got[i]) - ref[i])) }
                // |v| ~ 1 and weights sum to 1: f32 dot (hd terms), exp (≤ 2 ulp) and the weighted sum
                // give a few 1e-6 absolute at most.
                #expect(worst < 2e-5, "\(c) \(isa) threads \(threads): max |Δ| \(worst)")
            }
        }
    }

    @Test("a row's output is bit-identical alone, in a multi-row call, and with 1 or 2 threads", arguments: attnCases)
    fileprivate func batchInvariant(_ c: AttnCase) {
        let (q, k, v) = operands(c, seed: 0xB47C + UInt64(c.rows))
        for isa in CKernelISA.available {
            let all = run(c, q: q, k: k, v: v, isa: isa, threads: 2)
            let one = run(c, q: q, k: k, v: v, isa: isa, threads: 1)
            #expect(all == one, "\(c) \(isa): 1 vs 2 threads differ")
            let qd = c.heads * c.headDim
            for r in 0..<c.rows {
                let alone = run(c, q: q, k: k, v: v, rows: 1, rowOffset: r, isa: isa, threads: 2)
                #expect(Array(all[(r * qd)..<((r + 1) * qd)]) == alone, "\(c) \(isa): row \(r) differs alone")
            }
        }
    }

    @Test("several sequences in one call (a batch's layer): each piece bit-identical to its own call, 1 or 2 threads",
          arguments: attnCases)
    fileprivate func multiPieceEqualsSeparateCalls(_ c: AttnCase) {
        // Pieces of one geometry with their own caches, row counts and positions: 1 decode row each (many
        // pieces: the grouped-by-KV-head split) and a mix with a prefill piece.
        let qd = c.heads * c.headDim
        for counts in [[1, 1, 1, 1, 1, 1, 1, 1, 1], [c.rows, 1, 2], [1]] {
            let cases = counts.map { rows -> AttnCase in
                var p = c
                p.rows = min(rows, c.rows)
                p.pos0 = c.pos0 + c.rows - p.rows  // the piece ends where the case ends: same ring validity
                return p
            }
            let ops = cases.enumerated().map { i, p in operands(c, seed: 0xC0DE + UInt64(i)) }
            for isa in CKernelISA.available {
                for threads in [1, 2] {
                    var outs = cases.map { [Float](repeating: .nan, count: $0.rows * qd) }
                    let scratch = AttentionScratch()
                    // Pin the operands for the call (arrays of pointers into arrays that live to the end).
                    let qs = ops.map { o -> UnsafeMutablePointer<Float> in
                        let p = UnsafeMutablePointer<Float>.allocate(capacity: o.q.count); p.initialize(from: o.q, count: o.q.count); return p }
                    let ks = ops.map { o -> UnsafeMutablePointer<Float> in
                        let p = UnsafeMutablePointer<Float>.allocate(capacity: o.k.count); p.initialize(from: o.k, count: o.k.count); return p }
                    let vs = ops.map { o -> UnsafeMutablePointer<Float> in
                        let p = UnsafeMutablePointer<Float>.allocate(capacity: o.v.count); p.initialize(from: o.v, count: o.v.count); return p }
                    let os = cases.map { UnsafeMutablePointer<Float>.allocate(capacity: $0.rows * qd) }
                    defer { for p in qs + ks + vs + os { p.deallocate() } }
                    for (i, p) in cases.enumerated() { os[i].initialize(repeating: .nan, count: p.rows * qd) }
                    let pieces = cases.indices.map { i in
                        Kernels.AttentionPiece(q: qs[i], k: ks[i], v: vs[i], ring: cases[i].ring, out: os[i],
                                               rows: cases[i].rows, pos0: cases[i].pos0)
                    }
                    Kernels.attention(c.shape, pieces: pieces, ldq: qd, ldkv: c.kvHeads * c.headDim, ldo: qd,
                                      scratch: scratch, isa: isa, threads: threads)
                    for i in cases.indices { outs[i] = Array(UnsafeBufferPointer(start: os[i], count: cases[i].rows * qd)) }
                    for (i, p) in cases.enumerated() {
                        let alone = run(p, q: ops[i].q, k: ops[i].k, v: ops[i].v, isa: isa, threads: threads)
                        #expect(outs[i] == alone, "\(c) \(isa) threads \(threads) pieces \(counts): piece \(i) differs from its own call")
                        #expect(!alone.contains { $0.isNaN }, "\(c): piece \(i) left unwritten")
                    }
                }
            }
        }
    }

    @Test("NaN in a visible key poisons exactly the rows that see it")
    func nanPropagates() {
        let c = AttnCase(heads: 2, kvHeads: 1, headDim: 32, window: 3, softcap: nil, rows: 6, pos0: 0, ring: 6)
        var (q, k, v) = operands(c, seed: 7)
        k[1 * 32 + 5] = .nan  // key of position 1: seen by rows 1, 2, 3 (window 3)
        for isa in CKernelISA.available {
            let out = run(c, q: q, k: k, v: v, isa: isa, threads: 1)
            for r in 0..<c.rows {
                let nan = out[(r * 64)..<((r + 1) * 64)].contains { $0.isNaN }
                let sees = r >= 1 && r <= 3
                #expect(nan == sees, "\(isa): row \(r) NaN \(nan)")
            }
        }
    }

    @Test("a KV ring shorter than the visible span or a bad shape is refused, nothing written")
    func refusesBadParameters() {
        var p = ck_attn_params(rows: 4, pos0: 10, heads: 2, kv_heads: 1, head_dim: 16, ldq: 32, ldo: 32, ldkv: 16,
                               ring: 8, window: 0, scale: 1, softcap: 0, shared: 0, sring: 0, sk: nil, sv: nil)
        var scratch = [Float](repeating: 0, count: 4096)
        var out = [Float](repeating: 7, count: 4 * 32)
        let q = [Float](repeating: 1, count: 4 * 32), kv = [Float](repeating: 1, count: 64 * 16)
        let rc = ck_attention(&p, q, kv, kv, &out, &scratch, Int64(scratch.count), -1, 1)
        #expect(rc == -1)
        #expect(out.allSatisfy { $0 == 7 })
        p.ring = 14; p.kv_heads = 2; p.heads = 3  // heads not a multiple of KV heads
        #expect(ck_attention(&p, q, kv, kv, &out, &scratch, Int64(scratch.count), -1, 1) == -1)
        p.kv_heads = 1; p.heads = 4  // q / out rows shorter than heads × head_dim
        #expect(ck_attention(&p, q, kv, kv, &out, &scratch, Int64(scratch.count), -1, 1) == -1)
        #expect(out.allSatisfy { $0 == 7 })
        p.heads = 2
        #expect(ck_attention(&p, q, kv, kv, &out, &scratch, 4, -1, 1) == -1)  // scratch too small
        #expect(ck_attention(&p, q, kv, kv, &out, &scratch, Int64(scratch.count), -1, 1) == 0)
        // A shared prefix: rows must start after it, its ring must hold what the rows still see, its
        // buffers must be given, and the own ring must hold the own keys.
        out = [Float](repeating: 7, count: 4 * 32)
        kv.withUnsafeBufferPointer { sp in
            p.shared = 6; p.sring = 6; p.sk = sp.baseAddress; p.sv = sp.baseAddress; p.ring = 8  // own keys 6..<14
            #expect(ck_attention(&p, q, kv, kv, &out, &scratch, Int64(scratch.count), -1, 1) == 0)
            var bad = p; bad.shared = 11  // rows start at 10, inside the prefix
            #expect(ck_attention(&bad, q, kv, kv, &out, &scratch, Int64(scratch.count), -1, 1) == -1)
            bad = p; bad.sring = 5  // a global layer sees all 6 prefix keys
            #expect(ck_attention(&bad, q, kv, kv, &out, &scratch, Int64(scratch.count), -1, 1) == -1)
            bad.window = 6  // a sliding layer of 6 sees at most 5 of them from row 10 on
            #expect(ck_attention(&bad, q, kv, kv, &out, &scratch, Int64(scratch.count), -1, 1) == 0)
            bad = p; bad.sk = nil
            #expect(ck_attention(&bad, q, kv, kv, &out, &scratch, Int64(scratch.count), -1, 1) == -1)
            bad = p; bad.ring = 7
            #expect(ck_attention(&bad, q, kv, kv, &out, &scratch, Int64(scratch.count), -1, 1) == -1)
        }
    }

    @Test("keys split into a shared read-only prefix and an own ring give bit-identical rows to one cache",
          arguments: attnCases)
    fileprivate func sharedPrefixEqualsOneCache(_ c: AttnCase) {
        guard c.pos0 >= 1 else { return }
        let hd = c.headDim, kvd = c.kvHeads * hd, qd = c.heads * hd
        let last = c.pos0 + c.rows
        let lo0 = c.window.map { max(0, c.pos0 - $0 + 1) } ?? 0  // first key the first row sees
        let (q, k, v) = operands(c, seed: 0x5A4E + UInt64(c.pos0))
        // Key j of the one-cache operands (visible keys only: j ≥ lo0).
        func row(_ buf: [Float], _ j: Int) -> ArraySlice<Float> { buf[((j % c.ring) * kvd)..<((j % c.ring + 1) * kvd)] }
        for shared in Set([1, c.pos0 / 2, c.pos0]) where shared >= 1 {
            let seen = c.window.map { min(shared, $0 - 1) } ?? shared  // prefix keys a row can still see
            for sring in Set([shared, max(seen, 1)]) {
                for ownRing in Set([last - shared, last - max(lo0, shared)]) where ownRing >= 1 {
                    // Unused rows hold NaN: reading one would poison the output.
                    var sk = [Float](repeating: .nan, count: sring * kvd), sv = sk
                    for j in max(0, shared - sring)..<shared where j >= lo0 {
                        sk.replaceSubrange(((j % sring) * kvd)..<((j % sring + 1) * kvd), with: row(k, j))
                        sv.replaceSubrange(((j % sring) * kvd)..<((j % sring + 1) * kvd), with: row(v, j))
                    }
                    var ok = [Float](repeating: .nan, count: ownRing * kvd), ov = ok
                    for j in max(shared, last - ownRing)..<last where j >= lo0 {
                        let r = (j - shared) % ownRing
                        ok.replaceSubrange((r * kvd)..<((r + 1) * kvd), with: row(k, j))
                        ov.replaceSubrange((r * kvd)..<((r + 1) * kvd), with: row(v, j))
                    }
                    for isa in CKernelISA.available {
                        for threads in [1, 2] {
                            let want = run(c, q: q, k: k, v: v, isa: isa, threads: threads)
                            // Three sequences sharing the prefix in one call (the decode-batch shape).
                            var out0 = [Float](repeating: .nan, count: c.rows * qd), out1 = out0, out2 = out0
                            let scratch = AttentionScratch()
                            q.withUnsafeBufferPointer { qp in
                            sk.withUnsafeBufferPointer { skp in
                            sv.withUnsafeBufferPointer { svp in
                            ok.withUnsafeBufferPointer { okp in
                            ov.withUnsafeBufferPointer { ovp in
                            out0.withUnsafeMutableBufferPointer { o0 in
                            out1.withUnsafeMutableBufferPointer { o1 in
                            out2.withUnsafeMutableBufferPointer { o2 in
                                let pre = Kernels.SharedKeys(k: skp.baseAddress!, v: svp.baseAddress!, count: shared, ring: sring)
                                let pieces = [o0, o1, o2].map {
                                    Kernels.AttentionPiece(q: qp.baseAddress!, k: okp.baseAddress!, v: ovp.baseAddress!, ring: ownRing,
                                                           out: $0.baseAddress!, rows: c.rows, pos0: c.pos0, shared: pre)
                                }
                                Kernels.attention(c.shape, pieces: pieces, ldq: qd, ldkv: kvd, ldo: qd, scratch: scratch,
                                                  isa: isa, threads: threads)
                            } } } } } } } }
                            for (i, out) in [out0, out1, out2].enumerated() {
                                #expect(out == want, "\(c) \(isa) threads \(threads) shared \(shared) sring \(sring) own ring \(ownRing): piece \(i)")
                            }
                        }
                    }
                }
            }
        }
    }
}
