// Where the model cache lives (the one definition; `make test-model` / `make demo-models` fill it):
//   $NLA_CACHE (default ~/.cache/nla)
//     models/gemma-3-270m     the test checkpoint ($NLA_TEST_MODEL overrides this one path)
//     models/nla-demo/{av,ar} the demo NLA pair
//     venv/bin/python         the private venv (gguf, numpy, transformers)

import Foundation

public enum NLACache {
    /// $NLA_CACHE, else ~/.cache/nla.
    public static var root: String {
        if let c = ProcessInfo.processInfo.environment["NLA_CACHE"], !c.isEmpty { return (c as NSString).expandingTildeInPath }
        return NSHomeDirectory() + "/.cache/nla"
    }

    /// The Gemma 3 270M test checkpoint: $NLA_TEST_MODEL, else <root>/models/gemma-3-270m.
    public static var testModel: String {
        if let d = ProcessInfo.processInfo.environment["NLA_TEST_MODEL"], !d.isEmpty { return (d as NSString).expandingTildeInPath }
        return root + "/models/gemma-3-270m"
    }

    /// The demo NLA pair directory (av/ and ar/ inside).
    public static var demoPair: String { root + "/models/nla-demo" }

    /// The venv's Python.
    public static var python: String { root + "/venv/bin/python" }
}
