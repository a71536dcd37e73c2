// A small, fast JSON reader for request bodies. `/generate` bodies carry [T, d] float arrays (a 108 × 5376
// request is 580k numbers), so arrays whose elements are all numbers are read straight into [Float]
// (`strtof` on the bytes: a float printed with its shortest round-trip form reads back bit-exact); everything
// else is an ordinary tree. Depth and sizes are bounded; every error is one line naming the field.

import Foundation
#if canImport(Glibc)
import Glibc
#endif

public indirect enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    /// An array whose elements are all numbers (also `[]`).
    case floats([Float])
    case array([JSONValue])
    case object([String: JSONValue])
}

/// A client error: HTTP status + one-line message.
public struct APIError: Error, CustomStringConvertible, Sendable {
    public var status: Int
    public var message: String
    public init(_ status: Int, _ message: String) { self.status = status; self.message = message }
    public var description: String { message }
    package static func bad(_ m: String) -> APIError { APIError(400, m) }
}

public enum JSONReader {
    static let maxDepth = 64

    /// Parse a whole body.
    public static func parse(_ bytes: [UInt8]) throws -> JSONValue {
        var buf = bytes
        buf.append(0)  // strtof stops at the terminator
        return try buf.withUnsafeBufferPointer { p -> JSONValue in
            var r = Parser(p: p.baseAddress!, end: p.count - 1)
            r.skipWS()
            let v = try r.value(depth: 0)
            r.skipWS()
            guard r.i == r.end else { throw APIError.bad("request body: unexpected data after the JSON value at byte \(r.i)") }
            return v
        }
    }

    struct Parser {
        let p: UnsafePointer<UInt8>
        let end: Int
        var i = 0

        init(p: UnsafePointer<UInt8>, end: Int) { self.p = p; self.end = end }

        func fail(_ what: String) -> APIError {
            APIError.bad("request body is not valid JSON: \(what) at byte \(i)")
        }

        mutating func skipWS() {
            while i < end, p[i] == 0x20 || p[i] == 0x0A || p[i] == 0x0D || p[i] == 0x09 { i += 1 }
        }

        mutating func value(depth: Int) throws -> JSONValue {
            guard depth < JSONReader.maxDepth else { throw fail("nesting deeper than \(JSONReader.maxDepth)") }
            guard i < end else { throw fail("unexpected end") }
            switch p[i] {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try literal("true"); return .bool(true)
            case UInt8(ascii: "f"): try literal("false"); return .bool(false)
            case UInt8(ascii: "n"): try literal("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return .number(try number())
            default: throw fail("unexpected character")
            }
        }

        mutating func literal(_ s: StaticString) throws {
            let n = s.utf8CodeUnitCount
            guard i + n <= end else { throw fail("unexpected end") }
            for k in 0..<n where p[i + k] != s.utf8Start[k] { throw fail("invalid literal") }
            i += n
        }

        /// The extent of a JSON number starting at i (grammar-checked), advancing past it.
        mutating func numberSpan() throws -> Range<Int> {
            let s = i
            if p[i] == UInt8(ascii: "-") { i += 1 }
            guard i < end, p[i] >= 0x30, p[i] <= 0x39 else { throw fail("invalid number") }
            if p[i] == 0x30 { i += 1 } else { while i < end, p[i] >= 0x30, p[i] <= 0x39 { i += 1 } }
            if i < end, p[i] == UInt8(ascii: ".") {
                i += 1
                guard i < end, p[i] >= 0x30, p[i] <= 0x39 else { throw fail("invalid number") }
                while i < end, p[i] >= 0x30, p[i] <= 0x39 { i += 1 }
            }
            if i < end, p[i] == UInt8(ascii: "e") || p[i] == UInt8(ascii: "E") {
                i += 1
                if i < end, p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-") { i += 1 }
                guard i < end, p[i] >= 0x30, p[i] <= 0x39 else { throw fail("invalid number") }
                while i < end, p[i] >= 0x30, p[i] <= 0x39 { i += 1 }
            }
            return s..<i
        }

        mutating func number() throws -> Double {
            let r = try numberSpan()
            return UnsafeRawPointer(p + r.lowerBound).withMemoryRebound(to: CChar.self, capacity: r.count + 1) { strtod($0, nil) }
        }

        mutating func float() throws -> Float {
            let r = try numberSpan()
            return UnsafeRawPointer(p + r.lowerBound).withMemoryRebound(to: CChar.self, capacity: r.count + 1) { strtof($0, nil) }
        }

        mutating func array(depth: Int) throws -> JSONValue {
            i += 1
            skipWS()
            if i < end, p[i] == UInt8(ascii: "]") { i += 1; return .floats([]) }
            // Fast path: numbers only.
            if i < end, p[i] == UInt8(ascii: "-") || (p[i] >= 0x30 && p[i] <= 0x39) {
                var out: [Float] = []
                let save = i
                while true {
                    skipWS()
                    guard i < end else { throw fail("unexpected end in array") }
                    guard p[i] == UInt8(ascii: "-") || (p[i] >= 0x30 && p[i] <= 0x39) else { break }
                    out.append(try float())
                    skipWS()
                    guard i < end else { throw fail("unexpected end in array") }
                    if p[i] == UInt8(ascii: ",") { i += 1; continue }
                    if p[i] == UInt8(ascii: "]") { i += 1; return .floats(out) }
                    throw fail("expected ',' or ']'")
                }
                i = save  // mixed array: reparse generally
            }
            var items: [JSONValue] = []
            while true {
                skipWS()
                items.append(try value(depth: depth + 1))
                skipWS()
                guard i < end else { throw fail("unexpected end in array") }
                if p[i] == UInt8(ascii: ",") { i += 1; continue }
                if p[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                throw fail("expected ',' or ']'")
            }
        }

        mutating func object(depth: Int) throws -> JSONValue {
            i += 1
            var out: [String: JSONValue] = [:]
            skipWS()
            if i < end, p[i] == UInt8(ascii: "}") { i += 1; return .object(out) }
            while true {
                skipWS()
                guard i < end, p[i] == UInt8(ascii: "\"") else { throw fail("expected a key string") }
                let k = try string()
                skipWS()
                guard i < end, p[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                i += 1
                skipWS()
                let v = try value(depth: depth + 1)
                guard out.updateValue(v, forKey: k) == nil else {
                    throw APIError.bad("request body: duplicate key \(quoteField(k))")
                }
                skipWS()
                guard i < end else { throw fail("unexpected end in object") }
                if p[i] == UInt8(ascii: ",") { i += 1; continue }
                if p[i] == UInt8(ascii: "}") { i += 1; return .object(out) }
                throw fail("expected ',' or '}'")
            }
        }

        mutating func hex4() throws -> UInt32 {
            guard i + 4 <= end else { throw fail("truncated \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = p[i]
                let d: UInt32
                switch c {
                case 0x30...0x39: d = UInt32(c - 0x30)
                case 0x41...0x46: d = UInt32(c - 0x41 + 10)
                case 0x61...0x66: d = UInt32(c - 0x61 + 10)
                default: throw fail("invalid \\u escape")
                }
                v = v * 16 + d
                i += 1
            }
            return v
        }

        mutating func string() throws -> String {
            i += 1
            var bytes: [UInt8] = []
            while true {
                guard i < end else { throw fail("unterminated string") }
                let c = p[i]
                if c == UInt8(ascii: "\"") { i += 1; break }
                if c < 0x20 { throw fail("control character in string") }
                if c != UInt8(ascii: "\\") { bytes.append(c); i += 1; continue }
                i += 1
                guard i < end else { throw fail("unterminated escape") }
                let e = p[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""): bytes.append(0x22)
                case UInt8(ascii: "\\"): bytes.append(0x5C)
                case UInt8(ascii: "/"): bytes.append(0x2F)
                case UInt8(ascii: "b"): bytes.append(0x08)
                case UInt8(ascii: "f"): bytes.append(0x0C)
                case UInt8(ascii: "n"): bytes.append(0x0A)
                case UInt8(ascii: "r"): bytes.append(0x0D)
                case UInt8(ascii: "t"): bytes.append(0x09)
                case UInt8(ascii: "u"):
                    var cp = try hex4()
                    if cp >= 0xD800 && cp < 0xDC00 {
                        guard i + 6 <= end, p[i] == UInt8(ascii: "\\"), p[i + 1] == UInt8(ascii: "u") else { throw fail("lone surrogate") }
                        i += 2
                        let lo = try hex4()
                        guard lo >= 0xDC00 && lo < 0xE000 else { throw fail("invalid surrogate pair") }
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
                    } else if cp >= 0xDC00 && cp < 0xE000 {
                        throw fail("lone surrogate")
                    }
                    bytes += Array(String(Character(Unicode.Scalar(cp)!)).utf8)
                default: throw fail("invalid escape")
                }
            }
            guard let s = String(validating: bytes, as: UTF8.self) else { throw fail("string is not valid UTF-8") }
            return s
        }
    }
}

/// A field name quoted for messages (control characters escaped so messages stay one line).
package func quoteField(_ s: String) -> String {
    var out = "'"
    for u in s.unicodeScalars.prefix(80) {
        if u.value < 0x20 || u.value == 0x7F { out += String(format: "\\x%02x", u.value) } else { out.unicodeScalars.append(u) }
    }
    return out + (s.unicodeScalars.count > 80 ? "…'" : "'")
}

// MARK: - typed access with one-line errors naming the field

extension JSONValue {
    package var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .floats, .array: return "an array"
        case .object: return "an object"
        }
    }

    public func object(_ field: String) throws -> [String: JSONValue] {
        guard case .object(let o) = self else { throw APIError.bad("\(field): expected an object, got \(typeName)") }
        return o
    }
}

/// Field access on a request object.
package struct Fields {
    package let o: [String: JSONValue]
    package let prefix: String

    package init(_ v: JSONValue, _ name: String = "request body") throws {
        o = try v.object(name)
        prefix = name == "request body" ? "" : name + "."
    }

    package func has(_ k: String) -> Bool { if let v = o[k], v != .null { return true } else { return false } }
    package func name(_ k: String) -> String { prefix + k }

    package func string(_ k: String) throws -> String? {
        guard let v = o[k], v != .null else { return nil }
        guard case .string(let s) = v else { throw APIError.bad("\(name(k)): expected a string, got \(v.typeName)") }
        return s
    }

    package func bool(_ k: String) throws -> Bool? {
        guard let v = o[k], v != .null else { return nil }
        guard case .bool(let b) = v else { throw APIError.bad("\(name(k)): expected true or false, got \(v.typeName)") }
        return b
    }

    package func double(_ k: String) throws -> Double? {
        guard let v = o[k], v != .null else { return nil }
        guard case .number(let x) = v, x.isFinite else { throw APIError.bad("\(name(k)): expected a number, got \(v.typeName)") }
        return x
    }

    package func int(_ k: String, min lo: Int? = nil, max hi: Int? = nil) throws -> Int? {
        guard let x = try double(k) else { return nil }
        guard x == x.rounded(), abs(x) < 9.0e15 else { throw APIError.bad("\(name(k)): expected an integer, got \(x)") }
        let n = Int(x)
        if let lo, n < lo { throw APIError.bad("\(name(k)): must be >= \(lo) (got \(n))") }
        if let hi, n > hi { throw APIError.bad("\(name(k)): must be <= \(hi) (got \(n))") }
        return n
    }

    /// A vector of floats, all finite.
    package func floats(_ k: String) throws -> [Float]? {
        guard let v = o[k], v != .null else { return nil }
        return try vector(v, name(k))
    }
}

package func vector(_ v: JSONValue, _ field: String) throws -> [Float] {
    guard case .floats(let f) = v else { throw APIError.bad("\(field): expected an array of numbers, got \(v.typeName)") }
    for (j, x) in f.enumerated() where !x.isFinite {
        throw APIError.bad("\(field)[\(j)]: not a finite float32")
    }
    return f
}

/// [[Float] × n] from an array of arrays of numbers (each row `width` long when given).
package func matrix(_ v: JSONValue, _ field: String, width: Int?) throws -> [[Float]] {
    switch v {
    case .array(let rows):
        return try rows.enumerated().map { (i, r) in
            let row = try vector(r, "\(field)[\(i)]")
            if let width, row.count != width { throw APIError.bad("\(field)[\(i)]: \(row.count) values, expected \(width) (hidden size)") }
            return row
        }
    case .floats(let f) where f.isEmpty:
        return []
    default:
        throw APIError.bad("\(field): expected an array of arrays of numbers, got \(v.typeName == "an array" ? "an array of numbers" : v.typeName)")
    }
}

/// Token ids from an array of numbers (integers in 0..<vocab).
package func tokenIds(_ v: JSONValue, _ field: String, vocab: Int) throws -> [Int] {
    guard case .floats(let f) = v else { throw APIError.bad("\(field): expected an array of token ids, got \(v.typeName)") }
    return try f.enumerated().map { (j, x) in
        guard x.isFinite, x == x.rounded(), x >= 0, x < Float(vocab) else {
            throw APIError.bad("\(field)[\(j)]: \(x) is not a token id in 0..<\(vocab)")
        }
        return Int(x)
    }
}
