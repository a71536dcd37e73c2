// Element types of dense (not block-quantized) tensors as they appear in safetensors files,
// and the conversions between them that the runtime needs.

/// A dense element type. Raw values are the safetensors dtype strings.
public enum DType: String, Sendable, CaseIterable {
    case f32 = "F32"
    case f16 = "F16"
    case bf16 = "BF16"
    case i32 = "I32"
    case i64 = "I64"
    case u8 = "U8"
    case i8 = "I8"

    public var byteSize: Int {
        switch self {
        case .f32, .i32: return 4
        case .f16, .bf16: return 2
        case .i64: return 8
        case .u8, .i8: return 1
        }
    }

    /// Whether `widen` can turn this dtype into f32 values.
    public var isFloat: Bool { self == .f32 || self == .f16 || self == .bf16 }
}

/// bf16 → f32 is exact: the bf16 bits are the top half of the f32 bits.
@inline(__always)
public func bf16ToFloat(_ bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
}

/// f32 → bf16 with round-to-nearest-even (what PyTorch's `.to(torch.bfloat16)` does).
/// NaN stays a quiet NaN.
@inline(__always)
public func floatToBF16(_ value: Float) -> UInt16 {
    let bits = value.bitPattern
    if value.isNaN { return UInt16(truncatingIfNeeded: (bits >> 16) | 0x40) }
    let lsb = (bits >> 16) & 1
    let rounded = bits &+ 0x7FFF &+ lsb
    return UInt16(truncatingIfNeeded: rounded >> 16)
}

/// Widen `count` elements of a float dtype at `src` into f32 at `dst`.
public func widenToFloat(_ dtype: DType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, count: Int) {
    switch dtype {
    case .f32:
        dst.update(from: src.assumingMemoryBound(to: Float.self), count: count)
    case .bf16:
        let s = src.assumingMemoryBound(to: UInt16.self)
        for i in 0..<count { dst[i] = bf16ToFloat(s[i]) }
    case .f16:
        let s = src.assumingMemoryBound(to: UInt16.self)
        for i in 0..<count { dst[i] = Float(Float16(bitPattern: s[i])) }
    default:
        preconditionFailure("widenToFloat: \(dtype) is not a float dtype")
    }
}
