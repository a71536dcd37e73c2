// `quantize` will convert checkpoints to GGUF block formats (quantization issue). For now it only
// validates that a checkpoint loads.
import ArgumentParser
import Foundation
import NLARuntime

@main
struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a Hugging Face Gemma 3 checkpoint to a quantized GGUF file (not implemented yet).")

    @Argument(help: "Hugging Face checkpoint directory.") var input: String
    @Argument(help: "Output .gguf file.") var output: String
    @Option(help: "Target type: q8_0, q4_0, bf16, f32.") var type: String = "q8_0"
    @Option(help: "Threads (default: all cores).") var threads: Int = 0

    func run() throws {
        FileHandle.standardError.write(Data("quantize: not implemented yet (see the quantization issue)\n".utf8))
        throw ExitCode(2)
    }
}
