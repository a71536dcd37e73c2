// `nla`: the command-line front end. JSON goes to stdout, diagnostics to stderr; every failure is one
// line "nla: <file>: <problem>" and a non-zero exit.

import ArgumentParser
import Foundation
import NLARuntime
import SIMDKernels

@main
struct NLA: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nla",
        abstract: "Gemma 3 and Natural Language Autoencoders on the CPU.",
        subcommands: [Tokenize.self, Generate.self, Chat.self, Hidden.self, Explain.self, Verbalize.self, Reconstruct.self, Score.self, Fidelity.self, Kld.self, AVKldCommand.self, Bench.self, BenchKernels.self, BenchElementwise.self, ImatrixCommand.self, Serve.self])

    /// Like ArgumentParser's `main`, but a command-line error (unknown option, missing or malformed value,
    /// e.g. `--threads -1`, which reads as an option) is one line on stderr, like every other error, with
    /// the usage exit code (64); help and version requests print as usual.
    static func main() {
        // A fixed 1 MB mmap threshold (see `Kernels.fixMallocMmapThreshold`): weights, KV caches and big
        // scratch get their own mappings, returned whole on free. Measured on a batch-16 `explain`: the same
        // speed, 7 MB lower peak RSS than glibc's self-raising threshold.
        Kernels.fixMallocMmapThreshold(bytes: 1 << 20)
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            let code = exitCode(for: error)
            if code != .success, !(error is ExitCode) {
                FileHandle.standardError.write(Data("nla: \(usageErrorLine(error))\n".utf8))
                Foundation.exit(code.rawValue)
            }
            exit(withError: error)
        }
    }

    /// ArgumentParser's message for a command-line error on one line, with where to find the usage.
    static func usageErrorLine(_ error: Error) -> String {
        let lines = message(for: error).split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        let text = lines.filter { !$0.isEmpty && !$0.hasPrefix("Usage:") && !$0.hasPrefix("See '") }.joined(separator: " ")
        return (text.isEmpty ? "invalid command line" : text) + " (nla help for usage)"
    }
}

/// The default model: the Gemma 3 270M test checkpoint that `make test-model` builds.
let defaultModelPath: String = NLACache.root + "/models/gemma-3-270m"

struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: "Model directory (Hugging Face layout). Default: the 270M test model.")
    var model: String = defaultModelPath

    @Option(name: .long, help: "Threads for the matmul kernels (0 = all cores).")
    var threads: Int = 0

    func validateThreads() throws {
        try applyThreadsFlag(threads)
    }
}

/// Most threads `--threads` may ask for: every kernel pass starts this many OpenMP threads, and a huge
/// count exhausts the process/thread limit of the machine (`--threads 100000` did).
let maxThreadsFlag = 1024

/// `--threads N`: 0 = all cores, else 1…`maxThreadsFlag`.
func applyThreadsFlag(_ threads: Int) throws {
    guard threads >= 0, threads <= maxThreadsFlag else {
        throw ModelError.input("--threads is \(threads); it must be 0 (all cores) to \(maxThreadsFlag)")
    }
    Kernels.setThreads(threads)
}

/// A model that must produce next-token logits (generate, chat, bench, hidden --last-logits); an NLA AR
/// (blocks 0…K, no final norm) cannot, and running it for logits crashed.
func requireLogits(_ lm: LanguageModel, _ path: String) throws {
    guard lm.model.producesLogits else {
        throw ModelError.input("\(path): runs \(lm.model.loadedBlocks) of \(lm.config.numHiddenLayers) blocks without the final norm (an NLA AR?): it cannot produce next-token logits")
    }
}

/// Run `body`, turning any error into one line on stderr and exit code 1.
func runReportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as ExitCode {
        throw e
    } catch {
        FileHandle.standardError.write(Data("nla: \(error)\n".utf8))
        throw ExitCode(1)
    }
}

/// TEXT argument: `-` reads standard input.
func readText(_ text: String?) throws -> String {
    guard let text else { throw ModelError.input("no prompt given (pass TEXT, or - to read standard input)") }
    if text == "-" {
        let data = FileHandle.standardInput.readDataToEndOfFile()
        guard let s = String(data: data, encoding: .utf8) else { throw ModelError.input("standard input is not valid UTF-8") }
        return s
    }
    return text
}

func parseIds(_ s: String) throws -> [Int] {
    let parts = s.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
    return try parts.map {
        guard let v = Int($0) else { throw ModelError.input("--ids: '\($0)' is not an integer token id") }
        return v
    }
}

func printJSON(_ object: Any) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes, .sortedKeys])
    FileHandle.standardOutput.write(data)
    FileHandle.standardOutput.write(Data("\n".utf8))
}

func writeStdout(_ s: String) {
    FileHandle.standardOutput.write(Data(s.utf8))
}

func log(_ s: String) {
    FileHandle.standardError.write(Data((s + "\n").utf8))
}
