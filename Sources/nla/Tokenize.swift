import ArgumentParser
import Foundation
import NLARuntime

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
                let data = jsonl == "-" ? FileHandle.standardInput.readDataToEndOfFile() : FileManager.default.contents(atPath: jsonl)
                guard let data else { throw ModelError.input("\(jsonl): cannot read file") }
                guard let content = String(data: data, encoding: .utf8) else { throw ModelError.input("\(jsonl): not valid UTF-8") }
                var outLines: [String] = []
                for (n, line) in content.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                    let l = line.trimmingCharacters(in: .whitespaces)
                    if l.isEmpty { continue }
                    guard let obj = (try? JSONSerialization.jsonObject(with: Data(l.utf8))) as? [String: Any] else {
                        throw ModelError.input("\(jsonl):\(n + 1): not a JSON object")
                    }
                    let ids: [Int]
                    if obj["messages"] != nil {
                        guard let msgs = obj["messages"] as? [[String: Any]] else {
                            throw ModelError.input("\(jsonl):\(n + 1): 'messages' must be an array of objects")
                        }
                        let m = try msgs.map { m -> ChatMessage in
                            guard let r = m["role"] as? String, let c = m["content"] as? String else {
                                throw ModelError.input("\(jsonl):\(n + 1): each message needs string 'role' and 'content'")
                            }
                            return ChatMessage(role: r, content: c)
                        }
                        ids = try tokenizer.encodeChat(m, addGenerationPrompt: true)
                    } else if obj["text"] != nil {
                        guard let t = obj["text"] as? String else { throw ModelError.input("\(jsonl):\(n + 1): 'text' must be a string") }
                        var special = true
                        if let v = obj["add_special_tokens"], !(v is NSNull) {
                            guard let b = v as? NSNumber, type(of: b) == type(of: NSNumber(value: true)) else {  // a JSON boolean, not 0/1
                                throw ModelError.input("\(jsonl):\(n + 1): 'add_special_tokens' must be true or false")
                            }
                            special = b.boolValue
                        }
                        ids = tokenizer.encode(t, addSpecialTokens: special)
                    } else {
                        throw ModelError.input("\(jsonl):\(n + 1): needs 'text' or 'messages'")
                    }
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
