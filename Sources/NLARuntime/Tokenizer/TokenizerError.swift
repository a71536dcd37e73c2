import Foundation
import Quant

/// Errors raised while loading a tokenizer or rendering a chat.
///
/// Every loading error names the file it comes from and the problem, on one line, e.g.
/// `/models/gemma/tokenizer.json: unknown pre_tokenizer type 'Foo' (at pre_tokenizer.pretokenizers[1])`.
public enum TokenizerError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file does not exist or could not be read.
    case unreadableFile(file: String, reason: String)
    /// The file is not valid JSON (byte offset, 1-based line and column of the problem).
    case malformedJSON(file: String, line: Int, column: Int, reason: String)
    /// A required key is absent (`path` is the dotted JSON path of the key).
    case missingKey(file: String, path: String)
    /// A key is present but its value has the wrong type or an unusable value.
    case invalidValue(file: String, path: String, problem: String)
    /// A component's `type` string is not one this implementation knows.
    case unknownComponentType(file: String, stage: String, type: String, path: String)
    /// The component is known but the configuration asks for something unsupported (e.g. BPE dropout).
    case unsupported(file: String, path: String, problem: String)
    /// The chat template in tokenizer_config.json (or its absence) cannot be rendered natively.
    case unsupportedChatTemplate(file: String, problem: String)
    /// The conversation cannot be rendered by the chat template (e.g. roles do not alternate).
    case invalidConversation(String)

    /// One line: control characters quoted from the input (keys, names) are escaped.
    public var description: String { oneLineMessage(unescapedDescription) }

    private var unescapedDescription: String {
        switch self {
        case let .unreadableFile(file, reason):
            return "\(file): cannot read file: \(reason)"
        case let .malformedJSON(file, line, column, reason):
            return "\(file): malformed JSON at line \(line), column \(column): \(reason)"
        case let .missingKey(file, path):
            return "\(file): missing key '\(path)'"
        case let .invalidValue(file, path, problem):
            return "\(file): invalid value at '\(path)': \(problem)"
        case let .unknownComponentType(file, stage, type, path):
            return "\(file): unknown \(stage) type '\(type)' (at \(path))"
        case let .unsupported(file, path, problem):
            return "\(file): unsupported configuration at '\(path)': \(problem)"
        case let .unsupportedChatTemplate(file, problem):
            return "\(file): chat template not supported: \(problem)"
        case let .invalidConversation(problem):
            return "chat template: \(problem)"
        }
    }
}
