// `nla imatrix --model M --text-file F --out F.imatrix.safetensors`: the importance matrix for `quantize --imatrix`.
// `nla imatrix --model AV --av --target T --text-file F --out …`: the same over an NLA AV's own inputs (its prompt
// with a target's residual vector injected, then the explanation it writes; `AVCalibration`).
// `nla av-kld --av AV --av-q AV.gguf --target T --text-file F`: a quantized AV against its reference on held-out vectors.

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

        With --av (and --target T), --model is an NLA AV: the target runs over each paragraph, its block-K output \
        (K = the AV sidecar's extraction layer) is taken at --positions-per-paragraph evenly spaced positions \
        (never BOS), the AV explains each vector greedily, and one AV forward over the prompt with the vector \
        injected plus the explanation tokens it read is observed per vector.
        """)

    @Option(help: "Model (directory or .gguf); the f32 reference is the usual choice.") var model: String
    @Option(name: .customLong("text-file"), help: "Calibration text (UTF-8).") var textFile: String
    @Option(help: "Output .safetensors file.") var out: String
    @Option(name: .customLong("max-tokens"), help: "Longest sequence (longer paragraphs are cut).") var maxTokens: Int = 512
    @Option(help: "Threads (0 = all cores).") var threads: Int = 0
    @Flag(help: "Also store each layer input's Hessian (mean x·xᵀ) for `quantize --gptq` (large: in² floats per input).")
    var hessian = false
    @Flag(help: "--model is an NLA AV: calibrate on its prompt with injected target vectors and its explanations (needs --target).")
    var av = false
    @Option(help: "With --av: the target model whose residual vectors the AV reads.") var target: String?
    @Option(name: .customLong("positions-per-paragraph"), help: "With --av: vectors taken per paragraph (evenly spaced, never BOS).")
    var positionsPerParagraph: Int?
    @Option(name: .customLong("max-new-tokens"), help: "With --av: the AV's explanation length cap (greedy).") var maxNewTokens: Int?
    @Option(help: "With --av: sequences per AV forward while explaining (default: automatic).") var batch: Int?

    func run() throws {
        try runReportingErrors {
            try applyThreadsFlag(threads)
            guard maxTokens >= 2 else { throw ModelError.input("--max-tokens must be >= 2") }
            guard out.hasSuffix(".safetensors") else { throw ModelError.input("\(out): the output file must end in .safetensors") }
            guard let data = FileManager.default.contents(atPath: textFile) else { throw ModelError.input("\(textFile): cannot read file") }
            guard let text = String(data: data, encoding: .utf8) else { throw ModelError.input("\(textFile): not valid UTF-8") }
            let paragraphs = AVCalibration.paragraphs(text)
            guard !paragraphs.isEmpty else { throw ModelError.input("\(textFile): no text") }
            if av { return try runAV(paragraphs: paragraphs, textSHA256: sha256Hex(data)) }
            for (name, given) in [("--target", target != nil), ("--positions-per-paragraph", positionsPerParagraph != nil),
                                  ("--max-new-tokens", maxNewTokens != nil), ("--batch", batch != nil)] where given {
                throw ModelError.input("\(name) is only used with --av (calibrating an NLA AV on its own inputs)")
            }
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

extension ImatrixCommand {
    /// The options of the AV mode, checked with the flags' names.
    static func avOptions(positionsPerParagraph: Int?, maxNewTokens: Int?, batch: Int?, maxTokens: Int) throws -> AVCalibrationOptions {
        var o = AVCalibrationOptions(maxTokens: maxTokens)
        if let n = positionsPerParagraph {
            guard n >= 1 else { throw ModelError.input("--positions-per-paragraph must be >= 1 (got \(n))") }
            o.positionsPerParagraph = n
        }
        if let m = maxNewTokens {
            guard m >= 1 else { throw ModelError.input("--max-new-tokens must be >= 1 (got \(m))") }
            o.maxNewTokens = m
        }
        if let b = batch {
            guard b >= 1 && b <= 4096 else { throw ModelError.input("--batch must be in 1…4096 (got \(b))") }
            o.batch = b
        }
        return o
    }

    /// `--av` given a model with no NLA sidecar (or an AR's): say which flag needs what.
    static func requireAVSidecar(_ path: String, flag: String) throws {
        do { _ = try AVCalibration.avLayer(av: path) } catch NLAError.sidecarMissing(let m) {
            throw ModelError.input("\(m): \(flag) needs an NLA AV, and this model has no nla_meta.yaml sidecar (next to the weights, or embedded in the .gguf)")
        }
    }

    func runAV(paragraphs: [String], textSHA256: String) throws {
        guard let target else { throw ModelError.input("--av needs --target (the model whose residual vectors the AV reads)") }
        let options = try Self.avOptions(positionsPerParagraph: positionsPerParagraph, maxNewTokens: maxNewTokens, batch: batch, maxTokens: maxTokens)
        try Self.requireAVSidecar(model, flag: "--av")
        let start = Date()
        let result = try AVCalibration.run(av: model, target: target, paragraphs: paragraphs, options: options, hessian: hessian) { line in
            FileHandle.standardError.write(Data("imatrix: \(line) (\(String(format: "%.1f", Date().timeIntervalSince(start))) s)\n".utf8))
        }
        let collector = result.collector
        try collector.write(to: out, textSHA256: textSHA256, extraMetadata: result.metadata(target: target, options: options))
        FileHandle.standardError.write(Data(String(format: "wrote %@: %d linear layers, %d AV tokens in %d sequences (%d vectors at layer %d, %d explanation tokens) (%.1f s)\n",
                                                   out, collector.means.count, collector.tokens, collector.sequences, result.samples.count,
                                                   result.layer, result.samples.reduce(0) { $0 + $1.fedIds.count },
                                                   Date().timeIntervalSince(start)).utf8))
    }
}

/// `nla av-kld`: a quantized AV against its reference on vectors taken from a held-out text exactly as
/// `nla imatrix --av` takes them (never calibrate and evaluate on the same text).
struct AVKldCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "av-kld",
        abstract: "Compare a quantized NLA AV with its reference on held-out vectors: greedy explanation agreement and KL divergence along the reference's explanations.")

    @Option(help: "Reference AV (directory or .gguf).") var av: String
    @Option(name: .customLong("av-q"), help: "Quantized AV (.gguf or directory); repeat to compare several against one reference run.")
    var avQ: [String]
    @Option(help: "Target model whose residual vectors the AVs read.") var target: String
    @Option(name: .customLong("text-file"), help: "Held-out text (paragraphs at blank lines).") var textFile: String
    @Option(name: .customLong("positions-per-paragraph"), help: "Vectors per paragraph (evenly spaced, never BOS).") var positionsPerParagraph: Int = 16
    @Option(name: .customLong("max-new-tokens"), help: "Explanation length cap (greedy).") var maxNewTokens: Int = 64
    @Option(name: .customLong("max-tokens"), help: "Longest target sequence.") var maxTokens: Int = 512
    @Option(help: "Sequences per AV forward while explaining (default: automatic).") var batch: Int?
    @Option(help: "Threads (0 = all cores).") var threads: Int = 0
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        try runReportingErrors {
            try applyThreadsFlag(threads)
            guard maxTokens >= 2 else { throw ModelError.input("--max-tokens must be >= 2") }
            let options = try ImatrixCommand.avOptions(positionsPerParagraph: positionsPerParagraph, maxNewTokens: maxNewTokens,
                                                       batch: batch, maxTokens: maxTokens)
            guard let data = FileManager.default.contents(atPath: textFile) else { throw ModelError.input("\(textFile): cannot read file") }
            guard let text = String(data: data, encoding: .utf8) else { throw ModelError.input("\(textFile): not valid UTF-8") }
            let paragraphs = AVCalibration.paragraphs(text)
            guard !paragraphs.isEmpty else { throw ModelError.input("\(textFile): no text") }
            try ImatrixCommand.requireAVSidecar(av, flag: "--av")
            guard !avQ.isEmpty else { throw ModelError.input("--av-q: give at least one quantized AV") }
            for q in avQ { try ImatrixCommand.requireAVSidecar(q, flag: "--av-q") }
            let (layer, dModel) = try AVCalibration.avLayer(av: av)
            let (sources, _) = try AVCalibration.captureVectors(target: target, layer: layer, dModel: dModel, paragraphs: paragraphs, options: options)
            let ref = try ActivationVerbalizer(path: av)
            let vectors = sources.map(\.vector)
            let (refGen, _) = try AVCalibration.verbalize(ref, vectors: vectors, maxNewTokens: options.maxNewTokens, batch: options.batch)
            for path in avQ {
                let q = try ActivationVerbalizer(path: path)
                let (r, _) = try AVDivergence.compare(reference: ref, referenceGenerations: refGen, quantized: q, vectors: vectors,
                                                      maxNewTokens: options.maxNewTokens, batch: options.batch)
                if json {
                    var obj = r.json
                    obj["layer"] = layer
                    obj["text_sha256"] = sha256Hex(data)
                    obj["av_q"] = path
                    try printJSON(obj)
                } else {
                    writeStdout(String(format: "%@: vectors %d  identical explanations %d/%d  mean prefix agreement %.4f  positions %d  mean KLD %.6f  p99 KLD %.6f  max KLD %.6f  top-1 agreement %.4f",
                                 path, r.vectors, r.identical, r.vectors, r.meanPrefixAgreement, r.positions, r.meanKLD, r.p99KLD, r.maxKLD, r.top1Agreement) + "\n")
                }
            }
        }
    }
}
