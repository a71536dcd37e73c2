// A model directory as users name it: weights + config + tokenizer + generation config.

import Foundation
#if canImport(Glibc)
import Glibc
#endif

public final class LanguageModel: @unchecked Sendable {
    public let directory: String
    public let model: Gemma3Model
    public let tokenizer: Tokenizer
    public let generation: GenerationConfig
    /// The opened files (config, tokenizer and sidecar contents; the mapped tensors).
    public let files: ModelFiles

    public var config: Gemma3Config { model.config }

    /// Open a Hugging Face model directory or a `.gguf` file written by `quantize`.
    public init(directory: String, blocks: Int? = nil) throws {
        self.directory = directory
        let opened = try ModelFiles.open(directory)
        // The tokenizer first, then the weights: building it needs tokenizer.json (33 MB for Gemma 3) and
        // scratch several times that, which are all freed before the weights are packed, so they do not
        // add to the peak resident set. The model keeps its files without tokenizer.json.
        tokenizer = try Tokenizer(files: opened)
        let files = opened.dropping(["tokenizer.json"])
        releaseFreedHeapPages()
        self.files = files
        model = try Gemma3Model(files: files, blocks: blocks)
        files.releaseMappedPages()
        // Every id the tokenizer can produce must have an embedding row (a tokenizer.json whose added
        // tokens run past config.json's vocab_size would fail later, mid-generation, or index out of range).
        if tokenizer.vocabSize > model.config.vocabSize {
            throw ModelError.config(file: files.fileName("tokenizer.json"),
                                    reason: "token id \(tokenizer.vocabSize - 1) is past the model's vocabulary (vocab_size \(model.config.vocabSize) in config.json)")
        }
        if let g = files.files["generation_config.json"] {
            generation = try GenerationConfig.decode(g, file: files.fileName("generation_config.json"), fallback: model.config)
        } else {
            generation = GenerationConfig(eosTokenIds: model.config.eosTokenIds, bosTokenId: model.config.bosTokenId,
                                          padTokenId: model.config.padTokenId)
        }
    }

    /// Prompt ids: the chat template (one user message, generation prompt) or plain text.
    public func promptIds(_ text: String, chat: Bool, addSpecialTokens: Bool = true) throws -> [Int] {
        if chat { return try tokenizer.encodeChat([ChatMessage(role: "user", content: text)], addGenerationPrompt: true) }
        return tokenizer.encode(text, addSpecialTokens: addSpecialTokens)
    }

    /// Validate ids against the vocabulary and the context; returns a session with room for
    /// `ids.count + extra` positions.
    public func session(for ids: [Int], extra: Int = 0) throws -> Gemma3Session {
        guard !ids.isEmpty else { throw ModelError.input("empty prompt: no tokens to run") }
        for id in ids where id < 0 || id >= config.vocabSize {
            throw ModelError.input("token id \(id) is outside the vocabulary (0..<\(config.vocabSize))")
        }
        let ctx = config.maxPositionEmbeddings
        guard ids.count <= ctx else {
            throw ModelError.input("prompt of \(ids.count) tokens is longer than the model's context of \(ctx) tokens")
        }
        return try model.makeSession(capacity: min(ids.count + max(extra, 0), ctx))
    }
}

/// Return the heap pages freed so far to the kernel (glibc keeps freed small allocations in its arenas;
/// building a tokenizer frees tens of MB of them). No effect where there is no `malloc_trim`.
func releaseFreedHeapPages() {
    #if canImport(Glibc)
    // malloc.h is not part of the Glibc module: look the function up once.
    if let trim = mallocTrim { _ = trim(0) }
    #endif
}

#if canImport(Glibc)
private let mallocTrim: (@convention(c) (Int) -> Int32)? = {
    guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return nil }
    return unsafeBitCast(sym, to: (@convention(c) (Int) -> Int32).self)
}()
#endif

/// Peak resident set size of this process so far, in bytes.
public func peakRSSBytes() -> Int {
    var usage = rusage()
    #if canImport(Glibc)
    getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
    return Int(usage.ru_maxrss) * 1024  // kilobytes on Linux
    #else
    getrusage(RUSAGE_SELF, &usage)
    return Int(usage.ru_maxrss)          // bytes on macOS
    #endif
}

extension Tokenizer {
    /// The tokenizer of a model directory or GGUF file.
    public convenience init(files: ModelFiles, cache: TokenizerCache? = .shared) throws {
        guard let json = files.files["tokenizer.json"] else {
            throw ModelError.input("\(files.fileName("tokenizer.json")): missing (the model needs a tokenizer.json)")
        }
        func source(_ name: String) -> TokenizerSourceFile? {
            files.files[name].map { TokenizerSourceFile(data: $0, name: files.fileName(name)) }
        }
        try self.init(tokenizerJSON: TokenizerSourceFile(data: json, name: files.fileName("tokenizer.json"),
                                                         identity: files.identities["tokenizer.json"]),
                      tokenizerConfig: source("tokenizer_config.json"), chatTemplateJinja: source("chat_template.jinja"),
                      specialTokensMap: source("special_tokens_map.json"), cache: cache)
    }

    /// The tokenizer of a model directory or GGUF file at `path`, without loading the weights' config.
    public convenience init(modelPath path: String) throws {
        try self.init(files: try ModelFiles.open(path, tensors: false))
    }
}

