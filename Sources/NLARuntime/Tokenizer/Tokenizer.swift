import Foundation
import Quant

/// The contents of one tokenizer file and the name errors use for it (a path, or "model.gguf[tokenizer.json]").
public struct TokenizerSourceFile: Sendable {
    public var data: Data
    public var name: String
    /// Where the bytes come from, when they are an unchanged range of a file: `FileIdentity.rangeKey`
    /// (device, inode, size, modification time, offset, length). Lets `TokenizerCache` find a tokenizer it
    /// built before without reading and hashing the bytes again; nil for bytes of other origin.
    public var identity: String?
    public init(data: Data, name: String, identity: String? = nil) { self.data = data; self.name = name; self.identity = identity }
}

/// A Hugging Face `tokenizer.json` tokenizer (BPE model) with the Gemma 3 chat template.
///
/// Encoding follows huggingface/tokenizers: added tokens (special or not) are found in the raw input
/// first (longest match, honouring single_word/lstrip/rstrip; `normalized: true` tokens are matched in
/// the normalized text), each remaining piece is normalized, pre-tokenized and run through the model,
/// and the post-processor adds special tokens. Special-token text in the input (e.g. "<start_of_turn>")
/// is therefore encoded as that special token.
///
/// Immutable after loading and safe to share between threads.
public final class Tokenizer: Sendable {
    private let model: any TokModel
    private let normalizer: (any TokNormalizer)?
    private let preTokenizer: (any TokPreTokenizer)?
    private let postProcessor: (any TokPostProcessor)?
    private let decoder: (any TokDecoder)?
    private let addedVocabulary: TokAddedVocabulary
    private let chatTemplate: TokChatTemplate
    /// One past the largest token id (model vocabulary and added tokens): the embedding row count
    /// needed for every id this tokenizer can produce (262,144 for Gemma 3).
    public let vocabSize: Int
    /// `bos_token` from tokenizer_config.json (or special_tokens_map.json), else the first special
    /// token the post-processor prepends; nil if neither exists.
    public let bosTokenId: Int?

    /// Loads `tokenizer.json` and, when present, `tokenizer_config.json` from `directory`.
    public convenience init(directory: URL) throws {
        let json = directory.appendingPathComponent("tokenizer.json")
        let config = directory.appendingPathComponent("tokenizer_config.json")
        try self.init(
            tokenizerJSON: json,
            tokenizerConfig: FileManager.default.fileExists(atPath: config.path) ? config : nil)
    }

    /// Loads a tokenizer.json file and an optional tokenizer_config.json (for `bos_token` and
    /// `chat_template`; a `chat_template.jinja` next to it is used when the config has no template, and
    /// `special_tokens_map.json` when it has no `bos_token`).
    public convenience init(tokenizerJSON: URL, tokenizerConfig: URL?) throws {
        let data = try TokJSONReader.readFile(tokenizerJSON)
        var config: TokenizerSourceFile?
        var jinja: TokenizerSourceFile?
        var map: TokenizerSourceFile?
        if let configURL = tokenizerConfig {
            config = TokenizerSourceFile(data: try TokJSONReader.readFile(configURL), name: configURL.path)
            let dir = configURL.deletingLastPathComponent()
            let jinjaURL = dir.appendingPathComponent("chat_template.jinja")
            if FileManager.default.fileExists(atPath: jinjaURL.path) {
                jinja = TokenizerSourceFile(data: try TokJSONReader.readFile(jinjaURL), name: jinjaURL.path)
            }
            let mapURL = dir.appendingPathComponent("special_tokens_map.json")
            if FileManager.default.fileExists(atPath: mapURL.path) {
                map = TokenizerSourceFile(data: try TokJSONReader.readFile(mapURL), name: mapURL.path)
            }
        }
        try self.init(tokenizerJSON: TokenizerSourceFile(data: data, name: tokenizerJSON.path),
                      tokenizerConfig: config, chatTemplateJinja: jinja, specialTokensMap: map)
    }

    /// Builds a tokenizer from file contents already in memory (e.g. embedded in a GGUF file); `name`
    /// of each file is what error messages call it. The part built from tokenizer.json alone (the
    /// vocabulary, merges, normalizer, …: most of the work) comes from `cache` when a tokenizer.json with
    /// the same bytes was built before in this process (see `TokenizerCache`); nil always builds it.
    public init(tokenizerJSON json: TokenizerSourceFile, tokenizerConfig: TokenizerSourceFile?,
                chatTemplateJinja: TokenizerSourceFile? = nil, specialTokensMap: TokenizerSourceFile? = nil,
                cache: TokenizerCache? = .shared) throws {
        let file = json.name
        let core = try cache?.core(for: json) ?? TokenizerCore(json)
        model = core.model
        normalizer = core.normalizer
        preTokenizer = core.preTokenizer
        postProcessor = core.postProcessor
        decoder = core.decoder
        addedVocabulary = core.addedVocabulary

        // tokenizer_config.json
        var bos: (token: String, file: String)?
        var template: String?
        var templateFile = tokenizerConfig?.name ?? file
        if let cfgFile = tokenizerConfig {
            let cfg = try Self.parseSmallConfig(cfgFile)
            if let b = cfg.optional("bos_token") { bos = (try Self.tokenContent(b), cfgFile.name) }
            if let t = cfg.optional("chat_template") {
                if case .string(let s) = t.value {
                    template = s
                } else {
                    // [{"name": "default", "template": "..."}, ...]
                    for item in try t.asArray() {
                        _ = try item.asObject()
                        if try item.require("name").asString() == "default" { template = try item.require("template").asString() }
                    }
                }
            }
            if template == nil, let jinja = chatTemplateJinja {
                template = String(decoding: jinja.data, as: UTF8.self)
                templateFile = jinja.name
            }
            if bos == nil, let mapFile = specialTokensMap {
                let map = try Self.parseSmallConfig(mapFile)
                if let b = map.optional("bos_token") { bos = (try Self.tokenContent(b), mapFile.name) }
            }
        }
        chatTemplate = TokChatTemplate(template: template, bosToken: bos?.token ?? "", file: templateFile)

        let addedMax = addedVocabulary.tokens.map { Int($0.id) }.max() ?? -1
        vocabSize = max(model.idUpperBound, addedMax + 1)
        var bosFromConfig: Int?
        if let b = bos {
            let bytes = Array(b.token.utf8)
            bosFromConfig = (addedVocabulary.contentToId.get(bytes) ?? model.tokenToId(bytes)).map(Int.init)
            // A bos_token that is no token would be rendered by the chat template as plain text.
            guard bosFromConfig != nil else {
                throw TokenizerError.invalidValue(file: b.file, path: "bos_token", problem: "'\(b.token)' is not a token of \(file)")
            }
        }
        bosTokenId = bosFromConfig ?? postProcessor?.leadingSpecialIds.first.map(Int.init)
    }

    /// tokenizer_config.json / special_tokens_map.json: a JSON object without duplicate keys.
    private static func parseSmallConfig(_ f: TokenizerSourceFile) throws -> TokJSONNode {
        let node = TokJSONNode(file: f.name, path: "", value: try TokJSONReader.parse(f.data, file: f.name))
        guard case .object = node.value else {
            throw TokenizerError.invalidValue(file: f.name, path: "<root>", problem: "the file must hold a JSON object")
        }
        if let dup = JSONDuplicateKeys.first(in: f.data) {
            throw TokenizerError.invalidValue(file: f.name, path: dup, problem: "duplicate key")
        }
        return node
    }

    /// A special-token entry: a string, or an object with a string `content` (AddedToken form).
    private static func tokenContent(_ node: TokJSONNode) throws -> String {
        if case .string(let s) = node.value { return s }
        _ = try node.asObject()
        return try node.require("content").asString()
    }

    // MARK: encoding

    /// Token ids for `text`; `addSpecialTokens` applies the post-processor (Gemma: prepends `<bos>`).
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        encodeInt32(text, addSpecialTokens: addSpecialTokens).map(Int.init)
    }

    func encodeInt32(_ text: String, addSpecialTokens: Bool) -> [Int32] {
        let input = Array(text.utf8)
        var ids: [Int32] = []
        ids.reserveCapacity(input.count / 3 + 4)
        for seg in addedVocabulary.split(input, normalizedTokens: false) {
            if let id = seg.id { ids.append(id); continue }
            if seg.start == seg.end { continue }
            var piece = Array(input[seg.start..<seg.end])
            // Bytes coming from the first character of the input (only the segment at offset 0 has any):
            // Metaspace `prepend_scheme: first` prepends only to a piece starting at original offset 0.
            var firstSpan = seg.start == 0 ? TokUTF8.sequenceLength(piece[0]) : 0
            if let normalizer { piece = normalizer.normalize(piece, firstSpan: &firstSpan) }
            if piece.isEmpty { continue }
            if addedVocabulary.hasNormalizedTokens {
                for sub in addedVocabulary.split(piece, normalizedTokens: true) {
                    if let id = sub.id { ids.append(id); continue }
                    encodeWords(TokPiece(bytes: Array(piece[sub.start..<sub.end]), firstSpan: max(firstSpan - sub.start, 0)), into: &ids)
                }
            } else {
                encodeWords(TokPiece(bytes: piece, firstSpan: firstSpan), into: &ids)
            }
        }
        if let postProcessor { return postProcessor.process(ids, addSpecialTokens: addSpecialTokens) }
        return ids
    }

    private func encodeWords(_ piece: TokPiece, into ids: inout [Int32]) {
        if piece.bytes.isEmpty { return }
        guard let preTokenizer else {
            model.tokenize(piece.bytes, into: &ids)
            return
        }
        for word in preTokenizer.preTokenize([piece]) {
            model.tokenize(word.bytes, into: &ids)
        }
    }

    // MARK: decoding

    /// Text for `ids` (unknown ids are skipped, as in tokenizers). With `skipSpecialTokens`, added tokens
    /// marked special are left out.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        var tokens: [[UInt8]] = []
        tokens.reserveCapacity(ids.count)
        for raw in ids {
            guard let id = Int32(exactly: raw) else { continue }
            if skipSpecialTokens && addedVocabulary.specialIds.contains(id) { continue }
            if let t = tokenBytes(id) { tokens.append(t) }
        }
        if let decoder {
            return String(decoding: decoder.decodeChain(tokens).flatMap { $0 }, as: UTF8.self)
        }
        return String(decoding: Array(tokens.joined(separator: [0x20])), as: UTF8.self)
    }

    private func tokenBytes(_ id: Int32) -> [UInt8]? {
        if let t = addedVocabulary.decodeForm[id] { return t }
        return model.idToToken(id)
    }

    // MARK: chat

    /// The Gemma 3 chat template rendered natively (the text includes `<bos>`). Throws
    /// `TokenizerError.unsupportedChatTemplate` if tokenizer_config.json has no recognisable Gemma 3
    /// template, and `TokenizerError.invalidConversation` if roles do not alternate user/assistant.
    public func renderChat(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) throws -> String {
        try chatTemplate.render(messages, addGenerationPrompt: addGenerationPrompt)
    }

    /// `encode(renderChat(...), addSpecialTokens: false)`.
    public func encodeChat(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) throws -> [Int] {
        encode(try renderChat(messages, addGenerationPrompt: addGenerationPrompt), addSpecialTokens: false)
    }

    // MARK: vocabulary

    /// Id of a token string (added tokens first, then the model vocabulary; exact scalar match).
    public func tokenToId(_ token: String) -> Int? {
        let bytes = Array(token.utf8)
        if let id = addedVocabulary.contentToId.get(bytes) { return Int(id) }
        return model.tokenToId(bytes).map(Int.init)
    }

    /// Token string of an id, or nil if the id is not in the vocabulary.
    public func idToToken(_ id: Int) -> String? {
        guard let i = Int32(exactly: id), let t = tokenBytes(i) else { return nil }
        return String(decoding: t, as: UTF8.self)
    }


    /// Whether `id` is an added token marked `special` (skipped by `decode(_:skipSpecialTokens: true)`).
    public func isSpecial(_ id: Int) -> Bool {
        guard let i = Int32(exactly: id) else { return false }
        return addedVocabulary.specialIds.contains(i)
    }
}
