// Regression tests for the bad inputs of issue 11 (a fuzz probe's findings): each one crashed, was
// accepted silently, or gave a wrong result before its fix. Every error must be one line naming the
// file (or field) and the problem.

import Foundation
import Quant
import Testing
import NLATestSupport
@testable import NLARuntime

/// A fresh path per call: parameterized cases run in parallel and would otherwise write and read the same
/// file at once (one case truncating it while another reads it).
private func tmpPath(_ name: String) -> String {
    TestPaths.processScratch("badinput") + "/" + UUID().uuidString.prefix(8) + "-" + name
}

private func write(_ data: Data, _ name: String) throws -> String {
    let p = tmpPath(name)
    try data.write(to: URL(fileURLWithPath: p))
    return p
}

/// Expect an error of type E, one line, mentioning every string; returns its description.
@discardableResult
private func expectOneLineError<E: Error & CustomStringConvertible>(
    _ errorType: E.Type, _ mentions: [String], sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
) -> String? {
    expectError(errorType, mentioning: mentions, sourceLocation: sourceLocation, body)?.description
}

@Suite struct NpyBadInputTests {
    @Test(arguments: ["(4611686018427387904,)", "(4294967296, 4294967296)", "(9223372036854775807, 2)"])
    func shapeOverflowIsAnError(shape: String) throws {
        let p = try write(NpyBytes.file(header: "{'descr': '<f4', 'fortran_order': False, 'shape': \(shape), }", payload: f32le([1, 2, 3])),
                          "overflow.npy")
        expectOneLineError(NLAError.self, [p]) { _ = try VectorFile.read(path: p, key: nil) }
    }

    @Test func dimensionPastIntIsAnError() throws {
        let p = try write(NpyBytes.file(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }",
                              payload: f32le([1])), "huge.npy")
        expectOneLineError(NLAError.self, [p, "too large"]) { _ = try VectorFile.read(path: p, key: nil) }
    }

    @Test func zeroWidthRowsAreAnError() throws {
        // (huge, 0) needs 0 bytes: must not build 2^62 empty rows.
        let p = try write(NpyBytes.file(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 0), }", payload: []),
                          "zero.npy")
        expectOneLineError(NLAError.self, [p, "no values"]) { _ = try VectorFile.read(path: p, key: nil) }
    }

    @Test func trailingBytesAreAnError() throws {
        let p = try write(NpyBytes.file(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", payload: f32le([1, 2, 3])),
                          "trailing.npy")
        expectOneLineError(NLAError.self, [p, "4 bytes after the array data"]) { _ = try VectorFile.read(path: p, key: nil) }
        // The exact size still reads.
        let q = try write(NpyBytes.file(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", payload: f32le([1, 2])),
                          "exact.npy")
        #expect(try VectorFile.read(path: q, key: nil) == [[1, 2]])
    }

    @Test(arguments: [
        "{'descr': '<f4', 'descr': '<f8', 'fortran_order': False, 'shape': (2,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'shape': (1,), }",
        "{'descr': '<f4', 'fortran_order': False, 'fortran_order': True, 'shape': (2,), }",
    ])
    func duplicateHeaderKeysAreAnError(header: String) throws {
        let p = try write(NpyBytes.file(header: header, payload: f32le([1, 2])), "dup.npy")
        expectOneLineError(NLAError.self, [p, "duplicate key"]) { _ = try VectorFile.read(path: p, key: nil) }
    }

    @Test func malformedHeaderIsOneLineAndDoesNotEchoTheHeader() throws {
        // The header has newlines inside: the message must stay on one line.
        let header = "{'descr':\n '<f4',\n 'fortran_order': False,\n 'shapes': (2,)\n}"
        let p = try write(NpyBytes.file(header: header, payload: f32le([1, 2])), "malformed.npy")
        let text = expectOneLineError(NLAError.self, [p, "malformed .npy header"]) { _ = try VectorFile.read(path: p, key: nil) }
        #expect(text?.contains("fortran_order") == false)
        let q = try write(NpyBytes.file(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}", payload: f32le([1, 2])),
                          "extra.npy")
        expectOneLineError(NLAError.self, [q, "unexpected key 'extra'"]) { _ = try VectorFile.read(path: q, key: nil) }
    }

    @Test func keyDoesNotApplyToNpy() throws {
        let p = try write(NpyBytes.file(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", payload: f32le([1, 2])), "k.npy")
        expectOneLineError(NLAError.self, [p, "--key"]) { _ = try VectorFile.read(path: p, key: "x") }
    }
}

@Suite struct VectorFileBadInputTests {
    @Test func jsonlBooleanIsNotANumber() throws {
        let p = tmpPath("bool.jsonl")
        try "{\"activation_vector\": [1, true, 3]}\n".write(toFile: p, atomically: true, encoding: .utf8)
        expectOneLineError(NLAError.self, [p, "line 1", "[1] is not a number"]) { _ = try VectorFile.read(path: p, key: nil) }
        try "{\"activation_vector\": [1, 0, 3]}\n".write(toFile: p, atomically: true, encoding: .utf8)
        #expect(try VectorFile.read(path: p, key: nil) == [[1, 0, 3]])
    }

    @Test func safetensorsDuplicateTensorNameIsAnError() throws {
        let header = #"{"v":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"v":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        let p = try write(syntheticRawSafetensors(header: header, data: Data(f32le([1, 2]))), "dup.safetensors")
        expectOneLineError(NLAError.self, [p, "duplicate key 'v'"]) { _ = try VectorFile.read(path: p, key: nil) }
    }

    @Test func safetensorsZeroWidthRowsAreAnError() throws {
        let header = #"{"v":{"dtype":"F32","shape":[4611686018427387904,0],"data_offsets":[0,0]}}"#
        let p = try write(syntheticRawSafetensors(header: header, data: Data()), "zero.safetensors")
        expectOneLineError(NLAError.self, [p, "no values"]) { _ = try VectorFile.read(path: p, key: nil) }
    }
}

@Suite struct SafetensorsHeaderBadInputTests {
    @Test(arguments: [
        // same tensor twice (one would silently win)
        #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        // a key twice inside one tensor entry
        #"{"a":{"dtype":"F32","dtype":"I32","shape":[1],"data_offsets":[0,4]}}"#,
        // escaped spelling of the same key
        #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"\u0061":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        #"{"__metadata__":{"format":"pt","format":"np"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
    ])
    func duplicateKeysAreRefused(header: String) throws {
        let p = try write(syntheticRawSafetensors(header: header, data: Data(f32le([1]))), "dupkeys.safetensors")
        let e = expectOneLineError(SafetensorsError.self, [p, "duplicate key"]) { _ = try SafetensorsFile(path: p) }
        #expect(e != nil)
    }

    @Test func booleanShapeIsRefused() throws {
        let header = #"{"a":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}}"#
        let p = try write(syntheticRawSafetensors(header: header, data: Data(f32le([1]))), "boolshape.safetensors")
        expectOneLineError(SafetensorsError.self, [p, "shape entry"]) { _ = try SafetensorsFile(path: p) }
    }

    @Test func duplicateKeyScanner() {
        func dup(_ s: String) -> String? { JSONDuplicateKeys.first(in: Data(s.utf8)) }
        #expect(dup(#"{"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]}"#) == nil)
        #expect(dup(#"{"a":1,"b":{"x":2,"x":3}}"#) == "b.x")
        #expect(dup(#"{"c":[{"a":1},{"a":2,"a":3}]}"#) == "c[1].a")
        #expect(dup(#"{"k\"":1,"k\"":2}"#) == "k\"")
        #expect(dup(#"{"a":"\"a\"","b":"a"}"#) == nil)
        #expect(dup(#"{"a":1,"b":2,"a":3}"#) == "a")
    }
}

@Suite struct TokenizerBadInputTests {
    typealias S = TokTestSupport

    @Test(arguments: [99_999_999_999, -1, 2_147_483_648, -2_147_483_649])
    func addedTokenIdOutOfRangeIsAnError(id: Int) throws {
        let e = expectOneLineError(TokenizerError.self, ["tokenizer.json", "added_tokens[0].id", "out of range"]) {
            _ = try S.make(model: S.bpe(["a": 0, "b": 1]), addedTokens: [S.added(id, "<x>")])
        }
        #expect(e?.contains("\(id)") == true)
    }

    @Test func postProcessorIdOutOfRangeIsAnError() throws {
        let post: [String: Any] = ["type": "BertProcessing", "cls": ["[CLS]", 99_999_999_999], "sep": ["[SEP]", 1]]
        expectOneLineError(TokenizerError.self, ["tokenizer.json", "out of range"]) {
            _ = try S.make(model: S.bpe(["a": 0, "b": 1]), postProcessor: post)
        }
    }

    @Test func addedTokenPastTheModelVocabularyIsAnError() throws {
        let spec = SyntheticSpec()
        try withSyntheticCheckpoint { dir in
            var vocab: [String: Int] = [:]
            for i in 0..<10 { vocab["t\(i)"] = i }
            let ok = try S.tokenizerJSON(model: S.bpe(vocab), addedTokens: [S.added(spec.vocabSize - 1, "<last>")])
            try Data(ok.utf8).write(to: URL(fileURLWithPath: dir + "/tokenizer.json"))
            let m = try LanguageModel(directory: dir)
            #expect(m.tokenizer.vocabSize == spec.vocabSize)
            let bad = try S.tokenizerJSON(model: S.bpe(vocab), addedTokens: [S.added(spec.vocabSize, "<past>")])
            try Data(bad.utf8).write(to: URL(fileURLWithPath: dir + "/tokenizer.json"))
            expectOneLineError(ModelError.self, [dir + "/tokenizer.json", "token id \(spec.vocabSize)", "vocab_size \(spec.vocabSize)"]) {
                _ = try LanguageModel(directory: dir)
            }
        }
    }
}

@Suite struct ConfigRangeTests {
    static func decode(_ edit: (inout [String: Any]) -> Void) throws -> Gemma3Config {
        var cfg = SyntheticCheckpoint().config(layout: .flatBF16, dialect: .v4)
        edit(&cfg)
        let data = try JSONSerialization.data(withJSONObject: cfg, options: [.sortedKeys])
        return try Gemma3Config.decode(data, file: "/m/config.json")
    }

    @Test func syntheticConfigIsValid() throws {
        _ = try Self.decode { _ in }
    }

    /// (field, JSON value)
    @Test(arguments: [
        ("rms_norm_eps", "0"), ("rms_norm_eps", "1.8e19"), ("rms_norm_eps", "-1e-6"),
        ("rope_theta", "-10000"), ("rope_theta", "0"), ("rope_local_base_freq", "-1"),
        ("query_pre_attn_scalar", "0"), ("bos_token_id", "-1"), ("pad_token_id", "-5"), ("bos_token_id", "96"),
        ("eos_token_id", "-1"), ("eos_token_id", "[1, -106]"), ("hidden_size", "1099511627776"),
        ("vocab_size", "2147483647"), ("max_position_embeddings", "1099511627776"),
        ("final_logit_softcapping", "-30"), ("attn_logit_softcapping", "0"),
    ])
    func outOfRangeValueNamesTheField(field: String, json: String) throws {
        let value = try JSONSerialization.jsonObject(with: Data(json.utf8), options: [.fragmentsAllowed])
        expectOneLineError(ModelError.self, ["/m/config.json", field]) {
            _ = try Self.decode { $0[field] = value }
        }
    }

    /// Fuzz finding (CI, config target): a negative or huge num_hidden_layers with no layer_types
    /// trapped while the layer types were built from sliding_window_pattern, before the range checks ran.
    @Test(arguments: ["-1", "-4096", "1000000000000000", "0"])
    func layerCountIsCheckedBeforeLayerTypesAreBuilt(layers: String) throws {
        let text = #"{"model_type": "gemma3_text", "sliding_window_pattern": 2, "num_hidden_layers": "# + layers + "}"
        expectOneLineError(ModelError.self, ["/m/config.json", "num_hidden_layers"]) {
            _ = try Gemma3Config.decode(Data(text.utf8), file: "/m/config.json")
        }
    }

    @Test func booleanInAnIdListIsRefused() throws {
        expectOneLineError(ModelError.self, ["eos_token_id"]) { _ = try Self.decode { $0["eos_token_id"] = [1, true] } }
    }

    @Test func duplicateKeyIsRefused() throws {
        let text = #"{"model_type": "gemma3_text", "hidden_size": 48, "hidden_size": 64}"#
        expectOneLineError(ModelError.self, ["/m/config.json", "duplicate key 'hidden_size'"]) {
            _ = try Gemma3Config.decode(Data(text.utf8), file: "/m/config.json")
        }
    }

    @Test func generationConfigRanges() throws {
        let cfg = try Self.decode { _ in }
        func gen(_ s: String) throws -> GenerationConfig {
            try GenerationConfig.decode(Data(s.utf8), file: "/m/generation_config.json", fallback: cfg)
        }
        #expect(try gen(#"{"eos_token_id": [1, 106], "bos_token_id": 2}"#).eosTokenIds == [1, 106])
        #expect(try gen(#"{"eos_token_id": 7}"#).eosTokenIds == [7])
        expectOneLineError(ModelError.self, ["generation_config.json", "eos_token_id", "-1"]) { _ = try gen(#"{"eos_token_id": [1, -1]}"#) }
        expectOneLineError(ModelError.self, ["generation_config.json", "bos_token_id"]) { _ = try gen(#"{"bos_token_id": 99999}"#) }
        expectOneLineError(ModelError.self, ["generation_config.json", "pad_token_id"]) { _ = try gen(#"{"pad_token_id": -3}"#) }
        expectOneLineError(ModelError.self, ["generation_config.json", "eos_token_id"]) { _ = try gen(#"{"eos_token_id": [true]}"#) }
        expectOneLineError(ModelError.self, ["generation_config.json", "duplicate key 'eos_token_id'"]) {
            _ = try gen(#"{"eos_token_id": 1, "eos_token_id": 2}"#)
        }
    }
}

@Suite struct ScoreOverflowTests {
    @Test func hugeFiniteGoldScoresLikeTheSameDirection() throws {
        let d = 64
        var rng = SplitMix64(seed: 7)
        let pred = (0..<d).map { _ in Float(Double(rng.next() % 2001) / 1000 - 1) }
        let dir = (0..<d).map { i in pred[i] + (i % 3 == 0 ? 0.5 : -0.25) }
        let peak = dir.map(abs).max()!
        let huge = dir.map { $0 / peak * 3e38 }  // finite; its f32 norm overflows
        #expect(huge.allSatisfy { $0.isFinite })
        let s = Float(Double(d).squareRoot())
        let ref = try NLAScore.compute(prediction: pred, gold: dir, mseScale: s, d: d, fveBaseline: 0.05)
        let big = try NLAScore.compute(prediction: pred, gold: huge, mseScale: s, d: d, fveBaseline: 0.05)
        #expect(ref.cos > 0.1)
        #expect(abs(big.cos - ref.cos) < 1e-5)
        #expect(abs(big.mseNrm - ref.mseNrm) < 1e-4)
        // Every value 3e38 (the issue's case) against the same direction at scale 1: cos 1.
        let all = [Float](repeating: 3e38, count: d), ones = [Float](repeating: 1, count: d)
        let same = try NLAScore.compute(prediction: ones, gold: all, mseScale: s, d: d, fveBaseline: nil)
        #expect(abs(same.cos - 1) < 1e-6)
        // Raw-MSE mode: differences of huge values must not become inf.
        let raw = try NLAScore.compute(prediction: all.map { -$0 }, gold: all, mseScale: nil, d: d, fveBaseline: nil)
        #expect(raw.mseNrm.isFinite)
        #expect(abs(raw.cos + 1) < 1e-6)
        // The injection scaling gets the same direction too.
        let inj = NLAVectorMath.scaledForInjection(all, scale: 10)
        #expect(inj.allSatisfy { abs($0 - 10 / Float(Double(d).squareRoot())) < 1e-5 })
    }
}

@Suite struct QuantizeBadInputTests {
    @Test(arguments: ["model.embed_tokens.weight", "model.layers.3.mlp.up_proj.weight", "model.norm.weight"])
    func missingRequiredTensorIsRefusedBeforeWriting(tensor: String) throws {
        try withSyntheticCheckpoint(layout: .flat(dtype: .f32), editEntries: { $0.removeAll { $0.name == tensor } }) { dir in
            let out = tmpPath("missing-\(tensor).gguf")
            try? FileManager.default.removeItem(atPath: out)
            expectOneLineError(ModelError.self, [dir, tensor]) {
                _ = try Converter.convert(input: dir, output: out, policy: QuantizePolicy(target: .bf16))
            }
            #expect(!FileManager.default.fileExists(atPath: out))
            let dirList = try FileManager.default.contentsOfDirectory(atPath: (out as NSString).deletingLastPathComponent)
            #expect(!dirList.contains { $0.hasPrefix((out as NSString).lastPathComponent + ".tmp-") })
        }
    }

    @Test func wrongShapeIsRefusedBeforeWriting() throws {
        try withSyntheticCheckpoint(layout: .flat(dtype: .f32), editEntries: { entries in
            if let i = entries.firstIndex(where: { $0.name == "model.layers.0.self_attn.q_norm.weight" }) {
                entries[i] = SafetensorsWriter.Entry(name: entries[i].name, shape: [8], floats: [Float](repeating: 0, count: 8))
            }
        }) { dir in
            let out = tmpPath("shape.gguf")
            expectOneLineError(ModelError.self, ["q_norm", "shape"]) {
                _ = try Converter.convert(input: dir, output: out, policy: QuantizePolicy(target: .bf16))
            }
            #expect(!FileManager.default.fileExists(atPath: out))
        }
    }

    @Test func staleTemporaryOfADeadProcessIsRemoved() throws {
        // A pid that certainly existed and is gone: a child we started and reaped.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/true")
        try p.run()
        p.waitUntilExit()
        let dead = p.processIdentifier
        let out = tmpPath("stale.gguf")
        let stale = out + ".tmp-\(dead)-12345"
        let live = out + ".tmp-\(getppid())-777"     // our parent is alive: not touched
        let other = out + ".tmp-notapid-1"            // not a writer's name: not touched
        for f in [stale, live, other] { FileManager.default.createFile(atPath: f, contents: Data([1, 2, 3])) }
        defer { for f in [stale, live, other] { try? FileManager.default.removeItem(atPath: f) } }
        let removed = Converter.removeStaleTemporaries(of: out)
        #expect(removed == [stale])
        #expect(!FileManager.default.fileExists(atPath: stale))
        #expect(FileManager.default.fileExists(atPath: live))
        #expect(FileManager.default.fileExists(atPath: other))
    }

    @Test func quantizeRemovesStaleTemporaries() throws {
        try withSyntheticCheckpoint(layout: .flat(dtype: .f32)) { dir in
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/true")
            try p.run()
            p.waitUntilExit()
            let out = tmpPath("conv.gguf")
            let stale = out + ".tmp-\(p.processIdentifier)-42"
            FileManager.default.createFile(atPath: stale, contents: Data(count: 100))
            defer { try? FileManager.default.removeItem(atPath: out) }
            _ = try Converter.convert(input: dir, output: out, policy: QuantizePolicy(target: .bf16))
            #expect(!FileManager.default.fileExists(atPath: stale))
            #expect(FileManager.default.fileExists(atPath: out))
        }
    }
}

/// Findings of `make fuzz`, kept as regression tests.
@Suite struct FuzzFindingTests {
    /// gguf target: a metadata key with control characters (\0, \r) and an unknown value type gave a
    /// two-line error message quoting the raw key.
    @Test func ggufKeyWithControlCharactersGivesAOneLineError() throws {
        var d = Data("GGUF".utf8)
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
        u32(3); u64(0); u64(1)
        let key: [UInt8] = [0, 0, 0, 0, 2, 0x0D, 0, 0] + Array("general.arch\n".utf8)
        u64(UInt64(key.count)); d.append(contentsOf: key)
        u32(1_667_593_321)
        let p = try write(d, "ctrl.gguf")
        expectOneLineError(GGUFError.self, [p, "unknown value type"]) { _ = try GGUFFile(path: p) }
    }

    @Test func safetensorsNameWithNewlineGivesAOneLineError() throws {
        let header = #"{"a\nb":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#
        let p = try write(syntheticRawSafetensors(header: header, data: Data(f32le([1]))), "nl.safetensors")
        expectOneLineError(SafetensorsError.self, [p, #"a\nb"#]) { _ = try SafetensorsFile(path: p) }
    }

    @Test func tokenizerKeyWithNewlineGivesAOneLineError() throws {
        let text = #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "normalizer": {"type": "Lower\ncase"}}"#
        let url = try TokTestSupport.write(text, named: "tokenizer.json")
        expectOneLineError(TokenizerError.self, ["tokenizer.json", #"Lower\ncase"#]) { _ = try Tokenizer(tokenizerJSON: url, tokenizerConfig: nil) }
    }

    /// config target: a duplicate key spelled with an escaped newline was quoted raw.
    @Test func configDuplicateKeyWithNewlineGivesAOneLineError() throws {
        let text = #"{"model_type": "gemma3_text", "pad\n_id": 1, "pad\n_id": 2}"#
        expectOneLineError(ModelError.self, ["config.json", "duplicate key", #"pad\n_id"#]) {
            _ = try Gemma3Config.decode(Data(text.utf8), file: "config.json")
        }
    }

    /// nla_meta target: a multi-line string where a number belongs was quoted raw.
    @Test func sidecarMultiLineValueGivesAOneLineError() throws {
        let yaml = try String(contentsOfFile: NLAFixtures.avPath, encoding: .utf8)
        let bad = yaml.replacingOccurrences(of: "mse_scale: null", with: "mse_scale: \"one\\ntwo\"")
        #expect(bad != yaml)
        expectOneLineError(NLAError.self, ["nla_meta.yaml", "mse_scale"]) { _ = try NLASidecar.decode(yaml: bad, file: "nla_meta.yaml") }
    }
}

// MARK: - The inputs probed in the second round (issue 11 "not probed yet"): tokenizer_config.json,
// special_tokens_map.json, generation_config.json, JSONL vector and pair files, fve baselines, positions.

@Suite struct SecondProbeFindingTests {
    typealias S = TokTestSupport
    static var model: [String: Any] { S.bpe(["<bos>": 0, "a": 1, "<start_of_turn>": 2, "<end_of_turn>": 3], merges: [String]()) }

    static func tokenizer(config: String?, map: String? = nil) throws -> Tokenizer {
        try Tokenizer(tokenizerJSON: TokenizerSourceFile(data: Data(try S.tokenizerJSON(model: model, addedTokens: [S.added(0, "<bos>")]).utf8),
                                                         name: "tokenizer.json"),
                      tokenizerConfig: config.map { TokenizerSourceFile(data: Data($0.utf8), name: "/m/tokenizer_config.json") },
                      specialTokensMap: map.map { TokenizerSourceFile(data: Data($0.utf8), name: "/m/special_tokens_map.json") })
    }

    @Test func validConfigAndMapStillLoad() throws {
        #expect(try Self.tokenizer(config: #"{"bos_token": "<bos>"}"#).bosTokenId == 0)
        #expect(try Self.tokenizer(config: "{}", map: #"{"bos_token": {"content": "<bos>"}}"#).bosTokenId == 0)
        #expect(try Self.tokenizer(config: #"{"bos_token": null}"#).bosTokenId == nil)
    }

    /// Probe: a bos_token naming no token was accepted, and the chat template then rendered it as plain text.
    @Test(arguments: [#"{"bos_token": "zzz-not-a-token"}"#, #"{"bos_token": ""}"#, #"{"bos_token": {"content": "<s>"}}"#])
    func bosTokenThatIsNoTokenIsAnError(config: String) throws {
        expectError(TokenizerError.self, mentioning: ["/m/tokenizer_config.json", "bos_token", "is not a token of tokenizer.json"]) {
            _ = try Self.tokenizer(config: config)
        }
    }

    @Test func specialTokensMapBosThatIsNoTokenIsAnError() throws {
        expectError(TokenizerError.self, mentioning: ["/m/special_tokens_map.json", "bos_token", "'<nope>'"]) {
            _ = try Self.tokenizer(config: "{}", map: #"{"bos_token": "<nope>"}"#)
        }
    }

    /// Probe: duplicate keys in tokenizer_config.json and special_tokens_map.json were accepted (one value silently won).
    @Test func duplicateKeysInTokenizerConfigAndMapAreErrors() throws {
        expectError(TokenizerError.self, mentioning: ["/m/tokenizer_config.json", "bos_token", "duplicate key"]) {
            _ = try Self.tokenizer(config: #"{"bos_token": "a", "bos_token": "<bos>"}"#)
        }
        expectError(TokenizerError.self, mentioning: ["/m/tokenizer_config.json", "chat_template", "duplicate key"]) {
            _ = try Self.tokenizer(config: #"{"bos_token": "<bos>", "chat_template": "x", "chat_template": "y"}"#)
        }
        expectError(TokenizerError.self, mentioning: ["/m/special_tokens_map.json", "eos_token", "duplicate key"]) {
            _ = try Self.tokenizer(config: "{}", map: #"{"bos_token": "<bos>", "eos_token": "a", "eos_token": "<eos>"}"#)
        }
    }

    /// Probe: a special_tokens_map.json holding an array (not an object) was accepted.
    @Test func specialTokensMapMustBeAnObject() throws {
        expectError(TokenizerError.self, mentioning: ["/m/special_tokens_map.json", "JSON object"]) {
            _ = try Self.tokenizer(config: "{}", map: "[1, 2]")
        }
    }

    /// Probe: a chat_template list with non-object items ([-1]) was accepted.
    @Test func chatTemplateListItemsMustBeObjects() throws {
        expectError(TokenizerError.self, mentioning: ["/m/tokenizer_config.json", "chat_template"]) {
            _ = try Self.tokenizer(config: #"{"bos_token": "<bos>", "chat_template": [-1]}"#)
        }
        expectError(TokenizerError.self, mentioning: ["/m/tokenizer_config.json", "name"]) {
            _ = try Self.tokenizer(config: #"{"bos_token": "<bos>", "chat_template": [{"template": "x"}]}"#)
        }
    }

    /// Probe: an eos_token_id above 2³¹−1 was refused with "must be >= 0", which is not the problem.
    @Test func hugeEosIdMessageStatesTheRange() throws {
        let cfg = try Gemma3Config.decode(Data(#"{"model_type": "gemma3_text", "vocab_size": 300}"#.utf8), file: "/m/config.json")
        expectError(ModelError.self, mentioning: ["generation_config.json", "eos_token_id is 99999999999", "0...2147483647"]) {
            _ = try GenerationConfig.decode(Data(#"{"eos_token_id": [1, 99999999999]}"#.utf8), file: "/m/generation_config.json", fallback: cfg)
        }
    }

    /// Probe: JSONL vector files with a duplicate key, invalid UTF-8, or a value past the f32 range.
    @Test func jsonlVectorFileFindings() throws {
        func file(_ bytes: [UInt8], _ name: String) throws -> String { try write(Data(bytes), name) }
        let dup = try file(Array(#"{"activation_vector": [1, 2], "activation_vector": [3, 4]}"#.utf8), "dup.jsonl")
        expectError(NLAError.self, mentioning: ["dup.jsonl", "line 1", "duplicate key 'activation_vector'"]) { _ = try VectorFile.read(path: dup, key: nil) }
        let utf = try file(Array(#"{"activation_vector": [1, 2], "note": ""#.utf8) + [0xFF] + Array("\"}\n".utf8), "utf.jsonl")
        expectError(NLAError.self, mentioning: ["utf.jsonl", "not valid UTF-8"]) { _ = try VectorFile.read(path: utf, key: nil) }
        let big = try file(Array(#"{"activation_vector": [1, 1e39]}"#.utf8), "big.jsonl")
        expectError(NLAError.self, mentioning: ["big.jsonl", "line 1", "'activation_vector'[1]", "outside the f32 range"]) {
            _ = try VectorFile.read(path: big, key: nil)
        }
        let ok = try file(Array("{\"activation_vector\": [1, 2.5], \"other\": [3, 4]}\n\n{\"activation_vector\": [5, 6], \"other\": [7, 8]}\n".utf8), "ok.jsonl")
        #expect(try VectorFile.read(path: ok, key: nil) == [[1, 2.5], [5, 6]])
        #expect(try VectorFile.read(path: ok, key: "other") == [[3, 4], [7, 8]])
    }

    /// Probe: --fve-baseline 0 / −1 / NaN / inf reached the JSON writer (a two-line encoder error) or
    /// gave fve = ±inf; the library refuses such a B (and the pipeline before loading any model).
    @Test(arguments: [0.0, -1.0, Double.nan, Double.infinity])
    func fveBaselineMustBePositiveAndFinite(b: Double) throws {
        let v: [Float] = [1, 2, 3, 4]
        expectError(ModelError.self, mentioning: ["fve baseline"]) {
            _ = try NLAScore.compute(prediction: v, gold: v, mseScale: 2, d: 4, fveBaseline: b)
        }
        let req = ExplainRequest(target: "/nonexistent", av: "/nonexistent", ar: "/nonexistent", prompt: "hi", fveBaseline: b)
        expectError(ModelError.self, mentioning: ["fve baseline"]) { _ = try NLAPipeline.explain(req) }
        #expect(try NLAScore.compute(prediction: v, gold: v, mseScale: 2, d: 4, fveBaseline: 0.5).fveNrm == 1)
    }

    /// Probe: `--positions ""` and `","` explained nothing and exited 0; `1,1` explained position 1 twice.
    @Test func positionsThatListNothingOrRepeatAreErrors() throws {
        for spec in ["", ",", " , "] {
            expectError(ModelError.self, mentioning: ["positions", "lists no position"]) { _ = try NLAPositionSpec.parse(spec) }
        }
        expectError(ModelError.self, mentioning: ["positions", "1 is listed more than once"]) { _ = try NLAPositionSpec.parse("1,1").resolve(count: 5) }
        expectError(ModelError.self, mentioning: ["positions", "3 is listed more than once"]) { _ = try NLAPositionSpec.parse("2-4,3").resolve(count: 5) }
        #expect(try NLAPositionSpec.parse("0,2-3,4-").resolve(count: 6) == [0, 2, 3, 4, 5])
    }
}
