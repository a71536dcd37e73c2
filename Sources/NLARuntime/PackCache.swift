// Packed weights on disk. Loading a Q8_0 / Q4_0 GGUF re-lays every matrix into the packed 16-row tiles
// of the AVX-512 VNNI / AVX2 kernels (`PackedWeights`): a pass over the whole model into fresh memory in every
// process (the 270M: ~0.1 s of packing plus the first touch of ~300 MB, 0.15–0.7 s on the VMs measured;
// the 27B pair: tens of GB). The packed bytes are a pure function of the source tensor and the layout, so
// the first load writes each packed matrix to a file and later loads map that file read-only: page-cache
// pages that need no packing and no zeroing, shared between processes.
//
//   <dir>/<model key>/<tensor key>.nlapack
//     model key  = SHA-256 of the source file's identity (device, inode, size, modification time) and
//                  path: a rewritten, replaced or touched model file gets a new key, its old entry ages out
//     tensor key = SHA-256 of the tensor name
//   file = 4096-byte header (magic, layout, type, shape, model key, tensor key, source offset, header
//          checksum), then the packed bytes (page-aligned, so the mapping is usable as is).
//
// A file whose header does not match what the loader expects (another layout version, type, shape,
// source, a bad checksum, a size that is not header + payload) is ignored and replaced. The payload is
// not checksummed (that would read the whole file on every load); instead three tile rows (first,
// middle, last) are packed again from the source and compared, which catches a stale or foreign file.
// Files are written to a temporary name and renamed into place, so readers never see half a file; a
// mapping keeps its file's bytes even if the file is replaced or deleted later. Writing is skipped when
// it would leave less than 2 GiB or 10 % of the file system free, and failures only cost the pack next time.
// At most `maxModels` model directories are kept (least recently loaded removed first).

import Crypto
import Foundation
import Quant
import SIMDKernels
import Synchronization

public enum PackCache {
    /// Bumped whenever the file layout changes (the packed tile layout has its own check: block bytes).
    static let magic = Array("NLAPACK1".utf8)
    static let headerBytes = 4096
    /// Model directories kept; storing a new model removes the least recently loaded ones beyond this.
    public static let maxModels = 6

    /// $NLA_PACK_CACHE, else <NLA cache>/packed (about the size of the quantized model files used; safe to
    /// delete); NLA_PACK_CACHE=off (or 0, no, false, empty) packs in memory at every load.
    public static var defaultDirectory: String? {
        if let v = ProcessInfo.processInfo.environment["NLA_PACK_CACHE"] {
            return ["", "0", "off", "no", "false"].contains(v.lowercased()) ? nil : (v as NSString).expandingTildeInPath
        }
        return NLACache.root + "/packed"
    }

    /// The directory model loads use (read once per process).
    public static let directory: String? = defaultDirectory

    /// What the loads of this process did (tests, diagnostics).
    public struct Counts: Equatable, Sendable {
        public var mapped = 0, stored = 0, rejected = 0
    }
    private static let tally = Mutex(Counts())
    public static var counts: Counts { tally.withLock { $0 } }
    private static func count(_ f: (inout Counts) -> Void) { tally.withLock { f(&$0) } }

    /// The packed form of a quantized tensor: mapped from the cache when a valid file exists, else packed
    /// now (and stored when `directory` is set). Nil when this CPU does not pack the tensor's shape or type.
    static func packed(_ entry: TensorEntry, type: QuantType, rows: Int, cols: Int, directory: String? = PackCache.directory,
                       consumed: ((UnsafeRawPointer, Int) -> Void)? = nil) -> PackedWeights? {
        guard PackedWeights.byteCount(type, rows: rows, cols: cols) != nil else { return nil }
        guard let directory else { return PackedWeights(type, blocks: entry.data, rows: rows, cols: cols, consumed: consumed) }
        let key = Key(entry: entry, type: type, rows: rows, cols: cols)
        let modelDir = directory + "/" + key.modelHex
        if let p = load(key: key, entry: entry, path: modelDir + "/" + key.tensorHex + ".nlapack") {
            count { $0.mapped += 1 }
            touch(modelDir)
            return p
        }
        guard let p = PackedWeights(type, blocks: entry.data, rows: rows, cols: cols, consumed: consumed) else { return nil }
        if store(key: key, packed: p, directory: directory, modelDir: modelDir) { count { $0.stored += 1 } }
        return p
    }

    // MARK: keys and header

    struct Key {
        let model: [UInt8]    // 32 bytes
        let tensor: [UInt8]   // 32 bytes
        let type: QuantType
        let rows: Int, cols: Int
        let sourceOffset: Int
        let blockBytes: Int   // the layout's fingerprint: packed tile bytes of the type + 65536 · layout id

        init(entry: TensorEntry, type: QuantType, rows: Int, cols: Int) {
            let id = entry.file.identity
            let source = "\(id.device):\(id.inode):\(id.size):\(id.mtimeSeconds).\(id.mtimeNanoseconds):\(entry.file.path)"
            model = Array(SHA256.hash(data: Array(source.utf8)))
            tensor = Array(SHA256.hash(data: Array(entry.name.utf8)))
            self.type = type
            self.rows = rows
            self.cols = cols
            sourceOffset = entry.data - entry.file.base
            blockBytes = PackedWeights.blockBytes(type) + 65536 * PackedWeights.layout
        }

        var modelHex: String { model.prefix(16).map { String(format: "%02x", $0) }.joined() }
        var tensorHex: String { tensor.prefix(16).map { String(format: "%02x", $0) }.joined() }
    }

    /// The header for `key` with a payload of `payload` bytes (exactly `headerBytes` long).
    static func header(_ key: Key, payload: Int) -> [UInt8] {
        var h = magic
        func word(_ v: Int) { withUnsafeBytes(of: UInt64(truncatingIfNeeded: v).littleEndian) { h += $0 } }
        word(Int(key.type.rawValue)); word(key.rows); word(key.cols); word(key.blockBytes); word(key.sourceOffset); word(payload)
        h += key.model + key.tensor
        let sum = h.withUnsafeBytes { TokenizerDiskCache.checksum($0) }
        withUnsafeBytes(of: sum.littleEndian) { h += $0 }
        return h + [UInt8](repeating: 0, count: headerBytes - h.count)
    }

    // MARK: reading

    /// A mapped file kept alive by the matrices that borrow its bytes.
    final class Mapping {
        let base: UnsafeMutableRawPointer
        let length: Int
        init(base: UnsafeMutableRawPointer, length: Int) { self.base = base; self.length = length }
        deinit { munmap(base, length) }
    }

    static func load(key: Key, entry: TensorEntry, path: String) -> PackedWeights? {
        guard let payload = PackedWeights.byteCount(key.type, rows: key.rows, cols: key.cols) else { return nil }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        let want = header(key, payload: payload)
        var got = [UInt8](repeating: 0, count: headerBytes)
        guard fstat(fd, &st) == 0, Int(st.st_size) == headerBytes + payload,
              got.withUnsafeMutableBytes({ pread(fd, $0.baseAddress!, headerBytes, 0) }) == headerBytes, got == want else {
            count { $0.rejected += 1 }
            return nil
        }
        let length = headerBytes + payload
        guard let raw = mmap(nil, length, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0), raw != MAP_FAILED else { return nil }
        let mapping = Mapping(base: raw, length: length)
        guard let p = PackedWeights(key.type, packed: raw + headerBytes, rows: key.rows, cols: key.cols, owner: mapping) else { return nil }
        // Spot-check the payload against the source: first, middle and last tile rows packed again.
        let tiles = key.rows / 16, srcTile = 16 * key.type.kernelRowBytes(cols: key.cols)
        let ok = withUnsafeTemporaryAllocation(byteCount: srcTile, alignment: 64) { buf in
            Set([0, tiles / 2, tiles - 1]).allSatisfy { t in
                entry.file.copy(entry.data + t * srcTile, count: srcTile, into: buf.baseAddress!)
                return p.tileRowMatches(t, source: UnsafeRawPointer(buf.baseAddress!))
            }
        }
        guard ok else {
            count { $0.rejected += 1 }
            return nil
        }
        return p
    }

    // MARK: writing

    /// Writes `packed` for `key`; false when skipped or failed (the cache is an optimization).
    static func store(key: Key, packed: PackedWeights, directory: String, modelDir: String) -> Bool {
        let fm = FileManager.default
        let isNew = !fm.fileExists(atPath: modelDir)
        do { try fm.createDirectory(atPath: modelDir, withIntermediateDirectories: true) } catch { return false }
        if isNew { evict(directory: directory, keeping: maxModels, sparing: modelDir) } else { removeStaleTemporaries(modelDir) }
        var vfs = statvfs()
        guard statvfs(modelDir, &vfs) == 0 else { return false }
        let free = Int(vfs.f_bavail) * Int(vfs.f_frsize), total = Int(vfs.f_blocks) * Int(vfs.f_frsize)
        let size = headerBytes + packed.byteCount
        guard free - size >= max(2 << 30, total / 10) else { return false }
        let final = modelDir + "/" + key.tensorHex + ".nlapack"
        let tmp = final + ".tmp.\(ProcessInfo.processInfo.processIdentifier).\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return false }
        let h = header(key, payload: packed.byteCount)
        let ok = h.withUnsafeBytes { writeAll(fd, $0.baseAddress!, h.count) } && writeAll(fd, packed.bytes, packed.byteCount)
        if close(fd) != 0 || !ok || rename(tmp, final) != 0 {
            unlink(tmp)
            return false
        }
        return true
    }

    private static func writeAll(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Bool {
        var done = 0
        while done < n {
            let w = write(fd, p + done, min(n - done, 1 << 30))
            if w > 0 { done += w; continue }
            if w < 0 && errno == EINTR { continue }
            return false
        }
        return true
    }

    /// Temporary files more than an hour old: left by a process that died while writing.
    static func removeStaleTemporaries(_ modelDir: String) {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: modelDir) else { return }
        for n in names where n.contains(".nlapack.tmp.") {
            let p = modelDir + "/" + n
            if let d = (try? fm.attributesOfItem(atPath: p))?[.modificationDate] as? Date, d < Date(timeIntervalSinceNow: -3600) {
                try? fm.removeItem(atPath: p)
            }
        }
    }

    /// Marks a model directory as just used (eviction keeps the most recent).
    private static func touch(_ dir: String) { utimes(dir, nil) }

    /// Removes the least recently used model directories beyond `keeping` (never `sparing`).
    static func evict(directory: String, keeping: Int, sparing: String) {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: directory) else { return }
        let dirs = names.filter { $0.count == 32 && $0.allSatisfy(\.isHexDigit) }.map { directory + "/" + $0 }.filter { $0 != sparing }
        guard dirs.count + 1 > keeping else { return }
        let dated = dirs.map { ($0, ((try? fm.attributesOfItem(atPath: $0))?[.modificationDate] as? Date) ?? .distantPast) }
        for (d, _) in dated.sorted(by: { $0.1 > $1.1 }).dropFirst(max(keeping - 1, 0)) { try? fm.removeItem(atPath: d) }
    }
}
