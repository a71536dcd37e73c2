// Tokenizers built once per process. An NLA run opens three models that carry the same Gemma 3
// tokenizer.json (33 MB of JSON, ~0.4 s to parse and index on one core): the target, the AV and the AR;
// a server may hold several. The part of a tokenizer made from tokenizer.json alone is keyed on the
// SHA-256 of those bytes and built once; the small per-model files (tokenizer_config.json, the chat
// template, special_tokens_map.json) are read for every model, so each tokenizer keeps its own bos
// token, template and file names for messages.

import Crypto
import Foundation

/// What `Tokenizer` builds from tokenizer.json alone. Immutable; shared by every tokenizer made from the
/// same bytes.
final class TokenizerCore: Sendable {
    let model: any TokModel
    let normalizer: (any TokNormalizer)?
    let preTokenizer: (any TokPreTokenizer)?
    let postProcessor: (any TokPostProcessor)?
    let decoder: (any TokDecoder)?
    let addedVocabulary: TokAddedVocabulary

    init(_ json: TokenizerSourceFile) throws {
        let file = json.name
        let parsed = try TokJSONReader.parseTokenizerFile(json.data, file: file)
        let root = TokJSONNode(file: file, path: "", value: .object(parsed.root))

        let modelNode = try root.require("model")
        _ = try modelNode.asObject()
        model = try TokModelFactory.make(modelNode, vocab: parsed.vocab, merges: parsed.merges)
        let normalizer = try root.optional("normalizer").map(TokNormalizerFactory.make)
        self.normalizer = normalizer
        preTokenizer = try root.optional("pre_tokenizer").map(TokPreTokenizerFactory.make)
        postProcessor = try root.optional("post_processor").map(TokPostProcessorFactory.make)
        decoder = try root.optional("decoder").map(TokDecoderFactory.make)
        let added = try root.optional("added_tokens")?.asArray().map(TokAddedToken.init) ?? []
        addedVocabulary = TokAddedVocabulary(added, normalizer: normalizer)
    }
}

/// The tokenizer.json parts built so far in this process, by SHA-256 of the file's bytes, most recently
/// used first; at most `capacity` are kept (each holds the tokenizer's tables, ~25 MB for Gemma 3, alive
/// after its models are gone). A tokenizer.json that fails to build is not kept: the next call builds
/// it again and reports the same error.
public final class TokenizerCache: @unchecked Sendable {
    /// What `Tokenizer` uses unless told otherwise (model loading, `nla tokenize`).
    public static let shared = TokenizerCache(capacity: 2)

    public let capacity: Int
    private let lock = NSLock()
    private var entries: [(key: SHA256.Digest, core: TokenizerCore)] = []
    private var counts = (builds: 0, reuses: 0)

    public init(capacity: Int) {
        self.capacity = max(capacity, 0)
    }

    /// tokenizer.json parts built (misses) and handed out again (hits) by this cache so far.
    public var builds: Int { lock.withLock { counts.builds } }
    public var reuses: Int { lock.withLock { counts.reuses } }

    /// Drop every kept entry (their memory goes when no tokenizer uses them).
    public func removeAll() {
        lock.withLock { entries.removeAll() }
    }

    func core(for json: TokenizerSourceFile) throws -> TokenizerCore {
        let key = SHA256.hash(data: json.data)
        if let hit = lock.withLock({ () -> TokenizerCore? in
            guard let i = entries.firstIndex(where: { $0.key == key }) else { return nil }
            let e = entries.remove(at: i)
            entries.insert(e, at: 0)
            counts.reuses += 1
            return e.core
        }) {
            return hit
        }
        // Built outside the lock (two threads loading the same new tokenizer both build it; one is kept).
        let core = try TokenizerCore(json)
        lock.withLock {
            counts.builds += 1
            if !entries.contains(where: { $0.key == key }), capacity > 0 {
                entries.insert((key, core), at: 0)
                if entries.count > capacity { entries.removeLast(entries.count - capacity) }
            }
        }
        return core
    }
}
