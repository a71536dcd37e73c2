// Running the `nla` command from tests: status, stdout, stderr; and the bad-input contract (one stderr
// line naming the problem, exit 1, no crash).

import Foundation
import Testing

package struct CLIResult {
    package var status: Int32
    package var stdout: String
    package var stderr: String
}

/// Bytes filled by one reader thread and read after it is joined.
private final class DataBox: @unchecked Sendable { var data = Data() }

package enum CLI {
    package static var binary: String { TestPaths.nlaBinary }

    /// Whether the binary exists; records an issue (a failure, not a skip) when it does not.
    package static func require(sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            Issue.record("no nla binary at \(binary): build it with `swift build -c release`", sourceLocation: sourceLocation)
            return false
        }
        return true
    }

    /// Run `nla args…` with `stdin` (closed after writing) and wait for it.
    package static func run(_ args: [String], stdin: String? = nil, executable: String? = nil) throws -> CLIResult {
        try run(args, stdinData: stdin.map { Data($0.utf8) }, executable: executable)
    }

    /// Run `executable` (default: the `nla` binary) with `args` and `stdinData` on standard input.
    package static func run(_ args: [String], stdinData: Data?, executable: String? = nil) throws -> CLIResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable ?? binary)
        p.arguments = args
        let out = Pipe(), err = Pipe(), inp = Pipe()
        p.standardOutput = out; p.standardError = err; p.standardInput = inp
        try p.run()
        // Read both pipes while writing stdin, so neither side blocks on a full pipe.
        let o = DataBox(), e = DataBox()
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) { o.data = out.fileHandleForReading.readDataToEndOfFile() }
        DispatchQueue.global().async(group: group) { e.data = err.fileHandleForReading.readDataToEndOfFile() }
        if let stdinData { try? inp.fileHandleForWriting.write(contentsOf: stdinData) }
        try? inp.fileHandleForWriting.close()
        group.wait()
        p.waitUntilExit()
        return CLIResult(status: p.terminationStatus, stdout: String(decoding: o.data, as: UTF8.self), stderr: String(decoding: e.data, as: UTF8.self))
    }

    /// A fresh temporary directory for a command's files.
    package static func tempDir() -> String { TestPaths.tempDirectory("cli") }
}

/// A failing command: exit 1 (not a crash signal), exactly one stderr line naming each of `mentions`.
package func expectCleanFailure(_ r: CLIResult, mentions: [String], sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(r.status == 1, "exit status \(r.status), stderr: \(r.stderr)", sourceLocation: sourceLocation)
    let lines = r.stderr.split(separator: "\n")
    #expect(lines.count == 1, "stderr should be one line: \(r.stderr)", sourceLocation: sourceLocation)
    for m in mentions {
        #expect(r.stderr.contains(m), "stderr should mention '\(m)': \(r.stderr)", sourceLocation: sourceLocation)
    }
}

#if canImport(Glibc)
import Glibc
#endif

extension CLI {
    /// Run `nla args…` with stderr on a pseudo-terminal (so `isatty(2)` is true, as in an interactive
    /// shell) and stdout on a pipe; returns the status, stdout and everything written to the terminal.
    package static func runWithTTYStderr(_ args: [String]) throws -> CLIResult {
        var master: Int32 = -1, slave: Int32 = -1
        guard openpty(&master, &slave, nil, nil, nil) == 0 else { throw MissingTestFile(description: "openpty failed: errno \(errno)") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle(fileDescriptor: slave, closeOnDealloc: false)
        p.standardInput = FileHandle.nullDevice
        try p.run()
        close(slave)
        let o = DataBox(), tty = DataBox()
        let group = DispatchGroup()
        let fd = master
        DispatchQueue.global().async(group: group) { o.data = out.fileHandleForReading.readDataToEndOfFile() }
        DispatchQueue.global().async(group: group) {
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(fd, &buf, buf.count)   // EIO once the child has exited and the slave is closed
                if n <= 0 { break }
                tty.data.append(contentsOf: buf[0..<n])
            }
        }
        p.waitUntilExit()
        group.wait()
        close(master)
        return CLIResult(status: p.terminationStatus, stdout: String(decoding: o.data, as: UTF8.self), stderr: String(decoding: tty.data, as: UTF8.self))
    }
}
