// Tensor storage types (ggml / GGUF type ids) and the one table that describes them.
//
// Mirrors ggml's `type_traits[]` (ggml/src/ggml.c) plus the `vec_dot_type` column of the CPU backend's
// `type_traits_cpu[]` (ggml/src/ggml-cpu/ggml-cpu.c): one row per type, and no other place in the code base
// describes a type. Adding a format = one enum case + one table row + its row functions in QuantBlocks.swift.
//
// Raw values are the GGUF / ggml type ids, which are part of the file format and never renumbered.
// Only the ids this runtime reads and writes are cases. Every other ggml id — Q4_1 (3), Q5_1 (7),
// Q8_1 (9), Q2_K (10), Q3_K (11), Q5_K (13), Q8_K (15), IQ* other than IQ4_NL (16–19, 21–23, 29), I8–I64 / F64
// (24–28), TQ* (34, 35), MXFP4 (39), …, and the retired ids 4, 5, 31–33, 36–38 — is deliberately *not* a case: `QuantType(rawValue:)` returns nil for
// it, and the GGUF reader reports it as `GGUFError.unsupportedType` naming the id. Nothing can silently map
// one id onto another format.

import Foundation

/// A tensor storage type. Raw value = GGUF / ggml type id.
public enum QuantType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case f32 = 0
    case f16 = 1
    case q4_0 = 2
    /// 32-value blocks, one f16 scale, 5-bit quants (4 low bits + one high bit each) (QuantKBlocks.swift).
    case q5_0 = 6
    case q8_0 = 8
    /// 256-value super-blocks of 8 × 32, 6-bit scales and mins (QuantKBlocks.swift).
    case q4_k = 12
    /// 256-value super-blocks of 16 × 16, int8 scales, 6-bit quants.
    case q6_k = 14
    /// 32-value blocks, one f16 scale, 4-bit indices into a fixed non-linear 16-level table.
    case iq4_nl = 20
    case bf16 = 30

    public var description: String { traits.name }
}

/// One row of the type table.
///
/// Row functions work on `count` elements, `count` a multiple of `blockSize` (checked with `precondition`:
/// they are the unchecked kernel-level entry points; the throwing checks live in the `QuantType` API below).
/// Quantized blocks are read and written through the block structs, so pointers to them must be aligned to
/// `MemoryLayout<Block…>.alignment` (2), which GGUF's 32-byte data alignment and whole-block rows guarantee.
public struct QuantTraits: Sendable {
    /// Decode `count` elements from `src` (row bytes) into `dst`.
    public typealias DequantizeRow = @Sendable (_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ count: Int) -> Void
    /// Encode `count` floats from `src` into `dst` (row bytes). Scalar and deterministic: this is the
    /// function that writes model files (ggml's `quantize_row_*_ref`).
    public typealias QuantizeRow = @Sendable (_ src: UnsafePointer<Float>, _ dst: UnsafeMutableRawPointer, _ count: Int) -> Void

    public let type: QuantType
    /// ggml's type name, as in GGUF tools ("Q8_0", "BF16", …).
    public let name: String
    /// Elements per block (1 for the float types).
    public let blockSize: Int
    /// Bytes per block.
    public let bytesPerBlock: Int
    public let isQuantized: Bool
    /// Required alignment of a row's first byte for the row functions (the block struct's alignment;
    /// 1 for the float types, which use unaligned loads and stores).
    public let alignment: Int
    public let dequantizeRow: DequantizeRow
    public let quantizeRowReference: QuantizeRow
    /// The type activations are converted to before a dot product with weights of this type
    /// (ggml's `vec_dot_type`, candle's `VecDotType`).
    public let activationType: QuantType
    /// Importance-weighted quantizer: minimises Σ importance[j]·(x[j] − dequant[j])² over the block's
    /// scale (and min) choices; `importance` (nil = the type's default weighting) has one weight per
    /// element of the row. nil for types whose only quantizer is the reference (Q8_0, float types).
    /// Deterministic; for Q4_K / Q6_K / IQ4_NL it is also the reference quantizer (with nil importance).
    public let quantizeRowImportance: QuantizeRowWeighted?

    public typealias QuantizeRowWeighted = @Sendable (_ src: UnsafePointer<Float>, _ dst: UnsafeMutableRawPointer, _ count: Int,
                                                      _ importance: UnsafePointer<Float>?) -> Void

    init(type: QuantType, name: String, blockSize: Int, bytesPerBlock: Int, isQuantized: Bool, alignment: Int,
         dequantizeRow: @escaping DequantizeRow, quantizeRowReference: @escaping QuantizeRow, activationType: QuantType,
         quantizeRowImportance: QuantizeRowWeighted? = nil) {
        self.type = type; self.name = name; self.blockSize = blockSize; self.bytesPerBlock = bytesPerBlock
        self.isQuantized = isQuantized; self.alignment = alignment; self.dequantizeRow = dequantizeRow
        self.quantizeRowReference = quantizeRowReference; self.activationType = activationType
        self.quantizeRowImportance = quantizeRowImportance
    }

    /// The ggml / GGUF type id.
    public var ggmlID: UInt32 { type.rawValue }
    /// Storage cost per weight, scales included (Q8_0: 8.5, Q4_0: 4.5).
    public var bitsPerWeight: Double { Double(bytesPerBlock * 8) / Double(blockSize) }

    /// The type table. Order is by ggml id.
    public static let table: [QuantTraits] = [
        QuantTraits(type: .f32, name: "F32", blockSize: 1, bytesPerBlock: 4, isQuantized: false, alignment: 1,
                    dequantizeRow: dequantizeRowF32, quantizeRowReference: quantizeRowF32, activationType: .f32),
        QuantTraits(type: .f16, name: "F16", blockSize: 1, bytesPerBlock: 2, isQuantized: false, alignment: 1,
                    dequantizeRow: dequantizeRowF16, quantizeRowReference: quantizeRowF16, activationType: .f32),
        QuantTraits(type: .q4_0, name: "Q4_0", blockSize: BlockQ4_0.count, bytesPerBlock: MemoryLayout<BlockQ4_0>.size,
                    isQuantized: true, alignment: MemoryLayout<BlockQ4_0>.alignment,
                    dequantizeRow: dequantizeRowQ4_0, quantizeRowReference: quantizeRowQ4_0Reference, activationType: .q8_0,
                    // Byte-identical to ggml's reference stays the reference; the search is separate (used by `quantize`).
                    quantizeRowImportance: quantizeRowQ4_0Importance),
        QuantTraits(type: .q5_0, name: "Q5_0", blockSize: KQ.iq4Block, bytesPerBlock: KQ.q5_0Bytes, isQuantized: true, alignment: 1,
                    dequantizeRow: dequantizeRowQ5_0, quantizeRowReference: quantizeRowQ5_0Reference, activationType: .f32,
                    quantizeRowImportance: quantizeRowQ5_0Importance),
        QuantTraits(type: .q8_0, name: "Q8_0", blockSize: BlockQ8_0.count, bytesPerBlock: MemoryLayout<BlockQ8_0>.size,
                    isQuantized: true, alignment: MemoryLayout<BlockQ8_0>.alignment,
                    // F32, not ggml's Q8_0: on Gemma 3 270M, f32 activations cut the KL divergence to f32
                    // from 0.0028 to 0.0007 and greedy agreement from 3/5 to 4/5, and decode is faster
                    // (README, "Quantization quality"). Q4_0 keeps Q8_0: its weight error dominates.
                    dequantizeRow: dequantizeRowQ8_0, quantizeRowReference: quantizeRowQ8_0Reference, activationType: .f32),
        // K-quants and IQ4_NL: raw byte layouts (no structs), read with unaligned loads, so alignment 1.
        // Activation partner f32: the kernels dequantize these blocks exactly and multiply in f32.
        QuantTraits(type: .q4_k, name: "Q4_K", blockSize: KQ.superBlock, bytesPerBlock: KQ.q4kBytes, isQuantized: true, alignment: 1,
                    dequantizeRow: dequantizeRowQ4_K, quantizeRowReference: { quantizeRowQ4_K($0, $1, $2, nil) }, activationType: .f32,
                    quantizeRowImportance: quantizeRowQ4_K),
        QuantTraits(type: .q6_k, name: "Q6_K", blockSize: KQ.superBlock, bytesPerBlock: KQ.q6kBytes, isQuantized: true, alignment: 1,
                    dequantizeRow: dequantizeRowQ6_K, quantizeRowReference: { quantizeRowQ6_K($0, $1, $2, nil) }, activationType: .f32,
                    quantizeRowImportance: quantizeRowQ6_K),
        QuantTraits(type: .iq4_nl, name: "IQ4_NL", blockSize: KQ.iq4Block, bytesPerBlock: KQ.iq4nlBytes, isQuantized: true, alignment: 1,
                    dequantizeRow: dequantizeRowIQ4_NL, quantizeRowReference: { quantizeRowIQ4_NL($0, $1, $2, nil) }, activationType: .f32,
                    quantizeRowImportance: quantizeRowIQ4_NL),
        QuantTraits(type: .bf16, name: "BF16", blockSize: 1, bytesPerBlock: 2, isQuantized: false, alignment: 1,
                    dequantizeRow: dequantizeRowBF16, quantizeRowReference: quantizeRowBF16, activationType: .f32),
    ]

    fileprivate static let byID: [UInt32: QuantTraits] = {
        var d: [UInt32: QuantTraits] = [:]
        for row in table {
            precondition(d[row.ggmlID] == nil, "QuantTraits.table: duplicate row for \(row.name)")
            d[row.ggmlID] = row
        }
        return d
    }()
}

/// Errors of the checked row API.
public enum QuantError: Error, CustomStringConvertible, Equatable, Sendable {
    /// A row width that is not a positive multiple of the type's block size.
    case widthNotMultipleOfBlock(type: QuantType, width: Int, blockSize: Int)
    /// The element count is not a whole number of rows.
    case countNotMultipleOfWidth(type: QuantType, count: Int, width: Int)
    /// The destination (or source) buffer has the wrong size.
    case bufferSizeMismatch(type: QuantType, expectedBytes: Int, gotBytes: Int)
    /// A block buffer that is not aligned for the block struct.
    case misalignedBuffer(type: QuantType, alignment: Int)
    /// NaN or ±infinity cannot be block-quantized (the float types store them as is).
    case nonFiniteValue(type: QuantType, index: Int, value: Float)
    /// A negative dimension, or a shape whose size overflows.
    case invalidShape(type: QuantType, shape: [Int])
    /// A type name that is not in the table (e.g. a CLI `--type` value).
    case unknownTypeName(String)

    public var description: String {
        switch self {
        case .widthNotMultipleOfBlock(let t, let w, let b):
            return "row width \(w) is not a multiple of the \(t.traits.name) block size \(b)"
        case .countNotMultipleOfWidth(let t, let c, let w):
            return "\(t.traits.name): \(c) elements are not a whole number of rows of width \(w)"
        case .bufferSizeMismatch(let t, let e, let g):
            return "\(t.traits.name): buffer holds \(g) bytes, expected \(e)"
        case .misalignedBuffer(let t, let a):
            return "\(t.traits.name): block buffer is not \(a)-byte aligned"
        case .nonFiniteValue(let t, let i, let v):
            return "\(t.traits.name): cannot quantize non-finite value \(v) at element \(i)"
        case .invalidShape(let t, let shape):
            return "\(t.traits.name): invalid tensor shape \(shape)"
        case .unknownTypeName(let s):
            return "unknown tensor type '\(s)' (known: \(QuantTraits.table.map(\.name).joined(separator: ", ")))"
        }
    }
}

extension QuantType {
    /// This type's row of `QuantTraits.table`.
    public var traits: QuantTraits { QuantTraits.byID[rawValue]! }

    /// Look a type up by its table name, case-insensitively ("q8_0", "BF16").
    public init(name: String) throws {
        guard let row = QuantTraits.table.first(where: { $0.name.lowercased() == name.lowercased() }) else {
            throw QuantError.unknownTypeName(name)
        }
        self = row.type
    }

    /// Bytes of one row of `width` elements. Throws unless `width` is a positive multiple of the block size.
    public func rowByteCount(width: Int) throws -> Int {
        let t = traits
        guard width > 0, width % t.blockSize == 0 else {
            throw QuantError.widthNotMultipleOfBlock(type: self, width: width, blockSize: t.blockSize)
        }
        return width / t.blockSize * t.bytesPerBlock
    }

    /// Bytes of a tensor of HF-order `shape` (the last dimension is the row width; a 0-d shape is one element).
    public func byteCount(shape: [Int]) throws -> Int {
        let width = shape.last ?? 1
        let rowBytes = try rowByteCount(width: width)
        var rows = 1
        for d in shape.dropLast() {
            let (r, o) = rows.multipliedReportingOverflow(by: d)
            guard d >= 0, !o else { throw QuantError.invalidShape(type: self, shape: shape) }
            rows = r
        }
        let (n, o) = rows.multipliedReportingOverflow(by: rowBytes)
        guard !o else { throw QuantError.invalidShape(type: self, shape: shape) }
        return n
    }

    /// Quantize consecutive rows of `width` elements from `src` into `dst` with the reference quantizer.
    /// `dst` must hold exactly `src.count / width` rows of this type.
    public func quantizeRows(_ src: UnsafeBufferPointer<Float>, width: Int, into dst: UnsafeMutableRawBufferPointer) throws {
        let t = traits
        let expected = try checkedByteCount(count: src.count, width: width)
        guard dst.count == expected else {
            throw QuantError.bufferSizeMismatch(type: self, expectedBytes: expected, gotBytes: dst.count)
        }
        guard src.count > 0 else { return }
        try checkAlignment(UnsafeRawPointer(dst.baseAddress!))
        if t.isQuantized {
            for i in 0..<src.count where !src[i].isFinite {
                throw QuantError.nonFiniteValue(type: self, index: i, value: src[i])
            }
        }
        t.quantizeRowReference(src.baseAddress!, dst.baseAddress!, src.count)
    }

    /// Decode consecutive rows of `width` elements from `src` into `dst` (`dst.count` elements).
    public func dequantizeRows(_ src: UnsafeRawBufferPointer, width: Int, into dst: UnsafeMutableBufferPointer<Float>) throws {
        let expected = try checkedByteCount(count: dst.count, width: width)
        guard src.count == expected else {
            throw QuantError.bufferSizeMismatch(type: self, expectedBytes: expected, gotBytes: src.count)
        }
        guard dst.count > 0 else { return }
        try checkAlignment(src.baseAddress!)
        traits.dequantizeRow(src.baseAddress!, dst.baseAddress!, dst.count)
    }

    /// Quantize `values` (rows of `width`) into a new byte array.
    public func quantize(_ values: [Float], width: Int) throws -> [UInt8] {
        let n = try checkedByteCount(count: values.count, width: width)
        var out = [UInt8](repeating: 0, count: n)
        try values.withUnsafeBufferPointer { src in
            try out.withUnsafeMutableBytes { try quantizeRows(src, width: width, into: $0) }
        }
        return out
    }

    /// Decode `bytes` (whole rows of `width` elements) into a new float array.
    public func dequantize(_ bytes: [UInt8], width: Int) throws -> [Float] {
        let rowBytes = try rowByteCount(width: width)
        guard bytes.count % rowBytes == 0 else {
            throw QuantError.bufferSizeMismatch(type: self, expectedBytes: (bytes.count / rowBytes + 1) * rowBytes, gotBytes: bytes.count)
        }
        let count = bytes.count / rowBytes * width
        var out = [Float](repeating: 0, count: count)
        try bytes.withUnsafeBytes { src in
            try out.withUnsafeMutableBufferPointer { try dequantizeRows(src, width: width, into: $0) }
        }
        return out
    }

    private func checkedByteCount(count: Int, width: Int) throws -> Int {
        let rowBytes = try rowByteCount(width: width)
        guard count % width == 0 else {
            throw QuantError.countNotMultipleOfWidth(type: self, count: count, width: width)
        }
        return count / width * rowBytes
    }

    private func checkAlignment(_ p: UnsafeRawPointer) throws {
        let a = traits.alignment
        guard Int(bitPattern: p) % a == 0 else { throw QuantError.misalignedBuffer(type: self, alignment: a) }
    }
}
