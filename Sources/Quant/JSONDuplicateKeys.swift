// Duplicate object keys in a JSON text. Foundation's JSONSerialization keeps one of two equal keys
// silently; a header or config with `{"a": ..., "a": ...}` is ambiguous (two readers can disagree
// on which value counts), so the readers refuse it. The reference safetensors implementation
// (serde) refuses duplicate tensor names the same way.

import Foundation

public enum JSONDuplicateKeys {
    /// The first key that occurs twice in the same object (at any depth), with its path like
    /// `weight.shape` (`[3]` for array elements); nil when there is none. The text is assumed to be
    /// valid JSON (call after JSONSerialization accepted it); on malformed input the result is
    /// unspecified but the scan never reads out of bounds and always terminates.
    public static func first(in data: Data) -> String? {
        data.withUnsafeBytes { raw -> String? in
            let b = raw.bindMemory(to: UInt8.self)
            var scanner = Scanner(b: b)
            return scanner.run()
        }
    }

    private struct Frame {
        var isObject: Bool
        var keys: Set<[UInt8]> = []
        var path: String
        var index = 0
        var pendingKey: String? = nil
    }

    private struct Scanner {
        let b: UnsafeBufferPointer<UInt8>
        var i = 0

        /// Reads a string starting at the opening quote; returns its raw bytes (escapes undone for
        /// comparison) and leaves `i` after the closing quote.
        mutating func string() -> [UInt8] {
            var out: [UInt8] = []
            i += 1
            var escaped = false
            while i < b.count {
                let c = b[i]
                i += 1
                if c == 0x5C && !escaped { escaped = true; continue }
                if c == 0x22 && !escaped {
                    return Self.unescape(out)
                }
                if escaped { out.append(0x5C); escaped = false }
                out.append(c)
            }
            return Self.unescape(out)
        }

        /// Undo JSON escapes so that "a" and "\u0061" compare equal.
        static func unescape(_ s: [UInt8]) -> [UInt8] {
            guard s.contains(0x5C) else { return s }
            let quoted = Data([0x22] + s + [0x22])
            if let str = try? JSONSerialization.jsonObject(with: quoted, options: [.fragmentsAllowed]) as? String {
                return Array(str.utf8)
            }
            return s
        }

        mutating func run() -> String? {
            var stack: [Frame] = []
            func childPath(_ f: Frame) -> String {
                if f.isObject { return f.path.isEmpty ? (f.pendingKey ?? "") : f.path + "." + (f.pendingKey ?? "") }
                return f.path + "[\(f.index)]"
            }
            while i < b.count {
                let c = b[i]
                switch c {
                case 0x7B, 0x5B:  // { [
                    let path = stack.last.map(childPath) ?? ""
                    stack.append(Frame(isObject: c == 0x7B, path: path))
                    i += 1
                case 0x7D, 0x5D:  // } ]
                    if !stack.isEmpty { stack.removeLast() }
                    i += 1
                case 0x22:  // string: a key when in an object and no key is pending
                    if var top = stack.last, top.isObject, top.pendingKey == nil {
                        let key = string()
                        let name = String(decoding: key, as: UTF8.self)
                        if !top.keys.insert(key).inserted {
                            return top.path.isEmpty ? name : top.path + "." + name
                        }
                        top.pendingKey = name
                        stack[stack.count - 1] = top
                    } else {
                        _ = string()
                    }
                case 0x2C:  // , ends a member or an element
                    if !stack.isEmpty {
                        stack[stack.count - 1].pendingKey = nil
                        stack[stack.count - 1].index += 1
                    }
                    i += 1
                default:
                    i += 1
                }
            }
            return nil
        }
    }
}

/// JSONSerialization returns booleans as NSNumber: true/false are not numbers (`"shape": [true]`
/// must not read as [1]).
@inline(__always)
public func jsonIsBool(_ n: NSNumber) -> Bool {
    #if canImport(Darwin)
    return CFGetTypeID(n) == CFBooleanGetTypeID()
    #else
    return type(of: n) == type(of: NSNumber(value: true))
    #endif
}

/// A JSON number that is an exact integer (not a boolean), or nil.
@inline(__always)
public func jsonExactInt(_ x: Any) -> Int? {
    guard let n = x as? NSNumber, !jsonIsBool(n) else { return nil }
    let d = n.doubleValue
    guard d.isFinite, d == d.rounded(), abs(d) < 9.0e18 else { return nil }
    // Large integers are exact in the NSNumber's integer storage; doubles beyond 2^53 are not.
    if abs(d) >= 9.007_199_254_740_992e15 { return Int(exactly: n.int64Value).flatMap { Double($0) == d ? $0 : nil } }
    return Int(d)
}

/// `text` with control characters (newlines, tabs, NUL, …) written as escapes, so that an error
/// message quoting a name or key taken from a file stays on one line.
public func oneLineMessage(_ text: String) -> String {
    guard text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F || $0 == "\u{2028}" || $0 == "\u{2029}" || $0 == "\u{85}" }) else { return text }
    var out = ""
    for u in text.unicodeScalars {
        switch u {
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 || u.value == 0x7F || u == "\u{2028}" || u == "\u{2029}" || u == "\u{85}" {
                out += String(format: "\\u{%X}", u.value)
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    return out
}
