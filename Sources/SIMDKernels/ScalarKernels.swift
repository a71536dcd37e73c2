// Scalar reference tier: plain loops in a fixed, documented order. This tier *defines* each kernel;
// the SIMD and C tiers are tested against it (tests state the tolerance per kernel). It is also the
// tier to use when debugging a numerical difference. No allocation, no model knowledge.

import Quant

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reference (scalar) implementations of every kernel. All arithmetic is f32, sequential, without
/// fused multiply-adds unless stated.
public enum ScalarKernels {
    /// Σ a[i]·b[i], sequential over i.
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var s: Float = 0
        for i in 0..<n { s = s + a[i] * b[i] }
        return s
    }

    /// out = (x · inv) · weight, inv = 1 / sqrt(Σx²/n + eps) with a sequential sum. out may alias x.
    public static func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                               out: UnsafeMutablePointer<Float>, n: Int, eps: Float) {
        let inv = 1 / (dot(x, x, n) / Float(n) + eps).squareRoot()
        for i in 0..<n { out[i] = (x[i] * inv) * weight[i] }
    }

    public static func rmsNormRows(_ x: UnsafeMutablePointer<Float>, weight: UnsafePointer<Float>,
                                   out: UnsafeMutablePointer<Float>, rows: Int, n: Int, eps: Float) {
        for r in 0..<rows { rmsNorm(x + r * n, weight: weight, out: out + r * n, n: n, eps: eps) }
    }

    public static func add(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) {
        for i in 0..<n { a[i] += b[i] }
    }

    public static func scale(_ a: UnsafeMutablePointer<Float>, _ s: Float, _ n: Int) {
        for i in 0..<n { a[i] *= s }
    }

    /// x ← exp(x − max) / Σ exp(x − max), libm expf, sequential sum, then multiply by 1/sum.
    /// All −inf (or n == 0): zeros.
    public static func softmax(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
        var m = -Float.infinity
        for i in 0..<n where x[i] > m { m = x[i] }
        if m == -Float.infinity { for i in 0..<n { x[i] = 0 }; return }
        var s: Float = 0
        for i in 0..<n { let e = expf(x[i] - m); x[i] = e; s += e }
        scale(x, 1 / s, n)
    }

    /// out[i] = 0.5·x·(1 + tanhf(√(2/π)·(x + 0.044715·x³)))·up[i] with x = gate[i] — PyTorch's
    /// `gelu(approximate="tanh")` written literally (libm tanhf).
    public static func geluTanhMul(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>,
                                   out: UnsafeMutablePointer<Float>, n: Int) {
        for i in 0..<n {
            let x = gate[i]
            let inner = geluBeta * (x + geluKappa * x * x * x)
            out[i] = 0.5 * x * (1 + tanhf(inner)) * up[i]
        }
    }

    /// out[i] = 0.5·x·(1 + erff(x/√2))·up[i] (exact GELU, libm erff).
    public static func geluExactMul(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>,
                                    out: UnsafeMutablePointer<Float>, n: Int) {
        for i in 0..<n {
            let x = gate[i]
            out[i] = 0.5 * x * (1 + erff(x * 0.7071067811865476)) * up[i]
        }
    }

    /// Rotate-half RoPE: x'[i] = x[i]·c − x[i+h]·s, x'[i+h] = x[i+h]·c + x[i]·s (h = d/2).
    public static func ropeRotateHalf(_ x: UnsafeMutablePointer<Float>, cos: UnsafePointer<Float>,
                                      sin: UnsafePointer<Float>, headDim d: Int) {
        let h = d / 2
        for i in 0..<h {
            let a = x[i], b = x[i + h]
            x[i] = a * cos[i] - b * sin[i]
            x[i + h] = b * cos[i] + a * sin[i]
        }
    }

    /// Y[M,N] = X[M,K]·W[N,K]ᵀ (+ beta·Y), each output a sequential dot over k.
    public static func matmulNT(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                m: Int, n: Int, k: Int, ldx: Int, ldw: Int, ldy: Int, beta: Float) {
        for i in 0..<m {
            for j in 0..<n {
                let s = dot(x + i * ldx, w + j * ldw, k)
                y[i * ldy + j] = beta == 0 ? s : s + beta * y[i * ldy + j]
            }
        }
    }

    /// Y[M,N] = X[M,K]·W[K,N] (+ beta·Y), each output a sequential sum over k.
    public static func matmulNN(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                m: Int, n: Int, k: Int, ldx: Int, ldw: Int, ldy: Int, beta: Float) {
        for i in 0..<m {
            for j in 0..<n {
                var s: Float = 0
                for p in 0..<k { s = s + x[i * ldx + p] * w[p * ldw + j] }
                y[i * ldy + j] = beta == 0 ? s : s + beta * y[i * ldy + j]
            }
        }
    }

    /// √(2/π) and 0.044715: the constants of the tanh GELU.
    public static let geluBeta: Float = 0.7978845608028654
    public static let geluKappa: Float = 0.044715
}

// MARK: - Quantized kernels, reference tier

extension ScalarKernels {
    /// Quantize `rows` rows of k floats (k % 32 == 0, row stride ldx) to contiguous Q8_0 rows.
    /// Per block: amax = max|x|; d = amax/127; id = d != 0 ? 1/d : 0;
    /// q = clamp(round-half-away-from-zero(x·id), −127, 127); stored d = Float16(d) (RNE).
    /// Inputs must be finite (non-finite input gives unspecified bytes).
    public static func quantizeRowsQ8_0(_ x: UnsafePointer<Float>, ldx: Int, rows: Int, k: Int,
                                        out: UnsafeMutableRawPointer) {
        let nb = k / QK.block
        for r in 0..<rows {
            for b in 0..<nb {
                let xb = x + r * ldx + b * QK.block
                let yb = out + (r * nb + b) * QK.q8Bytes
                var amax: Float = 0
                for j in 0..<QK.block { let a = Swift.abs(xb[j]); amax = a > amax ? a : amax }
                let d = amax / 127
                let id: Float = d != 0 ? 1 / d : 0
                yb.storeBytes(of: Float16(d).bitPattern.littleEndian, as: UInt16.self)
                for j in 0..<QK.block {
                    var v = (xb[j] * id).rounded(.toNearestOrAwayFromZero)
                    v = v > 127 ? 127 : (v < -127 ? -127 : v)
                    yb.storeBytes(of: Int8(v), toByteOffset: 2 + j, as: Int8.self)
                }
            }
        }
    }

    /// dst[j] = Float(q_j)·Float(d) (exact) for one row of k values (k % 32 == 0).
    public static func dequantizeRow(_ type: QuantType, _ src: UnsafeRawPointer,
                                     _ dst: UnsafeMutablePointer<Float>, count k: Int) {
        let bb = type.traits.bytesPerBlock
        for b in 0..<(k / QK.block) {
            let p = src + b * bb
            let d = QK.f16(p)
            let yb = dst + b * QK.block
            for j in 0..<QK.block { yb[j] = Float(QK.quant(type, p, j)) * d }
        }
    }

    /// out[b] = exact Σ_j q_w[j]·q_x[j] over block b (Q4_0: nibble − 8), for nb blocks.
    public static func blockDots(_ type: QuantType, weights w: UnsafeRawPointer, activations xq: UnsafeRawPointer,
                                 out: UnsafeMutablePointer<Int32>, blocks nb: Int) {
        let bb = type.traits.bytesPerBlock
        for b in 0..<nb { out[b] = idot(type, w + b * bb, xq + b * QK.q8Bytes) }
    }

    @inline(__always)
    static func idot(_ type: QuantType, _ wb: UnsafeRawPointer, _ xb: UnsafeRawPointer) -> Int32 {
        var s: Int32 = 0
        for j in 0..<QK.block {
            s += Int32(QK.quant(type, wb, j)) * Int32(xb.load(fromByteOffset: 2 + j, as: Int8.self))
        }
        return s
    }

    /// Integer path: y[m,n] = fold_b acc = acc + Float(isum_b)·(Float(d_w)·Float(d_x)), acc from 0.
    public static func matmulQ8(_ type: QuantType, weights w: UnsafeRawPointer, activations xq: UnsafeRawPointer,
                                y: UnsafeMutablePointer<Float>, ldy: Int, m: Int, n: Int, k: Int) {
        let bb = type.traits.bytesPerBlock
        let nb = k / QK.block
        for i in 0..<m {
            let xr = xq + i * nb * QK.q8Bytes
            for j in 0..<n {
                let wr = w + j * nb * bb
                var acc: Float = 0
                for b in 0..<nb {
                    let wb = wr + b * bb, xb = xr + b * QK.q8Bytes
                    acc = acc + Float(idot(type, wb, xb)) * (QK.f16(wb) * QK.f16(xb))
                }
                y[i * ldy + j] = acc
            }
        }
    }

    /// f32-activation path: y[m,n] = Σ_k x[m,k]·(Float(q)·Float(d)), sequential over k.
    public static func matmulF32(_ type: QuantType, weights w: UnsafeRawPointer, x: UnsafePointer<Float>, ldx: Int,
                                 y: UnsafeMutablePointer<Float>, ldy: Int, m: Int, n: Int, k: Int) {
        let bb = type.traits.bytesPerBlock
        let nb = k / QK.block
        for i in 0..<m {
            for j in 0..<n {
                let wr = w + j * nb * bb
                var acc: Float = 0
                for b in 0..<nb {
                    let wb = wr + b * bb
                    let d = QK.f16(wb)
                    for t in 0..<QK.block {
                        acc = acc + x[i * ldx + b * QK.block + t] * (Float(QK.quant(type, wb, t)) * d)
                    }
                }
                y[i * ldy + j] = acc
            }
        }
    }
}

/// Block-format constants and byte accessors shared by the Swift tiers.
enum QK {
    static let block = 32
    static let q8Bytes = 34

    /// The block's f16 scale as f32 (exact; same value as `Float(Float16(bitPattern:))`, written out
    /// because that conversion is a library call on x86-64).
    @inline(__always) static func f16(_ p: UnsafeRawPointer) -> Float {
        let h = UInt32(UInt16(littleEndian: p.loadUnaligned(as: UInt16.self)))
        let sign = (h & 0x8000) << 16, em = h & 0x7FFF
        if em >= 0x0400 && em < 0x7C00 { return Float(bitPattern: sign | ((em << 13) &+ 0x3800_0000)) }  // normal
        if em < 0x0400 { let f = Float(em) * 0x1p-24; return sign != 0 ? -f : f }  // subnormal, zero
        return Float(bitPattern: sign | 0x7F80_0000 | ((em & 0x3FF) << 13))  // inf, NaN
    }

    /// Signed quant j of a weight block (Q4_0: nibble − 8). Q8_0 / Q4_0 only; any other type traps.
    @inline(__always) static func quant(_ type: QuantType, _ p: UnsafeRawPointer, _ j: Int) -> Int {
        switch type {
        case .q8_0: return Int(p.load(fromByteOffset: 2 + j, as: Int8.self))
        case .q4_0:
            let byte = p.load(fromByteOffset: 2 + (j & 15), as: UInt8.self)
            return Int(j < 16 ? byte & 0x0F : byte >> 4) - 8
        default: preconditionFailure("\(type) is not a 32-value integer block type (Q8_0, Q4_0)")
        }
    }
}
