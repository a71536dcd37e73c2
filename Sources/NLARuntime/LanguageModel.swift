// A model directory as users name it: weights + config + tokenizer + generation config.

import Foundation

public final class LanguageModel: @unchecked Sendable {
    public let directory: String
    public let model: Gemma3Model
    public let tokenizer: Tokenizer
    public let generation: GenerationConfig

    public var config: Gemma3Config { model.config }

    /// Open a Hugging Face style model directory.
    public init(directory: String, blocks: Int? = nil) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDir) else {
            throw ModelError.input("\(directory): no such model directory")
        }
        guard isDir.boolValue else {
            throw ModelError.input("\(directory): not a model directory (expected config.json, model.safetensors, tokenizer.json)")
        }
        self.directory = directory
        model = try Gemma3Model(directory: directory, blocks: blocks)
        tokenizer = try Tokenizer(directory: URL(fileURLWithPath: directory))
        generation = try GenerationConfig.load(directory: directory, fallback: model.config)
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
