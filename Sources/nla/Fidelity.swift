// `nla fidelity`: the quality check of the mission. Does a quantized AR reconstruct what the
// full-precision AR reconstructs? Optionally, does the quantized AV → AR round trip keep its score?

import ArgumentParser
import Foundation
import NLARuntime
import Quant

extension NLASidecar {
    /// The sidecar of a model directory or GGUF file, without loading its weights.
    static func forModel(_ path: String) throws -> NLASidecar {
        try NLASidecar.load(files: try ModelFiles.open(path, tensors: false))
    }
}

/// The block type of a quantized model file (from `quantize`'s metadata), e.g. "Q8_0".
func quantTypeName(_ path: String) -> String {
    if path.hasSuffix(".gguf"), let g = try? GGUFFile(path: path), let t = g.metadata[GGUFKeys.fileType]?.stringValue { return t }
    return "F32"
}

struct FidelityPair {
    var explanation: String
    var gold: [Float]
}

func readPairs(_ path: String) throws -> [FidelityPair] {
    guard let data = FileManager.default.contents(atPath: path) else { throw ModelError.input("\(path): cannot read file") }
    let pairs = try VectorFile.jsonlObjects(data, file: path).map { line, obj -> FidelityPair in
        guard let e = obj["explanation"] as? String else { throw ModelError.input("\(path):\(line): missing string 'explanation'") }
        guard obj[VectorFile.jsonlColumn] != nil else { throw ModelError.input("\(path):\(line): missing array 'activation_vector'") }
        return FidelityPair(explanation: e, gold: try VectorFile.numbers(obj[VectorFile.jsonlColumn], field: VectorFile.jsonlColumn, file: path, line: line))
    }
    guard !pairs.isEmpty else { throw ModelError.input("\(path): no pairs") }
    return pairs
}

struct Fidelity: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check that quantized NLA models keep the reconstruction fidelity of the full-precision AR (exit 1 on fail).")

    @Option(help: "Full-precision AR (HF directory).") var ar: String
    @Option(name: .customLong("ar-quant"), help: "A quantized AR (.gguf); repeat for several.") var arQuant: [String] = []
    @Option(help: "JSONL of {\"explanation\":..., \"activation_vector\":[...]}.") var pairs: String?
    @Option(help: "Target model, to make pairs on the fly with --av and --prompt.") var target: String?
    @Option(help: "Full-precision AV (for on-the-fly pairs and round trips).") var av: String?
    @Option(name: .customLong("av-quant"), help: "Quantized AV: also report round-trip fidelity (vector → AV → AR).") var avQuant: String?
    @Option(help: "Prompt for on-the-fly pairs (chat template).") var prompt: String?
    @Option(name: .customLong("max-pairs"), help: "On-the-fly: at most this many positions (from position 4).") var maxPairs: Int = 8
    @Option(name: .customLong("max-new-tokens"), help: "Explanation length cap for the AV.") var maxNewTokens: Int = 200
    @Option(name: .customLong("min-cos-q8"), help: "Pass threshold for Q8_0: mean cos(quant, full) >= this.") var minCosQ8: Double = 0.999
    @Option(name: .customLong("min-cos-q4"), help: "Pass threshold for the 4-bit files (Q4_0, Q4_K, IQ4_NL, Q4_K_M).") var minCosQ4: Double = 0.99
    @Option(name: .customLong("fve-baseline"), help: "Predict-the-mean baseline B.") var fveBaselineFlag: Double?
    @Option(help: "Sequences per forward for the AV and the AR (default: automatic, bounded by memory; 1 = sequential reference path).") var batch: Int?
    @Flag(help: "Print one JSON object.") var json = false
    @OptionGroup var threads: ThreadsOption

    func threshold(_ type: String) -> Double {
        // 4-bit schemes share the 4-bit threshold; everything else (Q8_0, Q6_K) is held to the 8-bit one.
        ["Q4_0", "Q4_K", "IQ4_NL", "Q4_K_M"].contains(type.uppercased()) ? minCosQ4 : minCosQ8
    }

    func run() throws {
        try runReportingErrors {
            try threads.apply()
            guard !arQuant.isEmpty else { throw ModelError.input("give at least one --ar-quant file") }
            for (flag, v) in [("--min-cos-q8", minCosQ8), ("--min-cos-q4", minCosQ4)] where !(v >= -1 && v <= 1) {
                throw ModelError.input("\(flag) is \(v); a cosine threshold must be in [-1, 1]")
            }
            try validateFVEBaselineFlag(fveBaselineFlag)
            if pairs != nil, target != nil || prompt != nil {
                throw ModelError.input("--pairs and --target/--prompt are two sources of pairs: give one")
            }
            guard maxPairs >= 1 else { throw ModelError.input("--max-pairs must be >= 1 (got \(maxPairs))") }
            let sampling = SamplingOptions(maxNewTokens: maxNewTokens)
            if let batch, batch < 1 { throw ModelError.input("--batch must be >= 1") }
            var announced = false
            func announce(_ n: Int) {
                guard !announced else { return }
                announced = true
                log("nla: batch \(n)\(batch == nil ? " (automatic; --batch N to choose)" : "")\(n == 1 ? ": sequential reference path" : "")")
            }
            func verbalizeAll(_ verbalizer: ActivationVerbalizer, _ vectors: [[Float]]) throws -> [Verbalization] {
                let n = try NLAPipeline.batchSize(batch, verbalizer: verbalizer, options: sampling, items: vectors.count)
                announce(n)
                return try NLAPipeline.verbalize(verbalizer, vectors: vectors, options: sampling, batch: n).map { try $0.get() }
            }
            func reconstructAll(_ r: ActivationReconstructor, _ texts: [String]) throws -> [[Float]] {
                let n = try NLAPipeline.batchSize(batch, reconstructor: r, items: texts.count)
                announce(n)
                return try NLAPipeline.reconstruct(r, explanations: texts, batch: n).map { try $0.get() }
            }
            var data: [FidelityPair]
            if let pairs {
                data = try readPairs(pairs)
            } else {
                guard let target, let av, let prompt else {
                    throw ModelError.input("give --pairs FILE, or --target, --av and --prompt to make pairs on the fly")
                }
                let sc = try NLASidecar.forModel(av)
                guard let k = sc.extractionLayer else { throw ModelError.input("\(sc.file): no extraction layer") }
                let cap = try ActivationCapture.capture(target: try LanguageModel(directory: target), layer: k, prompt: prompt,
                                                        chat: true, reply: nil, maxReplyTokens: 0)
                let verbalizer = try ActivationVerbalizer(path: av)
                let golds = Array(cap.vectors.dropFirst(4).prefix(max(maxPairs, 0)))
                data = zip(try verbalizeAll(verbalizer, golds), golds).map { FidelityPair(explanation: $0.explanation ?? $0.text, gold: $1) }
                guard !data.isEmpty else { throw ModelError.input("the prompt has no positions >= 4 to explain") }
            }

            // Full-precision reconstructions, then each quantized AR in turn (one model loaded at a time).
            let full = try ActivationReconstructor(path: ar)
            let d = full.sidecar.dModel
            for (i, p) in data.enumerated() where p.gold.count != d {
                throw ModelError.input("pair \(i): activation_vector has \(p.gold.count) values, the AR expects \(d)")
            }
            let baseline = fveBaseline(fveBaselineFlag, dModel: d, layer: full.sidecar.extractionLayer)
            let fullPreds = try reconstructAll(full, data.map(\.explanation))
            let fullScores = try zip(fullPreds, data).map { try full.score(prediction: $0, gold: $1.gold, fveBaseline: baseline) }

            var results: [[String: Any]] = []
            var lines: [String] = []
            var allPass = true
            for q in arQuant {
                let type = quantTypeName(q)
                let quant = try ActivationReconstructor(path: q)
                let preds = try reconstructAll(quant, data.map(\.explanation))
                // A broken file can predict zero or non-finite vectors: they count as cos 0 and fail the check.
                let usable = preds.map { p in p.allSatisfy(\.isFinite) && p.contains { $0 != 0 } }
                let degenerate = usable.filter { !$0 }.count
                let cosQF = zip(preds, fullPreds).enumerated().map { i, pf in usable[i] ? cosine(pf.0, pf.1) : 0 }
                let scores = try zip(preds, data).enumerated().compactMap { i, pd in
                    usable[i] ? try quant.score(prediction: pd.0, gold: pd.1.gold, fveBaseline: baseline) : nil
                }
                let meanCos = mean(cosQF)
                let pass = degenerate == 0 && meanCos >= threshold(type)
                allPass = allPass && pass
                func jsonMean(_ xs: [Double]) -> Any { xs.isEmpty ? NSNull() : mean(xs) }
                let fullMse = mean(fullScores.map(\.mseNrm))
                var r: [String: Any] = [
                    "file": q, "type": type, "pairs": data.count, "degenerate_predictions": degenerate,
                    "cos_quant_full": ["mean": meanCos, "median": median(cosQF), "min": cosQF.min()!],
                    "mse_nrm": ["full": fullMse, "quant": jsonMean(scores.map(\.mseNrm)),
                                "diff": scores.isEmpty ? NSNull() : mean(scores.map(\.mseNrm)) - fullMse],
                    "cos_gold": ["full": mean(fullScores.map(\.cos)), "quant": jsonMean(scores.map(\.cos))],
                    "threshold": threshold(type), "pass": pass]
                if baseline != nil {
                    let ff = mean(fullScores.compactMap(\.fveNrm)), fq = scores.compactMap(\.fveNrm)
                    r["fve_nrm"] = ["full": ff, "quant": jsonMean(fq), "diff": fq.isEmpty ? NSNull() : mean(fq) - ff]
                }
                results.append(r)
                let qMse = scores.isEmpty ? Double.nan : mean(scores.map(\.mseNrm))
                lines.append(String(format: "%@  %@  cos(q,f) mean %.6f median %.6f min %.6f | mse_nrm full %.4f quant %.4f (Δ %+.4f) | %@ (mean cos >= %g)%@",
                                    type, (q as NSString).lastPathComponent, meanCos, median(cosQF), cosQF.min()!,
                                    fullMse, qMse, qMse - fullMse, pass ? "PASS" : "FAIL", threshold(type),
                                    degenerate > 0 ? " (\(degenerate) zero/NaN predictions)" : ""))
            }

            var roundTrip: [String: Any]? = nil
            if let avQuant {
                guard let av else { throw ModelError.input("--av-quant needs --av (the full-precision AV)") }
                let quantAR = arQuant[0]
                func trip(_ avPath: String, _ arPath: String) throws -> (explanations: [String], scores: [NLAScore]) {
                    let verbalizer = try ActivationVerbalizer(path: avPath)
                    let ex = try verbalizeAll(verbalizer, data.map(\.gold)).map { $0.explanation ?? $0.text }
                    let rec = try ActivationReconstructor(path: arPath)
                    let recPreds = try reconstructAll(rec, ex)
                    let sc = try zip(recPreds, data).compactMap { pred, p -> NLAScore? in
                        guard pred.allSatisfy(\.isFinite), pred.contains(where: { $0 != 0 }) else { return nil }
                        return try rec.score(prediction: pred, gold: p.gold, fveBaseline: baseline)
                    }
                    return (ex, sc)
                }
                let f = try trip(av, ar)
                let q = try trip(avQuant, quantAR)
                let same = zip(f.explanations, q.explanations).filter { $0 == $1 }.count
                var rt: [String: Any] = ["av_quant": avQuant, "ar_quant": quantAR, "identical_explanations": same,
                                         "pairs": data.count,
                                         "mse_nrm": ["full": mean(f.scores.map(\.mseNrm)), "quant": mean(q.scores.map(\.mseNrm))],
                                         "cos_gold": ["full": mean(f.scores.map(\.cos)), "quant": mean(q.scores.map(\.cos))]]
                if baseline != nil {
                    rt["fve_nrm"] = ["full": mean(f.scores.compactMap(\.fveNrm)), "quant": mean(q.scores.compactMap(\.fveNrm))]
                }
                roundTrip = rt
                lines.append(String(format: "round trip (vector → AV → AR): mse_nrm full %.4f quant %.4f; cos full %.4f quant %.4f; identical greedy explanations %d/%d",
                                    mean(f.scores.map(\.mseNrm)), mean(q.scores.map(\.mseNrm)), mean(f.scores.map(\.cos)),
                                    mean(q.scores.map(\.cos)), same, data.count))
            }

            if json {
                var obj: [String: Any] = ["pairs": data.count, "ar": ar, "results": results, "pass": allPass]
                obj["round_trip"] = roundTrip ?? NSNull()
                try printJSON(obj)
            } else {
                writeStdout("fidelity over \(data.count) pairs (full-precision AR: \(ar))\n" + lines.joined(separator: "\n") + "\n")
            }
            if !allPass { throw ExitCode(1) }
        }
    }
}
