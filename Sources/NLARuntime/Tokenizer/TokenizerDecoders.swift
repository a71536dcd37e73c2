import Foundation

/// Decoding: turns the list of token strings (UTF-8 bytes) into a new list; the final text is their
/// concatenation (tokenizers' `decode_chain`).
protocol TokDecoder: Sendable {
    func decodeChain(_ tokens: [[UInt8]]) -> [[UInt8]]
}

/// `decoder.type` values understood by this implementation.
enum TokDecoderType: String, Sendable, CaseIterable {
    case sequence = "Sequence"
    case replace = "Replace"
    case byteFallback = "ByteFallback"
    case fuse = "Fuse"
    case strip = "Strip"
    case metaspace = "Metaspace"
    case byteLevel = "ByteLevel"
}

enum TokDecoderFactory {
    static func make(_ node: TokJSONNode) throws -> any TokDecoder {
        let typeName = try node.componentType()
        guard let type = TokDecoderType(rawValue: typeName) else {
            throw TokenizerError.unknownComponentType(file: node.file, stage: "decoder", type: typeName, path: node.path)
        }
        switch type {
        case .sequence:
            return TokSequenceDecoder(decoders: try node.require("decoders").asArray().map(make))
        case .replace:
            return TokReplaceDecoder(
                pattern: try TokPattern.parse(node.require("pattern")),
                content: Array(try node.require("content").asString().utf8))
        case .byteFallback: return TokByteFallbackDecoder()
        case .fuse: return TokFuseDecoder()
        case .strip:
            let content = try node.require("content")
            let c = try content.asString()
            guard c.unicodeScalars.count == 1, let sc = c.unicodeScalars.first else {
                throw content.invalid("content must be a single character")
            }
            let start = try node.int("start", default: 0)
            let stop = try node.int("stop", default: 0)
            guard start >= 0, stop >= 0 else { throw node.invalid("start and stop must be non-negative") }
            return TokStripDecoder(content: sc.value, start: start, stop: stop)
        case .metaspace:
            let m = try TokMetaspacePreTokenizer(node)
            return TokMetaspaceDecoder(replacement: m.replacement, stripFirst: m.prependScheme != .never)
        case .byteLevel:
            return TokByteLevelDecoder()
        }
    }
}

struct TokSequenceDecoder: TokDecoder {
    let decoders: [any TokDecoder]
    func decodeChain(_ tokens: [[UInt8]]) -> [[UInt8]] {
        decoders.reduce(tokens) { $1.decodeChain($0) }
    }
}

/// Replaces a literal / regex in every token.
struct TokReplaceDecoder: TokDecoder {
    let pattern: TokPattern
    let content: [UInt8]
    func decodeChain(_ tokens: [[UInt8]]) -> [[UInt8]] {
        tokens.map { pattern.replace(in: $0, with: content) }
    }
}

/// Runs of `<0xXX>` tokens become the bytes they spell when those form valid UTF-8, otherwise one U+FFFD
/// per byte.
struct TokByteFallbackDecoder: TokDecoder {
    /// The byte spelled by a `<0xXX>` token (hex digits of either case, as Rust's `from_str_radix`).
    static func byteValue(_ t: [UInt8]) -> UInt8? {
        guard t.count == 6, t[0] == 0x3C, t[1] == 0x30, t[2] == 0x78, t[5] == 0x3E else { return nil }
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x41...0x46: return c - 0x41 + 10
            case 0x61...0x66: return c - 0x61 + 10
            default: return nil
            }
        }
        if t[3] == 0x2B, let lo = hex(t[4]) { return lo }  // "+F" parses in Rust's from_str_radix
        guard let hi = hex(t[3]), let lo = hex(t[4]) else { return nil }
        return hi << 4 | lo
    }

    func decodeChain(_ tokens: [[UInt8]]) -> [[UInt8]] {
        var out: [[UInt8]] = []
        out.reserveCapacity(tokens.count)
        var pending: [UInt8] = []
        func flush() {
            guard !pending.isEmpty else { return }
            if TokUTF8.isValid(pending) {
                out.append(pending)
            } else {
                for _ in pending { out.append([0xEF, 0xBF, 0xBD]) }
            }
            pending.removeAll()
        }
        for t in tokens {
            if let b = Self.byteValue(t) {
                pending.append(b)
            } else {
                flush()
                out.append(t)
            }
        }
        flush()
        return out
    }
}

/// Joins all tokens into one.
struct TokFuseDecoder: TokDecoder {
    func decodeChain(_ tokens: [[UInt8]]) -> [[UInt8]] {
        [tokens.flatMap { $0 }]
    }
}

/// Removes up to `start` leading and `stop` trailing occurrences of `content` from every token.
struct TokStripDecoder: TokDecoder {
    let content: UInt32
    let start: Int
    let stop: Int
    func decodeChain(_ tokens: [[UInt8]]) -> [[UInt8]] {
        tokens.map { t in
            let chars = TokUTF8.scalars(t)
            var startCut = 0
            for i in 0..<min(start, chars.count) {
                if chars[i].scalar == content { startCut = i + 1 } else { break }
            }
            var stopCut = chars.count
            for i in 0..<min(stop, chars.count) {
                let index = chars.count - i - 1
                if chars[index].scalar == content { stopCut = index } else { break }
            }
            if startCut >= stopCut { return [] }
            let a = chars[startCut].start
            let b = stopCut == chars.count ? t.count : chars[stopCut].start
            return Array(t[a..<b])
        }
    }
}

/// Metaspace decoding: the replacement character becomes a space, except in the first token where it is
/// dropped when the pre-tokenizer prepends it (prepend_scheme first/always).
struct TokMetaspaceDecoder: TokDecoder {
    let replacement: [UInt8]
    let stripFirst: Bool
    func decodeChain(_ tokens: [[UInt8]]) -> [[UInt8]] {
        tokens.enumerated().map { i, t in
            TokPattern.string(replacement).replace(in: t, with: (i == 0 && stripFirst) ? [] : [0x20])
        }
    }
}

/// GPT-2 byte-level decoding: characters map back to bytes; the result is decoded lossily.
struct TokByteLevelDecoder: TokDecoder {
    func decodeChain(_ tokens: [[UInt8]]) -> [[UInt8]] {
        var bytes: [UInt8] = []
        for t in tokens {
            var mapped: [UInt8] = []
            var ok = true
            for (v, _, _) in TokUTF8.scalars(t) {
                guard let b = TokByteLevelTables.scalarToByte[v] else { ok = false; break }
                mapped.append(b)
            }
            bytes += ok ? mapped : t
        }
        return [Array(String(decoding: bytes, as: UTF8.self).utf8)]
    }
}
