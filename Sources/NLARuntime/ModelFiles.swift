// The files a model consists of, from either source:
// - a Hugging Face directory: config.json, model.safetensors (or shards), tokenizer.json,
//   tokenizer_config.json, generation_config.json, optionally nla_meta.yaml and value_head.safetensors;
// - one `.gguf` file written by `quantize`: the same files as metadata strings (keys below) and the
//   tensors under their Hugging Face names;
// - a llama.cpp Gemma 3 `.gguf` (its converter's, or ours written with `quantize --names llama.cpp`):
//   see LlamaCppGGUF.swift.

import Foundation
import Quant

/// GGUF metadata keys of the files `quantize` embeds.
public enum GGUFKeys {
    public static let architecture = "general.architecture"
    public static let name = "general.name"
    public static let fileType = "nla.quantize.type"
    public static let policy = "nla.quantize.policy"
    /// Prefix of embedded files: "nla.file." + file name, e.g. "nla.file.config.json".
    public static let filePrefix = "nla.file."
    public static let embeddedFiles = ["config.json", "generation_config.json", "tokenizer.json",
                                       "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "nla_meta.yaml"]
}

public struct ModelFiles: @unchecked Sendable {
    /// The directory or .gguf file.
    public let path: String
    public let isGGUF: Bool
    public let configJSON: Data
    /// How to name config.json in messages (a path, or "file.gguf[config.json]").
    public let configName: String
    public let tensors: [String: TensorEntry]
    /// Other embedded files by name (tokenizer.json, …): present ones only. Large ones (1 MB or more) are
    /// read-only views of the file mapping, not copies.
    public private(set) var files: [String: Data]
    /// For files in `files` that are views of a mapping: `FileIdentity.rangeKey` of their bytes.
    public private(set) var identities: [String: String]
    /// Keeps the mappings open.
    private let owners: [AnyObject]

    /// The same files without `names` (e.g. tokenizer.json once the tokenizer is built: 33 MB for Gemma 3).
    public func dropping(_ names: [String]) -> ModelFiles {
        var copy = self
        for n in names { copy.files.removeValue(forKey: n); copy.identities.removeValue(forKey: n) }
        return copy
    }

    /// Give back the resident pages of every tensor mapping. Loading reads small tensors (norms) through
    /// the mapping and each read maps the whole page-cache folio around it; what a model keeps using in
    /// place is read back from the page cache when touched.
    public func releaseMappedPages() {
        var seen = Set<ObjectIdentifier>()
        for e in tensors.values where e.file.size > 0 && seen.insert(ObjectIdentifier(e.file)).inserted {
            e.file.dropPages(e.file.base, count: e.file.size)
        }
    }

    public func fileName(_ name: String) -> String {
        isGGUF ? "\(path)[\(name)]" : (path as NSString).appendingPathComponent(name)
    }

    /// - Parameter tensors: false to read only the small files (e.g. for the tokenizer alone).
    public static func open(_ path: String, tensors: Bool = true) throws -> ModelFiles {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw ModelError.input("\(path): no such model directory or .gguf file")
        }
        if isDir.boolValue { return try openDirectory(path, tensors: tensors) }
        guard path.hasSuffix(".gguf") else {
            throw ModelError.input("\(path): not a model directory or a .gguf file")
        }
        return try openGGUF(path)
    }

    static func openDirectory(_ dir: String, tensors wantTensors: Bool = true) throws -> ModelFiles {
        let configPath = (dir as NSString).appendingPathComponent("config.json")
        var files: [String: Data] = [:], identities: [String: String] = [:]
        for name in GGUFKeys.embeddedFiles where name != "config.json" {
            let p = (dir as NSString).appendingPathComponent(name)
            if let m = try? MappedFile(path: p), m.size >= mappedFileMinBytes {
                files[name] = mappedData(UnsafeRawBufferPointer(start: m.base, count: m.size), owner: m)
                identities[name] = m.identity.rangeKey(offset: 0, count: m.size)
            } else if let d = FileManager.default.contents(atPath: p) {
                files[name] = d
            }
        }
        if !wantTensors {
            return ModelFiles(path: dir, isGGUF: false, configJSON: FileManager.default.contents(atPath: configPath) ?? Data(),
                              configName: configPath, tensors: [:], files: files, identities: identities, owners: [])
        }
        guard let config = FileManager.default.contents(atPath: configPath) else {
            throw ModelError.config(file: configPath, reason: "missing config.json (is \(dir) a model directory?)")
        }
        let ckpt = try SafetensorsCheckpoint(directory: dir, excluding: ["value_head.safetensors"])
        var tensors = ckpt.tensors.mapValues(\.entry)
        var owners: [AnyObject] = [ckpt]
        let vhPath = (dir as NSString).appendingPathComponent("value_head.safetensors")
        if FileManager.default.fileExists(atPath: vhPath) {
            let vh = try SafetensorsFile(path: vhPath)
            for (name, t) in vh.tensors { tensors["value_head." + name] = t.entry }
            owners.append(vh)
        }
        return ModelFiles(path: dir, isGGUF: false, configJSON: config, configName: configPath,
                          tensors: tensors, files: files, identities: identities, owners: owners)
    }

    /// Files of at least this size are mapped and handed out as views (tokenizer.json: 33 MB), not copied.
    static let mappedFileMinBytes = 1 << 20

    /// A read-only view of mapped bytes that keeps `owner` (the mapping) alive. Never mutated: the pages
    /// are mapped read-only.
    static func mappedData(_ bytes: UnsafeRawBufferPointer, owner: AnyObject) -> Data {
        Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: bytes.baseAddress!), count: bytes.count,
             deallocator: .custom { _, _ in withExtendedLifetime(owner) {} })
    }

    static func openGGUF(_ path: String) throws -> ModelFiles {
        // Embedded files of 1 MB or more (tokenizer.json: 33 MB) stay raw bytes in the mapping: their readers
        // check the text (the tokenizer's JSON reader validates UTF-8 and names the file), so the GGUF reader
        // does not validate and copy them into a String first (~60 ms per open), and they are handed out as
        // views of the mapping rather than copies.
        let g = try GGUFFile(path: path, rawStrings: (GGUFKeys.filePrefix, mappedFileMinBytes))
        var files: [String: Data] = [:], identities: [String: String] = [:]
        for name in GGUFKeys.embeddedFiles {
            if let bytes = g.rawStrings[GGUFKeys.filePrefix + name], bytes.count > 0 {
                // A view of the mapping: no copy, and no page is read unless the bytes are (a tokenizer found in
                // the tokenizer cache by `identities` never reads them).
                files[name] = mappedData(bytes, owner: g)
                identities[name] = g.mapping.identity.rangeKey(offset: bytes.baseAddress! - g.mapping.base, count: bytes.count)
                continue
            }
            guard let v = g.metadata[GGUFKeys.filePrefix + name] else { continue }
            guard let s = v.stringValue else {
                throw ModelError.weights(file: path, reason: "metadata \(GGUFKeys.filePrefix + name) is not a string")
            }
            files[name] = Data(s.utf8)
            // One copy is enough: the metadata string (as large as tokenizer.json) is freed here.
            g.removeMetadata(GGUFKeys.filePrefix + name)
        }
        // llama.cpp's dialect (its converter's files, or ours written with `--names llama.cpp`): tensors
        // mapped back to HF names with norms shifted back to w; without embedded files, the config and the
        // tokenizer come from the gemma3.* / tokenizer.ggml.* metadata.
        var tensors = g.tensors.mapValues(\.entry)
        var owners: [AnyObject] = [g]
        if LlamaCppGGUF.usesLlamaNames(g.tensors.keys) {
            let (t, owner) = try LlamaCppGGUF.hfTensors(g)
            tensors = t
            owners.append(owner)
        }
        var configName = "\(path)[config.json]"
        if files["config.json"] == nil, g.metadata["gemma3.block_count"] != nil {
            let (config, synthesized) = try LlamaCppGGUF.synthesizeFiles(g)
            files["config.json"] = config
            for (k, v) in synthesized where files[k] == nil { files[k] = v }
            configName = "\(path)[gemma3.* metadata]"
        }
        // The tokenizer is built from files["tokenizer.json"] (embedded or synthesized above); its source
        // arrays in the metadata (262,144 strings for Gemma 3) are not needed again.
        for k in ["tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"] {
            g.removeMetadata(k)
        }
        // Every metadata value the model needs has been read: the header's pages can leave the resident set.
        g.releaseHeaderPages()
        guard let config = files.removeValue(forKey: "config.json") else {
            throw ModelError.weights(file: path, reason: "no embedded config.json (metadata \(GGUFKeys.filePrefix)config.json) and no gemma3.* metadata; was it written by `quantize` or llama.cpp?")
        }
        return ModelFiles(path: path, isGGUF: true, configJSON: config, configName: configName,
                          tensors: tensors, files: files, identities: identities, owners: owners)
    }
}
