// Where the tests find things: the repository, its fixtures, the model cache (NLA_CACHE / NLA_TEST_MODEL,
// through `NLACache`, the one definition), the built `nla` binary, and fresh temporary directories.

import Foundation
import NLARuntime
import Testing

/// A file the tests need is missing (the message says how to make it).
package struct MissingTestFile: Error, CustomStringConvertible {
    package var description: String
}

package enum TestPaths {
    /// The repository root (this file is Tests/NLATestSupport/TestPaths.swift).
    package static let repoRoot: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path

    /// Tests/Fixtures.
    package static let fixtures: String = repoRoot + "/Tests/Fixtures"

    /// A file under Tests/Fixtures.
    package static func fixture(_ name: String) -> String { fixtures + "/" + name }

    /// The Gemma 3 270M test checkpoint ($NLA_TEST_MODEL, else the cache's).
    package static var testModel: String { NLACache.testModel }

    /// The model cache ($NLA_CACHE, else ~/.cache/nla).
    package static var cache: String { NLACache.root }

    /// The demo NLA pair (av/ and ar/ inside).
    package static var demoPair: String { NLACache.demoPair }

    /// The cache venv's Python (gguf, numpy, transformers).
    package static var python: String { NLACache.python }

    /// The `nla` binary built with the tests (next to the test bundle), else .build/release/nla.
    package static var nlaBinary: String {
        let here = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for dir in [here, here.deletingLastPathComponent(), Bundle.main.bundleURL] {
            let p = dir.appendingPathComponent("nla").path
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return repoRoot + "/.build/release/nla"
    }

    /// The `quantize` binary beside the `nla` binary.
    package static var quantizeBinary: String {
        (nlaBinary as NSString).deletingLastPathComponent + "/quantize"
    }

    /// A fresh, empty directory under the system temporary directory (`nla-<tag>-<uuid>`), removed when
    /// the test process exits.
    package static func tempDirectory(_ tag: String) -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("nla-\(tag)-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        TempCleanup.register(url.path)
        return url.path
    }

    /// This process's scratch directory for `tag` (`nla-<tag>-<pid>`, created; shared by the tests of one
    /// run; removed when the process exits: some hold GBs of converted models).
    package static func processScratch(_ tag: String) -> String {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("nla-\(tag)-\(getpid())").path
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        TempCleanup.register(d)
        return d
    }

    /// Fail (never skip) when a file the tests need is missing: records an issue naming the file and `hint`
    /// (e.g. "run `make demo-models`") and throws.
    package static func requireFiles(_ paths: [String], what: String, hint: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        for f in paths where !FileManager.default.fileExists(atPath: f) {
            let msg = "\(what) missing (\(f)): \(hint)"
            Issue.record("\(msg)", sourceLocation: sourceLocation)
            throw MissingTestFile(description: msg)
        }
    }

    /// A path for a new file in the system temporary directory (`nla-<tag>-<uuid><ext>`); nothing is created
    /// (whatever is created there is removed when the test process exits).
    package static func tempFile(_ tag: String, ext: String = "") -> String {
        let p = FileManager.default.temporaryDirectory.appendingPathComponent("nla-\(tag)-\(UUID().uuidString)\(ext)").path
        TempCleanup.register(p)
        return p
    }
}

/// Temporary paths handed out by TestPaths, removed at process exit (a test run used to leave
/// tens of GB of converted models in /tmp). A crashed run leaves them, as it should, for inspection.
enum TempCleanup {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var paths: Set<String> = []
    nonisolated(unsafe) private static var installed = false

    static func register(_ path: String) {
        lock.lock(); defer { lock.unlock() }
        paths.insert(path)
        if !installed {
            installed = true
            atexit { TempCleanup.removeAll() }
        }
    }

    private static func removeAll() {
        lock.lock(); defer { lock.unlock() }
        if getenv("NLA_KEEP_TEST_FILES") != nil { return }
        for p in paths { try? FileManager.default.removeItem(atPath: p) }
        paths.removeAll()
    }
}
