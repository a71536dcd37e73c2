// Activation vectors from a file (`nla verbalize --vectors FILE [--key NAME]`, `nla score --gold FILE`):
//   .safetensors  a [n, d] or [d] float tensor (F32/F16/BF16) named by `key`, or the file's only tensor;
//   .npy          float32 or float64, 1-D or 2-D, little-endian, C order (format versions 1–3);
//   .jsonl        one JSON object per line with an `activation_vector` array (the reference's column),
//                 or `key` instead of that name; blank lines are skipped.
// Every error names the file and the problem. Values are not validated here (callers refuse NaN/zero).

import Foundation
import Quant

public enum VectorFile {
    public static let jsonlColumn = "activation_vector"

    public static func read(path: String, key: String?) throws -> [[Float]] {
        let lower = path.lowercased()
        let rows: [[Float]]
        if lower.hasSuffix(".safetensors") {
            rows = try readSafetensors(path, key: key)
        } else if lower.hasSuffix(".npy") {
            if let key {
                throw NLAError.vectorFile(file: path, reason: "a .npy file holds one array: --key '\(oneLine(key))' does not apply")
            }
            rows = try readNpy(path)
        } else if lower.hasSuffix(".jsonl") || lower.hasSuffix(".ndjson") {
            rows = try readJSONL(path, key: key)
        } else {
            throw NLAError.vectorFile(file: path, reason: "unknown vector file type (expected .safetensors, .npy or .jsonl)")
        }
        guard !rows.isEmpty else { throw NLAError.vectorFile(file: path, reason: "contains no vectors") }
        let d = rows[0].count
        guard d > 0 else { throw NLAError.vectorFile(file: path, reason: "vectors are empty") }
        if let bad = rows.firstIndex(where: { $0.count != d }) {
            throw NLAError.vectorFile(file: path, reason: "vector \(bad) has \(rows[bad].count) values, vector 0 has \(d)")
        }
        return rows
    }

    // MARK: safetensors

    static func readSafetensors(_ path: String, key: String?) throws -> [[Float]] {
        let file: SafetensorsFile
        do { file = try SafetensorsFile(path: path) } catch {
            throw NLAError.vectorFile(file: path, reason: "not a readable safetensors file: \(error)")
        }
        let t: TensorView
        if let key {
            guard let v = file.tensors[key] else {
                throw NLAError.vectorFile(file: path, reason: "no tensor named '\(key)' (tensors: \(file.names.joined(separator: ", ")))")
            }
            t = v
        } else {
            guard file.tensors.count == 1, let only = file.tensors.values.first else {
                throw NLAError.vectorFile(file: path, reason: file.tensors.isEmpty ? "contains no tensors"
                    : "has \(file.tensors.count) tensors (\(file.names.joined(separator: ", "))); choose one with --key")
            }
            t = only
        }
        guard t.dtype.isFloat else {
            throw NLAError.vectorFile(file: path, reason: "tensor '\(t.name)' has dtype \(t.dtype.rawValue); expected F32, F16 or BF16")
        }
        let flat = t.toFloatArray()
        switch t.shape.count {
        case 1: return [flat]
        case 2:
            let (n, d) = (t.shape[0], t.shape[1])
            guard n > 0, d > 0 else { throw NLAError.vectorFile(file: path, reason: "tensor '\(t.name)' has shape \(t.shape): no values") }
            return (0..<n).map { Array(flat[($0 * d)..<(($0 + 1) * d)]) }
        default:
            throw NLAError.vectorFile(file: path, reason: "tensor '\(t.name)' has shape \(t.shape); expected [n, d] or [d]")
        }
    }

    // MARK: npy

    static func readNpy(_ path: String) throws -> [[Float]] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw NLAError.vectorFile(file: path, reason: FileManager.default.fileExists(atPath: path) ? "cannot read the file" : "no such file")
        }
        let bytes = [UInt8](data)
        guard bytes.count >= 10, Array(bytes[0..<6]) == [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59] else {
            throw NLAError.vectorFile(file: path, reason: "not a .npy file (missing the \\x93NUMPY magic)")
        }
        let major = bytes[6]
        let headerLen: Int, headerStart: Int
        switch major {
        case 1:
            headerLen = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw NLAError.vectorFile(file: path, reason: "truncated .npy header") }
            headerLen = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        default:
            throw NLAError.vectorFile(file: path, reason: ".npy format version \(major) is not supported (1, 2 or 3)")
        }
        guard headerStart + headerLen <= bytes.count else { throw NLAError.vectorFile(file: path, reason: "truncated .npy header") }
        let header: NpyHeader
        do { header = try NpyHeader.parse(bytes[headerStart..<(headerStart + headerLen)]) } catch let e as NpyHeader.ParseError {
            throw NLAError.vectorFile(file: path, reason: "malformed .npy header: \(e.reason)")
        }
        guard !header.fortranOrder else {
            throw NLAError.vectorFile(file: path, reason: "array is in Fortran order; save it C-contiguous (np.ascontiguousarray)")
        }
        let descr = header.descr
        let width: Int
        switch descr {
        case "<f4", "=f4", "f4": width = 4
        case "<f8", "=f8", "f8": width = 8
        case ">f4", ">f8": throw NLAError.vectorFile(file: path, reason: "array is big-endian (\(descr)); expected little-endian float32 or float64")
        default: throw NLAError.vectorFile(file: path, reason: "dtype \(oneLine(descr)) is not supported; expected float32 (<f4) or float64 (<f8)")
        }
        let shape = header.shape
        let shapeText = "(" + shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? ",)" : ")")
        guard shape.count == 1 || shape.count == 2 else {
            throw NLAError.vectorFile(file: path, reason: "array has shape \(shapeText); expected (d,) or (n, d)")
        }
        let dataStart = headerStart + headerLen
        let available = bytes.count - dataStart
        // Overflow-checked: a header may declare any shape.
        var count = 1
        for v in shape {
            let (r, o) = count.multipliedReportingOverflow(by: v)
            guard !o else { throw NLAError.vectorFile(file: path, reason: "shape \(shapeText) is too large (element count overflows)") }
            count = r
        }
        let (needed, o) = count.multipliedReportingOverflow(by: width)
        guard !o, needed <= available else {
            throw NLAError.vectorFile(file: path, reason: "data is truncated: shape \(shapeText) needs \(o ? "more than \(Int.max)" : String(needed)) bytes, file has \(available)")
        }
        guard needed == available else {
            throw NLAError.vectorFile(file: path, reason: "\(available - needed) bytes after the array data (shape \(shapeText) needs \(needed))")
        }
        var flat = [Float](repeating: 0, count: count)
        bytes.withUnsafeBytes { raw in
            let base = raw.baseAddress! + dataStart
            for i in 0..<count {
                if width == 4 {
                    flat[i] = Float(bitPattern: UInt32(littleEndian: base.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)))
                } else {
                    flat[i] = Float(Double(bitPattern: UInt64(littleEndian: base.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self))))
                }
            }
        }
        if shape.count == 1 { return [flat] }
        let (n, d) = (shape[0], shape[1])
        guard n > 0, d > 0 else { throw NLAError.vectorFile(file: path, reason: "array has shape \(shapeText): no values") }
        return (0..<n).map { Array(flat[($0 * d)..<(($0 + 1) * d)]) }
    }

    // MARK: jsonl

    static func readJSONL(_ path: String, key: String?) throws -> [[Float]] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw NLAError.vectorFile(file: path, reason: FileManager.default.fileExists(atPath: path) ? "cannot read the file" : "no such file")
        }
        let column = key ?? jsonlColumn
        return try jsonlObjects(data, file: path).map { line, obj in
            guard obj[column] is [Any] else {
                throw NLAError.vectorFile(file: path, reason: "line \(line) has no '\(oneLine(column))' array")
            }
            return try numbers(obj[column], field: column, file: path, line: line)
        }
    }

    /// The JSON objects of a JSONL text with their 1-based line numbers (blank lines skipped). Refused:
    /// invalid UTF-8, a line that is not one JSON object, a duplicate key in a line.
    public static func jsonlObjects(_ data: Data, file: String) throws -> [(line: Int, object: [String: Any])] {
        guard let text = String(data: data, encoding: .utf8) else {
            throw NLAError.vectorFile(file: file, reason: "not valid UTF-8")
        }
        var out: [(line: Int, object: [String: Any])] = []
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let t = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if t.isEmpty { continue }
            let bytes = Data(t.utf8)
            guard let obj = (try? JSONSerialization.jsonObject(with: bytes, options: [.fragmentsAllowed])) as? [String: Any] else {
                throw NLAError.vectorFile(file: file, reason: "line \(i + 1) is not a JSON object")
            }
            if let dup = JSONDuplicateKeys.first(in: bytes) {
                throw NLAError.vectorFile(file: file, reason: "line \(i + 1): duplicate key '\(oneLine(dup))'")
            }
            out.append((i + 1, obj))
        }
        return out
    }

    /// A JSON array of numbers as f32: booleans, non-numbers and values outside the f32 range are refused.
    public static func numbers(_ value: Any?, field: String, file: String, line: Int) throws -> [Float] {
        guard let arr = value as? [Any] else {
            throw NLAError.vectorFile(file: file, reason: "line \(line): '\(oneLine(field))' must be an array of numbers")
        }
        return try arr.enumerated().map { j, x in
            guard let n = x as? NSNumber, !jsonIsBool(n) else {
                throw NLAError.vectorFile(file: file, reason: "line \(line): '\(oneLine(field))'[\(j)] is not a number")
            }
            let f = Float(n.doubleValue)
            guard f.isFinite || !n.doubleValue.isFinite else {
                throw NLAError.vectorFile(file: file, reason: "line \(line): '\(oneLine(field))'[\(j)] = \(n.doubleValue) is outside the f32 range")
            }
            return f
        }
    }
}

/// One line, at most 60 characters, for quoting file contents in an error.
func oneLine(_ s: String) -> String {
    let flat = s.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? " " : String($0) }.joined()
    return flat.count > 60 ? String(flat.prefix(60)) + "…" : flat
}

/// The header dict of a .npy file: a Python literal `{'descr': '<f4', 'fortran_order': False,
/// 'shape': (3, 4), }` followed by spaces and a newline. Parsed strictly like numpy's
/// `_read_array_header`: exactly the three keys, each once.
struct NpyHeader {
    struct ParseError: Error { let reason: String }
    var descr: String
    var fortranOrder: Bool
    var shape: [Int]

    static func parse(_ bytes: ArraySlice<UInt8>) throws -> NpyHeader {
        let b = Array(bytes)
        var i = 0
        func fail(_ r: String) -> ParseError { ParseError(reason: r + " at byte \(i)") }
        func skipSpace() { while i < b.count, b[i] == 0x20 || b[i] == 0x09 || b[i] == 0x0A || b[i] == 0x0D { i += 1 } }
        func expect(_ c: UInt8) throws {
            skipSpace()
            guard i < b.count, b[i] == c else { throw fail("expected '\(Character(Unicode.Scalar(c)))'") }
            i += 1
        }
        func string() throws -> String {
            skipSpace()
            guard i < b.count, b[i] == 0x27 || b[i] == 0x22 else { throw fail("expected a quoted string") }
            let q = b[i]; i += 1
            let start = i
            while i < b.count, b[i] != q {
                guard b[i] != 0x5C, b[i] >= 0x20 else { throw fail("unsupported character in a string") }
                i += 1
            }
            guard i < b.count else { throw fail("unterminated string") }
            defer { i += 1 }
            return String(decoding: b[start..<i], as: UTF8.self)
        }
        func word() -> String {
            skipSpace()
            let start = i
            while i < b.count, (b[i] >= 0x41 && b[i] <= 0x5A) || (b[i] >= 0x61 && b[i] <= 0x7A) { i += 1 }
            return String(decoding: b[start..<i], as: UTF8.self)
        }
        func integer() throws -> Int {
            skipSpace()
            let start = i
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 { i += 1 }
            if i < b.count, b[i] == 0x4C { i += 1 }  // Python 2 long suffix
            let digits = String(decoding: b[start..<i], as: UTF8.self).replacingOccurrences(of: "L", with: "")
            guard !digits.isEmpty else { throw fail("expected a non-negative integer in shape") }
            guard let v = Int(digits) else { throw fail("shape dimension \(oneLine(digits)) is too large") }
            return v
        }
        var descr: String?, fortran: Bool?, shape: [Int]?
        try expect(0x7B)  // {
        while true {
            skipSpace()
            if i < b.count, b[i] == 0x7D { i += 1; break }  // }
            let key = try string()
            try expect(0x3A)  // :
            switch key {
            case "descr":
                guard descr == nil else { throw fail("duplicate key 'descr'") }
                descr = try string()
            case "fortran_order":
                guard fortran == nil else { throw fail("duplicate key 'fortran_order'") }
                switch word() {
                case "True": fortran = true
                case "False": fortran = false
                default: throw fail("fortran_order must be True or False")
                }
            case "shape":
                guard shape == nil else { throw fail("duplicate key 'shape'") }
                try expect(0x28)  // (
                var dims: [Int] = []
                while true {
                    skipSpace()
                    if i < b.count, b[i] == 0x29 { i += 1; break }  // )
                    dims.append(try integer())
                    skipSpace()
                    if i < b.count, b[i] == 0x2C { i += 1; continue }
                    try expect(0x29)
                    break
                }
                shape = dims
            default:
                throw fail("unexpected key '\(oneLine(key))'")
            }
            skipSpace()
            if i < b.count, b[i] == 0x2C { i += 1; continue }
            try expect(0x7D)
            break
        }
        skipSpace()
        guard i == b.count else { throw fail("unexpected text after the header dict") }
        guard let descr else { throw ParseError(reason: "missing key 'descr'") }
        guard let fortran else { throw ParseError(reason: "missing key 'fortran_order'") }
        guard let shape else { throw ParseError(reason: "missing key 'shape'") }
        return NpyHeader(descr: descr, fortranOrder: fortran, shape: shape)
    }
}
