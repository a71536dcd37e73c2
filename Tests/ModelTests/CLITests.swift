// The `nla` command end to end: JSON contracts and bad-input behaviour (one line on stderr,
// non-zero exit, no crash, no output file left behind).

import Foundation
import Quant
import Testing
import NLATestSupport

@Suite(.serialized) struct CLITests {
    var model: String { TestModel.directory }

    @Test func tokenizeJSON() throws {
        let r = try CLI.run(["tokenize", "--model", model, "--json", "Hello world"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "{\"ids\":[2,9259,1902]}\n")
        let ns = try CLI.run(["tokenize", "--model", model, "--no-special", "--json", "-"], stdin: "Hello world")
        #expect(ns.stdout == "{\"ids\":[9259,1902]}\n")
    }

    @Test func tokenizeJSONL() throws {
        let dir = CLI.tempDir()
        let f = dir + "/in.jsonl"
        try """
        {"text": "Hello world", "add_special_tokens": false}
        {"text": "Hello world", "add_special_tokens": true}
        {"messages": [{"role": "user", "content": "Hi"}]}
        """.write(toFile: f, atomically: true, encoding: .utf8)
        let r = try CLI.run(["tokenize", "--model", model, "--jsonl", f])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 3)
        #expect(lines[0] == "{\"ids\":[9259,1902]}")
        #expect(lines[1] == "{\"ids\":[2,9259,1902]}")
        #expect(lines[2].hasPrefix("{\"ids\":[2,105,2364,107"))
        try "{not json\n".write(toFile: f, atomically: true, encoding: .utf8)
        expectCleanFailure(try CLI.run(["tokenize", "--model", model, "--jsonl", f]), mentions: ["in.jsonl:1"])
    }

    @Test func generateJSONMatchesGolden() throws {
        let r = try CLI.run(["generate", "--model", model, "--max-new-tokens", "8", "--json", "The quick brown fox"])
        #expect(r.status == 0, "\(r.stderr)")
        let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect((obj["prompt_ids"] as! [Int]) == [2, 818, 3823, 8864, 37423])
        #expect((obj["ids"] as! [Int]) == [38167, 1024, 506, 31770, 4799, 236761, 108, 818])
        #expect(obj["text"] as? String == " jumps over the lazy dog.\n\nThe")
        let byIds = try CLI.run(["generate", "--model", model, "--max-new-tokens", "8", "--json", "--ids", "2,818,3823,8864,37423"])
        #expect(byIds.stdout == r.stdout)
    }

    @Test func generateStopsOnEndOfTurnAndKeepsIt() throws {
        // Sampling with a seed is reproducible, and a stop id ends the ids list.
        let a = try CLI.run(["generate", "--model", model, "--chat", "--temperature", "0.8", "--top-k", "40", "--top-p", "0.9",
                             "--seed", "7", "--max-new-tokens", "40", "--json", "Say hello."])
        let b = try CLI.run(["generate", "--model", model, "--chat", "--temperature", "0.8", "--top-k", "40", "--top-p", "0.9",
                             "--seed", "7", "--max-new-tokens", "40", "--json", "Say hello."])
        #expect(a.status == 0 && a.stdout == b.stdout, "\(a.stderr)")
        let ids = (try JSONSerialization.jsonObject(with: Data(a.stdout.utf8)) as! [String: Any])["ids"] as! [Int]
        #expect(ids.count <= 40)
        for (i, id) in ids.enumerated() where id == 1 || id == 106 { #expect(i == ids.count - 1, "stop id inside the ids") }
    }

    @Test func hiddenWritesTransformersNames() throws {
        let dir = CLI.tempDir()
        let out = dir + "/h.safetensors"
        let r = try CLI.run(["hidden", "--model", model, "--last-logits", "--out", out, "The quick brown fox jumps over the lazy"])
        #expect(r.status == 0, "\(r.stderr)")
        let f = try SafetensorsFile(path: out)
        #expect(f.tensors.count == 19 + 2)
        #expect(try f.tensor("hidden_states.0").shape == [9, 640])
        #expect(try f.tensor("hidden_states.18").shape == [9, 640])
        #expect(try f.tensor("logits").shape == [262144])
        #expect(try f.tensor("input_ids").dtype == .i32)
        // Same numbers as the golden (transformers) file.
        let golden = try SafetensorsFile(path: Fixtures.dir + "/forward_short.safetensors")
        let ref = try golden.tensor("hidden_states").toFloatArray()
        let got12 = try f.tensor("hidden_states.12").toFloatArray()
        let dev = compare(got12, Array(ref[(12 * 9 * 640)..<(13 * 9 * 640)]))
        #expect(dev.cosine >= 0.99999 && dev.relMaxAbs <= 1e-4, "\(dev)")
    }

    @Test func badInputsFailCleanly() throws {
        let dir = CLI.tempDir()
        // Missing model directory.
        expectCleanFailure(try CLI.run(["generate", "--model", dir + "/nope", "hi"]), mentions: ["nope"])
        // A directory without config.json.
        expectCleanFailure(try CLI.run(["generate", "--model", dir, "hi"]), mentions: ["config.json"])
        // Malformed config.json and tokenizer.json in a copy of the model.
        let broken = dir + "/broken"
        try FileManager.default.createDirectory(atPath: broken, withIntermediateDirectories: true)
        for f in ["model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
            try FileManager.default.createSymbolicLink(atPath: broken + "/" + f, withDestinationPath: model + "/" + f)
        }
        try "{\"hidden_size\": 640,".write(toFile: broken + "/config.json", atomically: true, encoding: .utf8)
        expectCleanFailure(try CLI.run(["generate", "--model", broken, "hi"]), mentions: ["config.json", "malformed JSON"])
        try FileManager.default.removeItem(atPath: broken + "/config.json")
        try FileManager.default.copyItem(atPath: model + "/config.json", toPath: broken + "/config.json")
        try FileManager.default.removeItem(atPath: broken + "/tokenizer.json")
        try "[1,2".write(toFile: broken + "/tokenizer.json", atomically: true, encoding: .utf8)
        expectCleanFailure(try CLI.run(["tokenize", "--model", broken, "--json", "hi"]), mentions: ["tokenizer.json"])
        // Truncated weights.
        try FileManager.default.removeItem(atPath: broken + "/tokenizer.json")
        try FileManager.default.createSymbolicLink(atPath: broken + "/tokenizer.json", withDestinationPath: model + "/tokenizer.json")
        try FileManager.default.removeItem(atPath: broken + "/model.safetensors")
        let full = try FileHandle(forReadingFrom: URL(fileURLWithPath: model + "/model.safetensors"))
        let head = try full.read(upToCount: 1 << 20)!
        FileManager.default.createFile(atPath: broken + "/model.safetensors", contents: head)
        expectCleanFailure(try CLI.run(["generate", "--model", broken, "hi"]), mentions: ["model.safetensors", "truncated"])
        // Empty prompt, bad ids, prompt past the context, bad sampling options.
        expectCleanFailure(try CLI.run(["generate", "--model", model, "--ids", "2,abc"]), mentions: ["abc"])
        expectCleanFailure(try CLI.run(["generate", "--model", model, "--ids", "2,999999999"]), mentions: ["999999999"])
        expectCleanFailure(try CLI.run(["generate", "--model", model, "--top-p", "0", "hi"]), mentions: ["top-p"])
        expectCleanFailure(try CLI.run(["hidden", "--model", model, "--no-special", "--out", dir + "/e.safetensors", ""]), mentions: ["empty"])
        #expect(!FileManager.default.fileExists(atPath: dir + "/e.safetensors"))
        let long = String(repeating: "word ", count: 33_000)
        expectCleanFailure(try CLI.run(["hidden", "--model", model, "--out", dir + "/l.safetensors", "-"], stdin: long),
                           mentions: ["context"])
        #expect(!FileManager.default.fileExists(atPath: dir + "/l.safetensors"))
    }

    // MARK: the inputs probed in the second round (issue 11)

    /// Probe: `tokenize --jsonl` accepted duplicate keys, unknown (misspelt) keys, 'text' together with
    /// 'messages', unknown message keys, and a TEXT argument it then ignored.
    @Test func tokenizeJSONLRefusesAmbiguousLines() throws {
        let dir = CLI.tempDir()
        func jsonl(_ line: String) throws -> String {
            let p = dir + "/in-\(UUID().uuidString).jsonl"
            try ("{\"text\": \"ok\"}\n" + line + "\n").write(toFile: p, atomically: true, encoding: .utf8)
            return p
        }
        for (line, mention) in [(#"{"text": "a", "text": "b"}"#, "duplicate key 'text'"),
                                (#"{"text": "a", "add_special_token": false}"#, "unknown key 'add_special_token'"),
                                (#"{"text": "a", "messages": [{"role": "user", "content": "hi"}]}"#, "'messages' goes alone"),
                                (#"{"messages": [{"role": "user", "content": "hi", "name": "x"}]}"#, "messages[0]: unknown key 'name'"),
                                (#"{"messages": []}"#, "no messages")] {
            let p = try jsonl(line)
            expectCleanFailure(try CLI.run(["tokenize", "--model", model, "--jsonl", p]), mentions: [p + ":2", mention])
            // Standard input is named as such, with the line.
            expectCleanFailure(try CLI.run(["tokenize", "--model", model, "--jsonl", "-"], stdin: try String(contentsOfFile: p, encoding: .utf8)),
                               mentions: ["standard input:2", mention])
        }
        let ok = try jsonl(#"{"text": "Hello world", "add_special_tokens": false}"#)
        let r = try CLI.run(["tokenize", "--model", model, "--jsonl", ok])
        let okIds = try CLI.run(["tokenize", "--model", model, "--json", "ok"]).stdout
        #expect(r.status == 0 && r.stdout == okIds + "{\"ids\":[9259,1902]}\n", "\(r.stdout) \(r.stderr)")
        expectCleanFailure(try CLI.run(["tokenize", "--model", model, "--jsonl", ok, "hi"]), mentions: ["--jsonl", "TEXT"])
        expectCleanFailure(try CLI.run(["tokenize", "--model", model, "--jsonl", ok, "--chat"]), mentions: ["--jsonl", "--chat"])
    }

    /// Probe: a bos_token in the model's tokenizer_config.json that is no token was rendered by the chat
    /// template as plain text (`tokenize --chat` gave 7 text pieces instead of <bos>).
    @Test func modelWithABosTokenThatIsNoTokenIsRefused() throws {
        let dir = CLI.tempDir()
        for f in ["config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "special_tokens_map.json"] {
            try FileManager.default.createSymbolicLink(atPath: dir + "/" + f, withDestinationPath: model + "/" + f)
        }
        var cfg = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: model + "/tokenizer_config.json"))) as? [String: Any])
        cfg["bos_token"] = "zzz-not-a-token"
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: dir + "/tokenizer_config.json"))
        expectCleanFailure(try CLI.run(["tokenize", "--model", dir, "--chat", "--json", "hi"]),
                           mentions: ["tokenizer_config.json", "bos_token", "zzz-not-a-token", "is not a token"])
    }

    /// Probe: a negative number where an option expects one (`--threads -1`) reads as an unknown option;
    /// ArgumentParser printed three lines (error, help, usage). Every command-line error is one line now.
    @Test func commandLineErrorsAreOneLine() throws {
        for args in [["explain", "--target", "t", "--av", "a", "--ar", "r", "--threads", "-1", "hi"],
                     ["tokenize", "--bogus"], ["score", "--ar", "r", "--json"], ["explain", "--positions", "-3", "hi"]] {
            let r = try CLI.run(args)
            #expect(r.status == 64, "\(args): status \(r.status)")
            let lines = r.stderr.split(separator: "\n")
            #expect(lines.count == 1 && r.stderr.hasPrefix("nla: ") && r.stderr.contains("nla help"), "\(args): \(r.stderr)")
        }
        let help = try CLI.run(["explain", "--help"])
        #expect(help.status == 0 && help.stdout.lowercased().contains("usage"), "\(help.stdout)")
    }

    /// Probe: `--fve-baseline 0 / -1 / nan / inf` (explain, score, fidelity) reached the JSON writer (a two-line
    /// encoder error, or exit 64 for -1); fidelity thresholds NaN or > 1 always failed, < -1 always passed;
    /// fidelity pairs with `true` for a number or a duplicate key were read.
    @Test func nlaCommandNumbersAndPairsAreChecked() throws {
        let dir = CLI.tempDir()
        for b in ["0", "-1", "nan", "inf"] {
            expectCleanFailure(try CLI.run(["explain", "--target", "t", "--av", "a", "--ar", "r", "--fve-baseline=\(b)", "hi"]),
                               mentions: ["--fve-baseline", "positive finite"])
            expectCleanFailure(try CLI.run(["score", "--ar", "r", "--gold", "g.npy", "--fve-baseline=\(b)", "x"]),
                               mentions: ["--fve-baseline", "positive finite"])
            expectCleanFailure(try CLI.run(["fidelity", "--ar", "r", "--ar-quant", "q.gguf", "--pairs", "p.jsonl", "--fve-baseline=\(b)"]),
                               mentions: ["--fve-baseline", "positive finite"])
        }
        for (flag, v) in [("--min-cos-q8", "nan"), ("--min-cos-q8", "2"), ("--min-cos-q4", "-5")] {
            expectCleanFailure(try CLI.run(["fidelity", "--ar", "r", "--ar-quant", "q.gguf", "--pairs", "p.jsonl", "\(flag)=\(v)"]),
                               mentions: [flag, "[-1, 1]"])
        }
        let vec = (0..<640).map { _ in "0.5" }.joined(separator: ", ")
        for (line, mention) in [("{\"explanation\": \"x\", \"activation_vector\": [true, \(vec)]}", "'activation_vector'[0] is not a number"),
                                ("{\"explanation\": \"x\", \"explanation\": \"y\", \"activation_vector\": [\(vec)]}", "duplicate key 'explanation'")] {
            let p = dir + "/pairs-\(UUID().uuidString).jsonl"
            try (line + "\n").write(toFile: p, atomically: true, encoding: .utf8)
            expectCleanFailure(try CLI.run(["fidelity", "--ar", "r", "--ar-quant", "q.gguf", "--pairs", p]), mentions: [p, "line 1", mention])
        }
        // Probe: --pairs with --target/--prompt silently ignored the latter; --max-pairs 0 blamed the prompt.
        expectCleanFailure(try CLI.run(["fidelity", "--ar", "r", "--ar-quant", "q.gguf", "--pairs", "p.jsonl", "--target", "t", "--prompt", "hi"]),
                           mentions: ["--pairs", "--target"])
        expectCleanFailure(try CLI.run(["fidelity", "--ar", "r", "--ar-quant", "q.gguf", "--target", "t", "--av", "a", "--prompt", "hi", "--max-pairs", "0"]),
                           mentions: ["--max-pairs", ">= 1"])
        expectCleanFailure(try CLI.run(["explain", "--target", "t", "--av", "a", "--ar", "r", "--positions", "", "hi"]),
                           mentions: ["--positions", "lists no position"])
    }

    /// Probe: `kld` with an NLA AR (blocks 0…K, no final norm) on either side crashed (SIGBUS / SIGSEGV), and so
    /// did `generate` / `hidden` on the AR; `--threads 100000` started threads until the machine's limit;
    /// `bench --batch 1000000000` aborted in the allocator.
    @Test func modelsWithoutLogitsAndHugeCountsAreRefused() throws {
        try FidelityDemo.require()
        let ar = FidelityDemo.ar
        let dir = CLI.tempDir()
        let text = dir + "/t.txt"
        try "The quick brown fox.".write(toFile: text, atomically: true, encoding: .utf8)
        expectCleanFailure(try CLI.run(["kld", "--model", model, "--model-q", ar, "--text-file", text]), mentions: [ar, "final norm"])
        expectCleanFailure(try CLI.run(["kld", "--model", ar, "--model-q", model, "--text-file", text]), mentions: [ar, "final norm"])
        expectCleanFailure(try CLI.run(["generate", "--model", ar, "--max-new-tokens", "2", "hi"]), mentions: [ar, "next-token logits"])
        expectCleanFailure(try CLI.run(["hidden", "--model", ar, "--out", dir + "/h.safetensors", "hi"]), mentions: [ar, "next-token logits"])
        #expect(!FileManager.default.fileExists(atPath: dir + "/h.safetensors"))
        expectCleanFailure(try CLI.run(["bench", "--model", model, "--prompt-tokens", "8", "--decode-tokens", "2", "--threads", "100000"]),
                           mentions: ["--threads", "100000"])
        expectCleanFailure(try CLI.run(["kld", "--model", model, "--model-q", model, "--text-file", text, "--threads", "5000"]),
                           mentions: ["--threads", "5000"])
        expectCleanFailure(try CLI.run(["bench", "--model", model, "--prompt-tokens", "8", "--decode-tokens", "2", "--batch", "1000000000"]),
                           mentions: ["--batch 1000000000", "GB of KV cache"])
    }
}
