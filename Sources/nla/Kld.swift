import ArgumentParser
import Foundation
import NLARuntime
import SIMDKernels

/// KL(P_ref ‖ P_quant) of next-token distributions over every position of a text (BOS + plain tokenization).
struct Kld: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare a quantized model with its reference: KL divergence, top-1 agreement, hidden-state cosine.")

    @Option(help: "Reference model (directory or .gguf).") var model: String
    @Option(name: .customLong("model-q"), help: "Quantized model (.gguf or directory).") var modelQ: String
    @Option(name: .customLong("text-file"), help: "Plain text to evaluate.") var textFile: String
    @Option(help: "Threads (0 = all cores).") var threads: Int = 0
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        try runReportingErrors {
            try applyThreadsFlag(threads)
            guard let data = FileManager.default.contents(atPath: textFile) else { throw ModelError.input("\(textFile): cannot read file") }
            guard let text = String(data: data, encoding: .utf8) else { throw ModelError.input("\(textFile): not valid UTF-8") }
            let ref = try LanguageModel(directory: model)
            let q = try LanguageModel(directory: modelQ)
            for (m, path) in [(ref, model), (q, modelQ)] where !m.model.producesLogits {
                throw ModelError.input("\(path): runs \(m.model.loadedBlocks) of \(m.config.numHiddenLayers) blocks without the final norm (an NLA AR?): no next-token distribution to compare")
            }
            let ids = ref.tokenizer.encode(text)
            guard q.tokenizer.encode(text) == ids else { throw ModelError.input("the two models tokenize \(textFile) differently") }
            guard ids.count <= ref.config.maxPositionEmbeddings else {
                throw ModelError.input("\(textFile): \(ids.count) tokens exceed the context of \(ref.config.maxPositionEmbeddings)")
            }
            let r = try Divergence.compare(reference: ref.model, quantized: q.model, ids: ids)
            if json {
                try printJSON(r.json)
            } else {
                print(String(format: "positions %d  mean KLD %.6f  p99 KLD %.6f  max KLD %.6f  top-1 agreement %.4f  mean hidden cos %.6f",
                             r.positions, r.meanKLD, r.p99KLD, r.maxKLD, r.top1Agreement, r.meanHiddenCos))
            }
        }
    }
}
