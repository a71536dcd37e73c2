import Foundation

// A small, strict (RFC 8259) JSON reader used for tokenizer.json and tokenizer_config.json.
//
// Foundation's JSONSerialization on Linux needs well over a second for the 33 MB Gemma tokenizer.json
// (262,144 vocab entries + 514,906 merges become ~1.3 M bridged objects). This reader parses everything
// into a plain Swift value tree, except `model.vocab` and `model.merges` at the top level of
// tokenizer.json, which are streamed straight into compact byte tables (`TokByteTable`, `TokRawMerges`)
// without creating per-entry Swift objects. Both paths validate the input fully.

/// A parsed JSON value. Strings keep their exact Unicode scalars (never compare them with `==` when the
/// distinction between canonically equivalent spellings matters; use `.utf8` bytes instead).
enum TokJSON: Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([TokJSON])
    case object([String: TokJSON])

    var kindName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// Merges as read from tokenizer.json, before they are resolved against the vocabulary.
/// Each merge is 4 Int32s in `refs`: start/length of the left piece and start/length of the right piece
/// inside `pool` (the decoded UTF-8 bytes).
struct TokRawMerges: Sendable {
    var pool: [UInt8] = []
    var refs: [Int32] = []
    var count: Int { refs.count / 4 }
}

/// Result of parsing a tokenizer.json file.
struct TokParsedTokenizerFile: Sendable {
    /// The whole document; inside `root["model"]`, `vocab`/`merges` are absent when they were streamed.
    var root: [String: TokJSON]
    /// `model.vocab` when it was a JSON object (streamed).
    var vocab: TokByteTable?
    /// `model.merges` when it was a JSON array of "a b" strings or [a, b] pairs (streamed).
    var merges: TokRawMerges?
}

enum TokJSONReader {
    /// Reads a file into memory, mapping errors to `TokenizerError.unreadableFile`.
    static func readFile(_ url: URL) throws -> Data {
        do {
            return try Data(contentsOf: url, options: [.mappedIfSafe])
        } catch {
            let reason = FileManager.default.fileExists(atPath: url.path) ? "\(error.localizedDescription)" : "no such file"
            throw TokenizerError.unreadableFile(file: url.path, reason: reason)
        }
    }

    /// Parses any JSON document (used for tokenizer_config.json and small snippets).
    static func parse(_ data: Data, file: String) throws -> TokJSON {
        try data.withUnsafeBytes { raw -> TokJSON in
            let buf = raw.bindMemory(to: UInt8.self)
            var p = try TokJSONParser(buffer: buf, file: file)
            let v = try p.parseDocument()
            return v
        }
    }

    /// Parses tokenizer.json, streaming `model.vocab` and `model.merges`. UTF-8 validation of the whole
    /// file runs on a second thread while the document is parsed.
    static func parseTokenizerFile(_ data: Data, file: String) throws -> TokParsedTokenizerFile {
        try data.withUnsafeBytes { raw -> TokParsedTokenizerFile in
            let buf = raw.bindMemory(to: UInt8.self)
            var invalidOffset: Int?
            var result: Result<TokParsedTokenizerFile, any Error> = .failure(CancellationError())
            TokParallel.both({
                invalidOffset = TokUTF8.firstInvalidOffset(buf)
            }, {
                result = Result {
                    var p = try TokJSONParser(buffer: buf, file: file, validateUTF8: false)
                    return try p.parseTokenizerDocument()
                }
            })
            if let bad = invalidOffset {
                throw TokJSONParser.locate("invalid UTF-8 byte sequence", at: bad, in: buf, file: file)
            }
            return try result.get()
        }
    }
}

/// The parser proper. Works on a borrowed buffer; only used inside `withUnsafeBytes`.
struct TokJSONParser {
    private let base: UnsafePointer<UInt8>?
    private let count: Int
    private var pos: Int = 0
    let file: String
    private static let maxDepth = 128  // serde_json's limit; keeps recursion well inside a worker thread's stack

    init(buffer: UnsafeBufferPointer<UInt8>, file: String, validateUTF8: Bool = true) throws {
        self.base = buffer.baseAddress
        self.count = buffer.count
        self.file = file
        if validateUTF8, let bad = TokUTF8.firstInvalidOffset(buffer) {
            throw Self.locate("invalid UTF-8 byte sequence", at: bad, in: buffer, file: file)
        }
    }

    // MARK: errors

    /// A `malformedJSON` error with the 1-based line and column of byte `offset`.
    static func locate(_ reason: String, at offset: Int, in buffer: UnsafeBufferPointer<UInt8>, file: String) -> TokenizerError {
        let off = min(max(offset, 0), buffer.count)
        var line = 1
        var lineStart = 0
        var i = 0
        while i < off {
            if buffer[i] == 0x0A { line += 1; lineStart = i + 1 }
            i += 1
        }
        return .malformedJSON(file: file, line: line, column: off - lineStart + 1, reason: reason)
    }

    private func error(_ reason: String, at offset: Int? = nil) -> TokenizerError {
        Self.locate(reason, at: offset ?? pos, in: UnsafeBufferPointer(start: base, count: count), file: file)
    }

    private func describeByte(at i: Int) -> String {
        guard i < count, let b = base else { return "end of input" }
        let c = b[i]
        if c >= 0x20 && c < 0x7F { return "'\(Character(Unicode.Scalar(c)))'" }
        return "byte 0x" + String(c, radix: 16, uppercase: true)
    }

    // MARK: scanning helpers

    @inline(__always) private func peek() -> UInt8? {
        pos < count ? base![pos] : nil
    }

    @inline(__always) private mutating func skipWhitespace() {
        guard let b = base else { return }
        while pos < count {
            let c = b[pos]
            if c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { pos += 1 } else { break }
        }
    }

    private mutating func expect(_ c: UInt8, _ what: String) throws {
        skipWhitespace()
        guard pos < count, base![pos] == c else {
            throw error("expected \(what), found \(describeByte(at: pos))")
        }
        pos += 1
    }

    // MARK: documents

    mutating func parseDocument() throws -> TokJSON {
        skipWhitespace()
        let v = try parseValue(depth: 0)
        try expectEnd()
        return v
    }

    private mutating func expectEnd() throws {
        skipWhitespace()
        if pos != count { throw error("unexpected trailing content \(describeByte(at: pos))") }
    }

    mutating func parseTokenizerDocument() throws -> TokParsedTokenizerFile {
        skipWhitespace()
        guard peek() == UInt8(ascii: "{") else {
            throw error("expected a JSON object at the top level, found \(describeByte(at: pos))")
        }
        var result = TokParsedTokenizerFile(root: [:])
        let root = try parseObject(depth: 0) { parser, key, depth in
            guard key == "model" else { return nil }
            parser.skipWhitespace()
            guard parser.peek() == UInt8(ascii: "{") else { return nil }
            var vocab: TokByteTable?
            var merges: TokRawMerges?
            let model = try parser.parseObject(depth: depth) { p, k, _ in
                p.skipWhitespace()
                if k == "vocab", p.peek() == UInt8(ascii: "{") {
                    vocab = try p.parseVocabObject()
                    return .some(nil)
                }
                if k == "merges", p.peek() == UInt8(ascii: "[") {
                    merges = try p.parseMergesArray()
                    return .some(nil)
                }
                return nil
            }
            result.vocab = vocab
            result.merges = merges
            return .some(model)
        }
        try expectEnd()
        guard case let .object(dict) = root else { throw error("expected a JSON object at the top level") }
        result.root = dict
        return result
    }

    // MARK: generic values

    private mutating func parseValue(depth: Int) throws -> TokJSON {
        if depth > Self.maxDepth { throw error("nesting deeper than \(Self.maxDepth) levels") }
        skipWhitespace()
        guard let c = peek() else { throw error("unexpected end of input, expected a value") }
        switch c {
        case UInt8(ascii: "{"): return try parseObject(depth: depth + 1, hook: nil)
        case UInt8(ascii: "["):
            pos += 1
            var items: [TokJSON] = []
            skipWhitespace()
            if peek() == UInt8(ascii: "]") { pos += 1; return .array(items) }
            while true {
                items.append(try parseValue(depth: depth + 1))
                skipWhitespace()
                guard let d = peek() else { throw error("unterminated array") }
                pos += 1
                if d == UInt8(ascii: ",") { continue }
                if d == UInt8(ascii: "]") { break }
                throw error("expected ',' or ']' in array, found \(describeByte(at: pos - 1))", at: pos - 1)
            }
            return .array(items)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default: throw error("unexpected \(describeByte(at: pos)), expected a value")
        }
    }

    /// `hook(parser, key, depth)` may consume the value itself: returning `.some(value)` stores `value`
    /// (`.some(nil)` stores nothing), returning `nil` lets the generic parser read the value.
    private mutating func parseObject(
        depth: Int,
        hook: ((inout TokJSONParser, String, Int) throws -> TokJSON??)?
    ) throws -> TokJSON {
        if depth > Self.maxDepth { throw error("nesting deeper than \(Self.maxDepth) levels") }
        pos += 1  // '{'
        var dict: [String: TokJSON] = [:]
        skipWhitespace()
        if peek() == UInt8(ascii: "}") { pos += 1; return .object(dict) }
        while true {
            skipWhitespace()
            guard peek() == UInt8(ascii: "\"") else { throw error("expected a string key, found \(describeByte(at: pos))") }
            let key = try parseString()
            try expect(UInt8(ascii: ":"), "':' after object key")
            if let hook, let handled = try hook(&self, key, depth + 1) {
                if let v = handled { dict[key] = v }
            } else {
                dict[key] = try parseValue(depth: depth + 1)
            }
            skipWhitespace()
            guard let d = peek() else { throw error("unterminated object") }
            pos += 1
            if d == UInt8(ascii: ",") { continue }
            if d == UInt8(ascii: "}") { break }
            throw error("expected ',' or '}' in object, found \(describeByte(at: pos - 1))", at: pos - 1)
        }
        return .object(dict)
    }

    private mutating func literal(_ word: StaticString) throws {
        let n = word.utf8CodeUnitCount
        let w = word.utf8Start
        guard pos + n <= count else { throw error("invalid literal") }
        for i in 0..<n where base![pos + i] != w[i] {
            throw error("invalid literal, expected '\(word)'")
        }
        pos += n
    }

    private mutating func parseNumber() throws -> Double {
        let b = base!
        let start = pos
        if b[pos] == UInt8(ascii: "-") { pos += 1 }
        guard pos < count, b[pos] >= 0x30, b[pos] <= 0x39 else { throw error("invalid number") }
        if b[pos] == 0x30 {
            pos += 1
        } else {
            while pos < count, b[pos] >= 0x30, b[pos] <= 0x39 { pos += 1 }
        }
        if pos < count, b[pos] == UInt8(ascii: ".") {
            pos += 1
            guard pos < count, b[pos] >= 0x30, b[pos] <= 0x39 else { throw error("invalid number: digit expected after '.'") }
            while pos < count, b[pos] >= 0x30, b[pos] <= 0x39 { pos += 1 }
        }
        if pos < count, b[pos] == UInt8(ascii: "e") || b[pos] == UInt8(ascii: "E") {
            pos += 1
            if pos < count, b[pos] == UInt8(ascii: "+") || b[pos] == UInt8(ascii: "-") { pos += 1 }
            guard pos < count, b[pos] >= 0x30, b[pos] <= 0x39 else { throw error("invalid number: digit expected in exponent") }
            while pos < count, b[pos] >= 0x30, b[pos] <= 0x39 { pos += 1 }
        }
        let text = String(decoding: UnsafeBufferPointer(start: b + start, count: pos - start), as: UTF8.self)
        guard let d = Double(text) else { throw error("invalid number '\(text)'", at: start) }
        return d
    }

    // MARK: strings

    /// Parses a string (cursor on the opening quote) and appends its decoded UTF-8 bytes to `out`.
    private mutating func parseStringBytes(into out: inout [UInt8]) throws {
        let b = base!
        pos += 1  // opening quote
        var runStart = pos
        while true {
            guard pos < count else { throw error("unterminated string") }
            let c = b[pos]
            if c == UInt8(ascii: "\"") {
                if pos > runStart { out.append(contentsOf: UnsafeBufferPointer(start: b + runStart, count: pos - runStart)) }
                pos += 1
                return
            }
            if c == UInt8(ascii: "\\") {
                if pos > runStart { out.append(contentsOf: UnsafeBufferPointer(start: b + runStart, count: pos - runStart)) }
                try parseEscape(into: &out)
                runStart = pos
                continue
            }
            if c < 0x20 { throw error("unescaped control character in string") }
            pos += 1
        }
    }

    private mutating func parseEscape(into out: inout [UInt8]) throws {
        let b = base!
        pos += 1  // backslash
        guard pos < count else { throw error("unterminated escape") }
        let e = b[pos]
        pos += 1
        switch e {
        case UInt8(ascii: "\""): out.append(0x22)
        case UInt8(ascii: "\\"): out.append(0x5C)
        case UInt8(ascii: "/"): out.append(0x2F)
        case UInt8(ascii: "b"): out.append(0x08)
        case UInt8(ascii: "f"): out.append(0x0C)
        case UInt8(ascii: "n"): out.append(0x0A)
        case UInt8(ascii: "r"): out.append(0x0D)
        case UInt8(ascii: "t"): out.append(0x09)
        case UInt8(ascii: "u"):
            var scalar = try hex4()
            if scalar >= 0xD800 && scalar <= 0xDBFF {
                guard pos + 1 < count, b[pos] == UInt8(ascii: "\\"), b[pos + 1] == UInt8(ascii: "u") else {
                    throw error("lone leading surrogate in \\u escape")
                }
                pos += 2
                let low = try hex4()
                guard low >= 0xDC00 && low <= 0xDFFF else { throw error("invalid trailing surrogate in \\u escape") }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            } else if scalar >= 0xDC00 && scalar <= 0xDFFF {
                throw error("lone trailing surrogate in \\u escape")
            }
            TokUTF8.append(scalar: scalar, to: &out)
        default:
            throw error("invalid escape '\\\(Character(Unicode.Scalar(e)))'", at: pos - 1)
        }
    }

    private mutating func hex4() throws -> UInt32 {
        guard pos + 4 <= count else { throw error("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = base![pos]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw error("invalid hex digit in \\u escape")
            }
            v = v << 4 | d
            pos += 1
        }
        return v
    }

    private mutating func parseString() throws -> String {
        var bytes: [UInt8] = []
        try parseStringBytes(into: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: streamed vocab / merges

    /// `{"token": id, ...}` straight into a byte table (last duplicate wins, like serde's HashMap).
    private mutating func parseVocabObject() throws -> TokByteTable {
        let b = base!
        pos += 1  // '{'
        var table = TokByteTable(expectedCount: 1024)
        table.reservePool(min(count - pos, 1 << 26) / 4)
        skipWhitespace()
        if peek() == UInt8(ascii: "}") { pos += 1; return table }
        while true {
            skipWhitespace()
            guard peek() == UInt8(ascii: "\"") else { throw error("expected a string key in model.vocab, found \(describeByte(at: pos))") }
            try table.appendKey { try self.parseStringBytes(into: &$0) }
            try expect(UInt8(ascii: ":"), "':' after vocab token")
            skipWhitespace()
            // non-negative integer id
            let numStart = pos
            var id = 0
            while pos < count, b[pos] >= 0x30, b[pos] <= 0x39 {
                id = id &* 10 &+ Int(b[pos] - 0x30)
                pos += 1
                if id > Int(Int32.max) { throw error("vocab id out of range", at: numStart) }
            }
            let digits = pos - numStart
            if digits == 0 || (digits > 1 && b[numStart] == 0x30) || (pos < count && (b[pos] == UInt8(ascii: ".") || b[pos] == UInt8(ascii: "e") || b[pos] == UInt8(ascii: "E"))) {
                throw error("vocab ids must be non-negative integers", at: numStart)
            }
            table.setLastValue(Int32(id))
            skipWhitespace()
            guard let d = peek() else { throw error("unterminated model.vocab object") }
            pos += 1
            if d == UInt8(ascii: ",") { continue }
            if d == UInt8(ascii: "}") { break }
            throw error("expected ',' or '}' in model.vocab, found \(describeByte(at: pos - 1))", at: pos - 1)
        }
        table.buildIndex()
        return table
    }

    /// `["a b", ...]` or `[["a", "b"], ...]` (the two forms may even be mixed).
    private mutating func parseMergesArray() throws -> TokRawMerges {
        pos += 1  // '['
        var m = TokRawMerges()
        m.pool.reserveCapacity(min(count - pos, 1 << 27) / 2)
        m.refs.reserveCapacity(min(count - pos, 1 << 27) / 2)  // 4 refs per merge of at least 8 JSON bytes
        skipWhitespace()
        if peek() == UInt8(ascii: "]") { pos += 1; return m }
        while true {
            skipWhitespace()
            let itemStart = pos
            guard let c = peek() else { throw error("unterminated model.merges array") }
            if c == UInt8(ascii: "\"") {
                let start = m.pool.count
                try parseStringBytes(into: &m.pool)
                let end = m.pool.count
                // merges.txt-style header lines are skipped, as tokenizers does
                if end - start >= 8 && m.pool[start..<(start + 8)].elementsEqual("#version".utf8) {
                    m.pool.removeSubrange(start..<end)
                    skipWhitespace()
                    guard let d = peek() else { throw error("unterminated model.merges array") }
                    pos += 1
                    if d == UInt8(ascii: ",") { continue }
                    if d == UInt8(ascii: "]") { break }
                    throw error("expected ',' or ']' in model.merges, found \(describeByte(at: pos - 1))", at: pos - 1)
                }
                var space = -1
                var spaces = 0
                m.pool.withUnsafeBufferPointer { p in
                    var i = start
                    while i < end {
                        if p[i] == 0x20 { spaces += 1; space = i }
                        i += 1
                    }
                }
                guard spaces == 1 else {
                    throw error("merge \(m.count) must be two tokens separated by exactly one space", at: itemStart)
                }
                m.refs.append(Int32(start)); m.refs.append(Int32(space - start))
                m.refs.append(Int32(space + 1)); m.refs.append(Int32(end - space - 1))
            } else if c == UInt8(ascii: "[") {
                pos += 1
                skipWhitespace()
                guard peek() == UInt8(ascii: "\"") else { throw error("merge \(m.count): expected a string") }
                let aStart = m.pool.count
                try parseStringBytes(into: &m.pool)
                let aEnd = m.pool.count
                try expect(UInt8(ascii: ","), "',' between the two tokens of a merge")
                skipWhitespace()
                guard peek() == UInt8(ascii: "\"") else { throw error("merge \(m.count): expected a string") }
                try parseStringBytes(into: &m.pool)
                let bEnd = m.pool.count
                try expect(UInt8(ascii: "]"), "']' closing a merge pair (a merge has exactly two tokens)")
                m.refs.append(Int32(aStart)); m.refs.append(Int32(aEnd - aStart))
                m.refs.append(Int32(aEnd)); m.refs.append(Int32(bEnd - aEnd))
            } else {
                throw error("merge \(m.count) must be a string \"a b\" or an array [\"a\", \"b\"]")
            }
            if m.pool.count >= Int(Int32.max) { throw error("model.merges too large") }
            skipWhitespace()
            guard let d = peek() else { throw error("unterminated model.merges array") }
            pos += 1
            if d == UInt8(ascii: ",") { continue }
            if d == UInt8(ascii: "]") { break }
            throw error("expected ',' or ']' in model.merges, found \(describeByte(at: pos - 1))", at: pos - 1)
        }
        return m
    }
}

// MARK: - typed access with error paths

/// A JSON object together with the file and path it came from, for one-line error messages.
struct TokJSONNode {
    let file: String
    let path: String
    let value: TokJSON

    init(file: String, path: String, value: TokJSON) {
        self.file = file
        self.path = path
        self.value = value
    }

    func child(_ key: String) -> TokJSONNode? {
        guard case let .object(d) = value, let v = d[key] else { return nil }
        return TokJSONNode(file: file, path: path.isEmpty ? key : "\(path).\(key)", value: v)
    }

    /// Child that is present and not null.
    func optional(_ key: String) -> TokJSONNode? {
        guard let c = child(key) else { return nil }
        if case .null = c.value { return nil }
        return c
    }

    func require(_ key: String) throws -> TokJSONNode {
        guard let c = optional(key) else {
            throw TokenizerError.missingKey(file: file, path: path.isEmpty ? key : "\(path).\(key)")
        }
        return c
    }

    func invalid(_ problem: String) -> TokenizerError {
        .invalidValue(file: file, path: path.isEmpty ? "<root>" : path, problem: problem)
    }

    func asObject() throws -> [String: TokJSON] {
        guard case let .object(d) = value else { throw invalid("expected an object, found \(value.kindName)") }
        return d
    }

    func asString() throws -> String {
        guard case let .string(s) = value else { throw invalid("expected a string, found \(value.kindName)") }
        return s
    }

    func asBool() throws -> Bool {
        guard case let .bool(b) = value else { throw invalid("expected a boolean, found \(value.kindName)") }
        return b
    }

    func asDouble() throws -> Double {
        guard case let .number(d) = value else { throw invalid("expected a number, found \(value.kindName)") }
        return d
    }

    func asInt() throws -> Int {
        let d = try asDouble()
        guard d.rounded() == d, abs(d) < 9.0e15 else { throw invalid("expected an integer, found \(d)") }
        return Int(d)
    }

    /// A token id: an integer in 0...Int32.max (the token tables store Int32).
    func asTokenId() throws -> Int32 {
        let raw = try asInt()
        guard let id = Int32(exactly: raw), id >= 0 else {
            throw invalid("token id \(raw) is out of range (0...\(Int32.max))")
        }
        return id
    }

    func asArray() throws -> [TokJSONNode] {
        guard case let .array(a) = value else { throw invalid("expected an array, found \(value.kindName)") }
        return a.enumerated().map { TokJSONNode(file: file, path: "\(path)[\($0.offset)]", value: $0.element) }
    }

    func string(_ key: String, default def: String) throws -> String {
        guard let c = optional(key) else { return def }
        return try c.asString()
    }

    func bool(_ key: String, default def: Bool) throws -> Bool {
        guard let c = optional(key) else { return def }
        return try c.asBool()
    }

    func int(_ key: String, default def: Int) throws -> Int {
        guard let c = optional(key) else { return def }
        return try c.asInt()
    }

    /// The `"type"` field of a component object.
    func componentType() throws -> String {
        _ = try asObject()
        return try require("type").asString()
    }
}

/// JSON text from bytes and `TokJSON` values (the GGUF → tokenizer.json rebuild, the tokenizer disk cache).
enum TokJSONWriter {
    /// Appends `bytes` (UTF-8) as a JSON string literal: quote and backslash escaped, control characters
    /// as \n, \r, \t or \u00XX, everything else as is.
    static func string(_ bytes: some Sequence<UInt8>, into out: inout [UInt8]) {
        let hex = Array("0123456789abcdef".utf8)
        out.append(UInt8(ascii: "\""))
        for c in bytes {
            switch c {
            case UInt8(ascii: "\""): out += [92, 34]
            case UInt8(ascii: "\\"): out += [92, 92]
            case 0x0A: out += [92, UInt8(ascii: "n")]
            case 0x0D: out += [92, UInt8(ascii: "r")]
            case 0x09: out += [92, UInt8(ascii: "t")]
            case 0..<0x20: out += [92, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(c >> 4)], hex[Int(c & 15)]]
            default: out.append(c)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// Compact JSON that `TokJSONParser` reads back to the same value (object keys sorted; numbers in
    /// Swift's shortest round-trip form, integers without a fraction, −0 kept).
    static func value(_ v: TokJSON, into out: inout [UInt8]) {
        switch v {
        case .null: out += Array("null".utf8)
        case .bool(let b): out += Array((b ? "true" : "false").utf8)
        case .number(let d):
            if d == d.rounded(), abs(d) < 9e15, !(d == 0 && d.sign == .minus) { out += Array(String(Int64(d)).utf8) } else { out += Array("\(d)".utf8) }
        case .string(let s): string(s.utf8, into: &out)
        case .array(let a):
            out.append(UInt8(ascii: "["))
            for (i, x) in a.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                value(x, into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let o):
            out.append(UInt8(ascii: "{"))
            for (i, k) in o.keys.sorted().enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                string(k.utf8, into: &out)
                out.append(UInt8(ascii: ":"))
                value(o[k]!, into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }
}
