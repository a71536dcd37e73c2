import Foundation

/// One chat message. `role` is "system", "user" or "assistant" (other role names are passed through
/// exactly as the Jinja template would).
public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// Native renderer for the Gemma 3 chat template (no Jinja engine).
///
/// It reproduces the template shipped in Gemma 3's tokenizer_config.json for text-only messages:
/// `bos_token` once; a leading system message folded into the first user turn as `content + "\n\n"`
/// (not trimmed); every other message rendered as `<start_of_turn>ROLE\n` + trimmed content +
/// `<end_of_turn>\n`, with "assistant" rendered as "model"; messages at even positions (after the system
/// message) must be "user" and those at odd positions must not be, exactly like the template's
/// `raise_exception` check (so a non-"assistant" role at an odd position, e.g. "model", is rendered
/// verbatim as Jinja would); an optional generation prompt `<start_of_turn>model\n`.
///
/// Limitation: only the Gemma 3 template is supported. The template text is recognised by its markers
/// (`<start_of_turn>`, `<end_of_turn>`, `first_user_prefix`, `loop_messages`); any other template, a
/// template that takes `tools`, or a missing template makes `renderChat` throw
/// `TokenizerError.unsupportedChatTemplate` (loading the tokenizer still succeeds).
struct TokChatTemplate: Sendable {
    enum Kind: Sendable, Equatable {
        case gemma3
        case unsupported(String)
    }
    let kind: Kind
    let bosToken: String
    /// File the template came from (for error messages).
    let file: String

    init(template: String?, bosToken: String, file: String) {
        self.bosToken = bosToken
        self.file = file
        guard let t = template else {
            kind = .unsupported("no chat_template found")
            return
        }
        let markers = ["<start_of_turn>", "<end_of_turn>", "first_user_prefix", "loop_messages"]
        let missing = markers.filter { !t.contains($0) }
        if !missing.isEmpty {
            kind = .unsupported("chat_template is not the Gemma 3 template (missing \(missing.joined(separator: ", "))); only Gemma 3 is rendered natively")
        } else if t.contains("tools") {
            kind = .unsupported("chat_template uses tools, which the native Gemma 3 renderer does not support")
        } else {
            kind = .gemma3
        }
    }

    func render(_ messages: [ChatMessage], addGenerationPrompt: Bool) throws -> String {
        if case let .unsupported(why) = kind {
            throw TokenizerError.unsupportedChatTemplate(file: file, problem: why)
        }
        guard let first = messages.first else {
            throw TokenizerError.invalidConversation("no messages to render")
        }
        var out = bosToken
        var loop = messages[...]
        var firstUserPrefix = ""
        if first.role == "system" {
            firstUserPrefix = first.content + "\n\n"
            loop = messages.dropFirst()
        }
        for (i, m) in loop.enumerated() {
            if (m.role == "user") != (i % 2 == 0) {
                throw TokenizerError.invalidConversation(
                    "Conversation roles must alternate user/assistant/user/assistant/... (message \(i + (messages.count - loop.count)) has role '\(m.role)')")
            }
            let role = m.role == "assistant" ? "model" : m.role
            out += "<start_of_turn>" + role + "\n" + (i == 0 ? firstUserPrefix : "")
            out += Self.jinjaTrim(m.content)
            out += "<end_of_turn>\n"
        }
        if addGenerationPrompt { out += "<start_of_turn>model\n" }
        return out
    }

    /// Jinja's `trim` filter = Python `str.strip()`.
    static func jinjaTrim(_ s: String) -> String {
        let scalars = Array(s.unicodeScalars)
        var a = 0
        var b = scalars.count
        while a < b && TokUTF8.isPythonSpace(scalars[a]) { a += 1 }
        while b > a && TokUTF8.isPythonSpace(scalars[b - 1]) { b -= 1 }
        if a == 0 && b == scalars.count { return s }
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars[a..<b])
        return String(view)
    }
}
