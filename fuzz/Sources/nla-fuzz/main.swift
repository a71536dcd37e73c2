// Coverage-guided fuzz targets for every reader of untrusted files (libFuzzer; README "Fuzzing").
//
//   make fuzz                                   every target for FUZZ_SECONDS each
//   .build-fuzz/release/nla-fuzz TARGET [libFuzzer flags] [corpus dirs]
//   .build-fuzz/release/nla-fuzz TARGET CRASH_FILE   re-run one input
//
// A target feeds the bytes to a reader. The reader may accept or refuse them; what it must not do is
// crash (a trap, an overflow, an out-of-bounds access: libFuzzer reports it and saves the input),
// hang, or refuse them with an error that is not one line or is empty (checked here: the README
// promises one-line errors, so a multi-line one is a finding too).

import CFuzzSupport
import Foundation
import NLARuntime
import NLAWire
import Quant

// Tokenizers built by the targets stay in memory: an input must not write $NLA_CACHE/tokenizers (set before
// TokenizerCache.shared first reads it).
setenv("NLA_TOKENIZER_CACHE", "off", 1)

/// Inputs go through a file when the reader takes a path (the readers mmap); /dev/shm when present.
let scratchDir: String = {
    let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
    let dir = base + "/nla-fuzz-\(getpid())"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}()

func withFile(_ data: Data, named name: String, _ body: (String) throws -> Void) throws {
    let path = scratchDir + "/" + name
    guard FileManager.default.createFile(atPath: path, contents: data) else { fatalError("cannot write \(path)") }
    defer { unlink(path) }
    try body(path)
}

/// An error a reader throws must be a clean one-line message.
func checkError(_ error: Error, target: String) {
    let text = String(describing: error)
    if text.isEmpty || text.contains("\n") || text.contains("\r") {
        fatalError("[\(target)] error message is not one line: \(text.debugDescription)")
    }
}

/// A small valid tokenizer.json, used by the tokenizer_config target.
let baseTokenizerJSON = Data(#"""
{"version":"1.0","truncation":null,"padding":null,
 "added_tokens":[{"id":0,"content":"<pad>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
  {"id":2,"content":"<bos>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
  {"id":3,"content":"<start_of_turn>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
  {"id":4,"content":"<end_of_turn>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
 "normalizer":{"type":"Replace","pattern":{"String":" "},"content":"▁"},"pre_tokenizer":{"type":"Split","pattern":{"String":" "},"behavior":"MergedWithPrevious","invert":false},
 "post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<bos>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],
  "pair":[{"Sequence":{"id":"A","type_id":0}}],"special_tokens":{"<bos>":{"id":"<bos>","ids":[2],"tokens":["<bos>"]}}},
 "decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"}]},
 "model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":true,
  "byte_fallback":true,"ignore_merges":false,"vocab":{"<pad>":0,"<eos>":1,"<bos>":2,"<start_of_turn>":3,"<end_of_turn>":4,"<0x0A>":5,"▁":6,"h":7,"i":8,"hi":9,"▁hi":10,"user":11,"model":12},
  "merges":[["h","i"],["▁","hi"]]}}
"""#.utf8)

/// The disk-cache file of baseTokenizerJSON (the tokenizer_disk_cache target damages copies of it).
let validDiskCacheFile: [UInt8] = try! TokenizerDiskCacheFuzzing.file(for: baseTokenizerJSON)

/// A tokenizer_config.json with a template the native Gemma 3 renderer accepts and no bos_token (so the
/// special_tokens_map target's file decides it).
let gemmaLikeConfigWithoutBOS = Data(#"""
{"chat_template": "{{ bos_token }}{%- set loop_messages = messages -%}{%- set first_user_prefix = \"\" -%}{{ '<start_of_turn>' + role + '\\n' }}{{ '<end_of_turn>\\n' }}"}
"""#.utf8)

let sampleTexts = ["hi hi", "", "<bos>user\n<end_of_turn>", "é\u{301} 🤖 \0 x", String(repeating: "h", count: 40)]

/// A Gemma 3 config used as the fallback of generation_config.json.
let fallbackConfig: Gemma3Config = {
    let json = #"{"model_type":"gemma3_text","vocab_size":262144,"hidden_size":640,"num_hidden_layers":18}"#
    return try! Gemma3Config.decode(Data(json.utf8), file: "config.json")
}()

/// `nla serve`'s request bodies: the bytes go through the server's JSON reader, then through every route's
/// decoder exactly as the routes call them (`Sources/NLAWire`; no model, no network: a width of 4, a vocabulary of
/// 300). Each decoder may refuse the body, with a one-line error; what it accepts must be consistent.
func httpBodies(_ data: Data) throws {
    let d = 4, vocab = 300, limit = 64
    let v = try JSONReader.parse(Array(data))
    func run(_ name: String, _ body: () throws -> Void) {
        do { try body() } catch { checkError(error, target: "http_bodies/\(name)") }
    }
    run("generate") {
        _ = try GenerateBody.model(v)
        let b = try GenerateBody.decode(v, d: d, vocab: vocab, maxNewTokensLimit: limit)
        guard !b.inputs.isEmpty, b.params.count == b.inputs.count, b.batched || b.inputs.count == 1 else {
            fatalError("[http_bodies] /generate: \(b.inputs.count) inputs, \(b.params.count) sampling params, batched \(b.batched)")
        }
        for input in b.inputs {
            switch input {
            case .embeds(let rows, let n):
                guard n >= 1, rows.count == n * d, rows.allSatisfy(\.isFinite) else { fatalError("[http_bodies] input_embeds: \(rows.count) floats for \(n) rows") }
            case .ids(let ids):
                guard !ids.isEmpty, ids.allSatisfy({ (0..<vocab).contains($0) }) else { fatalError("[http_bodies] input_ids out of range: \(ids)") }
            case .text: break
            }
        }
        for p in b.params {
            guard p.options.maxNewTokens >= 0, p.options.maxNewTokens <= limit, p.options.temperature >= 0, p.options.topP > 0, p.options.topP <= 1,
                  p.stopTokenIds.allSatisfy({ (0..<vocab).contains($0) }), p.stopStrings.allSatisfy({ !$0.isEmpty }) else {
                fatalError("[http_bodies] sampling_params out of range: \(p.options), \(p.stopTokenIds), \(p.stopStrings)")
            }
        }
    }
    run("chat") {
        let b = try ChatBody.decode(v, maxNewTokensLimit: limit)
        guard !b.messages.isEmpty, b.options.maxNewTokens <= limit else { fatalError("[http_bodies] chat accepted \(b.messages.count) messages") }
    }
    run("explain") {
        let b = try ExplainBody.decode(v, vocab: vocab, maxNewTokensLimit: limit)
        // The route resolves the positions against the captured conversation.
        run("explain.positions") { _ = try b.positions.resolve(count: 40) }
        if case .ids(let ids, let pl) = b.source, ids.isEmpty || (pl ?? 0) > ids.count { fatalError("[http_bodies] explain ids \(ids), prompt_length \(String(describing: pl))") }
    }
    run("verbalize") {
        let b = try VerbalizeBody.decode(v, d: d, maxNewTokensLimit: limit, maxVectors: 8)
        guard !b.vectors.isEmpty, b.vectors.count <= 8, b.vectors.allSatisfy({ $0.allSatisfy(\.isFinite) }) else {
            fatalError("[http_bodies] verbalize accepted \(b.vectors.count) vectors")
        }
        // The route injects each vector; a wrong length or a zero vector is refused there, one line.
        for (i, x) in b.vectors.enumerated() { run("verbalize.\(b.name(i))") { try NLAVectorMath.validate(x, d: d, label: b.name(i)) } }
    }
    run("reconstruct") { _ = try ScoreBody.decodeReconstruct(v) }
    run("score") {
        let b = try ScoreBody.decodeScore(v, d: d)
        guard b.gold?.count == d else { fatalError("[http_bodies] score accepted a gold vector of \(b.gold?.count ?? -1) floats") }
    }
}

let targets: [String: (Data) throws -> Void] = [
    "http_bodies": httpBodies,
    "safetensors": { data in
        try withFile(data, named: "model.safetensors") { p in
            let f = try SafetensorsFile(path: p)
            for (_, t) in f.tensors where t.dtype.isFloat && t.count <= 1 << 16 { _ = t.toFloatArray() }
        }
    },
    "gguf": { data in
        try withFile(data, named: "model.gguf") { p in
            _ = try GGUFFile(path: p)
            // The model-file layer on top: embedded config.json / tokenizer files of a quantize output.
            let files = try ModelFiles.open(p, tensors: false)
            if let c = files.files["config.json"] { _ = try Gemma3Config.decode(c, file: files.configName) }
        }
    },
    "config": { data in
        // config.json, then the same bytes as generation_config.json (over a fixed config and over itself).
        var firstError: Error?
        do {
            let c = try Gemma3Config.decode(data, file: "config.json")
            _ = try GenerationConfig.decode(data, file: "generation_config.json", fallback: c)
        } catch { firstError = error }
        if let e = firstError { checkError(e, target: "config") }
        _ = try GenerationConfig.decode(data, file: "generation_config.json", fallback: fallbackConfig)
    },
    "tokenizer": { data in
        let tok = try Tokenizer(tokenizerJSON: TokenizerSourceFile(data: data, name: "tokenizer.json"), tokenizerConfig: nil)
        for t in sampleTexts {
            let ids = tok.encode(t)
            _ = tok.decode(ids)
            _ = tok.decode(ids, skipSpecialTokens: true)
        }
        _ = tok.decode([-1, 0, 1, 2, Int(Int32.max), Int.max, tok.vocabSize])
    },
    "tokenizer_disk_cache": { data in
        // The reader of $NLA_CACHE/tokenizers/*.nlatok. Input: a flags byte (bit 0: reseal the checksum after
        // the damage, bit 1: truncate to the next 4 bytes' length), then 5-byte patches (u32 offset, xor byte)
        // applied to the valid file of baseTokenizerJSON. A file must be used or refused, never crash.
        guard let flags = data.first else { return }
        var bytes = validDiskCacheFile
        var rest = data.dropFirst()
        func u32(_ d: Data.SubSequence) -> Int { d.prefix(4).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) } }
        if flags & 2 != 0, rest.count >= 4 {
            bytes = Array(bytes.prefix(u32(rest) % (bytes.count + 1)))
            rest = rest.dropFirst(4)
        }
        while rest.count >= 5, !bytes.isEmpty {
            bytes[u32(rest) % bytes.count] ^= rest[rest.startIndex + 4]
            rest = rest.dropFirst(5)
        }
        if flags & 1 != 0 { bytes = TokenizerDiskCacheFuzzing.resealed(bytes) }
        let (tok, _) = try TokenizerDiskCacheFuzzing.load(file: bytes, json: baseTokenizerJSON, directory: scratchDir)
        for t in sampleTexts {
            let ids = tok.encode(t)
            _ = tok.decode(ids)
        }
    },
    "tokenizer_config": { data in
        let tok = try Tokenizer(tokenizerJSON: TokenizerSourceFile(data: baseTokenizerJSON, name: "tokenizer.json"),
                                tokenizerConfig: TokenizerSourceFile(data: data, name: "tokenizer_config.json"),
                                specialTokensMap: TokenizerSourceFile(data: data, name: "special_tokens_map.json"))
        _ = try tok.encodeChat([ChatMessage(role: "system", content: "be brief"), ChatMessage(role: "user", content: "hi"),
                                ChatMessage(role: "assistant", content: "hi hi"), ChatMessage(role: "user", content: "")],
                               addGenerationPrompt: true)
    },
    "generation_config": { data in
        // generation_config.json on its own, over a fixed config.json; the stop ids it yields are used as Ints.
        let g = try GenerationConfig.decode(data, file: "generation_config.json", fallback: fallbackConfig)
        _ = Set(g.eosTokenIds).contains(fallbackConfig.vocabSize - 1)
    },
    "special_tokens_map": { data in
        // special_tokens_map.json is read for bos_token when tokenizer_config.json has none.
        let tok = try Tokenizer(tokenizerJSON: TokenizerSourceFile(data: baseTokenizerJSON, name: "tokenizer.json"),
                                tokenizerConfig: TokenizerSourceFile(data: gemmaLikeConfigWithoutBOS, name: "tokenizer_config.json"),
                                specialTokensMap: TokenizerSourceFile(data: data, name: "special_tokens_map.json"))
        _ = try tok.encodeChat([ChatMessage(role: "user", content: "hi"), ChatMessage(role: "assistant", content: "hi hi"),
                                ChatMessage(role: "user", content: "")], addGenerationPrompt: true)
        _ = tok.bosTokenId
    },
    "nla_meta": { data in
        guard let text = String(data: data, encoding: .utf8) else { return }
        _ = try NLASidecar.decode(yaml: text, file: "nla_meta.yaml")
    },
    "vectors_npy": { data in try withFile(data, named: "v.npy") { _ = try VectorFile.read(path: $0, key: nil) } },
    "vectors_jsonl": { data in try withFile(data, named: "v.jsonl") { _ = try VectorFile.read(path: $0, key: nil) } },
    "vectors_safetensors": { data in try withFile(data, named: "v.safetensors") { _ = try VectorFile.read(path: $0, key: nil) } },
]

nonisolated(unsafe) var selected: (name: String, body: (Data) throws -> Void)?

let callback: nla_fuzz_callback = { ptr, size in
    guard let (name, body) = selected else { return 0 }
    let data = size == 0 ? Data() : Data(bytes: ptr!, count: size)
    do { try body(data) } catch { checkError(error, target: name) }
    return 0
}

var args = CommandLine.arguments
guard args.count >= 2, let body = targets[args[1]] else {
    FileHandle.standardError.write(Data("usage: nla-fuzz TARGET [libFuzzer flags] [corpus dirs]; targets: \(targets.keys.sorted().joined(separator: " "))\n".utf8))
    exit(2)
}
selected = (args[1], body)
args.remove(at: 1)
var argc = Int32(args.count)
var cArgs: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
let rc = cArgs.withUnsafeMutableBufferPointer { buf -> Int32 in
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = buf.baseAddress
    return nla_fuzz_run_driver(&argc, &argv, callback)
}
if rc == -1 {
    FileHandle.standardError.write(Data("nla-fuzz: libFuzzer is not linked into this build; run `make fuzz` (builds into .build-fuzz)\n".utf8))
    exit(2)
}
rmdir(scratchDir)
exit(rc)
