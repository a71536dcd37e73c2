import ArgumentParser
import Foundation
import NLARuntime

struct SamplingArguments: ParsableArguments {
    @Option(name: .customLong("max-new-tokens"), help: "Maximum number of new tokens.") var maxNewTokens: Int = 128
    @Option(help: "Sampling temperature; 0 = greedy.") var temperature: Float = 0
    @Option(name: .customLong("top-k"), help: "Keep the K most likely tokens (0 = off).") var topK: Int = 0
    @Option(name: .customLong("top-p"), help: "Nucleus sampling mass (1 = off).") var topP: Float = 1
    @Option(help: "Random seed for sampling.") var seed: UInt64 = 0

    var sampling: SamplingOptions {
        SamplingOptions(temperature: temperature, topK: topK, topP: topP, seed: seed, maxNewTokens: maxNewTokens)
    }
}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Generate text from a prompt (streams to stdout, or one JSON object with --json).")

    @OptionGroup var options: ModelOptions
    @OptionGroup var samplingArgs: SamplingArguments
    @Flag(help: "Render PROMPT as one user message of the chat template.") var chat = false
    @Option(help: "Prompt as comma-separated token ids instead of text.") var ids: String?
    @Flag(help: "Print {\"prompt_ids\",\"ids\",\"text\"} instead of streaming.") var json = false
    @Argument(help: "Prompt text (- reads standard input).") var prompt: String?

    func run() throws {
        try runReportingErrors {
            try options.validateThreads()
            let sampling = samplingArgs.sampling
            try sampling.validate()
            let lm = try LanguageModel(directory: options.model)
            try requireLogits(lm, options.model)
            let promptIds: [Int]
            if let ids {
                if prompt != nil { throw ModelError.input("give either --ids or a PROMPT, not both") }
                promptIds = try parseIds(ids)
            } else {
                promptIds = try lm.promptIds(try readText(prompt), chat: chat)
            }
            let session = try lm.session(for: promptIds, extra: sampling.maxNewTokens)
            var streamer = TextStreamer()
            let result = try session.generate(promptIds: promptIds, options: sampling, stopIds: Set(lm.generation.eosTokenIds)) { id in
                if !json {
                    if lm.generation.eosTokenIds.contains(id) { return }
                    writeStdout(streamer.push(id, tokenizer: lm.tokenizer))
                }
            }
            let textIds = result.stoppedOnEOS ? Array(result.ids.dropLast()) : result.ids
            let text = lm.tokenizer.decode(textIds)
            if json {
                try printJSON(["prompt_ids": result.promptIds, "ids": result.ids, "text": text])
            } else {
                writeStdout("\n")
            }
        }
    }
}

struct Chat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Chat with the model: one answer to MESSAGE, or an interactive session when no MESSAGE is given.")

    @OptionGroup var options: ModelOptions
    @OptionGroup var samplingArgs: SamplingArguments
    @Option(help: "System prompt (folded into the first user turn, as Gemma 3 does).") var system: String?
    @Argument(help: "A message; without it, read messages from standard input until EOF.") var message: String?

    func run() throws {
        try runReportingErrors {
            try options.validateThreads()
            let sampling = samplingArgs.sampling
            try sampling.validate()
            let lm = try LanguageModel(directory: options.model)
            try requireLogits(lm, options.model)
            var history: [ChatMessage] = []
            if let system { history.append(ChatMessage(role: "system", content: system)) }
            func answer(_ text: String) throws {
                history.append(ChatMessage(role: "user", content: text))
                let ids = try lm.tokenizer.encodeChat(history, addGenerationPrompt: true)
                let session = try lm.session(for: ids, extra: sampling.maxNewTokens)
                var streamer = TextStreamer()
                let stop = Set(lm.generation.eosTokenIds)
                let r = try session.generate(promptIds: ids, options: sampling, stopIds: stop) { id in
                    if !stop.contains(id) { writeStdout(streamer.push(id, tokenizer: lm.tokenizer)) }
                }
                writeStdout("\n")
                let reply = lm.tokenizer.decode(r.stoppedOnEOS ? Array(r.ids.dropLast()) : r.ids)
                history.append(ChatMessage(role: "assistant", content: reply))
            }
            if let message {
                try answer(try readText(message))
                return
            }
            let interactive = isatty(0) != 0
            while true {
                if interactive { writeStdout("> ") }
                guard let line = readLine() else { break }
                let t = line.trimmingCharacters(in: .whitespaces)
                if t.isEmpty { continue }
                try answer(t)
            }
        }
    }
}
