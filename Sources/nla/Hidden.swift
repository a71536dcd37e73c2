import ArgumentParser
import Foundation
import NLARuntime
import Quant

struct Hidden: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a forward pass and write hidden states and logits to a safetensors file (transformers naming).")

    @OptionGroup var options: ModelOptions
    @Flag(help: "Render TEXT as one user message of the chat template.") var chat = false
    @Flag(name: .customLong("no-special"), help: "Do not add <bos>.") var noSpecial = false
    @Option(help: "Input as comma-separated token ids instead of text.") var ids: String?
    @Flag(name: .customLong("last-logits"), help: "Store only the last position's logits ([vocab]).") var lastLogits = false
    @Option(help: "Output .safetensors file.") var out: String
    @Argument(help: "Input text (- reads standard input).") var text: String?

    func run() throws {
        try runReportingErrors {
            try options.validateThreads()
            guard out.hasSuffix(".safetensors") else { throw ModelError.input("--out must name a .safetensors file") }
            let lm = try LanguageModel(directory: options.model)
            try requireLogits(lm, options.model)
            let inputIds: [Int]
            if let ids {
                if text != nil { throw ModelError.input("give either --ids or TEXT, not both") }
                inputIds = try parseIds(ids)
            } else {
                inputIds = try lm.promptIds(try readText(text), chat: chat, addSpecialTokens: !noSpecial)
            }
            let session = try lm.session(for: inputIds)
            let cfg = lm.config
            let n = cfg.numHiddenLayers, d = cfg.hiddenSize, t = inputIds.count
            let hs = try session.forwardHiddenStates(ids: inputIds, logits: lastLogits ? .last : .all)
            let states = hs.states, logits = hs.logits
            var w = SafetensorsWriter()
            for (i, s) in states.enumerated() { w.add(.init(name: "hidden_states.\(i)", shape: [t, d], floats: s)) }
            w.add(.init(name: "logits", shape: lastLogits ? [cfg.vocabSize] : [t, cfg.vocabSize], floats: logits))
            w.add(.init(name: "input_ids", shape: [t], int32s: inputIds.map { Int32($0) }))
            try w.write(to: out)
            log("wrote \(out): \(n + 1) hidden states [\(t), \(d)], logits \(lastLogits ? "[\(cfg.vocabSize)]" : "[\(t), \(cfg.vocabSize)]")")
        }
    }
}
