// Vector math for the SIMD tier: exp, tanh, sigmoid and round-half-away-from-zero on SIMD8<Float>,
// written only with operations that lower to plain SSE2 / NEON instructions.
//
// Why not the standard library: this target is built for baseline x86-64 (no FMA, no SSE4.1), where
// `SIMD8<Float>.addingProduct` becomes eight `fmaf` calls and `.rounded(_:)` / `SIMD8<Int32>(_:rounding:)`
// become per-lane libm calls. Everything here uses mul / add / compare / select / bit operations only,
// and never fuses a multiply-add, so results are the same on every target.
//
// Accuracy against Double-precision references (random sweeps of 2^20 points in VectorMathTests, which
// enforce the bounds in brackets; "measured" is the sweep's maximum, with glibc for comparison):
//   exp      [<= 1 ulp] on [-87, 88.7]: measured 0.998 ulp (glibc expf 0.50 ulp). x in [-104, -87]:
//            subnormal results, absolute error <= 2^-149; x > 88.73 -> +inf; x < -104, -inf -> +0; NaN -> NaN.
//   tanh     [<= 2 ulp] on [-10, 10]: measured 1.28 ulp (glibc tanhf 2.13 ulp). Odd polynomial for
//            |x| < 0.625, 1 - 2/(e^{2|x|} + 1) above; ±inf -> ±1, NaN -> NaN.
//   sigmoid  [<= 3 ulp] on [-80, 30]: measured 2.33 ulp (same as 1/(1 + expf(-x))).

/// Vector elementary functions on `SIMD8<Float>`.
public enum VectorMath {
    // 1.5 * 2^23: adding and subtracting it rounds an f32 of magnitude < 2^22 to the nearest integer,
    // ties to even, and leaves the integer in the low mantissa bits.
    @usableFromInline static let roundMagic: Float = 12_582_912
    @usableFromInline static let roundMagicBits: Int32 = 0x4B40_0000

    /// Round to nearest, ties to even, for |x| < 2^22 (returns the float and the Int32).
    @inline(__always) @usableFromInline
    static func roundEven(_ x: SIMD8<Float>) -> (SIMD8<Float>, SIMD8<Int32>) {
        let t = x + roundMagic
        let i = unsafeBitCast(t, to: SIMD8<Int32>.self) &- roundMagicBits
        return (t - roundMagic, i)
    }

    /// Round half away from zero (C `roundf`) for |x| < 2^22, as Int32. Same result as
    /// `Float.rounded(.toNearestOrAwayFromZero)` lane by lane.
    @inline(__always) public static func roundHalfAway(_ x: SIMD8<Float>) -> SIMD8<Int32> {
        let ax = abs(x)
        let (r, ri) = roundEven(ax)
        // a tie that ties-to-even rounded down (ax - r == 0.5, exact) must go up instead
        // (vector `replacing` operands only: the scalar-operand overload becomes a per-lane loop)
        let up = SIMD8<Int32>(repeating: 0).replacing(with: SIMD8<Int32>(repeating: 1), where: (ax - r) .== 0.5)
        let mag = ri &+ up
        return mag.replacing(with: 0 &- mag, where: x .< 0)
    }

    @inline(__always) @usableFromInline
    static func abs(_ x: SIMD8<Float>) -> SIMD8<Float> {
        unsafeBitCast(unsafeBitCast(x, to: SIMD8<UInt32>.self) & 0x7FFF_FFFF, to: SIMD8<Float>.self)
    }

    /// 2^n for n in [-126, 127] (exact).
    @inline(__always) @usableFromInline
    static func pow2(_ n: SIMD8<Int32>) -> SIMD8<Float> {
        unsafeBitCast((n &+ 127) &<< 23, to: SIMD8<Float>.self)
    }

    /// Horizontal maximum (ignores NaN lanes unless all are NaN).
    @inline(__always) public static func max(_ v: SIMD8<Float>) -> Float {
        let a = v.lowHalf.replacing(with: v.highHalf, where: v.highHalf .> v.lowHalf)
        let b = a.lowHalf.replacing(with: a.highHalf, where: a.highHalf .> a.lowHalf)
        return b[1] > b[0] ? b[1] : b[0]
    }

    /// Horizontal sum in a fixed order: ((v0+v4)+(v2+v6)) + ((v1+v5)+(v3+v7)).
    @inline(__always) public static func sum(_ v: SIMD8<Float>) -> Float {
        let a = v.lowHalf + v.highHalf
        let b = a.lowHalf + a.highHalf
        return b[0] + b[1]
    }

    /// e^x, lane by lane (contract at the top of the file).
    /// Method: n = RNE(x·log2 e), r = x − n·ln2 (Cody–Waite, two constants), e^r by its degree-7
    /// Taylor polynomial (truncation < 0.12 ulp on |r| <= ln2/2), then · 2^⌊n/2⌋ · 2^(n−⌊n/2⌋) so that
    /// overflow and subnormal results come out of one correctly signed multiply.
    @inline(__always) public static func exp(_ x: SIMD8<Float>) -> SIMD8<Float> {
        let hi = SIMD8<Float>(repeating: 89), lo = SIMD8<Float>(repeating: -104)
        var xc = x.replacing(with: hi, where: x .> hi)
        xc = xc.replacing(with: lo, where: xc .< lo)
        let (nf, n) = roundEven(xc * 1.442_695_04)
        let r = (xc - nf * 0.693_359_375) - nf * -2.121_944_4e-4
        // e^r = 1 + (r + r²·q(r)), q = 1/2 + r/6 + … + r⁵/5040: the 1 is added last, so the rounding
        // of everything before it is scaled down by |r + r²q| <= 0.42.
        var q: SIMD8<Float> = SIMD8(repeating: 1.0 / 5040)
        q = q * r + 1.0 / 720
        q = q * r + 1.0 / 120
        q = q * r + 1.0 / 24
        q = q * r + 1.0 / 6
        q = q * r + 0.5
        let p = 1 + (r + (r * r) * q)
        let n1 = n &>> 1
        let y = (p * pow2(n1)) * pow2(n &- n1)
        return y.replacing(with: x, where: x .!= x)
    }

    /// tanh(x), lane by lane (contract at the top of the file).
    @inline(__always) public static func tanh(_ x: SIMD8<Float>) -> SIMD8<Float> {
        let ax = abs(x)
        // small |x|: x + x³·Q(x²), Q fitted for relative error (4.7e-9 in exact arithmetic on |x| <= 0.625)
        let z = x * x
        var q: SIMD8<Float> = SIMD8(repeating: -0.005717035848647356)
        q = q * z + 0.020650578662753105
        q = q * z + -0.05374349653720856
        q = q * z + 0.13331490755081177
        q = q * z + -0.3333328366279602
        let small = x + (x * z) * q
        // large |x|: 1 − 2/(e^{2|x|} + 1), sign restored (e = inf gives exactly 1)
        let e = exp(ax + ax)
        let big = 1 - 2 / (e + 1)
        let signed = unsafeBitCast(unsafeBitCast(big, to: SIMD8<UInt32>.self)
                                       | (unsafeBitCast(x, to: SIMD8<UInt32>.self) & 0x8000_0000),
                                   to: SIMD8<Float>.self)
        return signed.replacing(with: small, where: ax .< 0.625)
    }

    /// 1 / (1 + e^{−x}), lane by lane. Stable at both ends (e^{−x} = inf gives +0).
    @inline(__always) public static func sigmoid(_ x: SIMD8<Float>) -> SIMD8<Float> {
        1 / (1 + exp(0 - x))
    }
}
