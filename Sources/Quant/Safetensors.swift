// Memory-mapped safetensors reader (single file or sharded) and a small writer.
//
// Format (https://github.com/huggingface/safetensors): 8-byte little-endian header length N,
// N bytes of UTF-8 JSON `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`,
// then the data section; offsets are relative to the start of the data section.
// Validation follows the reference implementation: header length bound, well-formed JSON,
// every [begin, end) inside the data section, end - begin == numel * dtype size, no overlaps.

import Foundation

public enum SafetensorsError: Error, CustomStringConvertible, Equatable {
    case cannotOpen(file: String, reason: String)
    case truncated(file: String, reason: String)
    case badHeader(file: String, reason: String)
    case badTensor(file: String, tensor: String, reason: String)
    case missingTensor(file: String, tensor: String)
    case badIndex(file: String, reason: String)

    /// One line: control characters quoted from the input (keys, names) are escaped.
    public var description: String { oneLineMessage(unescapedDescription) }

    private var unescapedDescription: String {
        switch self {
        case .cannotOpen(let f, let r): return "\(f): cannot open: \(r)"
        case .truncated(let f, let r): return "\(f): truncated safetensors file: \(r)"
        case .badHeader(let f, let r): return "\(f): invalid safetensors header: \(r)"
        case .badTensor(let f, let t, let r): return "\(f): tensor '\(t)': \(r)"
        case .missingTensor(let f, let t): return "\(f): no tensor named '\(t)'"
        case .badIndex(let f, let r): return "\(f): invalid safetensors index: \(r)"
        }
    }
}

/// A read-only memory mapping of a whole file. Unmapped on deinit.
/// Which file (device, inode) in which state (size, modification time) a mapping was made from: equal
/// identities mean the same bytes unless the file was rewritten in place within the timestamp's resolution.
public struct FileIdentity: Hashable, Sendable {
    public let device: UInt64
    public let inode: UInt64
    public let size: Int64
    public let mtimeSeconds: Int64
    public let mtimeNanoseconds: Int64

    /// A key for `count` bytes at `offset` of this file as it is now: it changes when the file is replaced
    /// or rewritten (inode, size or modification time), the same assumption the pack cache makes.
    public func rangeKey(offset: Int, count: Int) -> String {
        "\(device):\(inode):\(size):\(mtimeSeconds).\(mtimeNanoseconds)@\(offset)+\(count)"
    }
}

public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let base: UnsafeRawPointer
    public let size: Int
    /// The identity of the opened file (from the same fstat as `size`).
    public let identity: FileIdentity
    /// Kept open for `copy(_:count:into:)`; closed on deinit.
    private let fd: Int32

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw SafetensorsError.cannotOpen(file: path, reason: String(cString: strerror(errno)))
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw SafetensorsError.cannotOpen(file: path, reason: reason)
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            close(fd)
            throw SafetensorsError.cannotOpen(file: path, reason: "is a directory")
        }
        size = Int(st.st_size)
        #if os(Linux)
        let mtime = st.st_mtim
        #else
        let mtime = st.st_mtimespec
        #endif
        identity = FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: Int64(st.st_size),
                                mtimeSeconds: Int64(mtime.tv_sec), mtimeNanoseconds: Int64(mtime.tv_nsec))
        self.fd = fd
        if size == 0 {
            base = UnsafeRawPointer(bitPattern: 1)!  // never dereferenced: size checks come first
            return
        }
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else {
            close(fd)
            throw SafetensorsError.cannotOpen(file: path, reason: "mmap failed: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(p)
    }

    deinit {
        if size > 0 { munmap(UnsafeMutableRawPointer(mutating: base), size) }
        close(fd)
    }

    /// Copy `count` bytes at `p` into `dst`. Bytes inside the mapping are read with `pread` instead of
    /// through the mapping: a small scattered read (one embedding row per token) would otherwise map the
    /// whole large page-cache folio around it into this process (hundreds of KB of resident set per row;
    /// `MADV_RANDOM` does not stop that). Anything else (memory the caller owns) is copied directly.
    public func copy(_ p: UnsafeRawPointer, count: Int, into dst: UnsafeMutableRawPointer) {
        let offset = p - base
        guard size > 0, offset >= 0, offset + count <= size else {
            dst.copyMemory(from: p, byteCount: count)
            return
        }
        var done = 0
        while done < count {
            let n = pread(fd, dst + done, count - done, off_t(offset + done))
            if n > 0 { done += n; continue }
            if n < 0 && errno == EINTR { continue }
            // Unreadable now (should not happen for a file we mapped): fall back to the mapping.
            (dst + done).copyMemory(from: p + done, byteCount: count - done)
            return
        }
    }

    /// Tell the kernel the pages of [p, p+count) are not needed now: they leave this process's resident
    /// set (and are read again from the file if touched later). Used when streaming a large file once.
    public func dropPages(_ p: UnsafeRawPointer, count: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (Int(bitPattern: p) / page) * page
        let end = Int(bitPattern: p) + count
        guard end > start else { return }
        madvise(UnsafeMutableRawPointer(bitPattern: start), end - start, Int32(MADV_DONTNEED))
    }
}

/// One tensor of a safetensors file: a typed view into the mapping (no copy).
public struct TensorView: @unchecked Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public let data: UnsafeRawPointer
    public let byteCount: Int
    /// The file it lives in (keeps the mapping alive and names errors).
    public let file: MappedFile

    public var count: Int { shape.reduce(1, *) }

    /// Copy the elements into a new f32 array (widening bf16 / f16).
    public func toFloatArray() -> [Float] {
        precondition(dtype.isFloat)
        return [Float](unsafeUninitializedCapacity: count) { buf, n in
            widenToFloat(dtype, data, buf.baseAddress!, count: count)
            n = count
        }
    }
}

/// Largest header we accept (the reference implementation uses 100 MB).
public let safetensorsMaxHeaderBytes = 100_000_000

/// A single memory-mapped `.safetensors` file.
public final class SafetensorsFile: @unchecked Sendable {
    public let path: String
    public let mapping: MappedFile
    public let metadata: [String: String]
    public let tensors: [String: TensorView]
    /// Tensor names in file order of their data offsets.
    public let names: [String]

    public init(path: String) throws {
        self.path = path
        let m = try MappedFile(path: path)
        mapping = m
        guard m.size >= 8 else {
            throw SafetensorsError.truncated(file: path, reason: "\(m.size) bytes, need at least 8 for the header length")
        }
        let rawLen = UInt64(littleEndian: m.base.loadUnaligned(as: UInt64.self))
        guard rawLen <= UInt64(safetensorsMaxHeaderBytes) else {
            throw SafetensorsError.badHeader(file: path, reason: "header length \(rawLen) exceeds \(safetensorsMaxHeaderBytes)")
        }
        let headerLen = Int(rawLen)
        guard 8 + headerLen <= m.size else {
            throw SafetensorsError.truncated(file: path, reason: "header length \(headerLen) runs past end of file (\(m.size) bytes)")
        }
        let headerData = Data(bytes: m.base + 8, count: headerLen)
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: headerData)
        } catch {
            throw SafetensorsError.badHeader(file: path, reason: "header is not valid JSON")
        }
        guard let dict = json as? [String: Any] else {
            throw SafetensorsError.badHeader(file: path, reason: "header is not a JSON object")
        }
        if let dup = JSONDuplicateKeys.first(in: headerData) {
            throw SafetensorsError.badHeader(file: path, reason: "duplicate key '\(dup)'")
        }
        let dataStart = 8 + headerLen
        let dataSize = m.size - dataStart
        var meta: [String: String] = [:]
        var views: [String: TensorView] = [:]
        var spans: [(begin: Int, end: Int, name: String)] = []
        for (name, value) in dict {
            if name == "__metadata__" {
                guard let md = value as? [String: Any] else {
                    throw SafetensorsError.badHeader(file: path, reason: "__metadata__ is not an object")
                }
                for (k, v) in md {
                    guard let s = v as? String else {
                        throw SafetensorsError.badHeader(file: path, reason: "__metadata__['\(k)'] is not a string")
                    }
                    meta[k] = s
                }
                continue
            }
            guard let info = value as? [String: Any] else {
                throw SafetensorsError.badTensor(file: path, tensor: name, reason: "entry is not an object")
            }
            guard let dtStr = info["dtype"] as? String else {
                throw SafetensorsError.badTensor(file: path, tensor: name, reason: "missing dtype")
            }
            guard let dtype = DType(rawValue: dtStr) else {
                throw SafetensorsError.badTensor(file: path, tensor: name, reason: "unsupported dtype \(dtStr)")
            }
            guard let shapeAny = info["shape"] as? [Any] else {
                throw SafetensorsError.badTensor(file: path, tensor: name, reason: "missing shape")
            }
            var shape: [Int] = []
            for d in shapeAny {
                guard let i = jsonExactInt(d), i >= 0 else {
                    throw SafetensorsError.badTensor(file: path, tensor: name, reason: "shape entry \(d) is not a non-negative integer")
                }
                shape.append(i)
            }
            guard let offs = info["data_offsets"] as? [Any], offs.count == 2,
                  let begin = jsonExactInt(offs[0]), let end = jsonExactInt(offs[1]) else {
                throw SafetensorsError.badTensor(file: path, tensor: name, reason: "data_offsets must be two integers")
            }
            guard begin >= 0, begin <= end else {
                throw SafetensorsError.badTensor(file: path, tensor: name, reason: "data_offsets [\(begin), \(end)) are invalid")
            }
            guard end <= dataSize else {
                throw SafetensorsError.truncated(file: path, reason: "tensor '\(name)' data [\(begin), \(end)) runs past the end of the data section (\(dataSize) bytes)")
            }
            var numel = 1
            for d in shape {
                let (r, o) = numel.multipliedReportingOverflow(by: d)
                guard !o else { throw SafetensorsError.badTensor(file: path, tensor: name, reason: "shape \(shape) overflows") }
                numel = r
            }
            let (bytes, overflow) = numel.multipliedReportingOverflow(by: dtype.byteSize)
            guard !overflow else {
                throw SafetensorsError.badTensor(file: path, tensor: name, reason: "shape \(shape) × \(dtype.rawValue) overflows")
            }
            guard end - begin == bytes else {
                throw SafetensorsError.badTensor(file: path, tensor: name,
                    reason: "byte size \(end - begin) does not match shape \(shape) × \(dtype.rawValue) (\(bytes) bytes)")
            }
            spans.append((begin, end, name))
            views[name] = TensorView(name: name, dtype: dtype, shape: shape,
                                     data: m.base + dataStart + begin, byteCount: end - begin, file: m)
        }
        // Like the reference implementation: tensors tile the data section exactly, in offset order
        // (no overlaps, no gaps, no trailing bytes).
        spans.sort { $0.begin != $1.begin ? $0.begin < $1.begin : $0.end < $1.end }
        var expected = 0
        for (i, sp) in spans.enumerated() {
            if sp.begin < expected {
                throw SafetensorsError.badTensor(file: path, tensor: sp.name, reason: "data overlaps tensor '\(spans[i - 1].name)'")
            }
            if sp.begin > expected {
                throw SafetensorsError.badTensor(file: path, tensor: sp.name, reason: "gap of \(sp.begin - expected) bytes before its data")
            }
            expected = sp.end
        }
        if expected != dataSize {
            throw SafetensorsError.badHeader(file: path, reason: "\(dataSize - expected) bytes after the last tensor's data")
        }
        metadata = meta
        tensors = views
        names = spans.map(\.name)
    }

    public func tensor(_ name: String) throws -> TensorView {
        guard let t = tensors[name] else { throw SafetensorsError.missingTensor(file: path, tensor: name) }
        return t
    }
}

/// A checkpoint: either `model.safetensors`, or shards listed by `model.safetensors.index.json`,
/// or any set of `*.safetensors` files in a directory. Tensors are looked up by name across shards.
public final class SafetensorsCheckpoint: @unchecked Sendable {
    public let directory: String
    public let files: [SafetensorsFile]
    public let tensors: [String: TensorView]

    /// Open the checkpoint in `directory`. With an index file, exactly the shards it names are opened
    /// and every tensor must live in the shard the index says.
    /// `excluding`: file names never treated as shards of the model (e.g. an NLA AR's value_head.safetensors).
    public init(directory: String, fileNames: [String]? = nil, excluding: Set<String> = []) throws {
        self.directory = directory
        let fm = FileManager.default
        let indexPath = (directory as NSString).appendingPathComponent("model.safetensors.index.json")
        var shardOf: [String: String]? = nil
        var shardNames: [String]
        if let fileNames {
            shardNames = fileNames
        } else if fm.fileExists(atPath: indexPath) {
            guard let data = fm.contents(atPath: indexPath) else {
                throw SafetensorsError.badIndex(file: indexPath, reason: "cannot read")
            }
            guard let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw SafetensorsError.badIndex(file: indexPath, reason: "not a JSON object")
            }
            guard let wm = obj["weight_map"] as? [String: String] else {
                throw SafetensorsError.badIndex(file: indexPath, reason: "missing or malformed weight_map")
            }
            shardOf = wm
            shardNames = Array(Set(wm.values)).sorted()
        } else if fm.fileExists(atPath: (directory as NSString).appendingPathComponent("model.safetensors")) {
            shardNames = ["model.safetensors"]
        } else {
            let all = (try? fm.contentsOfDirectory(atPath: directory)) ?? []
            shardNames = all.filter { $0.hasSuffix(".safetensors") && !excluding.contains($0) }.sorted()
            if shardNames.isEmpty {
                throw SafetensorsError.cannotOpen(file: directory, reason: "no model.safetensors, model.safetensors.index.json or *.safetensors file")
            }
        }
        var files: [SafetensorsFile] = []
        var all: [String: TensorView] = [:]
        for name in shardNames {
            let f = try SafetensorsFile(path: (directory as NSString).appendingPathComponent(name))
            for (tname, view) in f.tensors {
                if all[tname] != nil {
                    throw SafetensorsError.badTensor(file: f.path, tensor: tname, reason: "appears in more than one shard")
                }
                all[tname] = view
            }
            files.append(f)
        }
        if let shardOf {
            for (tname, shard) in shardOf {
                guard let v = all[tname] else {
                    throw SafetensorsError.badIndex(file: indexPath, reason: "tensor '\(tname)' listed in \(shard) is missing")
                }
                if (v.file.path as NSString).lastPathComponent != shard {
                    throw SafetensorsError.badIndex(file: indexPath, reason: "tensor '\(tname)' is in \((v.file.path as NSString).lastPathComponent), index says \(shard)")
                }
            }
        }
        self.files = files
        self.tensors = all
    }
}

/// Writes a safetensors file atomically: to a temporary file beside the target, renamed on success.
public struct SafetensorsWriter {
    public struct Entry {
        public var name: String
        public var dtype: DType
        public var shape: [Int]
        public var bytes: Data
        public init(name: String, dtype: DType, shape: [Int], bytes: Data) {
            self.name = name; self.dtype = dtype; self.shape = shape; self.bytes = bytes
        }
        public init(name: String, shape: [Int], floats: [Float]) {
            self.init(name: name, dtype: .f32, shape: shape, bytes: floats.withUnsafeBytes { Data($0) })
        }
        public init(name: String, shape: [Int], int32s: [Int32]) {
            self.init(name: name, dtype: .i32, shape: shape, bytes: int32s.withUnsafeBytes { Data($0) })
        }
        public init(name: String, shape: [Int], bf16FromFloats floats: [Float]) {
            let bits = floats.map(floatToBF16)
            self.init(name: name, dtype: .bf16, shape: shape, bytes: bits.withUnsafeBytes { Data($0) })
        }
    }

    public var entries: [Entry] = []
    public var metadata: [String: String] = ["format": "pt"]
    public init() {}

    public mutating func add(_ e: Entry) {
        precondition(e.bytes.count == e.shape.reduce(1, *) * e.dtype.byteSize, "safetensors entry \(e.name): size mismatch")
        entries.append(e)
    }

    /// The serialized file contents.
    public func serialized() -> Data {
        var header = "{"
        var offset = 0
        var parts: [String] = []
        if !metadata.isEmpty {
            let md = metadata.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)):\(jsonString($0.value))" }.joined(separator: ",")
            parts.append("\"__metadata__\":{\(md)}")
        }
        for e in entries {
            let end = offset + e.bytes.count
            parts.append("\(jsonString(e.name)):{\"dtype\":\"\(e.dtype.rawValue)\",\"shape\":[\(e.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        header += parts.joined(separator: ",") + "}"
        var hbytes = Data(header.utf8)
        while hbytes.count % 8 != 0 { hbytes.append(0x20) }
        var out = Data()
        var len = UInt64(hbytes.count).littleEndian
        withUnsafeBytes(of: &len) { out.append(contentsOf: $0) }
        out.append(hbytes)
        for e in entries { out.append(e.bytes) }
        return out
    }

    /// Write to `path` via a temporary file in the same directory and an atomic rename.
    public func write(to path: String) throws {
        try writeFileAtomically(serialized(), to: path)
    }
}

/// Write `data` to `path` through `path.tmp-PID` and rename, so that a failure never leaves a
/// half-written file under the final name.
public func writeFileAtomically(_ data: Data, to path: String) throws {
    let tmp = path + ".tmp-\(getpid())"
    guard FileManager.default.createFile(atPath: tmp, contents: data) else {
        throw SafetensorsError.cannotOpen(file: path, reason: "cannot create \(tmp): \(String(cString: strerror(errno)))")
    }
    if rename(tmp, path) != 0 {
        let reason = String(cString: strerror(errno))
        unlink(tmp)
        throw SafetensorsError.cannotOpen(file: path, reason: "cannot rename into place: \(reason)")
    }
}

func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
        }
    }
    return out + "\""
}
