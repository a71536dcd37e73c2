// Element-wise and reduction kernels of the forward pass, vectorized with Swift SIMD types
// (SIMD8<Float> lowers to AVX on x86-64 and to two NEON registers on ARM). No model knowledge:
// Gemma's (1 + w) norm weights, embedding scale and attention scale are applied by the model code.
//
// Numerical contract: all accumulation in f32. Reductions (RMSNorm's sum of squares, dot products,
// softmax's sum) use 8 interleaved partial sums, so results differ from a sequential loop by a few
// ulps; the model goldens (cos >= 0.99999 vs transformers) bound the effect end to end.

import CKernels
import Foundation

public enum Kernels {
    /// Threads for the BLAS and OpenMP kernels (0 = all cores).
    public static func setThreads(_ n: Int) { ck_set_threads(Int32(n)) }
    public static var threads: Int { Int(ck_get_threads()) }

    /// Sum of a[i]*b[i] over n elements.
    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = SIMD8<Float>(repeating: 0)
        var i = 0
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        while i + 8 <= n {
            let va = ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            let vb = rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            acc = acc.addingProduct(va, vb)
            i += 8
        }
        var s = acc.sum()
        while i < n { s += a[i] * b[i]; i += 1 }
        return s
    }

    /// out = x * rsqrt(mean(x²) + eps) * weight   (out may alias x)
    public static func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                               out: UnsafeMutablePointer<Float>, n: Int, eps: Float) {
        let ss = dot(x, x, n)
        let inv = 1 / (ss / Float(n) + eps).squareRoot()
        var i = 0
        let rx = UnsafeRawPointer(x), rw = UnsafeRawPointer(weight), ro = UnsafeMutableRawPointer(out)
        while i + 8 <= n {
            let vx = rx.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            let vw = rw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            ro.storeBytes(of: (vx * inv) * vw, toByteOffset: i * 4, as: SIMD8<Float>.self)
            i += 8
        }
        while i < n { out[i] = (x[i] * inv) * weight[i]; i += 1 }
    }

    /// RMSNorm applied to each of `rows` consecutive vectors of length n.
    public static func rmsNormRows(_ x: UnsafeMutablePointer<Float>, weight: UnsafePointer<Float>,
                                   out: UnsafeMutablePointer<Float>, rows: Int, n: Int, eps: Float) {
        for r in 0..<rows { rmsNorm(x + r * n, weight: weight, out: out + r * n, n: n, eps: eps) }
    }

    /// a += b
    public static func add(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) {
        var i = 0
        let ra = UnsafeMutableRawPointer(a), rb = UnsafeRawPointer(b)
        while i + 8 <= n {
            let va = ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            let vb = rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            ra.storeBytes(of: va + vb, toByteOffset: i * 4, as: SIMD8<Float>.self)
            i += 8
        }
        while i < n { a[i] += b[i]; i += 1 }
    }

    /// a *= s
    public static func scale(_ a: UnsafeMutablePointer<Float>, _ s: Float, _ n: Int) {
        var i = 0
        let ra = UnsafeMutableRawPointer(a)
        while i + 8 <= n {
            let va = ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            ra.storeBytes(of: va * s, toByteOffset: i * 4, as: SIMD8<Float>.self)
            i += 8
        }
        while i < n { a[i] *= s; i += 1 }
    }

    /// In-place softmax over n values (max-subtracted, f32).
    public static func softmax(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
        var m = -Float.infinity
        for i in 0..<n where x[i] > m { m = x[i] }
        if m == -Float.infinity { for i in 0..<n { x[i] = 0 }; return }
        var s: Float = 0
        for i in 0..<n { let e = expf(x[i] - m); x[i] = e; s += e }
        scale(x, 1 / s, n)
    }

    /// out[i] = gelu_tanh(gate[i]) * up[i], with
    /// gelu_tanh(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))   (PyTorch's approximate="tanh").
    public static func geluTanhMul(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>,
                                   out: UnsafeMutablePointer<Float>, n: Int) {
        let beta: Float = 0.7978845608028654  // √(2/π)
        let kappa: Float = 0.044715
        for i in 0..<n {
            let x = gate[i]
            let inner = beta * (x + kappa * x * x * x)
            out[i] = 0.5 * x * (1 + tanhf(inner)) * up[i]
        }
    }

    /// out[i] = gelu(gate[i]) * up[i] with the exact gelu 0.5·x·(1 + erf(x/√2)) (transformers' "gelu").
    public static func geluExactMul(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>,
                                    out: UnsafeMutablePointer<Float>, n: Int) {
        for i in 0..<n {
            let x = gate[i]
            out[i] = 0.5 * x * (1 + erff(x * 0.7071067811865476)) * up[i]
        }
    }

    /// Rotary embedding, "rotate half" convention (transformers' `apply_rotary_pos_emb`):
    /// for i < d/2: x'[i] = x[i]·cos[i] − x[i+d/2]·sin[i];  x'[i+d/2] = x[i+d/2]·cos[i] + x[i]·sin[i].
    /// `cos`/`sin` hold d/2 values (the two halves of transformers' cat(freqs, freqs) are equal).
    public static func ropeRotateHalf(_ x: UnsafeMutablePointer<Float>, cos: UnsafePointer<Float>,
                                      sin: UnsafePointer<Float>, headDim d: Int) {
        let h = d / 2
        for i in 0..<h {
            let a = x[i], b = x[i + h]
            x[i] = a * cos[i] - b * sin[i]
            x[i + h] = b * cos[i] + a * sin[i]
        }
    }

    /// Y[M,N] = X[M,K] · W[N,K]ᵀ (+ beta·Y), f32 (OpenBLAS).
    public static func matmulNT(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                m: Int, n: Int, k: Int, ldx: Int? = nil, ldw: Int? = nil, ldy: Int? = nil, beta: Float = 0) {
        ck_sgemm_nt(Int32(m), Int32(n), Int32(k), x, Int32(ldx ?? k), w, Int32(ldw ?? k), y, Int32(ldy ?? n), beta)
    }

    /// Y[M,N] = X[M,K] · W[K,N] (+ beta·Y), f32 (OpenBLAS).
    public static func matmulNN(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                m: Int, n: Int, k: Int, ldx: Int? = nil, ldw: Int? = nil, ldy: Int? = nil, beta: Float = 0) {
        ck_sgemm_nn(Int32(m), Int32(n), Int32(k), x, Int32(ldx ?? k), w, Int32(ldw ?? n), y, Int32(ldy ?? n), beta)
    }

    /// bf16 bits → f32, OpenMP-threaded.
    public static func bf16ToFloat(_ src: UnsafePointer<UInt16>, _ dst: UnsafeMutablePointer<Float>, count: Int) {
        ck_bf16_to_f32(src, dst, count)
    }
}
