import Foundation

/// Stage 4 of encoding: adds special tokens around a single encoded sequence.
protocol TokPostProcessor: Sendable {
    func process(_ ids: [Int32], addSpecialTokens: Bool) -> [Int32]
    /// Special-token ids this processor puts in front of the sequence (used to find the BOS id).
    var leadingSpecialIds: [Int32] { get }
}

/// `post_processor.type` values understood by this implementation.
enum TokPostProcessorType: String, Sendable, CaseIterable {
    case templateProcessing = "TemplateProcessing"
    case byteLevel = "ByteLevel"
    case bertProcessing = "BertProcessing"
    case robertaProcessing = "RobertaProcessing"
    case sequence = "Sequence"
}

enum TokPostProcessorFactory {
    static func make(_ node: TokJSONNode) throws -> any TokPostProcessor {
        let typeName = try node.componentType()
        guard let type = TokPostProcessorType(rawValue: typeName) else {
            throw TokenizerError.unknownComponentType(file: node.file, stage: "post_processor", type: typeName, path: node.path)
        }
        switch type {
        case .templateProcessing: return try TokTemplateProcessing(node)
        case .byteLevel: return TokPassThroughProcessor()
        case .bertProcessing, .robertaProcessing:
            func pair(_ key: String) throws -> Int32 {
                let p = try node.require(key)
                let items = try p.asArray()
                guard items.count == 2 else { throw p.invalid("expected [token, id]") }
                return try items[1].asTokenId()
            }
            return TokWrapProcessor(prefix: [try pair("cls")], suffix: [try pair("sep")])
        case .sequence:
            return TokSequenceProcessor(processors: try node.require("processors").asArray().map(make))
        }
    }
}

/// `TemplateProcessing` for single sequences: `single` is a list of `{"SpecialToken": {"id": ...}}` and
/// `{"Sequence": {"id": "A"}}` pieces (or the string form "<bos> $A"); `special_tokens` maps names to ids.
/// The `pair` template is validated but unused (this tokenizer only encodes single sequences).
struct TokTemplateProcessing: TokPostProcessor {
    enum Piece: Sendable, Equatable {
        case sequence
        case special([Int32])
    }
    let single: [Piece]

    var leadingSpecialIds: [Int32] {
        var out: [Int32] = []
        for p in single {
            guard case let .special(ids) = p else { break }
            out += ids
        }
        return out
    }

    init(_ node: TokJSONNode) throws {
        var specials: [String: [Int32]] = [:]
        if let st = node.optional("special_tokens") {
            for (name, value) in try st.asObject() {
                let entry = TokJSONNode(file: st.file, path: "\(st.path).\(name)", value: value)
                specials[name] = try entry.require("ids").asArray().map { try $0.asTokenId() }
            }
        }
        single = try Self.parseTemplate(node.require("single"), specials: specials)
        if let pair = node.optional("pair") {
            _ = try Self.parseTemplate(pair, specials: specials)
        }
    }

    private static func parseTemplate(_ node: TokJSONNode, specials: [String: [Int32]]) throws -> [Piece] {
        func special(_ name: String, _ at: TokJSONNode) throws -> Piece {
            guard let ids = specials[name] else {
                throw at.invalid("special token '\(name)' is not defined in special_tokens")
            }
            return .special(ids)
        }
        if case let .string(s) = node.value {
            return try s.split(whereSeparator: { $0 == " " }).map { word in
                let name = word.split(separator: ":", maxSplits: 1).first.map(String.init) ?? String(word)
                return name.hasPrefix("$") ? .sequence : try special(name, node)
            }
        }
        return try node.asArray().map { item in
            if let st = item.optional("SpecialToken") {
                return try special(try st.require("id").asString(), st)
            }
            if item.optional("Sequence") != nil { return .sequence }
            throw item.invalid("template piece must be {\"SpecialToken\": ...} or {\"Sequence\": ...}")
        }
    }

    func process(_ ids: [Int32], addSpecialTokens: Bool) -> [Int32] {
        guard addSpecialTokens else { return ids }
        var out: [Int32] = []
        out.reserveCapacity(ids.count + 4)
        for p in single {
            switch p {
            case .sequence: out += ids
            case let .special(s): out += s
            }
        }
        return out
    }
}

/// BertProcessing / RobertaProcessing: `cls A sep`.
struct TokWrapProcessor: TokPostProcessor {
    let prefix: [Int32]
    let suffix: [Int32]
    var leadingSpecialIds: [Int32] { prefix }
    func process(_ ids: [Int32], addSpecialTokens: Bool) -> [Int32] {
        addSpecialTokens ? prefix + ids + suffix : ids
    }
}

/// ByteLevel post-processing only trims offsets, which do not exist here.
struct TokPassThroughProcessor: TokPostProcessor {
    var leadingSpecialIds: [Int32] { [] }
    func process(_ ids: [Int32], addSpecialTokens: Bool) -> [Int32] { ids }
}

struct TokSequenceProcessor: TokPostProcessor {
    let processors: [any TokPostProcessor]
    var leadingSpecialIds: [Int32] { processors.flatMap(\.leadingSpecialIds) }
    func process(_ ids: [Int32], addSpecialTokens: Bool) -> [Int32] {
        processors.reduce(ids) { $1.process($0, addSpecialTokens: addSpecialTokens) }
    }
}
