// `quantize <hf-dir> <out.gguf> --type q8_0|q4_0|q5_0|q4_k|q6_k|iq4_nl|q4_k_m|bf16|f32 [--imatrix F [--gptq]] [--threads N]
//  [--names hf|llama.cpp]`
//
// Converts a Hugging Face Gemma 3 checkpoint (or an NLA AR directory) into one GGUF file. The output
// is written to a temporary file beside the target and renamed only after it was re-read and
// validated; SIGINT / SIGTERM remove the temporary file, so an interrupted run never leaves a file that
// looks valid.

import ArgumentParser
import Foundation
import NLARuntime
import Quant
import SIMDKernels

/// The temporary output path as a C string, for the signal handler (async-signal-safe: unlink + _exit).
nonisolated(unsafe) var temporaryPathForSignal: UnsafeMutablePointer<CChar>? = nil

func installSignalCleanup(_ path: String) {
    temporaryPathForSignal = strdup(path)
    let handler: @convention(c) (Int32) -> Void = { sig in
        if let p = temporaryPathForSignal { unlink(p) }
        _exit(128 + sig)
    }
    var set = sigset_t()
    sigemptyset(&set)
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        signal(sig, handler)
        sigaddset(&set, sig)
    }
    // A parent may have started us with these signals blocked; they must reach the handler.
    pthread_sigmask(SIG_UNBLOCK, &set, nil)
}

func stderrWrite(_ s: String) { FileHandle.standardError.write(Data(s.utf8)) }

func formatBytes(_ b: Int) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"]
    var v = Double(b), i = 0
    while v >= 1000 && i < units.count - 1 { v /= 1000; i += 1 }
    return i == 0 ? "\(b) B" : String(format: "%.1f %@", v, units[i])
}

@main
struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: "Convert a Hugging Face Gemma 3 checkpoint (or NLA AR directory) to one GGUF file.",
        discussion: """
        Policy: norms and 1-D tensors stay F32; the AR value_head stays F32; the embedding / tied \
        output projection is Q8_0 for block types; every other 2-D weight takes --type (q4_k_m: Q4_K with \
        Q5_0 for attn_v, ffn_up and ffn_down). Rows that are not whole 256-value super-blocks fall back \
        to IQ4_NL (for Q4_K) or Q8_0 (for Q6_K). Block types are quantized with the importance-weighted \
        search (weights from --imatrix, made by `nla imatrix`, or a default weighting); \
        --reference-quantizers uses plain rounding (Q8_0 / Q4_0 byte-identical to ggml's reference).
        """)

    @Argument(help: "Hugging Face checkpoint directory (config.json + safetensors).") var input: String
    @Argument(help: "Output .gguf file.") var output: String
    @Option(help: "Target type: q8_0, q4_0, q5_0, q4_k, q6_k, iq4_nl, q4_k_m (mix), bf16 or f32.") var type: String
    @Option(help: "Importance matrix from `nla imatrix` (.safetensors).") var imatrix: String?
    @Flag(name: .customLong("reference-quantizers"), help: "Plain-rounding reference quantizers instead of the search.")
    var referenceQuantizers = false
    @Flag(help: "GPTQ error feedback with the Hessians of --imatrix (made by `nla imatrix --hessian`).")
    var gptq = false
    @Option(name: .customLong("embedding-type"), help: "Override the embedding/lm_head type for block targets (q8_0 or q4_0).")
    var embeddingType: String?
    @Option(help: "Threads (0 = all cores).") var threads: Int = 0
    @Option(help: "Tensor names and metadata: hf (ours) or llama.cpp (llama.cpp's names, gemma3.* and tokenizer.ggml.* metadata, norms as 1 + w; loads in llama.cpp and in nla).")
    var names: String = "hf"

    func run() throws {
        do {
            guard threads >= 0 else { throw ModelError.input("--threads must be >= 0") }
            Kernels.setThreads(threads)
            guard let naming = TensorNaming(rawValue: names) else {
                throw ModelError.input("--names must be hf or llama.cpp, got '\(names)'")
            }
            var policy = try QuantizePolicy(scheme: type)
            policy.referenceQuantizers = referenceQuantizers
            if let f = imatrix {
                guard !referenceQuantizers else { throw ModelError.input("--imatrix needs the search quantizers (drop --reference-quantizers)") }
                policy.imatrix = try Imatrix(path: f)
            }
            if gptq {
                guard let im = policy.imatrix, !im.hessians.isEmpty else {
                    throw ModelError.input("--gptq needs --imatrix with Hessians (nla imatrix --hessian)")
                }
                policy.gptq = true
            }
            if let e = embeddingType {
                let t = try QuantType(name: e)
                guard t.traits.isQuantized else { throw ModelError.input("--embedding-type must be a block type (q8_0 or q4_0)") }
                policy.embeddingBlockType = t
            }
            let tty = isatty(2) != 0
            var lastPrinted = -1
            let start = Date()
            let summary = try Converter.convert(input: input, output: output, policy: policy, names: naming, progress: { p in
                let frac = p.bytesTotal == 0 ? 1 : Double(p.bytesDone) / Double(p.bytesTotal)
                let elapsed = Date().timeIntervalSince(start)
                let rate = elapsed > 0 ? Double(p.bytesDone) / elapsed : 0
                let eta = rate > 0 ? Double(p.bytesTotal - p.bytesDone) / rate : 0
                if tty {
                    let width = 30
                    let filled = Int(frac * Double(width))
                    let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
                    stderrWrite(String(format: "\r[%@] %d/%d tensors  %@/%@  %@/s  ETA %.0fs  ", bar, p.tensorsDone, p.tensorsTotal,
                                       formatBytes(p.bytesDone), formatBytes(p.bytesTotal), formatBytes(Int(rate)), eta))
                } else {
                    let decile = Int(frac * 10)
                    if decile != lastPrinted {
                        lastPrinted = decile
                        stderrWrite(String(format: "quantize: %3.0f%%  %d/%d tensors  %@/%@\n", frac * 100, p.tensorsDone,
                                           p.tensorsTotal, formatBytes(p.bytesDone), formatBytes(p.bytesTotal)))
                    }
                }
            }, writerCreated: { w in installSignalCleanup(w.temporaryPath) })
            if tty { stderrWrite("\n") }
            let counts = summary.countsByType.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            stderrWrite("""
            wrote \(output)
              policy:        \(summary.policy)
              tensors:       \(summary.rulesByTensor.count) (\(counts))\(summary.skipped.isEmpty ? "" : "; skipped \(summary.skipped.count) vision tensors")
              input:         \(formatBytes(summary.inputBytes)) of tensors
              output:        \(formatBytes(summary.outputBytes)) (\(String(format: "%.2f", summary.bitsPerWeight)) bits per weight; \
            decoder blocks \(String(format: "%.3f", summary.blockBitsPerWeight)) bits per weight)
              time:          \(String(format: "%.1f", summary.seconds)) s
              peak RSS:      \(formatBytes(peakRSSBytes()))

            """)
        } catch let e as ExitCode {
            throw e
        } catch {
            stderrWrite("quantize: \(error)\n")
            throw ExitCode(1)
        }
    }
}
