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

    convenience init(_ json: TokenizerSourceFile) throws {
        let parsed = try TokJSONReader.parseTokenizerFile(json.data, file: json.name)
        try self.init(parsed, file: json.name)
    }

    convenience init(_ parsed: TokParsedTokenizerFile, file: String) throws {
        try self.init(root: parsed.root, file: file) { try TokModelFactory.make($0, vocab: parsed.vocab, merges: parsed.merges) }
    }

    /// The parts of the document `root`, with the model made by `makeModel` from the `model` node.
    init(root rootObject: [String: TokJSON], file: String, makeModel: (TokJSONNode) throws -> any TokModel) throws {
        let root = TokJSONNode(file: file, path: "", value: .object(rootObject))
        let modelNode = try root.require("model")
        _ = try modelNode.asObject()
        model = try makeModel(modelNode)
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
/// used first; at most `capacity` are kept (each holds the tokenizer's tables, ~20 MB for Gemma 3, alive
/// after its models are gone). A tokenizer.json that fails to build is not kept: the next call builds
/// it again and reports the same error. With a `directory`, a BPE tokenizer's tables also go to disk
/// there after the first build and are read back by later processes (`TokenizerDiskCache`).
public final class TokenizerCache: @unchecked Sendable {
    /// What `Tokenizer` uses unless told otherwise (model loading, `nla tokenize`): 2 in memory, and on
    /// disk in `defaultDirectory`.
    public static let shared = TokenizerCache(capacity: 2, directory: defaultDirectory)

    /// $NLA_TOKENIZER_CACHE, else <NLA cache>/tokenizers (~20 MB per distinct tokenizer.json; safe to
    /// delete); NLA_TOKENIZER_CACHE=off (or 0, or empty) keeps tokenizers in memory only.
    public static var defaultDirectory: String? {
        if let v = ProcessInfo.processInfo.environment["NLA_TOKENIZER_CACHE"] {
            return ["", "0", "off", "no", "false"].contains(v.lowercased()) ? nil : (v as NSString).expandingTildeInPath
        }
        return NLACache.root + "/tokenizers"
    }

    public let capacity: Int
    /// Where built tables are written and read back (nil: memory only).
    public let directory: String?
    private let lock = NSLock()
    private var entries: [(key: TokenizerDiskCache.Key, core: TokenizerCore)] = []
    private var counts = (builds: 0, reuses: 0, diskLoads: 0, hashes: 0)
    /// SHA-256 of tokenizer.json bytes by the identity of the file range they came from (this process).
    private var digests: [String: TokenizerDiskCache.Key] = [:]

    public init(capacity: Int, directory: String? = nil) {
        self.capacity = max(capacity, 0)
        self.directory = directory
    }

    /// tokenizer.json parts built from the JSON (misses), handed out again (hits), and read from the
    /// directory instead of built, by this cache so far.
    public var builds: Int { lock.withLock { counts.builds } }
    public var reuses: Int { lock.withLock { counts.reuses } }
    public var diskLoads: Int { lock.withLock { counts.diskLoads } }
    /// tokenizer.json contents hashed (read in full) to find their key; a source with an `identity` seen
    /// before, in this process or (with a directory) an earlier one, is not hashed again.
    public var hashes: Int { lock.withLock { counts.hashes } }

    /// Drop every kept entry (their memory goes when no tokenizer uses them).
    public func removeAll() {
        lock.withLock { entries.removeAll(); digests.removeAll() }
    }

    /// The key of `json`: its SHA-256, from the identity map when its source range was seen before, else
    /// computed from the bytes (and remembered for the identity).
    private func key(for json: TokenizerSourceFile) -> TokenizerDiskCache.Key {
        if let id = json.identity {
            if let k = lock.withLock({ digests[id] }) { return k }
            if let directory, let k = TokenizerDiskCache.loadDigest(directory: directory, identity: id) {
                lock.withLock { digests[id] = k }
                return k
            }
        }
        let k = TokenizerDiskCache.key(of: json.data)
        lock.withLock { counts.hashes += 1 }
        if let id = json.identity {
            lock.withLock { digests[id] = k }
            if let directory { TokenizerDiskCache.storeDigest(directory: directory, identity: id, digest: k) }
        }
        return k
    }

    func core(for json: TokenizerSourceFile) throws -> TokenizerCore {
        let key = key(for: json)
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
        let core: TokenizerCore
        var fromDisk = false
        if let directory, let stored = TokenizerDiskCache.load(directory: directory, key: key, file: json.name) {
            core = stored
            fromDisk = true
        } else {
            let parsed = try TokJSONReader.parseTokenizerFile(json.data, file: json.name)
            core = try TokenizerCore(parsed, file: json.name)
            if let directory, parsed.vocab != nil, parsed.merges != nil, let bpe = core.model as? TokBPEModel {
                TokenizerDiskCache.store(directory: directory, key: key, root: parsed.root, model: bpe)
            }
        }
        lock.withLock {
            if fromDisk { counts.diskLoads += 1 } else { counts.builds += 1 }
            if !entries.contains(where: { $0.key == key }), capacity > 0 {
                entries.insert((key, core), at: 0)
                if entries.count > capacity { entries.removeLast(entries.count - capacity) }
            }
        }
        return core
    }
}
