// Streaming GGUF v3 writer.
//
//     let w = try GGUFWriter(path: "out.gguf")                 // alignment 32 unless given
//     try w.addMetadata("general.architecture", value: .string("gemma3"))
//     try w.addTensor(name: "model.embed_tokens.weight", shape: [262144, 640], type: .q8_0)   // HF shape
//     try w.write { tensor, dst in                               // once per tensor, in addTensor order
//         try tensor.type.quantizeRows(src, width: tensor.shape.last!, into: dst)  // fill all of dst
//     }
//
// Everything about the layout is decided before the first byte is written (offsets are known from the
// shapes), so the header and the tensor infos go out first and the data follows one tensor at a time from
// the producer. The writer owns one buffer the size of the largest tensor: peak memory is that buffer plus
// whatever the producer holds, never the model.
//
// Crash safety: the file is written to a temporary name in the target directory
// ("<name>.tmp-<pid>-<random>"), fsynced, re-opened and validated with `GGUFFile` (header, every tensor
// info and the metadata must be exactly what was planned, and the file size must match), and only then
// renamed to the final name. Any error removes the temporary file; a killed process may leave it behind,
// but never under the final name. (A caller that wants to clean up on SIGINT can remove `temporaryPath`.)
//
// `general.alignment` (u32) is always written. It goes first among the metadata unless the caller adds
// it explicitly (then it must equal `alignment`, and it stays where it was added).

import Foundation

public final class GGUFWriter {
    /// A tensor as planned by `addTensor`.
    public struct Tensor: Sendable, Equatable {
        public let name: String
        /// HF order; written to the file reversed.
        public let shape: [Int]
        public let type: QuantType
        public let byteCount: Int
        /// Offset from the start of the data section.
        public let offset: Int
    }

    public let path: String
    public let alignment: Int
    /// The temporary file used while writing.
    public let temporaryPath: String
    public private(set) var metadata: [(key: String, value: GGUFValue)] = []
    public private(set) var tensors: [Tensor] = []
    private var dataSize = 0
    private var finished = false

    public init(path: String, alignment: Int = GGUF.defaultAlignment) throws {
        guard alignment > 0, alignment & (alignment - 1) == 0, alignment <= Int(UInt32.max) else {
            throw GGUFError.invalidWrite(file: path, reason: "alignment \(alignment) is not a power of two")
        }
        self.path = path
        self.alignment = alignment
        temporaryPath = path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    }

    /// Add a metadata key. Keys are unique; `general.alignment` may only be `.uint32(alignment)`.
    public func addMetadata(_ key: String, value: GGUFValue) throws {
        guard !finished else { throw GGUFError.invalidWrite(file: path, reason: "the file has already been written") }
        guard !key.isEmpty else { throw GGUFError.invalidWrite(file: path, reason: "empty metadata key") }
        guard !metadata.contains(where: { $0.key == key }) else {
            throw GGUFError.invalidWrite(file: path, reason: "duplicate metadata key '\(key)'")
        }
        if key == GGUF.alignmentKey, value != .uint32(UInt32(alignment)) {
            throw GGUFError.invalidWrite(file: path,
                reason: "\(GGUF.alignmentKey) must be uint32 \(alignment) (the writer's alignment), got \(value)")
        }
        metadata.append((key, value))
    }

    /// Plan a tensor of HF-order `shape` (last dimension = row width, a multiple of the type's block size).
    /// Returns its byte count: the size of the buffer the producer will fill.
    @discardableResult
    public func addTensor(name: String, shape: [Int], type: QuantType) throws -> Int {
        guard !finished else { throw GGUFError.invalidWrite(file: path, reason: "the file has already been written") }
        guard !tensors.contains(where: { $0.name == name }) else {
            throw GGUFError.invalidWrite(file: path, reason: "duplicate tensor name '\(name)'")
        }
        guard shape.count <= GGUF.maxDims else {
            throw GGUFError.badTensorInfo(file: path, tensor: name, reason: "\(shape.count) dimensions, at most \(GGUF.maxDims)")
        }
        let bytes: Int
        do {
            bytes = try type.byteCount(shape: shape)
        } catch let e as QuantError {
            throw GGUFError.badTensorInfo(file: path, tensor: name, reason: e.description)
        }
        tensors.append(Tensor(name: name, shape: shape, type: type, byteCount: bytes, offset: dataSize))
        dataSize += Self.padded(bytes, alignment)
        return bytes
    }

    /// Write the file: header, then each tensor's data from `produce`, called once per tensor in `addTensor`
    /// order with a buffer of exactly `tensor.byteCount` bytes that it must fill completely (the buffer is
    /// reused between tensors). Validates, then renames into place. Returns the file size.
    @discardableResult
    public func write(_ produce: (Tensor, UnsafeMutableRawBufferPointer) throws -> Void) throws -> Int {
        guard !finished else { throw GGUFError.invalidWrite(file: path, reason: "the file has already been written") }
        finished = true
        var kvs = metadata
        if !kvs.contains(where: { $0.key == GGUF.alignmentKey }) {
            kvs.insert((GGUF.alignmentKey, .uint32(UInt32(alignment))), at: 0)
        }
        var header: [UInt8] = []
        header.ggufAppend(GGUF.magic)
        header.ggufAppend(GGUF.version)
        header.ggufAppend(UInt64(tensors.count))
        header.ggufAppend(UInt64(kvs.count))
        for (k, v) in kvs {
            header.ggufAppend(string: k)
            header.ggufAppend(v.type.rawValue)
            header.ggufAppend(value: v)
        }
        for t in tensors {
            header.ggufAppend(string: t.name)
            header.ggufAppend(UInt32(t.shape.count))
            for d in t.shape.reversed() { header.ggufAppend(UInt64(d)) }
            header.ggufAppend(t.type.rawValue)
            header.ggufAppend(UInt64(t.offset))
        }
        header.append(contentsOf: repeatElement(0, count: Self.padded(header.count, alignment) - header.count))
        let totalSize = header.count + dataSize

        let fd = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        guard fd >= 0 else {
            throw GGUFError.writeFailed(file: path, reason: "cannot create \(temporaryPath): \(String(cString: strerror(errno)))")
        }
        var fdOpen = true
        var success = false
        defer {
            if fdOpen { close(fd) }
            if !success { unlink(temporaryPath) }
        }
        try header.withUnsafeBytes { try writeAll(fd, $0, header.count) }
        let maxBytes = tensors.map(\.byteCount).max() ?? 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(maxBytes, 1), alignment: 64)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        let zeros = [UInt8](repeating: 0, count: alignment)
        for t in tensors {
            let dst = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<t.byteCount])
            try produce(t, dst)
            try writeAll(fd, UnsafeRawBufferPointer(dst), t.byteCount)
            let pad = Self.padded(t.byteCount, alignment) - t.byteCount
            try zeros.withUnsafeBytes { try writeAll(fd, $0, pad) }
        }
        guard fsync(fd) == 0 else {
            throw GGUFError.writeFailed(file: path, reason: "fsync \(temporaryPath): \(String(cString: strerror(errno)))")
        }
        fdOpen = false
        guard close(fd) == 0 else {
            throw GGUFError.writeFailed(file: path, reason: "close \(temporaryPath): \(String(cString: strerror(errno)))")
        }
        try validate(expectedSize: totalSize, metadata: kvs)
        guard rename(temporaryPath, path) == 0 else {
            throw GGUFError.writeFailed(file: path, reason: "cannot rename \(temporaryPath) into place: \(String(cString: strerror(errno)))")
        }
        success = true
        let dir = (path as NSString).deletingLastPathComponent
        let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
        return totalSize
    }

    /// Re-open the temporary file and check it says exactly what was planned.
    private func validate(expectedSize: Int, metadata kvs: [(key: String, value: GGUFValue)]) throws {
        let f: GGUFFile
        do {
            f = try GGUFFile(path: temporaryPath)
        } catch let e as GGUFError {
            throw GGUFError.writeFailed(file: path, reason: "the written file does not validate: \(e)")
        }
        func fail(_ why: String) -> GGUFError { .writeFailed(file: path, reason: "the written file does not validate: \(why)") }
        guard f.mapping.size == expectedSize else { throw fail("size \(f.mapping.size), expected \(expectedSize)") }
        guard f.alignment == alignment else { throw fail("alignment \(f.alignment), expected \(alignment)") }
        guard f.metadataKeys == kvs.map(\.key) else { throw fail("metadata keys differ") }
        for (k, v) in kvs where f.metadata[k] != v && !(v.hasNaN) {
            throw fail("metadata '\(k)' reads back as \(String(describing: f.metadata[k]))")
        }
        guard f.tensorNames == tensors.map(\.name) else { throw fail("tensor names differ") }
        for t in tensors {
            guard let r = f.tensors[t.name], r.shape == t.shape, r.type == t.type, r.offset == t.offset,
                  r.byteCount == t.byteCount else {
                throw fail("tensor '\(t.name)' reads back differently")
            }
        }
    }

    private func writeAll(_ fd: Int32, _ buf: UnsafeRawBufferPointer, _ count: Int) throws {
        var done = 0
        while done < count {
            let n = posixWrite(fd, buf.baseAddress! + done, count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw GGUFError.writeFailed(file: path, reason: "write to \(temporaryPath): \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw GGUFError.writeFailed(file: path, reason: "write to \(temporaryPath) made no progress") }
            done += n
        }
    }

    static func padded(_ n: Int, _ a: Int) -> Int { (n + a - 1) / a * a }
}

/// `write(2)`, named so that `GGUFWriter.write` does not shadow it.
private func posixWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int {
    write(fd, p, n)
}

extension GGUFValue {
    /// Whether a float in the value is NaN (NaN != NaN, so such values are compared by type only on read-back).
    var hasNaN: Bool {
        switch self {
        case .float32(let x): return x.isNaN
        case .float64(let x): return x.isNaN
        case .array(let a): return a.hasNaN
        default: return false
        }
    }
}

extension GGUFArray {
    var hasNaN: Bool {
        switch self {
        case .float32(let xs): return xs.contains { $0.isNaN }
        case .float64(let xs): return xs.contains { $0.isNaN }
        case .array(let xs): return xs.contains { $0.hasNaN }
        default: return false
        }
    }
}
