// `nla imatrix --model M --text-file F --out F.imatrix.safetensors`: the importance matrix for `quantize --imatrix`.

import ArgumentParser
import Foundation
import NLARuntime
import SIMDKernels

struct ImatrixCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "imatrix",
        abstract: "Per linear layer, the mean squared input activation per input channel over a calibration text.",
        discussion: """
        The text is split into paragraphs at blank lines; each paragraph runs as its own sequence (BOS + plain \
        tokenization, at most --max-tokens tokens). Calibrate a model on the inputs it will see: for an NLA AR, \
        a file of explanation texts in the AR's prompt form; for an AV, its prompt and explanations; for a base \
        model, ordinary prose (Tests/Fixtures/calibration.txt). Never calibrate on an evaluation text.
        """)

    @Option(help: "Model (directory or .gguf); the f32 reference is the usual choice.") var model: String
    @Option(name: .customLong("text-file"), help: "Calibration text (UTF-8).") var textFile: String
    @Option(help: "Output .safetensors file.") var out: String
    @Option(name: .customLong("max-tokens"), help: "Longest sequence (longer paragraphs are cut).") var maxTokens: Int = 512
    @Option(help: "Threads (0 = all cores).") var threads: Int = 0
    @Flag(help: "Also store each layer input's Hessian (mean x·xᵀ) for `quantize --gptq` (large: in² floats per input).")
    var hessian = false

    func run() throws {
        try runReportingErrors {
            try applyThreadsFlag(threads)
            guard maxTokens >= 2 else { throw ModelError.input("--max-tokens must be >= 2") }
            guard out.hasSuffix(".safetensors") else { throw ModelError.input("\(out): the output file must end in .safetensors") }
            guard let data = FileManager.default.contents(atPath: textFile) else { throw ModelError.input("\(textFile): cannot read file") }
            guard let text = String(data: data, encoding: .utf8) else { throw ModelError.input("\(textFile): not valid UTF-8") }
            let paragraphs = text.components(separatedBy: "\n\n").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty }
            guard !paragraphs.isEmpty else { throw ModelError.input("\(textFile): no text") }
            let lm = try LanguageModel(directory: model)
            let collector = ImatrixCollector(model: lm.model, hessian: hessian)
            let start = Date()
            for (i, p) in paragraphs.enumerated() {
                var ids = lm.tokenizer.encode(p)
                if ids.count > maxTokens { ids = Array(ids[0..<maxTokens]) }
                try collector.observe(ids: ids)
                if isatty(2) != 0 {
                    FileHandle.standardError.write(Data("\rimatrix: \(i + 1)/\(paragraphs.count) sequences, \(collector.tokens) tokens".utf8))
                }
            }
            if isatty(2) != 0 { FileHandle.standardError.write(Data("\n".utf8)) }
            try collector.write(to: out, textSHA256: sha256Hex(data))
            FileHandle.standardError.write(Data(String(format: "wrote %@: %d linear layers, %d tokens in %d sequences (%.1f s)\n",
                                                       out, collector.means.count, collector.tokens, collector.sequences,
                                                       Date().timeIntervalSince(start)).utf8))
        }
    }
}
