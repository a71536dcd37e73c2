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
        let header = String(decoding: bytes[headerStart..<(headerStart + headerLen)], as: UTF8.self)
        func field(_ name: String) -> String? {
            guard let r = header.range(of: "'\(name)'") else { return nil }
            let rest = header[r.upperBound...].drop { $0 == " " || $0 == ":" }
            if rest.first == "(" {
                guard let close = rest.firstIndex(of: ")") else { return nil }
                return String(rest[rest.startIndex...close])
            }
            if rest.first == "'" || rest.first == "\"" {
                let q = rest.first!
                let body = rest.dropFirst()
                guard let close = body.firstIndex(of: q) else { return nil }
                return String(body[body.startIndex..<close])
            }
            return String(rest.prefix { $0 != "," && $0 != "}" }).trimmingCharacters(in: .whitespaces)
        }
        guard let descr = field("descr"), let order = field("fortran_order"), let shapeText = field("shape") else {
            throw NLAError.vectorFile(file: path, reason: "malformed .npy header: \(header.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        guard order == "False" else {
            throw NLAError.vectorFile(file: path, reason: "array is in Fortran order; save it C-contiguous (np.ascontiguousarray)")
        }
        let width: Int
        switch descr {
        case "<f4", "=f4", "f4": width = 4
        case "<f8", "=f8", "f8": width = 8
        case ">f4", ">f8": throw NLAError.vectorFile(file: path, reason: "array is big-endian (\(descr)); expected little-endian float32 or float64")
        default: throw NLAError.vectorFile(file: path, reason: "dtype \(descr) is not supported; expected float32 (<f4) or float64 (<f8)")
        }
        let dims = shapeText.trimmingCharacters(in: CharacterSet(charactersIn: "()")).split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let shape = try dims.map { s -> Int in
            guard let v = Int(s), v >= 0 else { throw NLAError.vectorFile(file: path, reason: "bad shape \(shapeText) in the .npy header") }
            return v
        }
        guard shape.count == 1 || shape.count == 2 else {
            throw NLAError.vectorFile(file: path, reason: "array has shape \(shapeText); expected (d,) or (n, d)")
        }
        let count = shape.reduce(1, *)
        let dataStart = headerStart + headerLen
        guard bytes.count - dataStart >= count * width else {
            throw NLAError.vectorFile(file: path, reason: "data is truncated: shape \(shapeText) needs \(count * width) bytes, file has \(bytes.count - dataStart)")
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
        return (0..<n).map { Array(flat[($0 * d)..<(($0 + 1) * d)]) }
    }

    // MARK: jsonl

    static func readJSONL(_ path: String, key: String?) throws -> [[Float]] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw NLAError.vectorFile(file: path, reason: FileManager.default.fileExists(atPath: path) ? "cannot read the file" : "no such file")
        }
        let column = key ?? jsonlColumn
        var rows: [[Float]] = []
        for (i, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let text = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if text.isEmpty { continue }
            guard let obj = (try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])) as? [String: Any] else {
                throw NLAError.vectorFile(file: path, reason: "line \(i + 1) is not a JSON object")
            }
            guard let arr = obj[column] as? [Any] else {
                throw NLAError.vectorFile(file: path, reason: "line \(i + 1) has no '\(column)' array")
            }
            rows.append(try arr.enumerated().map { j, x in
                guard let n = x as? NSNumber else {
                    throw NLAError.vectorFile(file: path, reason: "line \(i + 1): '\(column)'[\(j)] is not a number")
                }
                return Float(n.doubleValue)
            })
        }
        return rows
    }
}
