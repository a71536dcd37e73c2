// Decode (gemv) and packed kernels: every instruction-set path this CPU runs, 1 and 2 threads, against
// a float64 reference built from the very same quantized weights and quantized activation rows (so
// only the f32 summation order may differ), plus the activation quantizer's own error bound against
// the unquantized f32 product.

import CKernels
import Foundation
import Testing
import SIMDKernels
import Quant

/// The quantized activation rows as (scales, quants) read back from the buffer layout of gemv_kernels.h,
/// or with `packed` from the layout of packed_kernels.h (int16 quants as 32 low bytes, then 32 high bytes + 128).
private func decodeActivations(_ buf: [UInt8], act: GemvActivation, rows: Int, k: Int, packed: Bool = false) -> [[Double]] {
    let nb = k / 32, rb = act.rowBytes(cols: k)
    let pad = (nb * 4 + 63) / 64 * 64
    return (0..<rows).map { r in
        buf.withUnsafeBytes { raw in
            let base = raw.baseAddress! + r * rb
            return (0..<k).map { j in
                let d = Double(base.loadUnaligned(fromByteOffset: (j / 32) * 4, as: Float.self))
                let q: Double
                if act == .q16 && packed && PackedWeights.layout == 1 {  // AVX-512: low bytes, then high bytes + 128
                    let lo = base.load(fromByteOffset: 2 * pad + (j / 32) * 64 + j % 32, as: UInt8.self)
                    let hi = base.load(fromByteOffset: 2 * pad + (j / 32) * 64 + 32 + j % 32, as: UInt8.self)
                    q = Double(Int(lo) + 256 * (Int(hi) - 128))
                } else {
                    q = act == .q16 ? Double(base.loadUnaligned(fromByteOffset: 2 * pad + 2 * j, as: Int16.self))
                                    : Double(base.loadUnaligned(fromByteOffset: 2 * pad + j, as: Int8.self))
                }
                return d * q
            }
        }
    }
}

private func dequantized(_ type: QuantType, _ w: [UInt8], rows: Int, k: Int) -> [Float] {
    var out = [Float](repeating: 0, count: rows * k)
    w.withUnsafeBytes { wp in
        out.withUnsafeMutableBufferPointer { op in
            for r in 0..<rows {
                QuantKernels.dequantizeRow(type, wp.baseAddress! + r * type.kernelRowBytes(cols: k), op.baseAddress! + r * k,
                                           count: k, tier: .scalar)
            }
        }
    }
    return out
}

/// Reference y and the bound Σ|x·w| per output (float64, from the dequantized operands).
private func reference(_ xq: [[Double]], _ wf: [Float], m: Int, n: Int, k: Int) -> (y: [Double], mag: [Double]) {
    var y = [Double](repeating: 0, count: m * n), mag = y
    for i in 0..<m {
        for j in 0..<n {
            var s = 0.0, a = 0.0
            for c in 0..<k { let p = xq[i][c] * Double(wf[j * k + c]); s += p; a += abs(p) }
            y[i * n + j] = s; mag[i * n + j] = a
        }
    }
    return (y, mag)
}

private let gemvShapes: [(m: Int, n: Int, blocks: Int)] = [(1, 16, 1), (1, 48, 33), (3, 32, 31), (5, 64, 20), (4, 16, 168), (17, 32, 7), (1, 37, 5)]

@Suite("Decode and packed quantized kernels")
struct GemvKernelTests {
    @Test("gemv: every path within f32 summation error of the float64 product of its quantized operands",
          arguments: [QuantType.q8_0, .q4_0])
    func gemvMatchesReference(type: QuantType) throws {
        for (si, s) in gemvShapes.enumerated() {
            let k = s.blocks * 32
            let w = randomRawBlocks(type, blocks: s.n * s.blocks, seed: UInt64(11 + si))
            let x = activationRows(s.m, k, seed: UInt64(97 + si))
            let wf = dequantized(type, w, rows: s.n, k: k)
            for act in GemvActivation.allCases where !(type == .q4_0 && act == .q16) {
                let scratch = UnsafeMutableRawPointer.allocate(byteCount: s.m * act.rowBytes(cols: k), alignment: 64)
                defer { scratch.deallocate() }
                var ref: (y: [Double], mag: [Double])? = nil
                for isa in CKernelISA.available {
                    for threads in [1, 2] {
                        var y = [Float](repeating: .nan, count: s.m * s.n)
                        w.withUnsafeBytes { wp in
                            x.withUnsafeBufferPointer { xp in
                                y.withUnsafeMutableBufferPointer { yp in
                                    QuantKernels.gemv(type, act: act, weights: wp.baseAddress!, x: xp.baseAddress!, y: yp.baseAddress!,
                                                      m: s.m, n: s.n, k: k, scratch: scratch, isa: isa, threads: threads)
                                }
                            }
                        }
                        if ref == nil {
                            let bytes = [UInt8](UnsafeRawBufferPointer(start: scratch, count: s.m * act.rowBytes(cols: k)))
                            ref = reference(decodeActivations(bytes, act: act, rows: s.m, k: k), wf, m: s.m, n: s.n, k: k)
                        }
                        for i in 0..<(s.m * s.n) {
                            let err = abs(Double(y[i]) - ref!.y[i])
                            #expect(err <= Double(s.blocks + 2) * 0x1p-23 * ref!.mag[i] + 1e-30,
                                    "\(type)×\(act) \(isa) t=\(threads) shape \(s) out \(i): \(y[i]) vs \(ref!.y[i])")
                        }
                    }
                }
            }
        }
    }

    @Test("activation quantizer: exactly C roundf(x / d) clamped, d = amax / qmax, sums exact (ties and tiny values included)")
    func activationQuantizationBytes() {
        let k = 128, rows = 3
        var x = activationRows(rows, k, seed: 11)
        // Block 0 of row 0: exact ties after scaling (amax = qmax·d with d = 1 → v = x); block 1 all zero;
        // row 1 block 2: values so small that 1/d overflows.
        for j in 0..<32 { x[j] = Float(j % 5) - 2.5 }
        x[31] = 127  // amax for Q8: d = 1, so the ±0.5, ±1.5, ±2.5 above are ties
        for j in 32..<64 { x[j] = 0 }
        for j in 0..<32 { x[k + 64 + j] = Float(j - 16) * 1e-40 }
        for act in GemvActivation.allCases {
            let qmax: Float = act == .q16 ? 32767 : 127
            var buf = [UInt8](repeating: 0xAB, count: rows * act.rowBytes(cols: k))
            buf.withUnsafeMutableBytes { b in x.withUnsafeBufferPointer { ck_gemv_quantize(act.rawValue, $0.baseAddress!, Int64(k), b.baseAddress!, Int64(rows), Int64(k)) } }
            let nb = k / 32, pad = (nb * 4 + 63) / 64 * 64, rb = act.rowBytes(cols: k)
            buf.withUnsafeBytes { raw in
                for r in 0..<rows {
                    let base = raw.baseAddress! + r * rb
                    for b in 0..<nb {
                        let xb = (0..<32).map { x[r * k + b * 32 + $0] }
                        let amax = xb.map { abs($0) }.max()!
                        var d = amax / qmax
                        var id: Float = d != 0 ? 1 / d : 0
                        if !id.isFinite { d = 0; id = 0 }  // contract: blocks too small for 1/d are zero
                        let want = xb.map { max(-qmax, min(qmax, ($0 * id).rounded(.toNearestOrAwayFromZero))) }
                        #expect(base.loadUnaligned(fromByteOffset: b * 4, as: Float.self) == d, "\(act) r\(r) b\(b) scale")
                        let got = (0..<32).map { j in
                            act == .q16 ? Float(base.loadUnaligned(fromByteOffset: 2 * pad + 2 * (b * 32 + j), as: Int16.self))
                                        : Float(base.loadUnaligned(fromByteOffset: 2 * pad + b * 32 + j, as: Int8.self))
                        }
                        #expect(got == want, "\(act) r\(r) b\(b) quants")
                        let sum = base.loadUnaligned(fromByteOffset: pad + b * 4, as: Int32.self)
                        #expect(Int(sum) == want.reduce(0) { $0 + Int($1) }, "\(act) r\(r) b\(b) sum")
                    }
                }
            }
        }
    }

    @Test("activation quantizer: the AVX-512 row code writes the portable code's bytes (both layouts, ties, NaN/inf, tiny and huge blocks)")
    func activationQuantizationPathsAgree() {
        let k = 320, rows = 24
        var x = activationRows(rows, k, seed: 23)
        var rng = TestRNG(seed: 99)
        // Row 1: exact ties after scaling; row 2: zeros; row 3: 1/d overflows; row 4: NaN, inf, -inf and
        // FLT_MAX in separate blocks; rows 5…: values on a coarse grid (many ties), scaled over many decades.
        for j in 0..<k { x[k + j] = Float(j % 7) - 3.5; x[2 * k + j] = 0; x[3 * k + j] = Float(j % 32 - 16) * 1e-40 }
        x[k + 31] = 127; x[k + 63] = 32767
        x[4 * k + 5] = .nan; x[4 * k + 40] = .infinity; x[4 * k + 70] = -.infinity; x[4 * k + 100] = .greatestFiniteMagnitude
        x[4 * k + 101] = -.greatestFiniteMagnitude
        for r in 5..<rows {
            let scale = Float(pow(10.0, Double(r - 14)))
            for j in 0..<k { x[r * k + j] = (Float(Int(rng.gaussians(1)[0] * 64)) / 2 + (j % 3 == 0 ? 0.5 : 0)) * scale }
        }
        for act in GemvActivation.allCases {
            for split: Int32 in [0, 1] where split == 0 || act == .q16 {
                let n = rows * act.rowBytes(cols: k)
                var generic = [UInt8](repeating: 0xAB, count: n), auto = generic  // same fill: padding is not written
                x.withUnsafeBufferPointer { xp in
                    generic.withUnsafeMutableBytes {
                        ck_quantize_rows_isa(act.rawValue, split, Int32(CK_ISA_GENERIC), xp.baseAddress!, Int64(k), $0.baseAddress!, Int64(rows), Int64(k))
                    }
                    auto.withUnsafeMutableBytes {
                        ck_quantize_rows_isa(act.rawValue, split, Int32(CK_ISA_AUTO), xp.baseAddress!, Int64(k), $0.baseAddress!, Int64(rows), Int64(k))
                    }
                }
                let rb = act.rowBytes(cols: k)
                for r in 0..<rows {
                    let g = generic[(r * rb)..<((r + 1) * rb)], a = auto[(r * rb)..<((r + 1) * rb)]
                    let diff = zip(g, a).enumerated().first { $0.element.0 != $0.element.1 }?.offset
                    #expect(diff == nil, "\(act) split \(split) row \(r): first difference at byte \(diff ?? -1)")
                }
            }
        }
    }

    @Test("activation quantizer: within half a step (amax / (2·qmax)) of the input; NaN propagates")
    func activationQuantizationError() {
        let k = 96
        var x = activationRows(2, k, seed: 5)
        for act in GemvActivation.allCases {
            var buf = [UInt8](repeating: 0, count: 2 * act.rowBytes(cols: k))
            buf.withUnsafeMutableBytes { b in x.withUnsafeBufferPointer { ck_gemv_quantize(act.rawValue, $0.baseAddress!, Int64(k), b.baseAddress!, 2, Int64(k)) } }
            let xq = decodeActivations(buf, act: act, rows: 2, k: k)
            for r in 0..<2 {
                for b in 0..<(k / 32) {
                    let amax = (0..<32).map { abs(Double(x[r * k + b * 32 + $0])) }.max()!
                    for j in 0..<32 {
                        let err = abs(xq[r][b * 32 + j] - Double(x[r * k + b * 32 + j]))
                        #expect(err <= amax / (2 * (act == .q16 ? 32767 : 127)) * 1.0001, "\(act) r\(r) b\(b) j\(j)")
                    }
                }
            }
        }
        x[40] = .nan
        let w = randomRawBlocks(.q8_0, blocks: 16 * 3, seed: 3)
        var y = [Float](repeating: 0, count: 32)
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: 2 * GemvActivation.q16.rowBytes(cols: k), alignment: 64)
        defer { scratch.deallocate() }
        w.withUnsafeBytes { wp in x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in
            QuantKernels.gemv(.q8_0, act: .q16, weights: wp.baseAddress!, x: xp.baseAddress!, y: yp.baseAddress!,
                              m: 2, n: 16, k: k, scratch: scratch)
        } } }
        #expect(y[0..<16].allSatisfy { $0.isNaN }, "row with a NaN gives NaN outputs")
        #expect(y[16..<32].allSatisfy { $0.isFinite }, "the other row is unaffected")
    }

    @Test("the malloc mmap threshold setting reaches glibc; sizes mallopt cannot take are refused")
    func mallocMmapThreshold() {
        // (Whether a block then lands in its own mapping also depends on the free chunks the heap already holds,
        // which a test process cannot control: a process sets this first thing, as `nla` does; bench/explain.sh
        // shows the peak-RSS effect.)
        #expect(!Kernels.fixMallocMmapThreshold(bytes: 0))
        #expect(!Kernels.fixMallocMmapThreshold(bytes: 1 << 40), "mallopt takes an int")
        #if canImport(Glibc)
        #expect(Kernels.fixMallocMmapThreshold(bytes: 1 << 20))
        #endif
    }

    @Test("packed: a matrix of 4 MB and more (own 2 MB-aligned mapping, huge pages) holds the same rows and products")
    func packedLargeMatrix() throws {
        guard PackedWeights.isAvailable else { return }
        let (n, k) = (4096, 1024)  // 4.46 MB packed Q8_0
        let w = randomRawBlocks(.q8_0, blocks: n * k / 32, seed: 0x4B)
        let size = try #require(PackedWeights.byteCount(.q8_0, rows: n, cols: k))
        #expect(size >= 4 << 20 && PackedWeights.byteCount(.q8_0, rows: 15, cols: k) == nil)
        let wf = dequantized(.q8_0, w, rows: n, k: k)
        for _ in 0..<2 {  // made and released twice: the mapping is given back and taken again
            let packed = try #require(w.withUnsafeBytes { PackedWeights(.q8_0, blocks: $0.baseAddress!, rows: n, cols: k) })
            #expect(packed.byteCount == size)
            #expect(Int(bitPattern: packed.bytes) % (2 << 20) == 0, "a large packed matrix starts on a 2 MB boundary")
            var row = [Float](repeating: 0, count: k)
            for r in [0, 1234, n - 1] {
                row.withUnsafeMutableBufferPointer { packed.dequantizeRow(r, into: $0.baseAddress!) }
                #expect(row == Array(wf[(r * k)..<(r * k + k)]), "row \(r) decodes exactly")
            }
            let x = activationRows(1, k, seed: 5)
            let scratch = UnsafeMutableRawPointer.allocate(byteCount: GemvActivation.q16.rowBytes(cols: k), alignment: 64)
            defer { scratch.deallocate() }
            var y = [Float](repeating: .nan, count: n)
            x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in
                packed.matmul(x: xp.baseAddress!, y: yp.baseAddress!, m: 1, scratch: scratch, threads: 2)
            } }
            for r in [0, 1234, n - 1] {
                var ref = 0.0
                for c in 0..<k { ref += Double(wf[r * k + c]) * Double(x[c]) }
                let mag = (0..<k).reduce(0.0) { $0 + abs(Double(wf[r * k + $1]) * Double(x[$1])) }
                #expect(abs(Double(y[r]) - ref) <= 1e-3 * mag + 1e-6, "row \(r): \(y[r]) vs \(ref)")
            }
        }
    }

    @Test("packed: same bytes back per row, and the matmul within f32 summation error of the reference",
          arguments: [QuantType.q8_0, .q4_0])
    func packedMatchesReference(type: QuantType) throws {
        guard PackedWeights.isAvailable else {
            print("[packed] skipped: this CPU has no AVX-512 VNNI or AVX2 (or NLA_PACK=0)")
            return
        }
        #expect(PackedWeights(type, blocks: [UInt8](repeating: 0, count: 34 * 15), rows: 15, cols: 32) == nil, "rows % 16 refused")
        for (si, s) in [(1, 16, 1), (1, 48, 33), (3, 32, 31), (5, 64, 20), (4, 16, 168), (70, 32, 7), (17, 48, 3)].enumerated() {
            let (m, n, blocks) = s
            let k = blocks * 32
            let w = randomRawBlocks(type, blocks: n * blocks, seed: UInt64(31 + si))
            let x = activationRows(m, k, seed: UInt64(7 + si))
            let wf = dequantized(type, w, rows: n, k: k)
            let packed = try #require(w.withUnsafeBytes { PackedWeights(type, blocks: $0.baseAddress!, rows: n, cols: k) })
            var row = [Float](repeating: 0, count: k)
            for r in [0, n / 2, n - 1] {
                row.withUnsafeMutableBufferPointer { packed.dequantizeRow(r, into: $0.baseAddress!) }
                #expect(row == Array(wf[(r * k)..<(r * k + k)]), "row \(r) decodes exactly")
            }
            let act = GemvActivation.partner(of: type)
            let scratch = UnsafeMutableRawPointer.allocate(byteCount: m * act.rowBytes(cols: k), alignment: 64)
            defer { scratch.deallocate() }
            var ys: [[Float]] = []
            for threads in [1, 2] {
                var y = [Float](repeating: .nan, count: m * n)
                x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in
                    packed.matmul(x: xp.baseAddress!, y: yp.baseAddress!, m: m, scratch: scratch, threads: threads)
                } }
                ys.append(y)
            }
            #expect(firstMismatch(ys[0], ys[1]) == nil, "thread count changes nothing")
            let bytes = [UInt8](UnsafeRawBufferPointer(start: scratch, count: m * act.rowBytes(cols: k)))
            let xq = decodeActivations(bytes, act: act, rows: m, k: k, packed: true)
            // The packed rows carry exactly the values of the gemv rows (only the byte layout differs).
            let gemvRows = UnsafeMutableRawPointer.allocate(byteCount: m * act.rowBytes(cols: k), alignment: 64)
            defer { gemvRows.deallocate() }
            x.withUnsafeBufferPointer { ck_gemv_quantize(act.rawValue, $0.baseAddress!, Int64(k), gemvRows, Int64(m), Int64(k)) }
            let gemvBytes = [UInt8](UnsafeRawBufferPointer(start: gemvRows, count: m * act.rowBytes(cols: k)))
            #expect(xq == decodeActivations(gemvBytes, act: act, rows: m, k: k), "\(type) shape \(s): packed rows hold the gemv values")
            let ref = reference(xq, wf, m: m, n: n, k: k)
            for i in 0..<(m * n) {
                let err = abs(Double(ys[0][i]) - ref.y[i])
                #expect(err <= Double(blocks + 2) * 0x1p-23 * ref.mag[i] + 1e-30, "\(type) shape \(s) out \(i): \(ys[0][i]) vs \(ref.y[i])")
            }
        }
    }

    @Test("packed: every output is the fixed f32 formula bit for bit (exact int32 block dots, fma(f32(isum), dw·dx, acc) from +0), so the AVX-512 and AVX2 layouts agree",
          arguments: [QuantType.q8_0, .q4_0])
    func packedEqualsBlockFormula(type: QuantType) throws {
        guard PackedWeights.isAvailable else { return }
        // The second shape has 40 tiles and 70 rows: the tiles go out in runs from a shared counter over two
        // row chunks, so both threads take several runs in an order that changes from call to call.
        for (n, blocks, m) in [(32, 9, 6), (640, 3, 70)] {
            let k = blocks * 32, bpb = type.traits.bytesPerBlock
            let w = randomRawBlocks(type, blocks: n * blocks, seed: 0xF0F)
            let packed = try #require(w.withUnsafeBytes { PackedWeights(type, blocks: $0.baseAddress!, rows: n, cols: k) })
            let x = activationRows(m, k, seed: 0xF10)
            let act = GemvActivation.partner(of: type)
            let rb = act.rowBytes(cols: k)
            let scratch = UnsafeMutableRawPointer.allocate(byteCount: m * rb, alignment: 64)
            defer { scratch.deallocate() }
            var y = [Float](repeating: .nan, count: m * n)
            x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in
                packed.matmul(x: xp.baseAddress!, y: yp.baseAddress!, m: m, scratch: scratch, threads: 2)
            } }
            // The reference reads the plain gemv rows: f32 d per block, then int16 / int8 quants.
            x.withUnsafeBufferPointer { ck_gemv_quantize(act.rawValue, $0.baseAddress!, Int64(k), scratch, Int64(m), Int64(k)) }
            let pad = (blocks * 4 + 63) / 64 * 64
            var mismatches = 0
            for r in 0..<m {
                let row = scratch + r * rb
                for j in 0..<n {
                    var acc: Float = 0
                    for b in 0..<blocks {
                        let wb = 2 + (j * blocks + b) * bpb
                        let dw = ck_f16_to_f32(UInt16(w[wb - 2]) | UInt16(w[wb - 1]) << 8)
                        var isum: Int32 = 0
                        for v in 0..<32 {
                            let q: Int32 = act == .q16 ? Int32(row.loadUnaligned(fromByteOffset: 2 * pad + 2 * (b * 32 + v), as: Int16.self))
                                                       : Int32(row.load(fromByteOffset: 2 * pad + b * 32 + v, as: Int8.self))
                            let wq: Int32 = type == .q8_0 ? Int32(Int8(bitPattern: w[wb + v]))
                                                          : Int32(v < 16 ? w[wb + v] & 15 : w[wb + v - 16] >> 4) - 8
                            isum += q * wq
                        }
                        acc = acc.addingProduct(Float(isum), dw * row.load(fromByteOffset: 4 * b, as: Float.self))
                    }
                    if acc.bitPattern != y[r * n + j].bitPattern { mismatches += 1 }
                }
            }
            #expect(mismatches == 0, "\(type) \(n)×\(blocks * 32), \(m) rows, layout \(PackedWeights.layout): \(mismatches) of \(m * n) outputs differ from the formula")
        }
    }

    @Test("packed: a row's output is bit-identical whatever rows come with it (1…17 rows per call, every micro-kernel row count)",
          arguments: [QuantType.q8_0, .q4_0])
    func packedRowsAreBatchInvariant(type: QuantType) throws {
        guard PackedWeights.isAvailable else { return }
        let (n, blocks, m) = (48, 7, 17)
        let k = blocks * 32
        let w = randomRawBlocks(type, blocks: n * blocks, seed: 0xB17)
        let packed = try #require(w.withUnsafeBytes { PackedWeights(type, blocks: $0.baseAddress!, rows: n, cols: k) })
        let x = activationRows(m, k, seed: 0xB18)
        let act = GemvActivation.partner(of: type)
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: m * act.rowBytes(cols: k), alignment: 64)
        defer { scratch.deallocate() }
        func rows(_ r0: Int, _ count: Int) -> [Float] {
            var y = [Float](repeating: .nan, count: count * n)
            x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in
                packed.matmul(x: xp.baseAddress! + r0 * k, y: yp.baseAddress!, m: count, scratch: scratch, threads: 1)
            } }
            return y
        }
        let all = rows(0, m)
        #expect(!all.contains { $0.isNaN })
        for count in 1...9 {  // every micro-kernel row count, and calls that split into two
            for r0 in stride(from: 0, to: m - count + 1, by: 4) {
                #expect(rows(r0, count) == Array(all[(r0 * n)..<((r0 + count) * n)]), "\(type): rows \(r0)..<\(r0 + count) differ from the 17-row call")
            }
        }
    }

    @Test("packed int16 rows: the byte split keeps the extreme quants (±32767, byte borders) and the matmul is exact on them")
    func packedInt16SplitExtremes() throws {
        guard PackedWeights.isAvailable else {
            print("[packed] skipped: this CPU has no AVX-512 VNNI or AVX2 (or NLA_PACK=0)")
            return
        }
        let k = 64
        // With max |x| = 32767 the block scale is 1, so every quant is the value itself.
        let edges: [Float] = [32767, -32767, -1, 0, 1, 255, 256, -256, -255, -129, -128, 127, 128, 32512, -32513, 511]
        let x = (0..<k).map { edges[$0 % edges.count] * ($0 >= 32 ? -1 : 1) }
        let act = GemvActivation.q16
        let rows = UnsafeMutableRawPointer.allocate(byteCount: act.rowBytes(cols: k), alignment: 64)
        defer { rows.deallocate() }
        x.withUnsafeBufferPointer { ck_packed_quantize(act.rawValue, $0.baseAddress!, Int64(k), rows, 1, Int64(k)) }
        for j in 0..<k { #expect(ck_packed_q16_value(rows, Int64(k), Int64(j)) == Int32(x[j]), "quant \(j)") }
        let w = randomRawBlocks(.q8_0, blocks: 16 * 2, seed: 5)
        let wf = dequantized(.q8_0, w, rows: 16, k: k)
        let packed = try #require(w.withUnsafeBytes { PackedWeights(.q8_0, blocks: $0.baseAddress!, rows: 16, cols: k) })
        var y = [Float](repeating: .nan, count: 16)
        x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in
            packed.matmul(x: xp.baseAddress!, y: yp.baseAddress!, m: 1, scratch: rows)
        } }
        let ref = reference([x.map(Double.init)], wf, m: 1, n: 16, k: k)
        for i in 0..<16 {
            #expect(abs(Double(y[i]) - ref.y[i]) <= 4 * 0x1p-23 * ref.mag[i], "out \(i): \(y[i]) vs \(ref.y[i])")
        }
    }

    @Test("packed, several matrices in one call: every output bit-identical to its own matmul; mixed parts refused",
          arguments: [QuantType.q8_0, .q4_0])
    func packedMultiPartMatchesSingleCalls(type: QuantType) throws {
        guard PackedWeights.isAvailable else {
            print("[packed] skipped: this CPU has no AVX-512 VNNI or AVX2 (or NLA_PACK=0)")
            return
        }
        // (m, part row counts, blocks per row): q/k/v-like parts of different heights, 1…70 rows.
        for (si, s) in [(1, [64, 32, 32], 20), (3, [16], 5), (5, [48, 16], 9), (70, [32, 64, 16, 16], 4), (4, [1024, 256, 256], 20)].enumerated() {
            let (m, ns, blocks) = s
            let k = blocks * 32
            let parts = try ns.enumerated().map { (pi, n) -> PackedWeights in
                let w = randomRawBlocks(type, blocks: n * blocks, seed: UInt64(100 * si + pi))
                return try #require(w.withUnsafeBytes { PackedWeights(type, blocks: $0.baseAddress!, rows: n, cols: k) })
            }
            let x = activationRows(m, k, seed: UInt64(11 + si))
            let act = GemvActivation.partner(of: type)
            let scratch = UnsafeMutableRawPointer.allocate(byteCount: m * act.rowBytes(cols: k), alignment: 64)
            defer { scratch.deallocate() }
            var single: [[Float]] = []
            for p in parts {
                var y = [Float](repeating: .nan, count: m * p.rows)
                x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in
                    p.matmul(x: xp.baseAddress!, y: yp.baseAddress!, m: m, scratch: scratch)
                } }
                single.append(y)
            }
            for threads in [1, 2] {
                let ys = parts.map { p -> UnsafeMutablePointer<Float> in
                    let y = UnsafeMutablePointer<Float>.allocate(capacity: m * p.rows)
                    y.initialize(repeating: .nan, count: m * p.rows)
                    return y
                }
                defer { ys.forEach { $0.deallocate() } }
                x.withUnsafeBufferPointer { xp in
                    PackedWeights.matmul(parts: parts, x: xp.baseAddress!, ys: ys, m: m, scratch: scratch, threads: threads)
                }
                for (pi, p) in parts.enumerated() {
                    let fused = Array(UnsafeBufferPointer(start: ys[pi], count: m * p.rows))
                    #expect(firstMismatch(fused, single[pi]) == nil, "\(type) shape \(s) part \(pi), \(threads) threads")
                }
            }
        }
        let other: QuantType = type == .q8_0 ? .q4_0 : .q8_0
        let a = try #require(randomRawBlocks(type, blocks: 16, seed: 1).withUnsafeBytes { PackedWeights(type, blocks: $0.baseAddress!, rows: 16, cols: 32) })
        let b = try #require(randomRawBlocks(other, blocks: 16, seed: 2).withUnsafeBytes { PackedWeights(other, blocks: $0.baseAddress!, rows: 16, cols: 32) })
        let c = try #require(randomRawBlocks(type, blocks: 32, seed: 3).withUnsafeBytes { PackedWeights(type, blocks: $0.baseAddress!, rows: 16, cols: 64) })
        #expect(PackedWeights.canFuse([a, a]) && !PackedWeights.canFuse([a, b]) && !PackedWeights.canFuse([a, c]) && !PackedWeights.canFuse([]))
        #expect(!PackedWeights.canFuse(Array(repeating: a, count: 9)), "at most 8 parts")
    }
}
