import Foundation
import NLATestSupport
import Quant
import SIMDKernels
import Testing
@testable import NLARuntime

/// Packed weights go to disk on the first load and are mapped by later loads; a file that does not
/// belong to the tensor, or whose bytes differ from a fresh pack, is never used.
@Suite("Pack cache")
struct PackCacheTests {
    static let shapes: [(name: String, type: QuantType, rows: Int, cols: Int)] = [
        ("blk.0.q8", .q8_0, 96, 128), ("blk.0.q4", .q4_0, 64, 256), ("blk.1.q8", .q8_0, 48, 64),
    ]

    /// A GGUF file with random Q8_0 / Q4_0 tensors (scales kept finite and small).
    static func writeModel(_ path: String, seed: UInt64) throws {
        let w = try GGUFWriter(path: path)
        for s in shapes { _ = try w.addTensor(name: s.name, shape: [s.rows, s.cols], type: s.type) }
        var rng = SyntheticRNG(seed: seed)
        _ = try w.write { t, buf in
            let bpb = t.type.traits.bytesPerBlock
            for b in 0..<(buf.count / bpb) {
                let d = Float16(Float(rng.uniform(0.001, 0.01))).bitPattern
                buf[b * bpb] = UInt8(d & 0xFF); buf[b * bpb + 1] = UInt8(d >> 8)
                for i in 2..<bpb { buf[b * bpb + i] = UInt8(truncatingIfNeeded: rng.next()) }
            }
        }
    }

    struct Loaded {
        let packed: [PackedWeights]
        let file: GGUFFile
    }

    static func load(_ path: String, cache: String?) throws -> Loaded {
        let f = try GGUFFile(path: path)
        let ps = try shapes.map { s -> PackedWeights in
            let e = try #require(f.tensors[s.name]).entry
            return try #require(PackCache.packed(e, type: s.type, rows: s.rows, cols: s.cols, directory: cache))
        }
        return Loaded(packed: ps, file: f)
    }

    static func same(_ a: PackedWeights, _ b: PackedWeights) -> Bool {
        a.byteCount == b.byteCount && memcmp(a.bytes, b.bytes, a.byteCount) == 0
    }

    static func cacheFiles(_ dir: String) -> [String] {
        let fm = FileManager.default
        return ((try? fm.subpathsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".nlapack") }.map { dir + "/" + $0 }.sorted()
    }

    @Test("first load stores every matrix, the next maps them: the same bytes as a fresh pack")
    func storeThenMap() throws {
        guard PackedWeights.isAvailable else { print("[pack cache] skipped: no packed kernels on this CPU"); return }
        let root = SyntheticCheckpoint.makeTempDirectory("packcache")
        defer { SyntheticCheckpoint.remove(root) }
        let model = root + "/m.gguf", cache = root + "/cache"
        try Self.writeModel(model, seed: 1)
        let fresh = try Self.load(model, cache: nil)
        #expect(Self.cacheFiles(cache).isEmpty)
        let first = try Self.load(model, cache: cache)
        #expect(Self.cacheFiles(cache).count == Self.shapes.count)
        #expect(first.packed.allSatisfy { !$0.isBorrowed })
        let second = try Self.load(model, cache: cache)
        #expect(second.packed.allSatisfy { $0.isBorrowed })
        for i in Self.shapes.indices {
            #expect(Self.same(fresh.packed[i], second.packed[i]), "\(Self.shapes[i].name)")
            #expect(Self.same(fresh.packed[i], first.packed[i]), "\(Self.shapes[i].name)")
        }
        // The products of a mapped matrix are those of the fresh one.
        let p = second.packed[0], q = fresh.packed[0], m = 3
        var x = [Float](repeating: 0, count: m * p.cols)
        var rng = SyntheticRNG(seed: 7)
        for i in x.indices { x[i] = Float(rng.normal()) }
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: m * GemvActivation.q16.rowBytes(cols: p.cols), alignment: 64)
        defer { scratch.deallocate() }
        var y1 = [Float](repeating: 0, count: m * p.rows), y2 = y1
        p.matmul(x: x, y: &y1, m: m, scratch: scratch)
        q.matmul(x: x, y: &y2, m: m, scratch: scratch)
        #expect(y1 == y2)
    }

    @Test("damaged, truncated, foreign or stale files are rejected and replaced; mappings survive replacement")
    func badFilesAreNeverUsed() throws {
        guard PackedWeights.isAvailable else { print("[pack cache] skipped: no packed kernels on this CPU"); return }
        let root = SyntheticCheckpoint.makeTempDirectory("packcache")
        defer { SyntheticCheckpoint.remove(root) }
        let model = root + "/m.gguf", other = root + "/o.gguf", cache = root + "/cache"
        try Self.writeModel(model, seed: 1)
        try Self.writeModel(other, seed: 2)
        let fresh = try Self.load(model, cache: nil)
        _ = try Self.load(model, cache: cache)
        let files = Self.cacheFiles(cache)
        try #require(files.count == Self.shapes.count)
        // Which file holds which tensor: the name's hash.
        func file(of i: Int) throws -> String {
            let e = try #require(try GGUFFile(path: model).tensors[Self.shapes[i].name]).entry
            let k = PackCache.Key(entry: e, type: Self.shapes[i].type, rows: Self.shapes[i].rows, cols: Self.shapes[i].cols)
            return cache + "/" + k.modelHex + "/" + k.tensorHex + ".nlapack"
        }
        let held = try Self.load(model, cache: cache)  // mapped now, kept through the damage below
        func damage(_ i: Int, _ f: (inout Data) -> Void) throws {
            let path = try file(of: i)
            var d = try Data(contentsOf: URL(fileURLWithPath: path))
            f(&d)
            try FileManager.default.removeItem(atPath: path)  // a new inode: the held mapping keeps the old bytes
            try d.write(to: URL(fileURLWithPath: path))
        }
        let h = PackCache.headerBytes
        try damage(0) { $0[h + 5] ^= 0x40 }                            // first tile row: caught by the spot check
        try damage(1) { $0[$0.count - 1] ^= 0x01 }                     // last tile row
        try damage(2) { $0.removeLast(64) }                            // truncated
        var before = PackCache.counts
        let reloaded = try Self.load(model, cache: cache)
        var after = PackCache.counts
        #expect(after.rejected - before.rejected >= 3)
        for i in Self.shapes.indices {
            #expect(Self.same(fresh.packed[i], reloaded.packed[i]), "\(Self.shapes[i].name)")
            #expect(Self.same(fresh.packed[i], held.packed[i]), "held mapping of \(Self.shapes[i].name)")
            #expect(!reloaded.packed[i].isBorrowed, "\(Self.shapes[i].name) was packed again")
        }
        // Rewritten: the next load maps all three again.
        #expect(try Self.load(model, cache: cache).packed.allSatisfy { $0.isBorrowed })

        // A temporary file left by a writer that died: removed by the next store into that model's directory
        // once it is an hour old, kept while it may still be written.
        let dir = (try file(of: 0) as NSString).deletingLastPathComponent
        let stale = dir + "/x.nlapack.tmp.1.2", young = dir + "/y.nlapack.tmp.3.4"
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: stale))
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: young))
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: -7200)], ofItemAtPath: stale)
        try FileManager.default.removeItem(atPath: try file(of: 1))
        _ = try Self.load(model, cache: cache)  // stores tensor 1 again
        #expect(!FileManager.default.fileExists(atPath: stale))
        #expect(FileManager.default.fileExists(atPath: young))
        try FileManager.default.removeItem(atPath: young)

        // Header damage: magic, type word, checksum.
        try damage(0) { $0[0] ^= 0x20 }
        try damage(1) { $0[8] ^= 0x01 }
        try damage(2) { $0[PackCache.magic.count + 6 * 8 + 64] ^= 0x01 }
        before = PackCache.counts
        #expect(try Self.load(model, cache: cache).packed.allSatisfy { !$0.isBorrowed })
        after = PackCache.counts
        #expect(after.rejected - before.rejected >= 3)

        // A file of another model's tensor under this tensor's name: the header names another source.
        _ = try Self.load(other, cache: cache)
        let e = try #require(try GGUFFile(path: other).tensors[Self.shapes[0].name]).entry
        let k = PackCache.Key(entry: e, type: Self.shapes[0].type, rows: Self.shapes[0].rows, cols: Self.shapes[0].cols)
        let otherFile = cache + "/" + k.modelHex + "/" + k.tensorHex + ".nlapack"
        try FileManager.default.removeItem(atPath: try file(of: 0))
        try FileManager.default.copyItem(atPath: otherFile, toPath: try file(of: 0))
        let l = try Self.load(model, cache: cache)
        #expect(!l.packed[0].isBorrowed && Self.same(l.packed[0], fresh.packed[0]))

        // The source changes (new modification time): a new model key, nothing of the old one is used.
        let oldDir = (try file(of: 0) as NSString).deletingLastPathComponent
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: -3600)], ofItemAtPath: model)
        let touched = try Self.load(model, cache: cache)
        #expect(touched.packed.allSatisfy { !$0.isBorrowed })
        #expect((try file(of: 0) as NSString).deletingLastPathComponent != oldDir)
    }

    @Test("at most maxModels model directories are kept, the least recently loaded go first")
    func eviction() throws {
        guard PackedWeights.isAvailable else { print("[pack cache] skipped: no packed kernels on this CPU"); return }
        let root = SyntheticCheckpoint.makeTempDirectory("packcache")
        defer { SyntheticCheckpoint.remove(root) }
        let cache = root + "/cache", fm = FileManager.default
        var models: [String] = []
        for i in 0..<(PackCache.maxModels + 2) {
            let m = root + "/m\(i).gguf"
            try Self.writeModel(m, seed: UInt64(10 + i))
            models.append(m)
            _ = try Self.load(m, cache: cache)
            // Directory times one second apart, model 0 reloaded (refreshed) just before the last two.
            if i == PackCache.maxModels - 1 { _ = try Self.load(models[0], cache: cache) }
            Thread.sleep(forTimeInterval: 0.02)
            let dirs = try fm.contentsOfDirectory(atPath: cache)
            #expect(dirs.count <= PackCache.maxModels)
        }
        // Model 0 was refreshed after models 1…maxModels−1, so models 1 and 2 were evicted, not 0.
        #expect(try Self.load(models[0], cache: cache).packed.allSatisfy { $0.isBorrowed })
        #expect(try Self.load(models[1], cache: cache).packed.allSatisfy { !$0.isBorrowed })
    }
}
