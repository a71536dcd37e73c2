// Q4_K / Q6_K / IQ4_NL / Q5_0 weight kernels: every tier against the scalar reference on odd sizes, and the type
// identity (the C entry points reject ids that are not theirs; the Swift kinds cover every table type).

import CKernels
import Foundation
import Testing
import Quant
import SIMDKernels

struct KShape: CustomStringConvertible, Sendable {
    let type: QuantType, m: Int, n: Int, blocks: Int
    var k: Int { blocks * type.traits.blockSize }
    var description: String { "\(type) M=\(m) N=\(n) K=\(k)" }
}

let kShapes: [KShape] = QuantKernels.dequantTypes.flatMap { t in
    [(1, 1, 1), (1, 33, 3), (3, 7, 5), (7, 3, 1), (5, 17, 7), (33, 9, 2)].map { KShape(type: t, m: $0.0, n: $0.1, blocks: $0.2) }
}

/// Random raw blocks of a dequant type: random bytes with f16 scales (and Q4_K's dmin) set to sane values
/// (random f16 bit patterns would include inf / NaN).
func randomKBlocks(_ type: QuantType, blocks: Int, seed: UInt64) -> [UInt8] {
    var rng = TestRNG(seed: seed)
    let bb = type.traits.bytesPerBlock
    var out = [UInt8]()
    for _ in 0..<blocks {
        var b = (0..<bb).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        func f16(_ off: Int) {
            let d = Float16(rng.uniform(-12, -4).exp2 * (rng.next() & 1 == 0 ? 1 : -1)).bitPattern
            b[off] = UInt8(d & 0xFF); b[off + 1] = UInt8(d >> 8)
        }
        switch type {
        case .q4_k: f16(0); f16(2)
        case .q6_k: f16(208)
        case .iq4_nl: f16(0)
        case .q5_0: f16(0)
        default: fatalError("not a dequant type")
        }
        out += b
    }
    return out
}

@Suite("K-quant / IQ4_NL kernels")
struct KQuantKernelTests {
    @Test("dequantizeRow: bit-identical to the Quant reference on every tier", arguments: QuantKernels.dequantTypes)
    func dequantize(type: QuantType) throws {
        for blocks in [1, 3, 17] {
            let raw = randomKBlocks(type, blocks: blocks, seed: UInt64(blocks) &* 7 &+ UInt64(type.rawValue))
            let n = blocks * type.traits.blockSize
            let ref = try type.dequantize(raw, width: n)
            #expect(!ref.contains { !$0.isFinite })
            for tier in KernelTier.allCases {
                var y = [Float](repeating: .nan, count: n)
                raw.withUnsafeBytes { r in
                    y.withUnsafeMutableBufferPointer { QuantKernels.dequantizeRow(type, r.baseAddress!, $0.baseAddress!, count: n, tier: tier) }
                }
                #expect(firstMismatch(y, ref) == nil, "\(type) \(tier) blocks=\(blocks)")
            }
        }
    }

    func run(_ s: KShape, _ w: [UInt8], _ x: [Float], tier: KernelTier, isa: CKernelISA? = nil, threads: Int = 1) -> [Float] {
        var y = [Float](repeating: .nan, count: s.m * s.n)
        w.withUnsafeBytes { wp in
            x.withUnsafeBufferPointer { xp in
                y.withUnsafeMutableBufferPointer {
                    QuantKernels.matmulF32(s.type, weights: wp.baseAddress!, x: xp.baseAddress!, y: $0.baseAddress!,
                                           m: s.m, n: s.n, k: s.k, tier: tier, isa: isa, threads: threads)
                }
            }
        }
        return y
    }

    @Test("matmulF32: SIMD, C paths and the sgemm panels within 2^-17·Σ|x·w| of scalar; C threads identical",
          arguments: kShapes)
    func tiersAgree(shape s: KShape) throws {
        var rng = TestRNG(seed: UInt64(s.m * 1000 + s.n * 10 + s.blocks) &+ UInt64(s.type.rawValue))
        let wf = rng.gaussians(s.n * s.k, scale: 0.05)
        let w = try s.type.quantize(wf, width: s.k)
        let x = activationRows(s.m, s.k, seed: 5 &+ UInt64(s.k))
        let deq = try s.type.dequantize(w, width: s.k)
        var scale = [Double]()
        for i in 0..<s.m { for j in 0..<s.n {
            var a = 0.0
            for t in 0..<s.k { a += abs(Double(x[i * s.k + t]) * Double(deq[j * s.k + t])) }
            scale.append(a)
        } }
        let ref = run(s, w, x, tier: .scalar)
        #expect(!ref.contains { $0.isNaN })
        func check(_ y: [Float], _ label: String) {
            var worst = 0.0
            for i in 0..<y.count { worst = max(worst, abs(Double(y[i]) - Double(ref[i])) / max(scale[i], 1e-30)) }
            #expect(worst <= 0x1p-17, "\(label) \(s): \(worst)")
        }
        check(run(s, w, x, tier: .simd), "simd")
        for isa in cPaths() {
            let y1 = run(s, w, x, tier: .c, isa: isa, threads: 1)
            check(y1, "c/\(isa)")
            #expect(firstMismatch(run(s, w, x, tier: .c, isa: isa, threads: 2), y1) == nil, "c/\(isa) threads")
        }
        // Prefill path: dequantized panels (3 rows at a time, so several panels) + sgemm.
        var y = [Float](repeating: .nan, count: s.m * s.n)
        var panel = [Float](repeating: 0, count: 3 * s.k)
        w.withUnsafeBytes { wp in x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in
            panel.withUnsafeMutableBufferPointer { pp in
                QuantKernels.matmulF32Panels(s.type, weights: wp.baseAddress!, x: xp.baseAddress!, y: yp.baseAddress!,
                                             m: s.m, n: s.n, k: s.k, panel: pp.baseAddress!, panelFloats: pp.count)
            }
        } } }
        check(y, "panels")
        // The model-facing call with Q8_0 activations requested still runs f32 activations for these types.
        var y2 = [Float](repeating: .nan, count: s.m * s.n)
        var scratch = [UInt8](repeating: 0, count: QuantKernels.activationBytes(rows: s.m, cols: s.k))
        w.withUnsafeBytes { wp in x.withUnsafeBufferPointer { xp in y2.withUnsafeMutableBufferPointer { yp in
            scratch.withUnsafeMutableBytes { sp in
                QuantKernels.matmul(s.type, weights: wp.baseAddress!, x: xp.baseAddress!, y: yp.baseAddress!, m: s.m, n: s.n, k: s.k,
                                    scratch: sp.baseAddress!, activation: .q8_0, tier: .scalar)
            }
        } } }
        #expect(firstMismatch(y2, ref) == nil, "matmul act=q8_0 must run the f32 path for \(s.type)")
    }

    @Test("C entry points reject type ids that are not theirs (no default format)")
    func cRejectsUnknownTypes() {
        var w = [UInt8](repeating: 0, count: 4096)
        var x = [Float](repeating: 1, count: 512)
        var y = [Float](repeating: 0, count: 4)
        var panel = [Float](repeating: 0, count: 512)
        w.withUnsafeMutableBytes { wp in x.withUnsafeMutableBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in
            panel.withUnsafeMutableBufferPointer { pp in
                for id: Int32 in [0, 1, 3, 6, 12, 14, 20, 30, 99] {  // K-quants and Q5_0 are not quant_kernels.c's
                    #expect(ck_block_bytes(id) == 0, "\(id)")
                    #expect(ck_dequantize_row(id, wp.baseAddress!, yp.baseAddress!, 32) == CK_EBADTYPE, "\(id)")
                    #expect(ck_matmul_f32act(id, wp.baseAddress!, xp.baseAddress!, 256, yp.baseAddress!, 1, 1, 1, 256, -1, 1) == CK_EBADTYPE)
                    #expect(ck_matmul_q8act(id, wp.baseAddress!, wp.baseAddress!, yp.baseAddress!, 1, 1, 1, 256, -1, 1) == CK_EBADTYPE)
                    #expect(ck_matmul_f32act_blas(id, wp.baseAddress!, xp.baseAddress!, 256, yp.baseAddress!, 1, 1, 1, 256,
                                                  pp.baseAddress!, 512, 1) == CK_EBADTYPE)
                }
                for id: Int32 in [0, 1, 2, 3, 7, 8, 13, 15, 30, 99] {  // Q8_0 / Q4_0 (and Q4_1, Q5_1) are not kquant_kernels.c's
                    #expect(ck_kq_block_bytes(id) == 0, "\(id)")
                    #expect(ck_kq_dequantize_row(id, wp.baseAddress!, yp.baseAddress!, 256) == CK_EBADTYPE, "\(id)")
                    #expect(ck_kq_matmul_f32act(id, wp.baseAddress!, xp.baseAddress!, 256, yp.baseAddress!, 1, 1, 1, 256, -1, 1) == CK_EBADTYPE)
                    #expect(ck_kq_matmul_f32act_blas(id, wp.baseAddress!, xp.baseAddress!, 256, yp.baseAddress!, 1, 1, 1, 256,
                                                     pp.baseAddress!, 512, 1) == CK_EBADTYPE)
                }
                #expect(ck_kq_matmul_f32act(12, wp.baseAddress!, xp.baseAddress!, 256, yp.baseAddress!, 1, 1, 1, 100, -1, 1) == CK_EBADSHAPE)
            }
        } } }
    }

    @Test("every quantized table type has a kernel kind; geometry comes from the table")
    func everyQuantizedTypeClassified() {
        for t in QuantType.allCases where t.traits.isQuantized {
            #expect(QuantKernels.weightTypes.contains(t), "\(t) has no weight kernels")
            if QuantKernels.dequantTypes.contains(t) {
                #expect(ck_kq_block_bytes(Int32(t.rawValue)) == t.traits.bytesPerBlock)
                #expect(Int(ck_kq_block_size(Int32(t.rawValue))) == t.traits.blockSize)
            } else {
                #expect(ck_block_bytes(Int32(t.rawValue)) == t.traits.bytesPerBlock)
            }
        }
    }
}
