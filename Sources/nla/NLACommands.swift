// The NLA commands: explain (the whole pipeline), verbalize (AV), reconstruct and score (AR), fidelity
// (quantized vs full-precision AR, and optionally AV round trips).

import ArgumentParser
import Foundation
import NLARuntime
import Quant
import SIMDKernels

struct ThreadsOption: ParsableArguments {
    @Option(help: "Threads for the matmul kernels (0 = all cores).") var threads: Int = 0
    func apply() throws {
        guard threads >= 0 else { throw ModelError.input("--threads must be >= 0") }
        Kernels.setThreads(threads)
    }
}

/// A progress line over items on a TTY (stderr); nothing otherwise.
struct ProgressLine {
    let label: String
    let total: Int
    let tty = isatty(2) != 0
    let start = Date()

    func update(_ done: Int) {
        guard tty, total > 0 else { return }
        let width = 24
        let filled = done * width / total
        let elapsed = Date().timeIntervalSince(start)
        let eta = done > 0 ? elapsed / Double(done) * Double(total - done) : 0
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        FileHandle.standardError.write(Data(String(format: "\r%@ [%@] %d/%d  ETA %.0fs ", label, bar, done, total, eta).utf8))
        if done == total { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}

/// Python's repr() of a string, as the reference transcripts print tokens.
func pythonRepr(_ s: String) -> String {
    let quote: Character = s.contains("'") && !s.contains("\"") ? "\"" : "'"
    var out = String(quote)
    for u in s.unicodeScalars {
        switch u {
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if Character(u) == quote { out += "\\" + String(quote); continue }
            if u.value < 0x20 || u.value == 0x7f { out += String(format: "\\x%02x", u.value); continue }
            if (0x80..<0xa0).contains(u.value) { out += String(format: "\\x%02x", u.value); continue }
            out.unicodeScalars.append(u)
        }
    }
    out.append(quote)
    return out
}

func median(_ xs: [Double]) -> Double {
    guard !xs.isEmpty else { return .nan }
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func mean(_ xs: [Double]) -> Double { xs.isEmpty ? .nan : xs.reduce(0, +) / Double(xs.count) }

/// `--positions all | 4- | 10,12,15 | 3-9`
func parsePositions(_ spec: String, count: Int) throws -> [Int] {
    if spec == "all" { return Array(0..<count) }
    var out: [Int] = []
    for part in spec.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
        if let dash = part.firstIndex(of: "-") {
            let a = Int(part[..<dash]), bStr = part[part.index(after: dash)...]
            let b = bStr.isEmpty ? count - 1 : Int(bStr)
            guard let a, let b, a >= 0, a <= b else { throw ModelError.input("--positions: '\(part)' is not a range") }
            out += Array(a...min(b, count - 1))
        } else {
            guard let p = Int(part), p >= 0 else { throw ModelError.input("--positions: '\(part)' is not a position") }
            out.append(p)
        }
    }
    for p in out where p >= count {
        throw ModelError.input("--positions: \(p) is past the last position \(count - 1)")
    }
    return out
}

/// The fve baseline: the flag, else the built-in table for the released pairs, else none.
func fveBaseline(_ flag: Double?, dModel: Int, layer: Int?) -> Double? {
    flag ?? layer.flatMap { FVEBaselines.builtIn(dModel: dModel, layer: $0) }
}

// MARK: - explain

struct Explain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a target model on a prompt and explain its layer-K activation at each position (AV), scored by the AR.")

    @Option(help: "Target model (directory or .gguf).") var target: String
    @Option(help: "Activation verbalizer (directory or .gguf with nla_meta.yaml).") var av: String
    @Option(help: "Activation reconstructor (directory or .gguf with nla_meta.yaml and value_head).") var ar: String
    @Flag(help: "Render PROMPT with the chat template (one user turn and the model's reply).") var chat = false
    @Option(help: "The model's reply (text); default: generate it greedily.") var reply: String?
    @Option(name: .customLong("max-reply-tokens"), help: "Reply tokens to generate when --reply is not given (0 = none).") var maxReplyTokens: Int = 64
    @Option(help: "Positions to explain: all, 4-, 10,12,15 or 3-9.") var positions: String = "all"
    @Option(name: .customLong("max-new-tokens"), help: "Explanation length cap.") var maxNewTokens: Int = 200
    @Option(help: "AV sampling temperature (0 = greedy).") var temperature: Float = 0
    @Option(help: "Seed for sampling.") var seed: UInt64 = 0
    @Option(name: .customLong("fve-baseline"), help: "Predict-the-mean baseline B for fve_nrm = 1 − mse_nrm / B.") var fveBaselineFlag: Double?
    @Option(name: .customLong("av-prompt"), help: "Custom AV user prompt containing <INJECT> (default: the sidecar's template).") var avPrompt: String?
    @Flag(help: "Print one JSON object.") var json = false
    @OptionGroup var threads: ThreadsOption
    @Argument(help: "The user prompt (- reads standard input).") var prompt: String

    func run() throws {
        try runReportingErrors {
            try threads.apply()
            let text = try readText(prompt)
            let sampling = SamplingOptions(temperature: temperature, seed: seed, maxNewTokens: maxNewTokens)
            try sampling.validate()
            guard maxReplyTokens >= 0 else { throw ModelError.input("--max-reply-tokens must be >= 0") }
            // One model's weights at a time: capture, then verbalize, then reconstruct.
            let avSidecar = try NLASidecar.forModel(av)
            let arSidecar = try NLASidecar.forModel(ar)
            guard let layer = avSidecar.extractionLayer ?? arSidecar.extractionLayer else {
                throw ModelError.input("\(avSidecar.file): no extraction layer (K) in the AV or AR sidecar")
            }
            let captured: CapturedActivations
            do {
                let targetModel = try LanguageModel(directory: target)
                captured = try ActivationCapture.capture(target: targetModel, layer: layer, prompt: text, chat: chat,
                                                         reply: reply, maxReplyTokens: reply == nil ? maxReplyTokens : 0)
            }
            let picked = try parsePositions(positions, count: captured.ids.count)
            var verbal: [Int: Verbalization] = [:]
            do {
                let verbalizer = try ActivationVerbalizer(path: av, promptTemplate: avPrompt)
                let bar = ProgressLine(label: "explain", total: picked.count)
                for (i, p) in picked.enumerated() {
                    verbal[p] = try verbalizer.verbalize(captured.vectors[p], options: sampling)
                    bar.update(i + 1)
                }
            }
            let reconstructor = try ActivationReconstructor(path: ar)
            let baseline = fveBaseline(fveBaselineFlag, dModel: reconstructor.sidecar.dModel, layer: layer)
            var rows: [[String: Any]] = []
            var lines: [String] = []
            var stats: [(pos: Int, score: NLAScore)] = []
            let bar = ProgressLine(label: "score  ", total: picked.count)
            for (i, p) in picked.enumerated() {
                let v = verbal[p]!
                let explanation = v.explanation ?? v.text
                let pred = try reconstructor.reconstruct(explanation)
                let score = try reconstructor.score(prediction: pred, gold: captured.vectors[p], fveBaseline: baseline)
                stats.append((p, score))
                bar.update(i + 1)
                let segment = p < captured.promptLength ? "PROMPT" : "REPLY"
                var row: [String: Any] = ["position": p, "segment": segment, "token": captured.tokens[p], "id": captured.ids[p],
                                          "norm": captured.norms[p], "mse_nrm": score.mseNrm, "cos": score.cos,
                                          "explanation": explanation, "text": v.text, "warnings": v.warnings]
                row["fve_nrm"] = score.fveNrm.map { $0 as Any } ?? NSNull()
                rows.append(row)
                let fve = score.fveNrm.map { String(format: "%.3f", $0) } ?? "n/a"
                lines.append(String(format: "[%3d]  %@  token=%@  ||v||=%.1f  mse_nrm=%.3f  cos=%.3f  fve_nrm=%@",
                                    p, segment, pythonRepr(captured.tokens[p]), captured.norms[p], score.mseNrm, score.cos, fve))
                lines.append(explanation.split(separator: "\n", omittingEmptySubsequences: false).map { "    " + $0 }.joined(separator: "\n"))
                for w in v.warnings { log("nla: position \(p): \(w)") }
            }
            let summary = summarize(stats.filter { $0.pos >= 4 }.map(\.score), baseline: baseline)
            if json {
                var obj: [String: Any] = ["target": target, "av": av, "ar": ar, "layer": layer, "prompt_length": captured.promptLength,
                                          "ids": captured.ids, "positions": rows, "summary": summary.json]
                obj["fve_baseline"] = baseline.map { $0 as Any } ?? NSNull()
                try printJSON(obj)
            } else {
                if baseline == nil { log("nla: no fve baseline for this pair (pass --fve-baseline B); fve_nrm omitted") }
                writeStdout(lines.joined(separator: "\n") + "\n\n" + summary.text + "\n")
            }
        }
    }
}

struct ExplainSummary {
    var json: [String: Any]
    var text: String
}

/// Summary over scored positions (the reference transcripts use positions >= 4).
func summarize(_ scores: [NLAScore], baseline: Double?) -> ExplainSummary {
    let mse = scores.map(\.mseNrm), cos = scores.map(\.cos), fve = scores.compactMap(\.fveNrm)
    var j: [String: Any] = ["count": scores.count, "mean_mse_nrm": mean(mse), "median_mse_nrm": median(mse),
                            "min_mse_nrm": mse.min() ?? .nan, "max_mse_nrm": mse.max() ?? .nan, "mean_cos": mean(cos)]
    var t = String(format: "summary over %d positions >= 4: mse_nrm mean %.3f median %.3f min %.3f max %.3f; cos mean %.3f",
                   scores.count, mean(mse), median(mse), mse.min() ?? .nan, mse.max() ?? .nan, mean(cos))
    if let b = baseline, !fve.isEmpty {
        let gt5 = fve.filter { $0 > 0.5 }.count, gt8 = fve.filter { $0 > 0.8 }.count, lt0 = fve.filter { $0 < 0 }.count
        j["mean_fve_nrm"] = mean(fve); j["median_fve_nrm"] = median(fve); j["fve_baseline"] = b
        j["fve_gt_0_5"] = gt5; j["fve_gt_0_8"] = gt8; j["fve_lt_0"] = lt0
        t += String(format: "\nfve_nrm (B = %.4f) mean %.3f median %.3f; fve > 0.5: %d/%d, > 0.8: %d/%d, < 0: %d/%d",
                    b, mean(fve), median(fve), gt5, fve.count, gt8, fve.count, lt0, fve.count)
    }
    return ExplainSummary(json: j, text: t)
}

// MARK: - verbalize / reconstruct / score

struct Verbalize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Explain activation vectors with the AV.")

    @Option(help: "Activation verbalizer (directory or .gguf).") var av: String
    @Option(help: "Vectors: .safetensors ([n,d] or [d]), .npy (f32/f64) or .jsonl (activation_vector per line).") var vectors: String
    @Option(help: "Tensor name in a .safetensors file.") var key: String?
    @Option(name: .customLong("max-new-tokens")) var maxNewTokens: Int = 200
    @Option(help: "Sampling temperature (0 = greedy).") var temperature: Float = 0
    @Option(help: "Seed for sampling.") var seed: UInt64 = 0
    @Option(name: .customLong("av-prompt"), help: "Custom AV user prompt containing <INJECT> (default: the sidecar's template).") var avPrompt: String?
    @Flag(help: "Print one JSON array.") var json = false
    @OptionGroup var threads: ThreadsOption

    func run() throws {
        try runReportingErrors {
            try threads.apply()
            let sampling = SamplingOptions(temperature: temperature, seed: seed, maxNewTokens: maxNewTokens)
            try sampling.validate()
            let vs = try VectorFile.read(path: vectors, key: key)
            let verbalizer = try ActivationVerbalizer(path: av, promptTemplate: avPrompt)
            for (i, v) in vs.enumerated() {
                do { try verbalizer.validate(v) } catch { throw ModelError.input("\(vectors): vector \(i): \(error)") }
            }
            var out: [[String: Any]] = []
            let bar = ProgressLine(label: "verbalize", total: vs.count)
            for (i, v) in vs.enumerated() {
                let r = try verbalizer.verbalize(v, options: sampling)
                for w in r.warnings { log("nla: vector \(i): \(w)") }
                out.append(["ids": r.ids, "text": r.text, "explanation": r.explanation ?? NSNull()])
                if !json { writeStdout("[\(i)] " + (r.explanation ?? r.text) + "\n") }
                bar.update(i + 1)
            }
            if json { try printJSON(out) }
        }
    }
}

struct Reconstruct: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Predict the activation vector an explanation describes (AR).")

    @Option(help: "Activation reconstructor (directory or .gguf).") var ar: String
    @Option(help: "Write the vector to this .safetensors file (tensor 'vector').") var out: String?
    @Flag(help: "Print {\"vector\":[...],\"norm\":x}.") var json = false
    @OptionGroup var threads: ThreadsOption
    @Argument(help: "The explanation (- reads standard input).") var explanation: String

    func run() throws {
        try runReportingErrors {
            try threads.apply()
            let text = try readText(explanation)
            let r = try ActivationReconstructor(path: ar)
            let v = try r.reconstruct(text)
            let norm = NLAVectorMath.norm(v)
            if let out {
                guard out.hasSuffix(".safetensors") else { throw ModelError.input("--out must name a .safetensors file") }
                var w = SafetensorsWriter()
                w.add(.init(name: "vector", shape: [v.count], floats: v))
                try w.write(to: out)
            }
            if json || out == nil {
                try printJSON(["vector": v.map(Double.init), "norm": norm])
            }
        }
    }
}

struct Score: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Score an explanation against a gold activation vector (AR).")

    @Option(help: "Activation reconstructor (directory or .gguf).") var ar: String
    @Option(help: "Gold vector file (.safetensors, .npy or .jsonl; the first vector is used).") var gold: String
    @Option(help: "Tensor name in a .safetensors file.") var key: String?
    @Option(name: .customLong("fve-baseline"), help: "Predict-the-mean baseline B.") var fveBaselineFlag: Double?
    @Flag(help: "Print {\"mse_nrm\",\"cos\",\"fve_nrm\"}.") var json = false
    @OptionGroup var threads: ThreadsOption
    @Argument(help: "The explanation (- reads standard input).") var explanation: String

    func run() throws {
        try runReportingErrors {
            try threads.apply()
            let text = try readText(explanation)
            let golds = try VectorFile.read(path: gold, key: key)
            guard let g = golds.first else { throw ModelError.input("\(gold): no vector") }
            let r = try ActivationReconstructor(path: ar)
            let baseline = fveBaseline(fveBaselineFlag, dModel: r.sidecar.dModel, layer: r.sidecar.extractionLayer)
            let s = try r.score(prediction: try r.reconstruct(text), gold: g, fveBaseline: baseline)
            if json {
                try printJSON(["mse_nrm": s.mseNrm, "cos": s.cos, "fve_nrm": s.fveNrm.map { $0 as Any } ?? NSNull()])
            } else {
                print(String(format: "mse_nrm %.4f  cos %.4f  fve_nrm %@", s.mseNrm, s.cos, s.fveNrm.map { String(format: "%.4f", $0) } ?? "n/a (no baseline)"))
            }
        }
    }
}
