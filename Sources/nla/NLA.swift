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
        subcommands: [Tokenize.self, Generate.self, Chat.self, Hidden.self, Explain.self, Verbalize.self, Reconstruct.self, Score.self, Fidelity.self, Kld.self, Bench.self, BenchKernels.self, ImatrixCommand.self, Serve.self])
}

/// The default model: the Gemma 3 270M test checkpoint that `make test-model` builds.
let defaultModelPath: String = NLACache.root + "/models/gemma-3-270m"

struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: "Model directory (Hugging Face layout). Default: the 270M test model.")
    var model: String = defaultModelPath

    @Option(name: .long, help: "Threads for the matmul kernels (0 = all cores).")
    var threads: Int = 0

    func validateThreads() throws {
        guard threads >= 0 else { throw ModelError.input("--threads must be >= 0") }
        Kernels.setThreads(threads)
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
