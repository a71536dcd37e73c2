// The quantized path on the real Gemma 3 270M: files made by `quantize` in the test run, judged against
// the f32 path (which the golden tests tie to transformers).

import Foundation
import Quant
import Testing
import NLATestSupport
@testable import NLARuntime

/// Q8_0 and Q4_0 files of the test model, made once per test run with the same code as `quantize`.
enum QuantizedTestModels {
    static let dir: String = TestPaths.processScratch("quant")

    static let q8: Result<String, Error> = Result { try make(.q8_0) }
    static let q4: Result<String, Error> = Result { try make(.q4_0) }

    static func make(_ type: QuantType) throws -> String {
        _ = try TestModel.load()
        let out = dir + "/gemma-3-270m-\(type.traits.name.lowercased()).gguf"
        _ = try Converter.convert(input: TestModel.directory, output: out, policy: QuantizePolicy(target: type))
        return out
    }

    static func path(_ type: QuantType) throws -> String {
        try (type == .q8_0 ? q8 : q4).get()
    }
}

@Suite(.serialized) struct QuantizedModelTests {
    /// tokenizer.json (33 MB) is parsed once and not held by a loaded model; a GGUF's copy of it sat in
    /// memory twice before (metadata string and Data), and the header pages may leave the resident set.
    @Test func aLoadedModelDoesNotKeepTokenizerJSONAndStillTokenizes() throws {
        let dir = TestModel.directory
        let gguf = try QuantizedTestModels.path(.q8_0)
        do {
            // The opened files have it (the tokenizer is built from them) ...
            #expect(try ModelFiles.open(dir).files["tokenizer.json"] != nil)
            #expect(try ModelFiles.open(gguf).files["tokenizer.json"] != nil)
            let fromDir = try LanguageModel(directory: dir)
            let fromGGUF = try LanguageModel(directory: gguf)
            // ... the loaded models do not.
            #expect(fromDir.files.files["tokenizer.json"] == nil)
            #expect(fromGGUF.files.files["tokenizer.json"] == nil)
            // The rest of the embedded files stay (generation config, tokenizer config).
            #expect(fromGGUF.files.files["tokenizer_config.json"] != nil)
            let text = "Hello world, the quick brown fox."
            let ids = fromDir.tokenizer.encode(text, addSpecialTokens: true)
            #expect(ids.count > 2)
            #expect(fromGGUF.tokenizer.encode(text, addSpecialTokens: true) == ids)
            #expect(try Tokenizer(modelPath: dir).encode(text, addSpecialTokens: true) == ids)
            // And the model runs on those ids after its header pages were released.
            let a = try fromDir.session(for: ids).forward(ids: ids)
            let b = try fromGGUF.session(for: ids).forward(ids: ids)
            #expect(a.count == fromDir.config.vocabSize && b.count == a.count)
            #expect(a.indices.max(by: { a[$0] < a[$1] }) == b.indices.max(by: { b[$0] < b[$1] }))
        }
    }

    @Test func ggufContainsTheWholeModel() throws {
        let path = try QuantizedTestModels.path(.q8_0)
        let g = try GGUFFile(path: path)
        #expect(g.metadata["general.architecture"]?.stringValue == "gemma3")
        for f in ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"] {
            #expect(g.metadata[GGUFKeys.filePrefix + f]?.stringValue?.isEmpty == false, "\(f) missing")
        }
        #expect(try g.tensor("model.embed_tokens.weight").type == .q8_0)
        #expect(try g.tensor("model.layers.0.mlp.gate_proj.weight").type == .q8_0)
        #expect(try g.tensor("model.layers.0.mlp.gate_proj.weight").shape == [2048, 640])
        #expect(try g.tensor("model.norm.weight").type == .f32)
        // Norms are stored as in the checkpoint (no +1 applied): the (1 + w) rule lives in the loader only.
        let ref = try SafetensorsFile(path: TestModel.directory + "/model.safetensors").tensor("model.norm.weight").toFloatArray()
        #expect(try g.tensor("model.norm.weight").toFloatArray() == ref)
        let q4 = try GGUFFile(path: try QuantizedTestModels.path(.q4_0))
        #expect(try q4.tensor("model.layers.3.self_attn.o_proj.weight").type == .q4_0)
        #expect(try q4.tensor("model.embed_tokens.weight").type == .q8_0)
    }

    @Test func ggufOpensWithTheGGUFPythonPackage() throws {
        let python = NLACache.python
        guard FileManager.default.isExecutableFile(atPath: python) else {
            Issue.record("no venv python at \(python): run `make test-model`")
            return
        }
        let path = try QuantizedTestModels.path(.q4_0)
        let outDir = CLI.tempDir()
        // The gguf package reads our file; it writes each tensor's bytes as it sees them for comparison.
        let script = """
        import sys, gguf
        r = gguf.GGUFReader(sys.argv[1])
        for i, name in enumerate(["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.norm.weight"]):
            t = next(t for t in r.tensors if t.name == name)
            print(name, t.tensor_type.name, list(map(int, t.shape)))
            open(f"{sys.argv[2]}/{i}.bin", "wb").write(t.data.tobytes())
        print("arch", r.fields["general.architecture"].contents())
        """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = ["-c", script, path, outDir]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
        let g = try GGUFFile(path: path)
        for (i, name) in ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.norm.weight"].enumerated() {
            let t = try g.tensor(name)
            let expected = "\(name) \(t.type.traits.name) \(t.ggufDims)"
            #expect(lines.count > i && lines[i] == expected, "\(lines) vs \(expected)")
            let seen = try Data(contentsOf: URL(fileURLWithPath: "\(outDir)/\(i).bin"))
            #expect(seen == Data(t.bytes), "\(name): bytes differ")
        }
        #expect(lines.last == "arch gemma3")
    }

    @Test(arguments: [QuantType.q8_0, .q4_0])
    func greedyGenerationsAgainstF32(type: QuantType) throws {
        let ref = try TestModel.load()
        let q = try LanguageModel(directory: try QuantizedTestModels.path(type))
        let g = try Fixtures.json("generation.json")
        var identical = 0
        for p in g["prompts"] as! [[String: Any]] {
            let promptIds = (p["prompt_ids"] as! [NSNumber]).map(\.intValue)
            let refIds = try ref.session(for: promptIds, extra: 32)
                .generate(promptIds: promptIds, options: SamplingOptions(maxNewTokens: 32), stopIds: Set(ref.generation.eosTokenIds)).ids
            let qIds = try q.session(for: promptIds, extra: 32)
                .generate(promptIds: promptIds, options: SamplingOptions(maxNewTokens: 32), stopIds: Set(q.generation.eosTokenIds)).ids
            if qIds == refIds { identical += 1 }
        }
        report("greedy 32-token agreement \(type.traits.name) vs f32: \(identical)/5")
        if type == .q8_0 { #expect(identical >= 4, "Q8_0 greedy agreement \(identical)/5") }
    }

    /// Bounds set from measurement (README: "Quantization quality"; measured on kld.txt, 320 positions:
    /// Q8_0 mean KLD 0.0007, top-1 0.984, hidden cos 0.99986; Q4_0 0.347, 0.675, 0.925), with headroom
    /// for kernel changes: they catch a broken quantized path, not small drifts.
    @Test(arguments: [(QuantType.q8_0, 0.005, 0.95, 0.9995), (.q4_0, 0.5, 0.6, 0.9)])
    func divergenceFromF32OnTheKLDText(type: QuantType, maxMeanKLD: Double, minTop1: Double, minHiddenCos: Double) throws {
        let ref = try TestModel.load()
        let q = try LanguageModel(directory: try QuantizedTestModels.path(type))
        let text = try String(contentsOfFile: Fixtures.dir + "/kld.txt", encoding: .utf8)
        let ids = ref.tokenizer.encode(text)
        let r = try Divergence.compare(reference: ref.model, quantized: q.model, ids: ids)
        report("kld \(type.traits.name): positions \(r.positions) mean \(r.meanKLD) p99 \(r.p99KLD) top1 \(r.top1Agreement) hidden cos \(r.meanHiddenCos)")
        #expect(r.positions == ids.count)
        #expect(r.meanKLD <= maxMeanKLD)
        #expect(r.top1Agreement >= minTop1)
        #expect(r.meanHiddenCos >= minHiddenCos)
    }

    @Test func interruptedQuantizeLeavesNoFile() throws {
        _ = try TestModel.load()
        let dir = CLI.tempDir()
        let out = dir + "/out.gguf"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLI.binary.replacingOccurrences(of: "/nla", with: "/quantize", options: .backwards))
        p.arguments = [TestModel.directory, out, "--type", "q4_0", "--threads", "1"]
        p.standardError = FileHandle.nullDevice
        try p.run()
        // Wait until the temporary file exists (writing has started), then interrupt.
        let deadline = Date().addingTimeInterval(30)
        var sawTemp = false
        while Date() < deadline && p.isRunning {
            let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
            if files.contains(where: { $0.hasPrefix("out.gguf.tmp-") }) { sawTemp = true; break }
            usleep(2000)
        }
        #expect(sawTemp, "quantize finished or failed before it could be interrupted")
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        #expect(p.terminationStatus != 0)
        let left = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        #expect(left.isEmpty, "left behind: \(left)")
    }

    @Test func truncatedOrCorruptGGUFIsAClearError() throws {
        let src = try QuantizedTestModels.path(.q8_0)
        let dir = CLI.tempDir()
        let data = try Data(contentsOf: URL(fileURLWithPath: src))
        let cut = dir + "/cut.gguf"
        try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: cut))
        expectCleanFailure(try CLI.run(["generate", "--model", cut, "hi"]), mentions: ["cut.gguf"])
        var bad = data.prefix(4096)
        bad[0] = 0x58
        let corrupt = dir + "/corrupt.gguf"
        try bad.write(to: URL(fileURLWithPath: corrupt))
        expectCleanFailure(try CLI.run(["tokenize", "--model", corrupt, "--json", "hi"]), mentions: ["corrupt.gguf"])
    }

    @Test func quantizeRefusesBadInput() throws {
        let dir = CLI.tempDir()
        func run(_ args: [String]) throws -> CLIResult { try CLI.run(args, executable: TestPaths.quantizeBinary) }
        let r1 = try run([dir + "/missing", dir + "/o.gguf", "--type", "q8_0"])
        #expect(r1.status == 1 && r1.stderr.contains("missing"))
        let r2 = try run([TestModel.directory, dir + "/o.gguf", "--type", "q3_k"])
        #expect(r2.status == 1 && r2.stderr.contains("q3_k"), "\(r2.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/o.gguf"))
    }
}

