// Sidecar text shared by the NLA tests: the released pairs' AV prompt template as PyYAML `safe_dump`
// writes it under `prompt_templates` (a folded single-quoted scalar, two-space key indentation).

package enum ReleasedSidecarYAML {
    /// The `  av: '…'` entry of `prompt_templates` (no trailing newline).
    package static let avTemplateEntry = "  av: 'You are a meticulous AI researcher conducting an important investigation into\n    activation vectors from a language model. Your overall task is to describe the\n    semantic content of that activation vector.\n\n\n    We will pass the vector enclosed in <concept> tags into your context. You must\n    then produce an explanation for the vector, enclosed within <explanation> tags.\n    The explanation consists of 2-3 text snippets describing that vector.\n\n\n    Here is the vector:\n\n\n    <concept>{injection_char}</concept>\n\n\n    Please provide an explanation.'"
}
