// Swift tiers of the Q4_K / Q6_K / IQ4_NL / Q5_0 weight matmuls (f32 activations; byte layouts in
// Sources/Quant/QuantKBlocks.swift). The scalar tier decodes each weight row with the Quant type table's
// reference dequantizer and sums sequentially; the SIMD tier decodes blocks with SIMD lanes (bit-identical
// values) and keeps 8-lane partial sums per activation row (4 rows per decoded block). Only the summation
// order differs between tiers (contract of QuantKernels.matmulF32).

import Quant

extension ScalarKernels {
    /// y[m,n] = Σ_k x[m,k]·dequant(W)[n,k], sequential over k; W rows decoded by the type table's reference.
    public static func matmulF32Dequant(_ type: QuantType, weights w: UnsafeRawPointer, x: UnsafePointer<Float>, ldx: Int,
                                        y: UnsafeMutablePointer<Float>, ldy: Int, m: Int, n: Int, k: Int) {
        let t = type.traits
        let rowBytes = k / t.blockSize * t.bytesPerBlock
        withUnsafeTemporaryAllocation(of: Float.self, capacity: k) { buf in
            let wf = buf.baseAddress!
            for j in 0..<n {
                t.dequantizeRow(w + j * rowBytes, wf, k)
                for i in 0..<m {
                    var acc: Float = 0
                    for c in 0..<k { acc = acc + x[i * ldx + c] * wf[c] }
                    y[i * ldy + j] = acc
                }
            }
        }
    }
}

extension VectorKernels {
    @inline(__always) static func f16At(_ p: UnsafeRawPointer, _ off: Int) -> Float { QK.f16(p + off) }

    @inline(__always) static func floats(_ v: SIMD16<UInt8>) -> (SIMD8<Float>, SIMD8<Float>) {
        let i = SIMD16<Int32>(truncatingIfNeeded: v)
        return (SIMD8<Float>(i.lowHalf), SIMD8<Float>(i.highHalf))
    }

    /// Decode one Q4_K super-block (256 values) into y. Exact: (d·sc)·q − (dmin·m).
    @inline(__always) static func decodeQ4_K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = f16At(p, 0), dmin = f16At(p, 2)
        for j in 0..<8 {
            let (sc, mn) = scaleMinQ4_K(p + 4, j)
            let dl = d * Float(sc), ml = dmin * Float(mn)
            let off = 16 + 32 * (j / 2)
            for h in 0..<2 {
                var v = p.loadUnaligned(fromByteOffset: off + 16 * h, as: SIMD16<UInt8>.self)
                v = j & 1 == 1 ? v &>> 4 : v & 15
                let (a, b) = floats(v)
                store8(dl * a - ml, y + 32 * j + 16 * h, 0)
                store8(dl * b - ml, y + 32 * j + 16 * h, 8)
            }
        }
    }

    @inline(__always) static func scaleMinQ4_K(_ s: UnsafeRawPointer, _ j: Int) -> (UInt8, UInt8) {
        @inline(__always) func b(_ i: Int) -> UInt8 { s.load(fromByteOffset: i, as: UInt8.self) }
        if j < 4 { return (b(j) & 63, b(j + 4) & 63) }
        return ((b(j + 4) & 15) | ((b(j - 4) >> 6) << 4), (b(j + 4) >> 4) | ((b(j) >> 6) << 4))
    }

    /// Decode one Q6_K super-block. Exact: (d·sc)·q.
    @inline(__always) static func decodeQ6_K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = f16At(p, 208)
        for h in 0..<2 {
            for i0 in stride(from: 0, to: 128, by: 16) {
                let l = p.loadUnaligned(fromByteOffset: 64 * h + i0 % 64, as: SIMD16<UInt8>.self)
                let lo = i0 < 64 ? l & 15 : l &>> 4
                let qh = p.loadUnaligned(fromByteOffset: 128 + 32 * h + i0 % 32, as: SIMD16<UInt8>.self)
                let hi = (qh &>> UInt8(2 * (i0 / 32))) & 3
                let q = SIMD16<Int32>(truncatingIfNeeded: lo | (hi &<< 4)) &- 32
                let dl = d * Float(p.load(fromByteOffset: 192 + (128 * h + i0) / 16, as: Int8.self))
                store8(dl * SIMD8<Float>(q.lowHalf), y + 128 * h + i0, 0)
                store8(dl * SIMD8<Float>(q.highHalf), y + 128 * h + i0, 8)
            }
        }
    }

    /// Decode one IQ4_NL block (32 values). Exact: d·level.
    @inline(__always) static func decodeIQ4_NL(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = f16At(p, 0)
        var lo = SIMD16<Float>(), hi = SIMD16<Float>()
        for j in 0..<16 {
            let b = p.load(fromByteOffset: 2 + j, as: UInt8.self)
            lo[j] = iq4Levels[Int(b & 15)]
            hi[j] = iq4Levels[Int(b >> 4)]
        }
        store8(d * lo.lowHalf, y, 0); store8(d * lo.highHalf, y, 8)
        store8(d * hi.lowHalf, y, 16); store8(d * hi.highHalf, y, 24)
    }

    static let iq4Levels: [Float] = KQ.iq4nlLevels.map(Float.init)

    /// Decode one Q5_0 block (32 values). Exact: d·(q − 16), q = low nibble | bit of qh << 4.
    @inline(__always) static func decodeQ5_0(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = f16At(p, 0)
        let qh = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
        let bytes = p.loadUnaligned(fromByteOffset: 6, as: SIMD16<UInt8>.self)
        let lane = SIMD16<UInt32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
        let hLo = SIMD16<Int32>(truncatingIfNeeded: ((SIMD16<UInt32>(repeating: qh) &>> lane) & 1) &<< 4)
        let hHi = SIMD16<Int32>(truncatingIfNeeded: ((SIMD16<UInt32>(repeating: qh) &>> (lane &+ 16)) & 1) &<< 4)
        let lo = (SIMD16<Int32>(truncatingIfNeeded: bytes & 15) | hLo) &- 16
        let hi = (SIMD16<Int32>(truncatingIfNeeded: bytes &>> 4) | hHi) &- 16
        store8(d * SIMD8<Float>(lo.lowHalf), y, 0); store8(d * SIMD8<Float>(lo.highHalf), y, 8)
        store8(d * SIMD8<Float>(hi.lowHalf), y, 16); store8(d * SIMD8<Float>(hi.highHalf), y, 24)
    }

    @inline(__always) static func decodeBlock(_ type: QuantType, _ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        switch type {
        case .q4_k: decodeQ4_K(p, y)
        case .q6_k: decodeQ6_K(p, y)
        case .iq4_nl: decodeIQ4_NL(p, y)
        case .q5_0: decodeQ5_0(p, y)
        default: preconditionFailure("\(type) is not a K-quant / IQ4_NL type")
        }
    }

    /// Row dequantization for Q4_K / Q6_K / IQ4_NL (bit-identical to the reference).
    public static func dequantizeRowDequant(_ type: QuantType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, count k: Int) {
        let t = type.traits
        for b in 0..<(k / t.blockSize) { decodeBlock(type, src + b * t.bytesPerBlock, dst + b * t.blockSize) }
    }

    /// f32-activation product for Q4_K / Q6_K / IQ4_NL: each block decoded once per 4 activation rows,
    /// 8-lane partial sums per row reduced with `VectorMath.sum`.
    public static func matmulF32Dequant(_ type: QuantType, weights w: UnsafeRawPointer, x: UnsafePointer<Float>, ldx: Int,
                                        y: UnsafeMutablePointer<Float>, ldy: Int, m: Int, n: Int, k: Int) {
        let t = type.traits
        let bs = t.blockSize, bb = t.bytesPerBlock, nb = k / bs
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 256) { buf in
            let wf = buf.baseAddress!, wfc = UnsafePointer(buf.baseAddress!)
            for j in 0..<n {
                let wr = w + j * nb * bb
                var i = 0
                while i < m {
                    let mt = Swift.min(4, m - i)
                    var tile = RowTile4(rows: mt)
                    for b in 0..<nb {
                        decodeBlock(type, wr + b * bb, wf)
                        tile.accumulate { r, a in
                            let xb = x + (i + r) * ldx + b * bs
                            var c = 0
                            while c < bs {
                                a = a + (load8(xb, c) * load8(wf, c) + load8(xb, c + 8) * load8(wfc, c + 8))
                                c += 16
                            }
                        }
                    }
                    tile.store(y, row: i, column: j, ldy: ldy)
                    i += mt
                }
            }
        }
    }
}
