// Bad input must give a typed error whose description names the file and the problem, never a crash.
// Every test starts from a valid synthetic checkpoint (SyntheticCheckpoint.swift) and breaks one thing.

import Foundation
import Quant
import Testing
import NLATestSupport
@testable import NLARuntime


/// A valid flat checkpoint of the default spec, corrupted by the caller; removed afterwards.
func withSyntheticCheckpoint(layout: SyntheticLayout = .flatBF16, dialect: SyntheticDialect = .v4,
                             editConfig: ((inout [String: Any]) -> Void)? = nil,
                             editEntries: ((inout [SafetensorsWriter.Entry]) -> Void)? = nil,
                             _ body: (String) throws -> Void) throws {
    let dir = try SyntheticCheckpoint().write(layout: layout, dialect: dialect, editConfig: editConfig, editEntries: editEntries)
    defer { SyntheticCheckpoint.remove(dir) }
    try body(dir)
}

/// Rewrite the bytes of a file in place.
func syntheticEditFile(_ path: String, _ edit: (inout Data) -> Void) throws {
    var data = try Data(contentsOf: URL(fileURLWithPath: path))
    edit(&data)
    try data.write(to: URL(fileURLWithPath: path))
}

@Suite struct SyntheticSafetensorsErrorTests {
    @Test func fileCutMidData() throws {
        try withSyntheticCheckpoint { dir in
            try syntheticEditFile(dir + "/model.safetensors") { $0 = $0.prefix($0.count - 1000) }
            let e = expectError(SafetensorsError.self, mentioning: ["model.safetensors", "truncated", "past the end"]) {
                _ = try Gemma3Model(directory: dir)
            }
            if case .truncated = e {} else { Issue.record("expected .truncated, got \(String(describing: e))") }
        }
    }

    @Test func headerLengthPastEndOfFile() throws {
        try withSyntheticCheckpoint { dir in
            let path = dir + "/model.safetensors"
            let size = try Data(contentsOf: URL(fileURLWithPath: path)).count
            try syntheticEditFile(path) { data in
                var len = UInt64(size).littleEndian  // 8 + size > size
                withUnsafeBytes(of: &len) { data.replaceSubrange(0..<8, with: $0) }
            }
            let e = expectError(SafetensorsError.self, mentioning: ["model.safetensors", "header length", "past end of file"]) {
                _ = try Gemma3Model(directory: dir)
            }
            if case .truncated = e {} else { Issue.record("expected .truncated, got \(String(describing: e))") }
        }
    }

    @Test func headerLengthAboveTheLimit() throws {
        let dir = SyntheticCheckpoint.makeTempDirectory("err")
        defer { SyntheticCheckpoint.remove(dir) }
        let path = dir + "/huge.safetensors"
        try syntheticRawSafetensors(header: "{}", data: Data(), declaredHeaderLength: 1 << 40).write(to: URL(fileURLWithPath: path))
        let e = expectError(SafetensorsError.self, mentioning: ["huge.safetensors", "header length", "exceeds"]) {
            _ = try SafetensorsFile(path: path)
        }
        if case .badHeader = e {} else { Issue.record("expected .badHeader, got \(String(describing: e))") }
    }

    @Test func fileShorterThanTheLengthField() throws {
        let dir = SyntheticCheckpoint.makeTempDirectory("err")
        defer { SyntheticCheckpoint.remove(dir) }
        let path = dir + "/tiny.safetensors"
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: path))
        expectError(SafetensorsError.self, mentioning: ["tiny.safetensors", "truncated"]) {
            _ = try SafetensorsFile(path: path)
        }
    }

    @Test func garbledJSONHeader() throws {
        try withSyntheticCheckpoint { dir in
            try syntheticEditFile(dir + "/model.safetensors") { data in
                data[8 + 1] = UInt8(ascii: "#")   // `{"…` → `{#…`
            }
            let e = expectError(SafetensorsError.self, mentioning: ["model.safetensors", "not valid JSON"]) {
                _ = try Gemma3Model(directory: dir)
            }
            if case .badHeader = e {} else { Issue.record("expected .badHeader, got \(String(describing: e))") }
        }
    }

    /// One raw file from a literal header, opened; returns the error.
    @discardableResult
    func raw(_ name: String, _ header: String, dataBytes: Int, mentioning: [String]) -> SafetensorsError? {
        let dir = SyntheticCheckpoint.makeTempDirectory("err")
        defer { SyntheticCheckpoint.remove(dir) }
        let path = dir + "/" + name
        try! syntheticRawSafetensors(header: header, data: Data(count: dataBytes)).write(to: URL(fileURLWithPath: path))
        return expectError(SafetensorsError.self, mentioning: [name] + mentioning) {
            _ = try SafetensorsFile(path: path)
        }
    }

    @Test func dataOffsetsPastTheDataSection() {
        let e = raw("offsets.safetensors", #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, dataBytes: 8,
                    mentioning: ["'a'", "past the end of the data section"])
        if case .truncated = e {} else { Issue.record("expected .truncated, got \(String(describing: e))") }
    }

    @Test func overlappingTensors() {
        let e = raw("overlap.safetensors",
                    #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#,
                    dataBytes: 24, mentioning: ["overlaps", "'a'", "'b'"])
        if case .badTensor = e {} else { Issue.record("expected .badTensor, got \(String(describing: e))") }
    }

    @Test func byteSizeNotMatchingShapeTimesDtype() {
        let e = raw("size.safetensors", #"{"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,16]}}"#, dataBytes: 16,
                    mentioning: ["'w'", "byte size 16", "[2, 3]", "BF16"])
        if case .badTensor = e {} else { Issue.record("expected .badTensor, got \(String(describing: e))") }
    }

    @Test func unsupportedDtype() {
        let e = raw("dtype.safetensors", #"{"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}}"#, dataBytes: 4,
                    mentioning: ["'w'", "unsupported dtype F8_E4M3"])
        if case .badTensor = e {} else { Issue.record("expected .badTensor, got \(String(describing: e))") }
    }

    @Test func malformedEntries() {
        raw("m1.safetensors", #"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, dataBytes: 4, mentioning: ["'w'", "shape"])
        raw("m2.safetensors", #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, dataBytes: 4, mentioning: ["'w'", "data_offsets"])
        raw("m3.safetensors", #"{"w":{"dtype":"F32","shape":[1]}}"#, dataBytes: 4, mentioning: ["'w'", "data_offsets"])
        raw("m4.safetensors", #"{"w":[1,2]}"#, dataBytes: 0, mentioning: ["'w'", "not an object"])
        raw("m5.safetensors", #"[1,2]"#, dataBytes: 0, mentioning: ["not a JSON object"])
        raw("m6.safetensors", #"{"__metadata__":{"format":3}}"#, dataBytes: 0, mentioning: ["__metadata__"])
        raw("m7.safetensors", #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0.5,4]}}"#, dataBytes: 4, mentioning: ["'w'", "data_offsets"])
    }

    // Header lengths and shapes that overflow Int arithmetic are errors, not traps.
    @Test func headerLengthAboveIntMaxIsAnError() throws {
        let path = TestPaths.tempFile("synthetic", ext: ".safetensors")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try syntheticRawSafetensors(header: "{}", data: Data(), declaredHeaderLength: UInt64.max - 7).write(to: URL(fileURLWithPath: path))
        #expect(throws: SafetensorsError.self) { _ = try SafetensorsFile(path: path) }
    }

    @Test func shapeWhoseByteSizeOverflowsIsAnError() throws {
        let path = TestPaths.tempFile("synthetic", ext: ".safetensors")
        defer { try? FileManager.default.removeItem(atPath: path) }
        // numel = 2^62 fits in Int, numel × 4 does not.
        try syntheticRawSafetensors(header: #"{"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]}}"#,
                                    data: Data(count: 4)).write(to: URL(fileURLWithPath: path))
        do {
            _ = try SafetensorsFile(path: path)
            Issue.record("expected an error")
        } catch let e as SafetensorsError {
            #expect(e.description.contains("overflows"))
        }
    }

    @Test func gapsAndTrailingBytesAreRejected() throws {
        for (header, bytes, word) in [(#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, 8, "gap"),
                                      (#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, 12, "after the last tensor")] {
            let path = TestPaths.tempFile("synthetic", ext: ".safetensors")
            defer { try? FileManager.default.removeItem(atPath: path) }
            try syntheticRawSafetensors(header: header, data: Data(count: bytes)).write(to: URL(fileURLWithPath: path))
            do {
                _ = try SafetensorsFile(path: path)
                Issue.record("expected an error for \(header) + \(bytes) bytes")
            } catch let e as SafetensorsError {
                #expect(e.description.contains(word), "\(e)")
                #expect(e.description.contains(path))
            }
        }
    }
}

@Suite struct SyntheticCheckpointErrorTests {
    @Test func tensorShapeDoesNotMatchConfig() throws {
        try withSyntheticCheckpoint(editEntries: { entries in
            let i = entries.firstIndex { $0.name == "model.layers.1.self_attn.q_proj.weight" }!
            entries[i].shape = entries[i].shape.reversed()   // [64, 48] → [48, 64]
        }) { dir in
            let e = expectError(ModelError.self, mentioning: ["model.safetensors", "model.layers.1.self_attn.q_proj.weight",
                                                                       "shape [48, 64]", "expects [64, 48]"]) {
                _ = try Gemma3Model(directory: dir)
            }
            if case .weights = e {} else { Issue.record("expected .weights, got \(String(describing: e))") }
        }
    }

    @Test func embeddingShapeDoesNotMatchVocabulary() throws {
        try withSyntheticCheckpoint(editConfig: { $0["vocab_size"] = 97 }) { dir in
            expectError(ModelError.self, mentioning: ["model.safetensors", "model.embed_tokens.weight", "[97, 48]"]) {
                _ = try Gemma3Model(directory: dir)
            }
        }
    }

    @Test func integerWeight() throws {
        try withSyntheticCheckpoint(editEntries: { entries in
            let i = entries.firstIndex { $0.name == "model.layers.0.input_layernorm.weight" }!
            entries[i] = .init(name: entries[i].name, shape: entries[i].shape, int32s: [Int32](repeating: 1, count: 48))
        }) { dir in
            let e = expectError(ModelError.self, mentioning: ["model.safetensors", "model.layers.0.input_layernorm.weight", "dtype I32"]) {
                _ = try Gemma3Model(directory: dir)
            }
            if case .weights = e {} else { Issue.record("expected .weights, got \(String(describing: e))") }
        }
    }

    @Test func missingTensor() throws {
        try withSyntheticCheckpoint(editEntries: { $0.removeAll { $0.name == "model.layers.3.mlp.up_proj.weight" } }) { dir in
            // A missing tensor could belong to any shard: the error names the checkpoint directory.
            let e = expectError(ModelError.self, mentioning: [dir, "missing tensor 'model.layers.3.mlp.up_proj.weight'"]) {
                _ = try Gemma3Model(directory: dir)
            }
            if case .weights = e {} else { Issue.record("expected .weights, got \(String(describing: e))") }
        }
    }

    @Test func missingFinalNormAndEmbedding() throws {
        try withSyntheticCheckpoint(editEntries: { $0.removeAll { $0.name == "model.norm.weight" } }) { dir in
            expectError(ModelError.self, mentioning: [dir, "model.norm.weight"]) { _ = try Gemma3Model(directory: dir) }
            // A truncated model does not need the final norm.
            try #expect(Gemma3Model(directory: dir, blocks: 2).loadedBlocks == 2)
        }
        try withSyntheticCheckpoint(editEntries: { $0.removeAll { $0.name == "model.embed_tokens.weight" } }) { dir in
            expectError(ModelError.self, mentioning: [dir, "no embedding tensor"]) { _ = try Gemma3Model(directory: dir) }
        }
    }

    @Test func untiedWithoutLmHead() throws {
        try withSyntheticCheckpoint(editConfig: { $0["tie_word_embeddings"] = false }) { dir in
            expectError(ModelError.self, mentioning: [dir, "lm_head.weight", "tie_word_embeddings"]) {
                _ = try Gemma3Model(directory: dir)
            }
        }
    }

    @Test func missingConfigOrWeights() throws {
        try withSyntheticCheckpoint { dir in
            try FileManager.default.removeItem(atPath: dir + "/config.json")
            expectError(ModelError.self, mentioning: ["config.json", "missing"]) { _ = try Gemma3Model(directory: dir) }
        }
        try withSyntheticCheckpoint { dir in
            try FileManager.default.removeItem(atPath: dir + "/model.safetensors")
            expectError(SafetensorsError.self, mentioning: [dir, "no model.safetensors"]) { _ = try Gemma3Model(directory: dir) }
        }
    }

    @Test func blocksOutOfRange() throws {
        try withSyntheticCheckpoint { dir in
            for n in [0, 7, -1] {
                expectError(ModelError.self, mentioning: [dir, "cannot run \(n) blocks"]) { _ = try Gemma3Model(directory: dir, blocks: n) }
            }
        }
    }
}

@Suite struct SyntheticShardErrorTests {
    static let index = "model.safetensors.index.json"

    static func editIndex(_ dir: String, _ edit: (inout [String: String]) -> Void) throws {
        let path = dir + "/" + index
        var obj = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        var wm = obj["weight_map"] as! [String: String]
        edit(&wm)
        obj["weight_map"] = wm
        try JSONSerialization.data(withJSONObject: obj).write(to: URL(fileURLWithPath: path))
    }

    @Test func indexNamesAMissingShard() throws {
        try withSyntheticCheckpoint(layout: .wrapperOld) { dir in
            try Self.editIndex(dir) { $0["language_model.model.norm.weight"] = "model-00004-of-00003.safetensors" }
            let e = expectError(SafetensorsError.self, mentioning: ["model-00004-of-00003.safetensors", "cannot open"]) {
                _ = try Gemma3Model(directory: dir)
            }
            if case .cannotOpen = e {} else { Issue.record("expected .cannotOpen, got \(String(describing: e))") }
        }
        try withSyntheticCheckpoint(layout: .wrapperOld) { dir in
            try FileManager.default.removeItem(atPath: dir + "/model-00002-of-00003.safetensors")
            expectError(SafetensorsError.self, mentioning: ["model-00002-of-00003.safetensors", "cannot open"]) {
                _ = try Gemma3Model(directory: dir)
            }
        }
    }

    @Test func indexNamesAMissingTensor() throws {
        try withSyntheticCheckpoint(layout: .wrapperOld) { dir in
            try Self.editIndex(dir) { $0["language_model.model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00003.safetensors" }
            let e = expectError(SafetensorsError.self, mentioning: [Self.index, "language_model.model.layers.9.mlp.up_proj.weight", "missing"]) {
                _ = try Gemma3Model(directory: dir)
            }
            if case .badIndex = e {} else { Issue.record("expected .badIndex, got \(String(describing: e))") }
        }
    }

    @Test func indexPutsATensorInTheWrongShard() throws {
        try withSyntheticCheckpoint(layout: .wrapperOld) { dir in
            try Self.editIndex(dir) { $0["language_model.model.norm.weight"] = "model-00001-of-00003.safetensors" }
            expectError(SafetensorsError.self, mentioning: [Self.index, "language_model.model.norm.weight", "index says"]) {
                _ = try Gemma3Model(directory: dir)
            }
        }
    }

    @Test func malformedIndex() throws {
        try withSyntheticCheckpoint(layout: .wrapperNew) { dir in
            try Data("{\"weight_map\": [1]}".utf8).write(to: URL(fileURLWithPath: dir + "/" + Self.index))
            expectError(SafetensorsError.self, mentioning: [Self.index, "weight_map"]) { _ = try Gemma3Model(directory: dir) }
        }
    }

    @Test func tensorInTwoShards() throws {
        try withSyntheticCheckpoint(layout: .wrapperNew) { dir in
            // Add a copy of the norm into shard 1 (the index keeps naming shard 2 for it).
            let shard1 = dir + "/model-00001-of-00002.safetensors"
            let f = try SafetensorsFile(path: shard1)
            var w = SafetensorsWriter()
            for n in f.names {
                let t = f.tensors[n]!
                w.add(.init(name: n, dtype: t.dtype, shape: t.shape, bytes: Data(bytes: t.data, count: t.byteCount)))
            }
            w.add(.init(name: "model.language_model.norm.weight", shape: [48], floats: [Float](repeating: 0, count: 48)))
            try w.write(to: shard1)
            expectError(SafetensorsError.self, mentioning: ["model.language_model.norm.weight", "more than one shard"]) {
                _ = try Gemma3Model(directory: dir)
            }
        }
    }
}

@Suite struct SyntheticConfigErrorTests {
    /// Decode the default spec's config after `edit`, through the model loader.
    func expectConfigError(dialect: SyntheticDialect = .v4, layout: SyntheticLayout = .flatBF16, mentioning: [String],
                           sourceLocation: SourceLocation = #_sourceLocation,
                           _ edit: @escaping (inout [String: Any]) -> Void) throws {
        try withSyntheticCheckpoint(layout: layout, dialect: dialect, editConfig: edit) { dir in
            let e = expectError(ModelError.self, mentioning: ["config.json"] + mentioning, sourceLocation: sourceLocation) {
                _ = try Gemma3Model(directory: dir)
            }
            if case .config = e {} else { Issue.record("expected .config, got \(String(describing: e))", sourceLocation: sourceLocation) }
        }
    }

    @Test func malformedConfigJSON() throws {
        try withSyntheticCheckpoint { dir in
            try Data("{\"hidden_size\": 48,".utf8).write(to: URL(fileURLWithPath: dir + "/config.json"))
            let e = expectError(ModelError.self, mentioning: ["config.json", "malformed JSON"]) { _ = try Gemma3Model(directory: dir) }
            if case .config = e {} else { Issue.record("expected .config, got \(String(describing: e))") }
        }
    }

    @Test func unknownRopeType() throws {
        try expectConfigError(mentioning: ["rope_scaling.", "rope_type 'yarn'"]) {
            $0["rope_scaling"] = ["rope_type": "yarn", "factor": 8.0]
        }
        try expectConfigError(dialect: .v5, mentioning: ["rope_parameters.full_attention.", "rope_type 'dynamic'"]) {
            $0["rope_parameters"] = ["full_attention": ["rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e6],
                                     "sliding_attention": ["rope_type": "default", "rope_theta": 1e4]]
        }
        try expectConfigError(layout: .wrapperOld, mentioning: ["text_config.rope_scaling.", "rope_type 'llama3'"]) {
            var tc = $0["text_config"] as! [String: Any]
            tc["rope_scaling"] = ["rope_type": "llama3", "factor": 8.0]
            $0["text_config"] = tc
        }
        try expectConfigError(mentioning: ["factor"]) { $0["rope_scaling"] = ["rope_type": "linear"] }
    }

    @Test func unknownHiddenActivation() throws {
        try expectConfigError(mentioning: ["hidden_activation 'relu'", "not supported"]) { $0["hidden_activation"] = "relu" }
        try expectConfigError(layout: .wrapperNew, mentioning: ["text_config.hidden_activation 'silu'"]) {
            var tc = $0["text_config"] as! [String: Any]
            tc["hidden_activation"] = "silu"
            $0["text_config"] = tc
        }
    }

    @Test func headsNotDivisibleByKVHeads() throws {
        try expectConfigError(mentioning: ["num_attention_heads 3", "not a multiple", "num_key_value_heads 2"]) { $0["num_attention_heads"] = 3 }
        try expectConfigError(mentioning: ["num_key_value_heads", "positive"]) { $0["num_key_value_heads"] = 0 }
    }

    @Test func otherInvalidFields() throws {
        try expectConfigError(mentioning: ["layer_types", "5 entries"], { $0["layer_types"] = Array(repeating: "full_attention", count: 5) })
        try expectConfigError(mentioning: ["layer_types", "'chunked_attention'"]) {
            $0["layer_types"] = ["chunked_attention"] + Array(repeating: "full_attention", count: 5)
        }
        try expectConfigError(mentioning: ["sliding_window_pattern"]) { $0["sliding_window_pattern"] = 0 }
        try expectConfigError(mentioning: ["hidden_size", "a number"]) { $0["hidden_size"] = "48" }
        try expectConfigError(mentioning: ["head_dim", "an integer"]) { $0["head_dim"] = 16.5 }
        try expectConfigError(mentioning: ["head_dim", "even"]) { $0["head_dim"] = 15 }
        try expectConfigError(mentioning: ["model_type 'llama'"]) { $0["model_type"] = "llama" }
        try expectConfigError(mentioning: ["text_config"]) { $0["model_type"] = "gemma3" }
        try expectConfigError(mentioning: ["attention_bias"]) { $0["attention_bias"] = true }
        try expectConfigError(mentioning: ["query_pre_attn_scalar"]) { $0["query_pre_attn_scalar"] = 0 }
        // JSON booleans and numbers are not interchangeable.
        try expectConfigError(mentioning: ["hidden_size", "a number"]) { $0["hidden_size"] = true }
        try expectConfigError(mentioning: ["tie_word_embeddings", "true or false"]) { $0["tie_word_embeddings"] = 1 }
        try expectConfigError(mentioning: ["rope_scaling", "an object"]) { $0["rope_scaling"] = "linear" }
    }
}

@Suite struct SyntheticInputErrorTests {
    /// Input errors are about the call, not a file: the description names the problem and the limits.
    static func withModel(_ body: (Gemma3Model) throws -> Void) throws {
        try withSyntheticCheckpoint { dir in try body(try Gemma3Model(directory: dir)) }
    }

    @Test func sessionCapacityAboveMaxPositionEmbeddings() throws {
        try Self.withModel { model in
            expectError(ModelError.self, mentioning: ["65 positions", "64", "max_position_embeddings"]) {
                _ = try model.makeSession(capacity: 65)
            }
            expectError(ModelError.self, mentioning: ["capacity", "at least 1"]) { _ = try model.makeSession(capacity: 0) }
            try #expect(model.makeSession(capacity: 64).capacity == 64)
        }
    }

    @Test func promptPastTheSessionCapacity() throws {
        try Self.withModel { model in
            let s = try model.makeSession(capacity: 8)
            expectError(ModelError.self, mentioning: ["9 tokens", "context of 8"]) { try s.forward(ids: Array(0..<9)) }
            #expect(s.position == 0)
            try s.forward(ids: Array(0..<5))
            expectError(ModelError.self, mentioning: ["9 tokens", "context of 8"]) { try s.forward(ids: [1, 2, 3, 4]) }
            // The failed call left the session usable.
            #expect(s.position == 5)
            let fresh = try model.makeSession(capacity: 8)
            let want = try fresh.forward(ids: Array(0..<5) + [1, 2, 3], logits: .all)
            let got = try s.forward(ids: [1, 2, 3], logits: .all)
            #expect(syntheticRelDeviation(got, Array(want[(5 * 96)...])) <= syntheticPathTolerance)
        }
    }

    @Test func emptyInput() throws {
        try Self.withModel { model in
            let s = try model.makeSession(capacity: 8)
            expectError(ModelError.self, mentioning: ["empty input"]) { try s.forward(ids: []) }
            let row = [Float](repeating: 0, count: 48)
            expectError(ModelError.self, mentioning: ["empty input"]) {
                try row.withUnsafeBufferPointer { _ = try s.forward(embeddings: $0.baseAddress!, rows: 0) }
            }
            #expect(s.position == 0)
        }
    }

    @Test func tokenIdOutsideTheVocabulary() throws {
        try Self.withModel { model in
            let s = try model.makeSession(capacity: 8)
            for bad in [96, 1_000_000, -1] {
                expectError(ModelError.self, mentioning: ["token id \(bad)", "outside the vocabulary", "0..<96"]) {
                    try s.forward(ids: [1, bad, 2])
                }
            }
            #expect(s.position == 0)
            expectError(ModelError.self, mentioning: ["token id 96"]) { _ = try model.embed([96]) }
        }
    }

    @Test func hiddenStatesOfATruncatedModel() throws {
        try withSyntheticCheckpoint { dir in
            let s = try Gemma3Model(directory: dir, blocks: 3).makeSession(capacity: 8)
            expectError(ModelError.self, mentioning: ["all 6 blocks"]) { _ = try s.forwardHiddenStates(ids: [1, 2]) }
        }
    }

    @Test func blocksOutOfRangeInForward() throws {
        try Self.withModel { model in
            let s = try model.makeSession(capacity: 8)
            for n in [0, 7] {
                expectError(ModelError.self, mentioning: ["cannot run \(n) blocks", "6 are loaded"]) { try s.forward(ids: [1], blocks: n) }
            }
            #expect(s.position == 0)
        }
    }
}
