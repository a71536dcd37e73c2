// GGUF v3 container: value types, errors, and the memory-mapped reader. The writer is in GGUFWriter.swift.
//
// Layout (little-endian; spec: ggml/docs/gguf.md, reference reader: gguf-py gguf_reader.py, ggml/src/gguf.cpp):
//
//   u32 magic "GGUF" (bytes 47 47 55 46) · u32 version = 3 · u64 tensor_count · u64 kv_count
//   kv_count × { string key · u32 value_type · value }
//       string = u64 byte length + UTF-8 bytes (no terminator)
//       value  = scalar | string | array { u32 element_type · u64 count · count × element } (arrays may nest)
//   tensor_count × { string name · u32 n_dims (≤ 4) · n_dims × u64 dim · u32 ggml_type · u64 offset }
//       dims are ggml order: dims[0] is the innermost (row) dimension, i.e. the HF shape reversed;
//       offset is relative to the start of the data section and a multiple of the alignment
//   padding to `general.alignment` (u32, default 32), then the data section
//
// This reader maps the file and validates everything before handing out pointers: magic, version, every
// length against the bytes left, value types, UTF-8, `general.alignment` (u32, power of two), n_dims,
// dimension overflow, type ids (only the rows of `QuantTraits.table`), row width against the block size,
// offset alignment, that every tensor's bytes lie inside the file, and that no two tensors overlap.
// Every error names the file.

import Foundation

/// GGUF metadata value type ids.
public enum GGUFValueType: UInt32, Sendable, CaseIterable {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, bool = 7
    case string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12
}

/// A typed GGUF array. Arrays of arrays are allowed by the format; each inner array carries its own type.
public indirect enum GGUFArray: Equatable, Sendable {
    case uint8([UInt8]), int8([Int8]), uint16([UInt16]), int16([Int16]), uint32([UInt32]), int32([Int32])
    case float32([Float]), bool([Bool]), string([String]), uint64([UInt64]), int64([Int64]), float64([Double])
    case array([GGUFArray])

    public var elementType: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .float32: return .float32
        case .bool: return .bool
        case .string: return .string
        case .uint64: return .uint64
        case .int64: return .int64
        case .float64: return .float64
        case .array: return .array
        }
    }

    public var count: Int {
        switch self {
        case .uint8(let a): return a.count
        case .int8(let a): return a.count
        case .uint16(let a): return a.count
        case .int16(let a): return a.count
        case .uint32(let a): return a.count
        case .int32(let a): return a.count
        case .float32(let a): return a.count
        case .bool(let a): return a.count
        case .string(let a): return a.count
        case .uint64(let a): return a.count
        case .int64(let a): return a.count
        case .float64(let a): return a.count
        case .array(let a): return a.count
        }
    }
}

/// A GGUF metadata value.
public enum GGUFValue: Equatable, Sendable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case float32(Float), bool(Bool), string(String), array(GGUFArray), uint64(UInt64), int64(Int64), float64(Double)

    public var type: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .float32: return .float32
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        case .uint64: return .uint64
        case .int64: return .int64
        case .float64: return .float64
        }
    }

    /// The value if it is a string.
    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    /// The value if it is an integer of any width that fits in `Int`.
    public var intValue: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return Int(exactly: v)
        case .int64(let v): return Int(v)
        default: return nil
        }
    }
    /// The value if it is a float32 or float64.
    public var doubleValue: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        default: return nil
        }
    }
    public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    public var arrayValue: GGUFArray? { if case .array(let a) = self { return a } else { return nil } }
    /// The value if it is an array of strings.
    public var stringArrayValue: [String]? { if case .array(.string(let a)) = self { return a } else { return nil } }
}

public enum GGUFError: Error, CustomStringConvertible, Equatable, Sendable {
    case cannotOpen(file: String, reason: String)
    /// The file ends before a header field, a metadata value or a tensor info it declares.
    case truncated(file: String, reason: String)
    case badMagic(file: String, found: String)
    case unsupportedVersion(file: String, version: UInt32)
    case badMetadata(file: String, key: String, reason: String)
    case badAlignment(file: String, reason: String)
    case badTensorInfo(file: String, tensor: String, reason: String)
    /// A ggml type id that is not a row of `QuantTraits.table` (unknown, retired, or not supported here).
    case unsupportedType(file: String, tensor: String, typeID: UInt32)
    case offsetPastEOF(file: String, tensor: String, offset: UInt64, fileSize: Int)
    case tensorDataTruncated(file: String, tensor: String, end: Int, fileSize: Int)
    case misalignedTensor(file: String, tensor: String, offset: UInt64, alignment: Int)
    case overlappingTensors(file: String, tensor: String, other: String)
    case missingTensor(file: String, tensor: String)
    /// Writer: an I/O error, or the written file did not validate.
    case writeFailed(file: String, reason: String)
    /// Writer: a call that the writer's state or arguments do not allow.
    case invalidWrite(file: String, reason: String)

    public var file: String {
        switch self {
        case .cannotOpen(let f, _), .truncated(let f, _), .badMagic(let f, _), .unsupportedVersion(let f, _),
             .badMetadata(let f, _, _), .badAlignment(let f, _), .badTensorInfo(let f, _, _),
             .unsupportedType(let f, _, _), .offsetPastEOF(let f, _, _, _), .tensorDataTruncated(let f, _, _, _),
             .misalignedTensor(let f, _, _, _), .overlappingTensors(let f, _, _), .missingTensor(let f, _),
             .writeFailed(let f, _), .invalidWrite(let f, _):
            return f
        }
    }

    /// One line: control characters quoted from the input (keys, names) are escaped.
    public var description: String { oneLineMessage(unescapedDescription) }

    private var unescapedDescription: String {
        switch self {
        case .cannotOpen(let f, let r): return "\(f): cannot open: \(r)"
        case .truncated(let f, let r): return "\(f): truncated GGUF file: \(r)"
        case .badMagic(let f, let m): return "\(f): not a GGUF file (magic \(m), expected \"GGUF\")"
        case .unsupportedVersion(let f, let v):
            let hint = v > 0xFFFF && v & 0xFFFF == 0 ? " (a big-endian GGUF?)" : ""
            return "\(f): unsupported GGUF version \(v)\(hint); only version 3 is supported"
        case .badMetadata(let f, let k, let r): return "\(f): metadata '\(k)': \(r)"
        case .badAlignment(let f, let r): return "\(f): bad general.alignment: \(r)"
        case .badTensorInfo(let f, let t, let r): return "\(f): tensor '\(t)': \(r)"
        case .unsupportedType(let f, let t, let id):
            let name = GGUF.ggmlTypeNames[id].map { " (\($0))" } ?? ""
            return "\(f): tensor '\(t)': unsupported ggml type id \(id)\(name) (supported: "
                + QuantTraits.table.map { "\($0.name)=\($0.ggmlID)" }.joined(separator: ", ") + ")"
        case .offsetPastEOF(let f, let t, let o, let s):
            return "\(f): tensor '\(t)': data offset \(o) lies past the end of the file (\(s) bytes)"
        case .tensorDataTruncated(let f, let t, let e, let s):
            return "\(f): tensor '\(t)': data ends at byte \(e) but the file has only \(s) bytes (truncated)"
        case .misalignedTensor(let f, let t, let o, let a):
            return "\(f): tensor '\(t)': data offset \(o) is not a multiple of the alignment \(a)"
        case .overlappingTensors(let f, let t, let o): return "\(f): tensor '\(t)': data overlaps tensor '\(o)'"
        case .missingTensor(let f, let t): return "\(f): no tensor named '\(t)'"
        case .writeFailed(let f, let r): return "\(f): writing GGUF failed: \(r)"
        case .invalidWrite(let f, let r): return "\(f): \(r)"
        }
    }
}

/// GGUF constants.
public enum GGUF {
    /// "GGUF" read as a little-endian u32.
    public static let magic: UInt32 = 0x4655_4747
    public static let version: UInt32 = 3
    public static let defaultAlignment = 32
    public static let alignmentKey = "general.alignment"
    /// ggml's GGML_MAX_DIMS.
    public static let maxDims = 4
    /// Deepest nesting of arrays the reader accepts.
    public static let maxArrayDepth = 8
    /// ggml's names of its type ids (ggml.h `enum ggml_type`), for error messages only: whether a type
    /// can be read is decided by `QuantTraits.table` alone.
    public static let ggmlTypeNames: [UInt32: String] = [
        0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K",
        11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS",
        19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32",
        27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
    ]
}

/// One tensor of a GGUF file: a view into the mapping (no copy).
public struct GGUFTensorInfo: @unchecked Sendable {
    public let name: String
    /// HF order (outermost first): GGUF dims reversed. A 2-D weight is [out, in]; rows are `shape.last`.
    public let shape: [Int]
    public let type: QuantType
    /// Offset of the data from the start of the data section.
    public let offset: Int
    public let byteCount: Int
    public let data: UnsafeRawPointer
    /// The mapping the data lives in (kept alive by this view).
    public let file: MappedFile

    /// GGUF / ggml order (innermost first).
    public var ggufDims: [Int] { shape.reversed() }
    public var elementCount: Int { shape.reduce(1, *) }
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: data, count: byteCount) }

    /// Decode the whole tensor to f32 with the type table's dequantizer.
    public func toFloatArray() throws -> [Float] {
        let n = elementCount
        var out = [Float](repeating: 0, count: n)
        if n > 0 {
            try out.withUnsafeMutableBufferPointer {
                try type.dequantizeRows(bytes, width: shape.last ?? 1, into: $0)
            }
        }
        return out
    }
}

/// A memory-mapped, fully validated GGUF v3 file.
public final class GGUFFile: @unchecked Sendable {
    public let path: String
    public let mapping: MappedFile
    public let version: UInt32
    public let alignment: Int
    /// File offset of the data section.
    public let dataOffset: Int
    /// Parsed metadata. `removeMetadata` may drop large values (embedded files) once they are copied out.
    public private(set) var metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    public let tensors: [String: GGUFTensorInfo]
    /// Tensor names in file (tensor info) order.
    public let tensorNames: [String]

    /// String values left as raw bytes (see `init(path:rawStrings:)`): views into the mapping, valid while
    /// this file lives, not checked for UTF-8. Their keys are in neither `metadata` nor `metadataKeys`.
    public private(set) var rawStrings: [String: UnsafeRawBufferPointer] = [:]

    /// Drop a metadata value that is no longer needed (e.g. an embedded tokenizer.json already copied out),
    /// so its memory is freed. Call it while the file is still owned by one thread (right after opening).
    public func removeMetadata(_ key: String) {
        metadata.removeValue(forKey: key)
    }

    /// Give the pages of the header (magic, metadata, tensor infos: all parsed into values by now) back to
    /// the kernel. The tensor data keeps its mapping; a page touched again is read back from the file.
    public func releaseHeaderPages() {
        mapping.dropPages(mapping.base, count: dataOffset)
    }

    /// - Parameter rawStrings: metadata keys whose string values of at least `minBytes` bytes are kept as
    ///   raw bytes in `rawStrings` instead of being validated and copied into a `String` (an embedded
    ///   tokenizer.json is 33 MB; its reader validates it anyway).
    public init(path: String, rawStrings: (prefix: String, minBytes: Int)? = nil) throws {
        self.path = path
        let m: MappedFile
        do {
            m = try MappedFile(path: path)
        } catch SafetensorsError.cannotOpen(let f, let r) {
            throw GGUFError.cannotOpen(file: f, reason: r)
        }
        mapping = m
        var c = GGUFCursor(base: m.base, size: m.size, file: path)
        guard m.size >= 4 else {
            throw GGUFError.truncated(file: path, reason: "\(m.size) bytes, too short for the magic")
        }
        let magic = try c.u32("magic")
        guard magic == GGUF.magic else {
            let b = withUnsafeBytes(of: magic.littleEndian) { Array($0) }
            throw GGUFError.badMagic(file: path, found: b.map { String(format: "%02x", $0) }.joined(separator: " "))
        }
        version = try c.u32("version")
        guard version == GGUF.version else { throw GGUFError.unsupportedVersion(file: path, version: version) }
        let tensorCount = try c.u64("tensor count")
        let kvCount = try c.u64("metadata count")
        // Every KV needs at least 8 (key length) + 4 (type) + 1 bytes; every tensor info at least 8 + 4 + 4 + 8.
        guard kvCount <= UInt64(c.remaining / 13) else {
            throw GGUFError.truncated(file: path, reason: "header declares \(kvCount) metadata entries, more than the \(m.size)-byte file can hold")
        }
        var meta: [String: GGUFValue] = [:]
        var raw: [String: UnsafeRawBufferPointer] = [:]
        var keys: [String] = []
        for i in 0..<Int(kvCount) {
            let key = try c.string("metadata key #\(i)")
            let rawType = try c.u32("type of metadata '\(key)'")
            guard let vt = GGUFValueType(rawValue: rawType) else {
                throw GGUFError.badMetadata(file: path, key: key, reason: "unknown value type id \(rawType)")
            }
            if let r = rawStrings, vt == .string, key.hasPrefix(r.prefix), let bytes = try c.rawString(key, minBytes: r.minBytes) {
                guard meta[key] == nil, raw[key] == nil else {
                    throw GGUFError.badMetadata(file: path, key: key, reason: "duplicate key")
                }
                raw[key] = bytes
                continue
            }
            let value = try c.value(vt, key: key, depth: 0)
            guard meta[key] == nil, raw[key] == nil else {
                throw GGUFError.badMetadata(file: path, key: key, reason: "duplicate key")
            }
            meta[key] = value
            keys.append(key)
        }
        var align = GGUF.defaultAlignment
        if let a = meta[GGUF.alignmentKey] {
            guard case .uint32(let v) = a else {
                throw GGUFError.badAlignment(file: path, reason: "type \(a.type), expected uint32")
            }
            guard v > 0, v & (v - 1) == 0 else {
                throw GGUFError.badAlignment(file: path, reason: "\(v) is not a power of two")
            }
            align = Int(v)
        }
        alignment = align
        metadata = meta
        metadataKeys = keys
        self.rawStrings = raw

        guard tensorCount <= UInt64(c.remaining / 24) else {
            throw GGUFError.truncated(file: path, reason: "header declares \(tensorCount) tensors, more than the rest of the file can describe")
        }
        struct Info { var name: String; var dims: [Int]; var type: QuantType; var offset: UInt64; var bytes: Int }
        var infos: [Info] = []
        var seen = Set<String>()
        for i in 0..<Int(tensorCount) {
            let name = try c.string("#\(i) (name)", tensor: true)
            guard seen.insert(name).inserted else {
                throw GGUFError.badTensorInfo(file: path, tensor: name, reason: "duplicate tensor name")
            }
            let nDims = try c.u32("n_dims of tensor '\(name)'")
            guard nDims <= UInt32(GGUF.maxDims) else {
                throw GGUFError.badTensorInfo(file: path, tensor: name, reason: "n_dims \(nDims) exceeds \(GGUF.maxDims)")
            }
            var dims: [Int] = []
            var elements = 1
            for j in 0..<Int(nDims) {
                let d = try c.u64("dimension \(j) of tensor '\(name)'")
                guard let di = Int(exactly: d) else {
                    throw GGUFError.badTensorInfo(file: path, tensor: name, reason: "dimension \(d) is too large")
                }
                let (e, o) = elements.multipliedReportingOverflow(by: di)
                guard !o else {
                    throw GGUFError.badTensorInfo(file: path, tensor: name, reason: "element count overflows")
                }
                elements = e
                dims.append(di)
            }
            let typeID = try c.u32("type of tensor '\(name)'")
            guard let type = QuantType(rawValue: typeID) else {
                throw GGUFError.unsupportedType(file: path, tensor: name, typeID: typeID)
            }
            let offset = try c.u64("offset of tensor '\(name)'")
            let t = type.traits
            let width = dims.first ?? 1
            guard width % t.blockSize == 0 else {
                throw GGUFError.badTensorInfo(file: path, tensor: name,
                    reason: "row width \(width) is not a multiple of the \(t.name) block size \(t.blockSize)")
            }
            let (bytes, o) = (elements / t.blockSize).multipliedReportingOverflow(by: t.bytesPerBlock)
            guard !o else { throw GGUFError.badTensorInfo(file: path, tensor: name, reason: "byte size overflows") }
            guard offset % UInt64(align) == 0 else {
                throw GGUFError.misalignedTensor(file: path, tensor: name, offset: offset, alignment: align)
            }
            infos.append(Info(name: name, dims: dims, type: type, offset: offset, bytes: bytes))
        }
        let dataStart = (c.pos + align - 1) / align * align
        dataOffset = dataStart
        var views: [String: GGUFTensorInfo] = [:]
        for info in infos {
            guard dataStart <= m.size, let off = Int(exactly: info.offset), off <= m.size - dataStart else {
                throw GGUFError.offsetPastEOF(file: path, tensor: info.name, offset: info.offset, fileSize: m.size)
            }
            let start = dataStart + off
            guard info.bytes <= m.size - start else {
                throw GGUFError.tensorDataTruncated(file: path, tensor: info.name, end: start + info.bytes, fileSize: m.size)
            }
            views[info.name] = GGUFTensorInfo(name: info.name, shape: info.dims.reversed(), type: info.type,
                                              offset: off, byteCount: info.bytes, data: m.base + start, file: m)
        }
        let spans = infos.filter { $0.bytes > 0 }.sorted { $0.offset < $1.offset }
        for i in 1..<max(spans.count, 1) where spans[i].offset < spans[i - 1].offset + UInt64(spans[i - 1].bytes) {
            throw GGUFError.overlappingTensors(file: path, tensor: spans[i].name, other: spans[i - 1].name)
        }
        tensors = views
        tensorNames = infos.map(\.name)
    }

    public func tensor(_ name: String) throws -> GGUFTensorInfo {
        guard let t = tensors[name] else { throw GGUFError.missingTensor(file: path, tensor: name) }
        return t
    }
}

/// Bounds-checked little-endian reads from the mapping.
struct GGUFCursor {
    let base: UnsafeRawPointer
    let size: Int
    let file: String
    var pos = 0

    init(base: UnsafeRawPointer, size: Int, file: String) {
        self.base = base
        self.size = size
        self.file = file
    }

    var remaining: Int { size - pos }

    func need(_ n: Int, _ what: @autoclosure () -> String) throws {
        guard n <= size - pos else {
            throw GGUFError.truncated(file: file,
                reason: "\(what()) needs \(n) bytes at offset \(pos), but the file has only \(size) bytes")
        }
    }

    mutating func load<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String) throws -> T {
        try need(MemoryLayout<T>.size, what())
        let v = T(littleEndian: base.loadUnaligned(fromByteOffset: pos, as: T.self))
        pos += MemoryLayout<T>.size
        return v
    }

    mutating func u32(_ what: @autoclosure () -> String) throws -> UInt32 { try load(UInt32.self, what()) }
    mutating func u64(_ what: @autoclosure () -> String) throws -> UInt64 { try load(UInt64.self, what()) }

    /// A GGUF string. Invalid UTF-8 is reported as bad metadata, or as a bad tensor info when `tensor` is set.
    mutating func string(_ what: @autoclosure () -> String, tensor: Bool = false) throws -> String {
        let bytes = try stringBytes(what())
        // One validating pass (a tokenizer holds 262k of these strings; decoding then comparing was slow).
        guard let s = String(validating: bytes, as: UTF8.self) else {
            let reason = "string at offset \(bytes.baseAddress.map { $0 - base } ?? pos) is not valid UTF-8"
            if tensor { throw GGUFError.badTensorInfo(file: file, tensor: what(), reason: reason) }
            throw GGUFError.badMetadata(file: file, key: what(), reason: reason)
        }
        return s
    }

    /// A GGUF string's bytes (length checked against the file, not checked for UTF-8), consumed.
    private mutating func stringBytes(_ what: @autoclosure () -> String) throws -> UnsafeRawBufferPointer {
        let n = try u64("length of \(what())")
        guard n <= UInt64(remaining) else {
            throw GGUFError.truncated(file: file,
                reason: "\(what()) declares \(n) bytes at offset \(pos), but the file has only \(size) bytes")
        }
        let bytes = UnsafeRawBufferPointer(start: base + pos, count: Int(n))
        pos += Int(n)
        return bytes
    }

    /// A string of at least `minBytes` bytes as a view of its bytes (not checked for UTF-8), consumed; nil
    /// (nothing consumed) for a shorter one.
    mutating func rawString(_ what: String, minBytes: Int) throws -> UnsafeRawBufferPointer? {
        let start = pos
        let bytes = try stringBytes(what)
        guard bytes.count >= minBytes else { pos = start; return nil }
        return bytes
    }

    /// `count` fixed-width elements, bounds-checked once.
    mutating func scalars<T: FixedWidthInteger>(_: T.Type, _ count: Int, _ what: @autoclosure () -> String) throws -> [T] {
        let (bytes, o) = count.multipliedReportingOverflow(by: MemoryLayout<T>.size)
        guard !o else { throw GGUFError.truncated(file: file, reason: "\(what()) declares \(count) elements") }
        try need(bytes, what())
        let p = base + pos
        let a = (0..<count).map { T(littleEndian: p.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self)) }
        pos += bytes
        return a
    }

    mutating func bool(_ key: String) throws -> Bool {
        let b = try load(UInt8.self, "value of '\(key)'")
        guard b <= 1 else { throw GGUFError.badMetadata(file: file, key: key, reason: "bool byte \(b) is neither 0 nor 1") }
        return b == 1
    }

    mutating func value(_ t: GGUFValueType, key: String, depth: Int) throws -> GGUFValue {
        let what = "value of '\(key)'"
        switch t {
        case .uint8: return .uint8(try load(UInt8.self, what))
        case .int8: return .int8(try load(Int8.self, what))
        case .uint16: return .uint16(try load(UInt16.self, what))
        case .int16: return .int16(try load(Int16.self, what))
        case .uint32: return .uint32(try load(UInt32.self, what))
        case .int32: return .int32(try load(Int32.self, what))
        case .float32: return .float32(Float(bitPattern: try load(UInt32.self, what)))
        case .bool: return .bool(try bool(key))
        case .string: return .string(try string(what))
        case .uint64: return .uint64(try load(UInt64.self, what))
        case .int64: return .int64(try load(Int64.self, what))
        case .float64: return .float64(Double(bitPattern: try load(UInt64.self, what)))
        case .array: return .array(try array(key: key, depth: depth))
        }
    }

    mutating func array(key: String, depth: Int) throws -> GGUFArray {
        guard depth < GGUF.maxArrayDepth else {
            throw GGUFError.badMetadata(file: file, key: key, reason: "arrays nested deeper than \(GGUF.maxArrayDepth)")
        }
        let raw = try u32("array element type of '\(key)'")
        guard let et = GGUFValueType(rawValue: raw) else {
            throw GGUFError.badMetadata(file: file, key: key, reason: "unknown array element type id \(raw)")
        }
        let n64 = try u64("array length of '\(key)'")
        // Every element takes at least one byte (strings 8, arrays 12): a cheap bound before allocating.
        guard n64 <= UInt64(remaining) else {
            throw GGUFError.truncated(file: file,
                reason: "array '\(key)' declares \(n64) elements at offset \(pos), but the file has only \(size) bytes")
        }
        let n = Int(n64)
        let what = "array '\(key)'"
        switch et {
        case .uint8: return .uint8(try scalars(UInt8.self, n, what))
        case .int8: return .int8(try scalars(Int8.self, n, what))
        case .uint16: return .uint16(try scalars(UInt16.self, n, what))
        case .int16: return .int16(try scalars(Int16.self, n, what))
        case .uint32: return .uint32(try scalars(UInt32.self, n, what))
        case .int32: return .int32(try scalars(Int32.self, n, what))
        case .uint64: return .uint64(try scalars(UInt64.self, n, what))
        case .int64: return .int64(try scalars(Int64.self, n, what))
        case .float32: return .float32(try scalars(UInt32.self, n, what).map(Float.init(bitPattern:)))
        case .float64: return .float64(try scalars(UInt64.self, n, what).map(Double.init(bitPattern:)))
        case .bool:
            var a: [Bool] = []
            a.reserveCapacity(n)
            for _ in 0..<n { a.append(try bool(key)) }
            return .bool(a)
        case .string:
            guard n64 <= UInt64(remaining / 8) else {
                throw GGUFError.truncated(file: file, reason: "string array '\(key)' declares \(n) elements at offset \(pos)")
            }
            var a: [String] = []
            a.reserveCapacity(n)
            for i in 0..<n { a.append(try string("element \(i) of '\(key)'")) }
            return .string(a)
        case .array:
            guard n64 <= UInt64(remaining / 12) else {
                throw GGUFError.truncated(file: file, reason: "nested array '\(key)' declares \(n) elements at offset \(pos)")
            }
            var a: [GGUFArray] = []
            a.reserveCapacity(n)
            for _ in 0..<n { a.append(try array(key: key, depth: depth + 1)) }
            return .array(a)
        }
    }
}

// MARK: - Encoding (used by GGUFWriter; kept next to the decoder so the two stay symmetric)

extension Array where Element == UInt8 {
    mutating func ggufAppend<T: FixedWidthInteger>(_ v: T) {
        Swift.withUnsafeBytes(of: v.littleEndian) { append(contentsOf: $0) }
    }

    mutating func ggufAppend(string s: String) {
        ggufAppend(UInt64(s.utf8.count))
        append(contentsOf: s.utf8)
    }

    mutating func ggufAppend(value v: GGUFValue) {
        switch v {
        case .uint8(let x): ggufAppend(x)
        case .int8(let x): ggufAppend(x)
        case .uint16(let x): ggufAppend(x)
        case .int16(let x): ggufAppend(x)
        case .uint32(let x): ggufAppend(x)
        case .int32(let x): ggufAppend(x)
        case .float32(let x): ggufAppend(x.bitPattern)
        case .bool(let x): ggufAppend(UInt8(x ? 1 : 0))
        case .string(let s): ggufAppend(string: s)
        case .uint64(let x): ggufAppend(x)
        case .int64(let x): ggufAppend(x)
        case .float64(let x): ggufAppend(x.bitPattern)
        case .array(let a): ggufAppend(array: a)
        }
    }

    /// Element type, count, elements (the array's own type id is written by the caller).
    mutating func ggufAppend(array a: GGUFArray) {
        ggufAppend(a.elementType.rawValue)
        ggufAppend(UInt64(a.count))
        switch a {
        case .uint8(let xs): append(contentsOf: xs)
        case .int8(let xs): for x in xs { ggufAppend(x) }
        case .uint16(let xs): for x in xs { ggufAppend(x) }
        case .int16(let xs): for x in xs { ggufAppend(x) }
        case .uint32(let xs): for x in xs { ggufAppend(x) }
        case .int32(let xs): for x in xs { ggufAppend(x) }
        case .float32(let xs): for x in xs { ggufAppend(x.bitPattern) }
        case .bool(let xs): for x in xs { ggufAppend(UInt8(x ? 1 : 0)) }
        case .string(let xs): for x in xs { ggufAppend(string: x) }
        case .uint64(let xs): for x in xs { ggufAppend(x) }
        case .int64(let xs): for x in xs { ggufAppend(x) }
        case .float64(let xs): for x in xs { ggufAppend(x.bitPattern) }
        case .array(let xs): for x in xs { ggufAppend(array: x) }
        }
    }
}
