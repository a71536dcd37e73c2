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
}
