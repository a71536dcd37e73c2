// Element-wise and reduction kernels of the forward pass, plus the f32 matmuls. This file is the
// model-facing facade: every function dispatches through `Kernels.dispatch` (Dispatch.swift) to the
// scalar reference tier (ScalarKernels.swift), the Swift SIMD tier (VectorKernels.swift) or the C
// tier (CKernels: OpenBLAS / OpenMP; element-wise: elementwise_kernels.c, built per instruction set). No model knowledge: Gemma's (1 + w) norm weights, embedding
// scale and attention scale are applied by the model code. Nothing here allocates.
//
// Numerical contract (details on each function and in the tier files): all arithmetic in f32.
// Default tiers: element-wise C (add, scale, rmsNorm, geluTanhMul, ropeRotateHalf, dot; the rest run
// the SIMD tier), matmuls C. The element-wise C tier is bit-identical to the SIMD tier on every
// instruction-set path (include/elementwise_kernels.h), so everything below holds for it. SIMD vs scalar:
//   add, scale, ropeRotateHalf, geluExactMul, matmulNN(simd)     bit-identical
//   dot, rmsNorm, matmulNT(simd)   16-lane partial sums: differ by summation order only
//                                  (rmsNorm vs exact: SIMD 4.6 ulp, scalar 17.5 ulp measured at n <= 4096)
//   softmax                        vector exp (<= 1 ulp) + 8-lane sum; vs exact <= (8 + n + |x - max|)·2⁻²⁴
//                                  relative (tested); measured 66 ulp SIMD / 263 ulp scalar at n = 4096
//   geluTanhMul                    stable x·σ(2u) form: <= 2.9 ulp relative measured (the scalar formula
//                                  cancels for x << 0: up to 203 ulp relative); tiers within 10·2⁻²⁴·|x·up|
// Measured with /tmp/kernpkg's kbench; bounds enforced by Tests/SIMDKernelsTests.
// Quantized kernels: QuantKernels.swift.

import CKernels

public enum Kernels {
    /// The dispatch table (defaults, or NLA_KERNELS at first use). Set it before running kernels, not
    /// concurrently with them; tests that compare tiers pass tiers explicitly instead.
    public nonisolated(unsafe) static var dispatch: KernelDispatch = .fromEnvironment()
    /// The C kernels' "selected instruction-set path" (CK_ISA_AUTO): CPUID's best, or NLA_C_ISA.
    static let autoISA: Int32 = -1

    /// Threads for the BLAS and OpenMP kernels (0 = all cores).
    public static func setThreads(_ n: Int) { ck_set_threads(Int32(n)) }
    public static var threads: Int { Int(ck_get_threads()) }

    /// glibc raises its mmap threshold to the size of every large block freed (up to 32 MB); blocks of
    /// that size then come from the heap and leave resident holes there when freed. A command-line
    /// process that allocates weights, KV caches and big scratch calls this once at start with a fixed
    /// threshold (the library itself never changes process-wide malloc settings). False where the C
    /// library has no such setting or `bytes` is not in 1...Int32.max.
    @discardableResult
    public static func fixMallocMmapThreshold(bytes: Int) -> Bool {
        guard bytes > 0, bytes <= Int(Int32.max) else { return false }  // mallopt takes an int
        return ck_set_malloc_mmap_threshold(bytes) == 1
    }

    /// The first index of the largest value, that value, and the largest value at any other index
    /// (equal to the first when the maximum repeats). NaNs never win; no value above −inf gives
    /// (0, −inf, −inf). Vectorized in C (greedy sampling and top-2 margins over a 262k vocabulary).
    public static func top2(_ x: UnsafeBufferPointer<Float>) -> (index: Int, first: Float, second: Float) {
        var i: Int64 = 0
        var a: Float = 0, b: Float = 0
        ck_top2(x.baseAddress ?? UnsafePointer(bitPattern: 64)!, Int64(x.count), &i, &a, &b)
        return (Int(i), a, b)
    }

    /// Sum of a[i]*b[i] over n elements.
    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        kernelRequire(n >= 0, "dot: negative n \(n)")
        switch dispatch.elementwise {
        case .scalar: return ScalarKernels.dot(a, b, n)
        case .simd: return VectorKernels.dot(a, b, n)
        case .c: return ck_ew_dot(a, b, Int64(n), autoISA)
        }
    }

    /// out = x * rsqrt(mean(x²) + eps) * weight   (out may alias x)
    public static func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                               out: UnsafeMutablePointer<Float>, n: Int, eps: Float) {
        kernelRequire(n > 0, "rmsNorm: n \(n) must be positive")
        switch dispatch.elementwise {
        case .scalar: ScalarKernels.rmsNorm(x, weight: weight, out: out, n: n, eps: eps)
        case .simd: VectorKernels.rmsNorm(x, weight: weight, out: out, n: n, eps: eps)
        case .c: ck_ew_rmsnorm_rows(x, weight, out, 1, Int64(n), eps, autoISA)
        }
    }

    /// RMSNorm applied to each of `rows` consecutive vectors of length n.
    public static func rmsNormRows(_ x: UnsafeMutablePointer<Float>, weight: UnsafePointer<Float>,
                                   out: UnsafeMutablePointer<Float>, rows: Int, n: Int, eps: Float) {
        kernelRequire(n > 0 && rows >= 0, "rmsNormRows: rows \(rows), n \(n)")
        kernelRequire(rows.multipliedReportingOverflow(by: n).overflow == false, "rmsNormRows: rows × n overflows")
        switch dispatch.elementwise {
        case .scalar: ScalarKernels.rmsNormRows(x, weight: weight, out: out, rows: rows, n: n, eps: eps)
        case .simd: VectorKernels.rmsNormRows(x, weight: weight, out: out, rows: rows, n: n, eps: eps)
        case .c: ck_ew_rmsnorm_rows(x, weight, out, Int64(rows), Int64(n), eps, autoISA)
        }
    }

    /// a += b
    public static func add(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) {
        kernelRequire(n >= 0, "add: negative n \(n)")
        switch dispatch.elementwise {
        case .scalar: ScalarKernels.add(a, b, n)
        case .simd: VectorKernels.add(a, b, n)
        case .c: ck_ew_add(a, b, Int64(n), autoISA)
        }
    }

    /// a *= s
    public static func scale(_ a: UnsafeMutablePointer<Float>, _ s: Float, _ n: Int) {
        kernelRequire(n >= 0, "scale: negative n \(n)")
        switch dispatch.elementwise {
        case .scalar: ScalarKernels.scale(a, s, n)
        case .simd: VectorKernels.scale(a, s, n)
        case .c: ck_ew_scale(a, s, Int64(n), autoISA)
        }
    }

    /// In-place softmax over n values (max-subtracted, f32). All −inf gives zeros. (No C tier: the
    /// forward pass's softmax lives in the C attention kernel; `.c` runs the SIMD tier.)
    public static func softmax(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
        kernelRequire(n >= 0, "softmax: negative n \(n)")
        if dispatch.elementwise == .scalar { ScalarKernels.softmax(x, n) } else { VectorKernels.softmax(x, n) }
    }

    /// out[i] = gelu_tanh(gate[i]) * up[i], with
    /// gelu_tanh(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))   (PyTorch's approximate="tanh").
    /// out may alias gate or up.
    public static func geluTanhMul(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>,
                                   out: UnsafeMutablePointer<Float>, n: Int) {
        kernelRequire(n >= 0, "geluTanhMul: negative n \(n)")
        switch dispatch.elementwise {
        case .scalar: ScalarKernels.geluTanhMul(gate, up, out: out, n: n)
        case .simd: VectorKernels.geluTanhMul(gate, up, out: out, n: n)
        case .c: ck_ew_gelu_tanh_mul(gate, up, out, Int64(n), autoISA)
        }
    }

    /// out[i] = gelu(gate[i]) * up[i] with the exact gelu 0.5·x·(1 + erf(x/√2)) (transformers' "gelu").
    public static func geluExactMul(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>,
                                    out: UnsafeMutablePointer<Float>, n: Int) {
        kernelRequire(n >= 0, "geluExactMul: negative n \(n)")
        ScalarKernels.geluExactMul(gate, up, out: out, n: n)
    }

    /// Rotary embedding, "rotate half" convention (transformers' `apply_rotary_pos_emb`):
    /// for i < d/2: x'[i] = x[i]·cos[i] − x[i+d/2]·sin[i];  x'[i+d/2] = x[i+d/2]·cos[i] + x[i]·sin[i].
    /// `cos`/`sin` hold d/2 values (the two halves of transformers' cat(freqs, freqs) are equal).
    public static func ropeRotateHalf(_ x: UnsafeMutablePointer<Float>, cos: UnsafePointer<Float>,
                                      sin: UnsafePointer<Float>, headDim d: Int) {
        kernelRequire(d >= 0 && d % 2 == 0, "ropeRotateHalf: headDim \(d) must be even and non-negative")
        switch dispatch.elementwise {
        case .scalar: ScalarKernels.ropeRotateHalf(x, cos: cos, sin: sin, headDim: d)
        case .simd: VectorKernels.ropeRotateHalf(x, cos: cos, sin: sin, headDim: d)
        case .c: ck_ew_rope_rotate_half(x, cos, sin, Int64(d), autoISA)
        }
    }

    /// Y[M,N] = X[M,K] · W[N,K]ᵀ (+ beta·Y), f32. C tier: OpenBLAS (its own blocking and threads).
    public static func matmulNT(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                m: Int, n: Int, k: Int, ldx: Int? = nil, ldw: Int? = nil, ldy: Int? = nil, beta: Float = 0) {
        let lx = ldx ?? k, lw = ldw ?? k, ly = ldy ?? n
        kernelCheckMatmul("matmulNT", m: m, n: n, k: k, ldx: lx, ldw: lw, minLdw: k, ldy: ly)
        switch dispatch.matmul {
        case .c: ck_sgemm_nt(Int32(m), Int32(n), Int32(k), x, Int32(lx), w, Int32(lw), y, Int32(ly), beta)
        case .simd: VectorKernels.matmulNT(x, w, y, m: m, n: n, k: k, ldx: lx, ldw: lw, ldy: ly, beta: beta)
        case .scalar: ScalarKernels.matmulNT(x, w, y, m: m, n: n, k: k, ldx: lx, ldw: lw, ldy: ly, beta: beta)
        }
    }

    /// Y[M,N] = X[M,K] · W[K,N] (+ beta·Y), f32. C tier: OpenBLAS.
    public static func matmulNN(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                m: Int, n: Int, k: Int, ldx: Int? = nil, ldw: Int? = nil, ldy: Int? = nil, beta: Float = 0) {
        let lx = ldx ?? k, lw = ldw ?? n, ly = ldy ?? n
        kernelCheckMatmul("matmulNN", m: m, n: n, k: k, ldx: lx, ldw: lw, minLdw: n, ldy: ly)
        switch dispatch.matmul {
        case .c: ck_sgemm_nn(Int32(m), Int32(n), Int32(k), x, Int32(lx), w, Int32(lw), y, Int32(ly), beta)
        case .simd: VectorKernels.matmulNN(x, w, y, m: m, n: n, k: k, ldx: lx, ldw: lw, ldy: ly, beta: beta)
        case .scalar: ScalarKernels.matmulNN(x, w, y, m: m, n: n, k: k, ldx: lx, ldw: lw, ldy: ly, beta: beta)
        }
    }

    /// bf16 bits → f32, OpenMP-threaded (exact on every tier: bf16 is the top half of f32).
    public static func bf16ToFloat(_ src: UnsafePointer<UInt16>, _ dst: UnsafeMutablePointer<Float>, count: Int) {
        kernelRequire(count >= 0, "bf16ToFloat: negative count \(count)")
        ck_bf16_to_f32(src, dst, count)
    }
}
