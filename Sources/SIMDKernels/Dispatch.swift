// The single dispatch table of the kernels: which tier runs each kernel family.
//
// Tiers (shared/docs/style.md): `.scalar` is the reference (plain loops, deterministic, the definition
// every other tier is tested against), `.simd` is portable Swift SIMD, `.c` is the OpenMP-threaded C
// target (with its own run-time choice of instruction set, see `CKernelISA`). A kernel without a
// tier falls back to the next lower one (element-wise `.c` has add, scale, dot, rmsNorm, geluTanhMul
// and ropeRotateHalf; softmax and geluExactMul run `.simd`). Model code never names a tier: it calls
// `Kernels.*` / `QuantKernels.*` and this table decides.
//
// Defaults: matmuls and element-wise `.c`, quantize `.simd`, quantized matmuls with the weight type's
// activation partner.
// Override for tests and benchmarks with `Kernels.dispatch = ...`, `QuantKernels.tier = .scalar`, or
// the environment variable NLA_KERNELS (read once, at first use), e.g.
//     NLA_KERNELS=scalar                          every family on the scalar tier
//     NLA_KERNELS=simd                            every family on Swift SIMD (matmuls too)
//     NLA_KERNELS=c                               every family on C
//     NLA_KERNELS=elementwise=simd                the Swift SIMD element-wise tier (the pre-C default)
//     NLA_KERNELS=matmul=simd,elementwise=scalar,act=f32
// NLA_C_ISA=generic|avx2|avx512vnni forces the C tier's instruction set (see CKernelISA), element-wise
// kernels included (their avx512vnni path is plain AVX-512).

import CKernels

/// Implementation tier of a kernel.
public enum KernelTier: String, Sendable, CaseIterable, CustomStringConvertible {
    case scalar, simd, c
    public var description: String { rawValue }
}

/// Activation format of the quantized-weight matmuls.
public enum ActivationMode: String, Sendable, CaseIterable, CustomStringConvertible {
    /// Activations quantized to Q8_0 per 32 values, integer block dot products (ggml's scheme).
    case q8_0
    /// f32 activations, weights dequantized on the fly (exact) and multiplied in f32.
    case f32
    public var description: String { rawValue }
}

/// Which tier runs each kernel family.
public struct KernelDispatch: Sendable, Equatable, CustomStringConvertible {
    /// f32 `matmulNT`/`matmulNN` (`.c` = OpenBLAS) and the quantized matmuls.
    public var matmul: KernelTier
    /// Activation quantization (f32 → Q8_0) and row dequantization.
    public var quantize: KernelTier
    /// dot, rmsNorm, add, scale, softmax, GELU, RoPE (`.c`: elementwise_kernels.c where it has the
    /// kernel, else `.simd`).
    public var elementwise: KernelTier
    /// Activation format of quantized-weight matmuls (`QuantKernels.matmul`); nil = the weight type's
    /// own partner (the model passes it from the Quant type table: Q8_0 weights → f32, Q4_0 → Q8_0).
    public var activation: ActivationMode?

    public init(matmul: KernelTier = .c, quantize: KernelTier = .simd, elementwise: KernelTier = .c,
                activation: ActivationMode? = nil) {
        self.matmul = matmul
        self.quantize = quantize
        self.elementwise = elementwise
        self.activation = activation
    }

    /// The defaults: matmuls and element-wise in C, quantize in Swift SIMD, activations per weight type.
    public static let standard = KernelDispatch()

    /// Every family on `tier`.
    public static func all(_ tier: KernelTier, activation: ActivationMode? = nil) -> KernelDispatch {
        KernelDispatch(matmul: tier, quantize: tier, elementwise: tier, activation: activation)
    }

    /// Parses an NLA_KERNELS value (grammar in the file header); nil if malformed.
    public static func parse(_ spec: String) -> KernelDispatch? {
        var d = KernelDispatch.standard
        for item in spec.split(separator: ",") {
            let kv = item.split(separator: "=", maxSplits: 1).map { String($0).trimmingWhitespace() }
            if kv.count == 1 {
                guard let t = KernelTier(rawValue: kv[0].lowercased()) else { return nil }
                let act = d.activation
                d = .all(t, activation: act)
                continue
            }
            let key = kv[0].lowercased(), value = kv[1].lowercased()
            switch key {
            case "act", "activation":
                guard let a = ActivationMode(rawValue: value) else { return nil }
                d.activation = a
            case "matmul", "quantize", "elementwise":
                guard let t = KernelTier(rawValue: value) else { return nil }
                if key == "matmul" { d.matmul = t } else if key == "quantize" { d.quantize = t } else { d.elementwise = t }
            default: return nil
            }
        }
        return d
    }

    /// The table from NLA_KERNELS, or `.standard` when it is unset. A malformed value is reported on
    /// stderr once and ignored (the process keeps the defaults rather than guessing).
    public static func fromEnvironment() -> KernelDispatch {
        guard let raw = getenv("NLA_KERNELS") else { return .standard }
        let spec = String(cString: raw)
        if let d = parse(spec) { return d }
        var msg = "nla: ignoring malformed NLA_KERNELS=\(spec) (expected scalar|simd|c or family=tier,...)\n"
        msg.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
        return .standard
    }

    public var description: String {
        "matmul=\(matmul),quantize=\(quantize),elementwise=\(elementwise),act=\(activation.map(\.rawValue) ?? "auto")"
    }
}

extension String {
    fileprivate func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}

/// Instruction-set path of the C tier, chosen at run time from CPUID.
public enum CKernelISA: Int32, Sendable, CaseIterable, CustomStringConvertible {
    case generic = 0
    case avx2 = 1
    case avx512vnni = 2

    /// Compiled in and supported by this CPU.
    public var isAvailable: Bool { ck_quant_isa_available(rawValue) != 0 }
    /// The paths usable on this machine, lowest first.
    public static var available: [CKernelISA] { allCases.filter(\.isAvailable) }
    /// The path the C tier uses (best available, or NLA_C_ISA, or `select`).
    public static var selected: CKernelISA { CKernelISA(rawValue: ck_quant_isa_selected()) ?? .generic }
    /// Force the C tier's path (nil = best available); returns the path now selected. Set before
    /// running kernels, not concurrently with them.
    @discardableResult
    public static func select(_ isa: CKernelISA?) -> CKernelISA {
        CKernelISA(rawValue: ck_quant_set_isa(isa?.rawValue ?? -1)) ?? .generic
    }
    public var description: String { String(cString: ck_quant_isa_name(rawValue)) }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
