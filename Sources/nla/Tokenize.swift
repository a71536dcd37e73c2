import ArgumentParser
import Foundation
import NLARuntime
import Quant

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Tokenize text (or a JSONL batch) and print the ids.")

    @OptionGroup var options: ModelOptions
    @Flag(help: "Render TEXT as one user message of the chat template, with the generation prompt.") var chat = false
    @Flag(name: .customLong("no-special"), help: "Do not add special tokens (<bos>).") var noSpecial = false
    @Flag(help: "Print {\"ids\":[...]} (the default output is one id per space).") var json = false
    @Option(help: "Batch mode: each line {\"text\":..,\"add_special_tokens\":bool} or {\"messages\":[...]}.") var jsonl: String?
    @Argument(help: "Text to tokenize (- reads standard input).") var text: String?

    func run() throws {
        try runReportingErrors {
            try options.validateThreads()
            let tokenizer = try Tokenizer(modelPath: options.model)
            if let jsonl {
                guard text == nil, !chat, !noSpecial else {
                    throw ModelError.input("--jsonl reads every text and its options from the file: no TEXT, --chat or --no-special with it")
                }
                let label = jsonl == "-" ? "standard input" : jsonl
                let data = jsonl == "-" ? FileHandle.standardInput.readDataToEndOfFile() : FileManager.default.contents(atPath: jsonl)
                guard let data else { throw ModelError.input("\(jsonl): cannot read file") }
                guard let content = String(data: data, encoding: .utf8) else { throw ModelError.input("\(label): not valid UTF-8") }
                var outLines: [String] = []
                for (n, line) in content.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                    let l = line.trimmingCharacters(in: .whitespaces)
                    if l.isEmpty { continue }
                    let at = "\(label):\(n + 1)"
                    let ids = try tokenizeJSONLLine(l, at: at, tokenizer: tokenizer)
                    let d = try JSONSerialization.data(withJSONObject: ["ids": ids])
                    outLines.append(String(decoding: d, as: UTF8.self))
                }
                writeStdout(outLines.map { $0 + "\n" }.joined())
                return
            }
            let s = try readText(text)
            let ids = chat ? try tokenizer.encodeChat([ChatMessage(role: "user", content: s)], addGenerationPrompt: true)
                           : tokenizer.encode(s, addSpecialTokens: !noSpecial)
            if json { try printJSON(["ids": ids]) } else { writeStdout(ids.map(String.init).joined(separator: " ") + "\n") }
        }
    }
}

/// One `tokenize --jsonl` line: `{"text": .., "add_special_tokens": bool}` or `{"messages": [{"role", "content"}, ...]}`,
/// nothing else (an unknown or misspelt key, a duplicate key, or both forms at once is an error naming `at`).
func tokenizeJSONLLine(_ line: String, at: String, tokenizer: Tokenizer) throws -> [Int] {
    let bytes = Data(line.utf8)
    guard let obj = (try? JSONSerialization.jsonObject(with: bytes)) as? [String: Any] else {
        throw ModelError.input("\(at): not a JSON object")
    }
    if let dup = JSONDuplicateKeys.first(in: bytes) { throw ModelError.input("\(at): duplicate key '\(oneLineMessage(dup))'") }
    if let unknown = obj.keys.sorted().first(where: { !["text", "add_special_tokens", "messages"].contains($0) }) {
        throw ModelError.input("\(at): unknown key '\(oneLineMessage(unknown))' (expected 'text' and 'add_special_tokens', or 'messages')")
    }
    if obj["messages"] != nil {
        guard obj["text"] == nil, obj["add_special_tokens"] == nil else {
            throw ModelError.input("\(at): 'messages' goes alone (no 'text' or 'add_special_tokens' with it)")
        }
        guard let msgs = obj["messages"] as? [[String: Any]] else {
            throw ModelError.input("\(at): 'messages' must be an array of objects")
        }
        let m = try msgs.enumerated().map { i, m -> ChatMessage in
            if let unknown = m.keys.sorted().first(where: { $0 != "role" && $0 != "content" }) {
                throw ModelError.input("\(at): messages[\(i)]: unknown key '\(oneLineMessage(unknown))' (expected 'role' and 'content')")
            }
            guard let r = m["role"] as? String, let c = m["content"] as? String else {
                throw ModelError.input("\(at): each message needs string 'role' and 'content'")
            }
            return ChatMessage(role: r, content: c)
        }
        do { return try tokenizer.encodeChat(m, addGenerationPrompt: true) } catch { throw ModelError.input("\(at): \(error)") }
    }
    guard obj["text"] != nil else { throw ModelError.input("\(at): needs 'text' or 'messages'") }
    guard let t = obj["text"] as? String else { throw ModelError.input("\(at): 'text' must be a string") }
    var special = true
    if let v = obj["add_special_tokens"], !(v is NSNull) {
        guard let b = v as? NSNumber, jsonIsBool(b) else {  // a JSON boolean, not 0/1
            throw ModelError.input("\(at): 'add_special_tokens' must be true or false")
        }
        special = b.boolValue
    }
    return tokenizer.encode(t, addSpecialTokens: special)
}
