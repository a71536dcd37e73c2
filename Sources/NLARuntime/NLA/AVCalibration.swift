// AV calibration for the importance matrix (issue 9): an AV's real input is its prompt with a residual vector
// injected as one row, followed by the explanation it writes. Calibrating it on plain text misses that row and
// its effect downstream, so this observes exactly what the AV reads:
//   1. the target runs over each calibration paragraph (BOS + plain tokenization, like the text mode) and the
//      raw output of block K (the AV's extraction layer) is taken at a few evenly spaced positions (never BOS);
//   2. the AV verbalizes every vector greedily (`NLAPipeline.verbalize`, batched);
//   3. ONE forward of the AV per vector over the injected prompt rows + the ids it read while writing (its
//      generated ids except the last, which it only wrote: the stop id, or the token that hit the cap), with
//      the imatrix observer on.
// One model is held at a time (the target only with blocks 0…K). The same vector selection feeds
// `AVDivergence` (quantized AV vs reference on held-out vectors).

import Foundation

/// One calibration (or evaluation) vector: where it was taken.
public struct AVVectorSource: Sendable, Equatable {
    /// Index of the paragraph in the text.
    public var paragraph: Int
    /// Token position in the paragraph's ids (0 = BOS, never taken).
    public var position: Int
    /// The target's token id at that position.
    public var id: Int
    /// Block-K output there (raw).
    public var vector: [Float]
}

/// What the AV read for one vector during calibration.
public struct AVCalibrationSample: Sendable {
    public var source: AVVectorSource
    /// The ids the AV generated (greedy), ending with the stop id when it stopped on one.
    public var generated: [Int]
    /// The ids the AV read after its prompt: `generated` without its last id.
    public var fedIds: [Int]
    public var explanation: String?
}

public struct AVCalibrationOptions: Sendable {
    /// Vectors taken per paragraph (evenly spaced over positions 1…T−1).
    public var positionsPerParagraph: Int = 4
    /// The AV's generation cap per vector (greedy).
    public var maxNewTokens: Int = 64
    /// Sequences per AV forward while verbalizing; nil = automatic.
    public var batch: Int? = nil
    /// Longest target sequence (longer paragraphs are cut).
    public var maxTokens: Int = 512

    public init(positionsPerParagraph: Int = 4, maxNewTokens: Int = 64, batch: Int? = nil, maxTokens: Int = 512) {
        self.positionsPerParagraph = positionsPerParagraph; self.maxNewTokens = maxNewTokens
        self.batch = batch; self.maxTokens = maxTokens
    }

    public func validate() throws {
        guard positionsPerParagraph >= 1 else { throw ModelError.input("positions per paragraph must be >= 1 (got \(positionsPerParagraph))") }
        guard maxNewTokens >= 1 else { throw ModelError.input("the AV's max new tokens must be >= 1 (got \(maxNewTokens))") }
        if let b = batch, b < 1 { throw ModelError.input("batch size must be at least 1 (got \(b))") }
        guard maxTokens >= 2 else { throw ModelError.input("max tokens must be >= 2 (got \(maxTokens))") }
    }
}

/// The result of an AV calibration run: the filled collector and what it observed.
public struct AVCalibrationResult {
    public let collector: ImatrixCollector
    public let samples: [AVCalibrationSample]
    public let layer: Int
    /// Target tokens run (all paragraphs).
    public let targetTokens: Int
    public let paragraphs: Int
    /// Sequences per AV forward used while verbalizing.
    public let batch: Int

    /// The metadata `nla imatrix --av` adds to the file (the standard keys are written by the collector).
    public func metadata(target: String, options: AVCalibrationOptions) -> [String: String] {
        ["source": "av", "target": target, "layer": String(layer), "vectors": String(samples.count),
         "paragraphs": String(paragraphs), "target_tokens": String(targetTokens),
         "positions_per_paragraph": String(options.positionsPerParagraph), "max_new_tokens": String(options.maxNewTokens),
         "explanation_tokens": String(samples.reduce(0) { $0 + $1.fedIds.count })]
    }
}

public enum AVCalibration {
    /// The positions taken from a sequence of `count` tokens (position 0, BOS, is skipped): the centres of `n`
    /// equal slices of 1…count−1, i.e. 1 + ⌊(2i+1)(count−1) / 2n⌋ for i in 0..<n; every position when there
    /// are no more than `n`.
    public static func positions(count: Int, perParagraph n: Int) -> [Int] {
        let avail = count - 1
        guard avail > 0, n > 0 else { return [] }
        if avail <= n { return Array(1..<count) }
        return (0..<n).map { 1 + ((2 * $0 + 1) * avail) / (2 * n) }
    }

    /// The paragraphs of a calibration text: split at blank lines, trimmed, empty ones dropped (as the text mode).
    public static func paragraphs(_ text: String) -> [String] {
        text.components(separatedBy: "\n\n").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty }
    }

    /// The AV sidecar's extraction layer K and d_model (errors name the sidecar file).
    public static func avLayer(av: String) throws -> (layer: Int, dModel: Int) {
        let sidecar = try NLASidecar.load(files: try ModelFiles.open(av, tensors: false))
        guard sidecar.role == .av else { throw NLAError.wrongRole(file: sidecar.file, expected: "AV", found: sidecar.role.rawValue) }
        guard let k = sidecar.extractionLayer else { throw NLAError.extractionLayerMissing(file: sidecar.file) }
        return (k, sidecar.dModel)
    }

    /// Run the target (blocks 0…layer only) over every paragraph and take the block-`layer` output at
    /// `positions(count:perParagraph:)` of each. `dModel`: the AV's width, checked against the target's.
    /// Returns the vectors and the number of target tokens run.
    public static func captureVectors(target: String, layer: Int, dModel: Int, paragraphs: [String],
                                      options: AVCalibrationOptions) throws -> (vectors: [AVVectorSource], tokens: Int) {
        try options.validate()
        let lm = try LanguageModel(directory: target, blocks: layer + 1)
        guard lm.config.hiddenSize == dModel else {
            throw ModelError.input("\(lm.configFileName): hidden_size \(lm.config.hiddenSize) does not match the AV's d_model \(dModel) (the wrong target model?)")
        }
        var out: [AVVectorSource] = []
        var tokens = 0
        for (pi, p) in paragraphs.enumerated() {
            var ids = lm.tokenizer.encode(p)
            if ids.count > options.maxTokens { ids = Array(ids[0..<options.maxTokens]) }
            let picked = positions(count: ids.count, perParagraph: options.positionsPerParagraph)
            guard !picked.isEmpty else { continue }
            let cap = try ActivationCapture.capture(target: lm, layer: layer, ids: ids, promptLength: ids.count)
            tokens += ids.count
            for pos in picked {
                out.append(AVVectorSource(paragraph: pi, position: pos, id: ids[pos], vector: cap.vectors[pos]))
            }
        }
        guard !out.isEmpty else { throw ModelError.input("the calibration text has no paragraph with a token after BOS") }
        return (out, tokens)
    }

    /// The AV's input rows for one sample: the prompt with `vector` injected, then the embeddings of `fedIds`.
    public static func inputRows(_ verbalizer: ActivationVerbalizer, vector: [Float], fedIds: [Int]) throws -> (embeddings: [Float], rows: Int) {
        var e = try verbalizer.inputEmbeddings(for: vector)
        if !fedIds.isEmpty { e += try verbalizer.model.model.embed(fedIds) }
        let rows = verbalizer.promptIds.count + fedIds.count
        guard rows <= verbalizer.model.config.maxPositionEmbeddings else {
            throw NLAError.promptTooLong(model: verbalizer.model.directory, tokens: rows, context: verbalizer.model.config.maxPositionEmbeddings)
        }
        return (e, rows)
    }

    /// Greedy verbalization of every vector; a vector that fails fails the run (calibration never skips silently).
    public static func verbalize(_ verbalizer: ActivationVerbalizer, vectors: [[Float]], maxNewTokens: Int, batch: Int?,
                                 onEvent: ((BatchDecodeEvent) -> Void)? = nil) throws -> (results: [Verbalization], batch: Int) {
        let options = SamplingOptions(temperature: 0, maxNewTokens: maxNewTokens)
        let b = try NLAPipeline.batchSize(batch, verbalizer: verbalizer, options: options, items: vectors.count)
        let results = try NLAPipeline.verbalize(verbalizer, vectors: vectors, options: options, batch: b, onEvent: onEvent)
        return (try results.enumerated().map { i, r in
            do { return try r.get() } catch { throw ModelError.input("vector \(i): \(error)") }
        }, b)
    }

    /// The whole AV calibration (one model at a time): capture on `target`, verbalize with the AV at `av`,
    /// observe the AV's inputs. `progress` gets one line per phase.
    public static func run(av: String, target: String, paragraphs: [String], options: AVCalibrationOptions, hessian: Bool = false,
                           progress: ((String) -> Void)? = nil) throws -> AVCalibrationResult {
        try options.validate()
        guard !paragraphs.isEmpty else { throw ModelError.input("the calibration text has no paragraph") }
        let (layer, dModel) = try avLayer(av: av)
        let (sources, targetTokens) = try captureVectors(target: target, layer: layer, dModel: dModel, paragraphs: paragraphs, options: options)
        progress?("captured \(sources.count) vectors at layer \(layer) from \(paragraphs.count) paragraphs (\(targetTokens) target tokens)")
        let verbalizer = try ActivationVerbalizer(path: av)
        let (verbal, batch) = try verbalize(verbalizer, vectors: sources.map(\.vector), maxNewTokens: options.maxNewTokens, batch: options.batch)
        progress?("verbalized \(sources.count) vectors (\(verbal.reduce(0) { $0 + $1.ids.count }) AV tokens, batch \(batch))")
        let collector = ImatrixCollector(model: verbalizer.model.model, hessian: hessian)
        var samples: [AVCalibrationSample] = []
        for (s, v) in zip(sources, verbal) {
            let fed = Array(v.ids.dropLast())
            let (e, rows) = try inputRows(verbalizer, vector: s.vector, fedIds: fed)
            try collector.observe(embeddings: e, rows: rows)
            samples.append(AVCalibrationSample(source: s, generated: v.ids, fedIds: fed, explanation: v.explanation))
        }
        return AVCalibrationResult(collector: collector, samples: samples, layer: layer, targetTokens: targetTokens,
                                   paragraphs: paragraphs.count, batch: batch)
    }
}
