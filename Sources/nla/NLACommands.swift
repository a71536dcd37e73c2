// The NLA commands: explain (the whole pipeline), verbalize (AV), reconstruct and score (AR), fidelity
// (quantized vs full-precision AR, and optionally AV round trips).

import ArgumentParser
import Foundation
import NLARuntime
import NLAServer
import Quant
import SIMDKernels

struct ThreadsOption: ParsableArguments {
    @Option(help: "Threads for the matmul kernels (0 = all cores).") var threads: Int = 0
    func apply() throws {
        try applyThreadsFlag(threads)
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

/// `--fve-baseline B`: B must be a positive finite number (fve_nrm = 1 − mse_nrm / B).
func validateFVEBaselineFlag(_ b: Double?) throws {
    if let b, !(b.isFinite && b > 0) { throw ModelError.input("--fve-baseline is \(b); it must be a positive finite number") }
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
    @Option(help: "Sequences decoded together (default: automatic, bounded by memory; 1 = sequential reference path).") var batch: Int?
    @Flag(name: .customLong("force-tokens"), help: .hidden) var forceTokens = false
    @Flag(help: "Print one JSON object.") var json = false
    @OptionGroup var remote: BackendOptions
    @OptionGroup var threads: ThreadsOption
    @Argument(help: "The user prompt (- reads standard input).") var prompt: String

    func run() throws {
        try runReportingErrors {
            try threads.apply()
            let text = try readText(prompt)
            let sampling = SamplingOptions(temperature: temperature, seed: seed, maxNewTokens: maxNewTokens)
            try sampling.validate()
            guard maxReplyTokens >= 0 else { throw ModelError.input("--max-reply-tokens must be >= 0") }
            if let batch, batch < 1 { throw ModelError.input("--batch must be >= 1") }
            try validateFVEBaselineFlag(fveBaselineFlag)
            let spec: NLAPositionSpec
            do { spec = try NLAPositionSpec.parse(positions) } catch { throw ModelError.input("--\(error)") }
            let backend = try remote.make()
            var req = ExplainRequest(target: target, av: av, ar: ar, prompt: text, chat: chat, reply: reply,
                                     maxReplyTokens: maxReplyTokens, positions: spec, sampling: sampling,
                                     fveBaseline: fveBaselineFlag, avPrompt: avPrompt, batch: batch, ignoreStopIds: forceTokens)
            req.backend = backend
            let bar = PipelineProgress()
            let report: ExplainReport
            var kvBytes = 0, sharedKVBytes = 0
            var phaseEnd: [ExplainProgress.Phase: ExplainProgress] = [:]
            let start = Date()
            do {
                report = try NLAPipeline.explain(req, progress: { bar.update($0); phaseEnd[$0.phase] = $0 }, onBatch: { n, auto, kv, shared in
                    kvBytes = kv
                    sharedKVBytes = shared
                    if let backend {
                        log(BackendOptions.describe(backend, perRequest: n, automatic: auto))
                    } else {
                        log("nla: batch \(n)\(auto ? " (automatic; --batch N to choose)" : "")\(n == 1 ? ": sequential reference path" : "")")
                    }
                })
            } catch let e as ModelError where "\(e)".hasPrefix("positions:") {
                throw ModelError.input("--\(e)")
            }
            if let v = phaseEnd[.verbalize], let sc = phaseEnd[.score] {
                let decode = v.decodeSeconds > 0 ? String(format: ", decode-only steps %.1f tok/s", Double(v.decodeTokens) / v.decodeSeconds) : ""
                log(String(format: "nla: stats: AV %d explanations, %d tokens in %.2f s (%.1f tok/s%@); AR %d in %.2f s; total %.2f s; %.1f positions/min; batch %d; KV %.2f MB/sequence + %.2f MB shared prefix; peak RSS %.0f MB",
                           v.total, v.tokens, v.elapsed, v.elapsed > 0 ? Double(v.tokens) / v.elapsed : 0, decode, sc.total, sc.elapsed,
                           Date().timeIntervalSince(start), Double(report.positions.count) / Date().timeIntervalSince(start) * 60, report.batch,
                           Double(kvBytes) / 1e6, Double(sharedKVBytes) / 1e6, Double(peakRSSBytes()) / 1e6))
            }
            for row in report.positions {
                for w in row.warnings { log("nla: position \(row.position): \(w)") }
                if let e = row.error { log("nla: position \(row.position): \(e)") }
            }
            if json {
                FileHandle.standardOutput.write(try report.jsonData())
                FileHandle.standardOutput.write(Data("\n".utf8))
            } else {
                var lines: [String] = []
                for row in report.positions {
                    let head = String(format: "[%3d]  %@  token=%@  ||v||=%.1f", row.position, row.segment, pythonRepr(row.token), row.norm)
                    guard let mse = row.mseNrm, let cos = row.cos, let explanation = row.explanation else {
                        lines.append(head + "  failed: " + (row.error ?? "no explanation"))
                        continue
                    }
                    let fve = row.fveNrm.map { String(format: "%.3f", $0) } ?? "n/a"
                    lines.append(head + String(format: "  mse_nrm=%.3f  cos=%.3f  fve_nrm=%@", mse, cos, fve))
                    lines.append(explanation.split(separator: "\n", omittingEmptySubsequences: false).map { "    " + $0 }.joined(separator: "\n"))
                }
                if report.fveBaseline == nil { log("nla: no fve baseline for this pair (pass --fve-baseline B); fve_nrm omitted") }
                writeStdout(lines.joined(separator: "\n") + "\n\n" + summaryText(report.summary) + "\n")
            }
            if report.positions.contains(where: { $0.error != nil }) { throw ExitCode(1) }
        }
    }
}

/// Progress on a TTY (stderr): the verbalize phase as positions done/total, tok/s and ETA; scoring as done/total.
final class PipelineProgress {
    let tty = isatty(2) != 0
    private var lastDraw = Date.distantPast

    func update(_ p: ExplainProgress) {
        guard tty, p.phase != .capture, p.total > 0 else { return }
        let now = Date()
        guard p.done == p.total || p.done == 0 || now.timeIntervalSince(lastDraw) >= 0.1 else { return }
        lastDraw = now
        let width = 24
        let filled = p.done * width / p.total
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let eta = p.done > 0 ? p.elapsed / Double(p.done) * Double(p.total - p.done) : 0
        var line = String(format: "\r%@ [%@] %d/%d", p.phase == .verbalize ? "explain" : "score  ", bar, p.done, p.total)
        if p.phase == .verbalize { line += String(format: "  %.1f tok/s", p.elapsed > 0 ? Double(p.tokens) / p.elapsed : 0) }
        line += String(format: "  ETA %.0fs ", eta)
        FileHandle.standardError.write(Data(line.utf8))
        if p.done == p.total { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}

/// The summary line(s) of `nla explain`.
func summaryText(_ s: ExplainSummaryStats) -> String {
    func f(_ x: Double?) -> Double { x ?? .nan }
    var t = String(format: "summary over %d positions >= 4: mse_nrm mean %.3f median %.3f min %.3f max %.3f; cos mean %.3f",
                   s.count, f(s.meanMseNrm), f(s.medianMseNrm), f(s.minMseNrm), f(s.maxMseNrm), f(s.meanCos))
    if let b = s.fveBaseline, let gt5 = s.fveGt05, let gt8 = s.fveGt08, let lt0 = s.fveLt0 {
        t += String(format: "\nfve_nrm (B = %.4f) mean %.3f median %.3f; fve > 0.5: %d/%d, > 0.8: %d/%d, < 0: %d/%d",
                    b, f(s.meanFveNrm), f(s.medianFveNrm), gt5, s.count, gt8, s.count, lt0, s.count)
    }
    return t
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
    @Option(help: "Sequences decoded together (default: automatic, bounded by memory; 1 = sequential reference path).") var batch: Int?
    @Flag(help: "Print one JSON array.") var json = false
    @OptionGroup var remote: BackendOptions
    @OptionGroup var threads: ThreadsOption

    func run() throws {
        try runReportingErrors {
            try threads.apply()
            let sampling = SamplingOptions(temperature: temperature, seed: seed, maxNewTokens: maxNewTokens)
            try sampling.validate()
            let backend = try remote.make()
            let vs = try VectorFile.read(path: vectors, key: key)
            // A remote AV needs only the prompt embeddings and the tokenizer here: one block is loaded.
            let verbalizer = try ActivationVerbalizer(path: av, promptTemplate: avPrompt, blocks: backend == nil ? nil : 1)
            for (i, v) in vs.enumerated() {
                do { try verbalizer.validate(v) } catch { throw ModelError.input("\(vectors): vector \(i): \(error)") }
            }
            if let batch, batch < 1 { throw ModelError.input("--batch must be >= 1") }
            let n: Int
            if let backend {
                n = batch ?? backend.batchSize(items: vs.count, verbalizer: verbalizer)
                log(BackendOptions.describe(backend, perRequest: n, automatic: batch == nil))
            } else {
                n = try NLAPipeline.batchSize(batch, verbalizer: verbalizer, options: sampling, items: vs.count)
                log("nla: batch \(n)\(batch == nil ? " (automatic; --batch N to choose)" : "")\(n == 1 ? ": sequential reference path" : "")")
            }
            let bar = ProgressLine(label: "verbalize", total: vs.count)
            var done = 0
            let onEvent: (BatchDecodeEvent) -> Void = { e in
                switch e { case .finished, .failed: done += 1; bar.update(done); default: break }
            }
            let results = try backend.map { try $0.verbalize(verbalizer, vectors: vs, options: sampling, batch: n, ignoreStopIds: false,
                                                            onEvent: onEvent, isCancelled: { false }) }
                ?? NLAPipeline.verbalize(verbalizer, vectors: vs, options: sampling, batch: n, onEvent: onEvent)
            var out: [[String: Any]] = []
            for (i, res) in results.enumerated() {
                let r = try res.get()
                for w in r.warnings { log("nla: vector \(i): \(w)") }
                out.append(r.jsonObject)
                if !json { writeStdout("[\(i)] " + (r.explanation ?? r.text) + "\n") }
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
            if let out {
                guard out.hasSuffix(".safetensors") else { throw ModelError.input("--out must name a .safetensors file") }
                var w = SafetensorsWriter()
                w.add(.init(name: "vector", shape: [v.count], floats: v))
                try w.write(to: out)
            }
            if json || out == nil {
                try printJSON(NLAJSON.reconstruction(v))
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
            try validateFVEBaselineFlag(fveBaselineFlag)
            let golds = try VectorFile.read(path: gold, key: key)
            guard let g = golds.first else { throw ModelError.input("\(gold): no vector") }
            let r = try ActivationReconstructor(path: ar)
            let baseline = fveBaseline(fveBaselineFlag, dModel: r.sidecar.dModel, layer: r.sidecar.extractionLayer)
            let s = try r.score(prediction: try r.reconstruct(text), gold: g, fveBaseline: baseline)
            if json {
                try printJSON(s.jsonObject)
            } else {
                print(String(format: "mse_nrm %.4f  cos %.4f  fve_nrm %@", s.mseNrm, s.cos, s.fveNrm.map { String(format: "%.4f", $0) } ?? "n/a (no baseline)"))
            }
        }
    }
}
