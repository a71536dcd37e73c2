// GGUF v3: write → read round trips, a file written by the gguf package's GGUFWriter (read, and rewritten
// byte for byte by ours), the writer's contract, and corrupted / truncated files.

import Foundation
import Testing
import NLATestSupport
@testable import Quant

enum GGUFTestSupport {
    /// A fresh empty directory.
    static func tempDir() -> String {
        TestPaths.tempDirectory("gguf")
    }

    static func write(_ bytes: [UInt8], to path: String) {
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
    }

    /// Metadata with every value type, edge values, empty and nested arrays.
    static let allValueTypes: [(String, GGUFValue)] = [
        ("general.architecture", .string("gemma3")),
        ("t.u8", .uint8(255)), ("t.i8", .int8(-128)), ("t.u16", .uint16(65535)), ("t.i16", .int16(-32768)),
        ("t.u32", .uint32(.max)), ("t.i32", .int32(.min)), ("t.u64", .uint64(.max)), ("t.i64", .int64(.min)),
        ("t.f32", .float32(-0x1.fffffep127)), ("t.f32_sub", .float32(0x1p-149)), ("t.f64", .float64(.pi)),
        ("t.f64_inf", .float64(-.infinity)), ("t.true", .bool(true)), ("t.false", .bool(false)),
        ("t.str", .string("Gemma ✓ \"q\"\n\u{0}end")), ("t.str_empty", .string("")),
        ("t.a_u8", .array(.uint8([0, 7, 255]))), ("t.a_i8", .array(.int8([-1, 1]))),
        ("t.a_u16", .array(.uint16([1, 65535]))), ("t.a_i16", .array(.int16([-2]))),
        ("t.a_u32", .array(.uint32([3, 4_000_000_000]))), ("t.a_i32", .array(.int32([-5, 6]))),
        ("t.a_u64", .array(.uint64([.max]))), ("t.a_i64", .array(.int64([.min, 0]))),
        ("t.a_f32", .array(.float32([0.5, -1e-3, .infinity]))), ("t.a_f64", .array(.float64([1e300, -0.0]))),
        ("t.a_bool", .array(.bool([true, false, true]))),
        ("t.a_str", .array(.string(["<pad>", "", "▁the", "日本"]))),
        ("t.a_empty", .array(.float32([]))), ("t.a_str_empty", .array(.string([]))),
        ("t.a_nested", .array(.array([.int32([1, 2]), .string(["x"]), .array([.uint8([9])])]))),
        ("tokenizer.json", .string(String(repeating: "{\"vocab\": 1}", count: 500))),
    ]

    /// Shapes (HF order) used for every type in the round trip.
    static let shapes: [[Int]] = [[2, 64], [96], [2, 3, 32], [1, 2, 1, 32], [0, 32]]
    /// Shapes for a type: widths that are whole blocks of it (256 for the K-quants).
    static func shapes(for t: QuantType) -> [[Int]] {
        t.traits.blockSize <= 32 ? shapes : [[2, 256], [512], [1, 2, 256], [0, 256]]
    }

    static func source(_ shape: [Int], seed: UInt64) -> [Float] {
        var r = QuantTestRNG(seed: seed)
        return (0..<shape.reduce(1, *)).map { _ in r.normal() }
    }

    /// Offset of the byte after the length-prefixed `string` in the header (last occurrence before `end`).
    static func position(of string: String, in bytes: [UInt8], before end: Int) -> Int? {
        var needle: [UInt8] = []
        needle.ggufAppend(string: string)
        var i = end - needle.count
        while i >= 0 {
            if Array(bytes[i..<i + needle.count]) == needle { return i + needle.count }
            i -= 1
        }
        return nil
    }

    static func patch<T: FixedWidthInteger>(_ bytes: inout [UInt8], at offset: Int, _ value: T) {
        var v: [UInt8] = []
        v.ggufAppend(value)
        bytes.replaceSubrange(offset..<offset + v.count, with: v)
    }

    static func expectError(_ bytes: [UInt8], _ check: (GGUFError) -> Bool, _ comment: String,
                            sourceLocation: SourceLocation = #_sourceLocation) {
        let path = tempDir() + "/bad.gguf"
        write(bytes, to: path)
        do {
            _ = try GGUFFile(path: path)
            Issue.record("\(comment): opened without error", sourceLocation: sourceLocation)
        } catch let e as GGUFError {
            #expect(check(e), "\(comment): wrong error \(e)", sourceLocation: sourceLocation)
            #expect(e.file == path && e.description.hasPrefix(path + ": "), "\(comment): error does not name the file: \(e)",
                    sourceLocation: sourceLocation)
        } catch {
            Issue.record("\(comment): unexpected error type \(error)", sourceLocation: sourceLocation)
        }
    }
}

@Suite struct GGUFRoundTripTests {
    @Test(arguments: [32, 64, 256])
    func everyValueTypeAndEveryTableType(alignment: Int) throws {
        let path = GGUFTestSupport.tempDir() + "/rt.gguf"
        let w = try GGUFWriter(path: path, alignment: alignment)
        for (k, v) in GGUFTestSupport.allValueTypes { try w.addMetadata(k, value: v) }
        var sources: [String: (shape: [Int], x: [Float])] = [:]
        var seed: UInt64 = 1
        for t in QuantType.allCases {
            for shape in GGUFTestSupport.shapes(for: t) {
                let name = "model.\(t.traits.name.lowercased()).\(shape.map(String.init).joined(separator: "x")).weight"
                sources[name] = (shape, GGUFTestSupport.source(shape, seed: seed))
                seed += 1
                try w.addTensor(name: name, shape: shape, type: t)
            }
        }
        var calls: [String] = []
        let size = try w.write { tensor, dst in
            calls.append(tensor.name)
            #expect(dst.count == tensor.byteCount)
            let s = sources[tensor.name]!
            try s.x.withUnsafeBufferPointer { try tensor.type.quantizeRows($0, width: s.shape.last!, into: dst) }
        }
        #expect(calls == w.tensors.map(\.name))

        let f = try GGUFFile(path: path)
        #expect(f.mapping.size == size)
        #expect(f.version == 3)
        #expect(f.alignment == alignment)
        #expect(f.dataOffset % alignment == 0)
        #expect(f.metadataKeys == ["general.alignment"] + GGUFTestSupport.allValueTypes.map(\.0))
        #expect(f.metadata["general.alignment"] == .uint32(UInt32(alignment)))
        for (k, v) in GGUFTestSupport.allValueTypes { #expect(f.metadata[k] == v, "\(k)") }
        #expect(f.tensorNames == calls)
        for (name, s) in sources {
            let t = try f.tensor(name)
            let type = try #require(QuantType.allCases.first { name.hasPrefix("model.\($0.traits.name.lowercased()).") })
            #expect(t.type == type && t.shape == s.shape && t.ggufDims == s.shape.reversed(), "\(name)")
            #expect(Int(bitPattern: t.data) % alignment == 0 || t.byteCount == 0)
            let want = try type.quantize(s.x, width: s.shape.last!)
            #expect(Array(t.bytes) == want, "\(name): bytes")
            #expect(try t.toFloatArray() == (try type.dequantize(want, width: s.shape.last!)), "\(name): values")
        }
        #expect(throws: GGUFError.missingTensor(file: path, tensor: "nope")) { try f.tensor("nope") }
    }

    @Test func largeStringsUnderAPrefixCanStayRawBytes() throws {
        let path = GGUFTestSupport.tempDir() + "/raw.gguf"
        let big = String(repeating: "{\"k\": \"é\"} ", count: 100_000)  // 1.3 MB
        let w = try GGUFWriter(path: path)
        try w.addMetadata("x.file.big", value: .string(big))
        try w.addMetadata("x.file.small", value: .string("small"))
        try w.addMetadata("other.big", value: .string(big))
        try w.addMetadata("x.file.number", value: .uint32(7))
        try w.write { _, _ in }
        let f = try GGUFFile(path: path, rawStrings: ("x.file.", 1 << 20))
        #expect(Array(try #require(f.rawStrings["x.file.big"])) == Array(big.utf8))
        #expect(f.metadata["x.file.big"] == nil && !f.metadataKeys.contains("x.file.big"))
        #expect(f.rawStrings.count == 1)
        #expect(f.metadata["x.file.small"] == .string("small"))  // under the size: parsed as usual
        #expect(f.metadata["other.big"] == .string(big))          // another prefix: parsed as usual
        #expect(f.metadata["x.file.number"] == .uint32(7))
        #expect(try GGUFFile(path: path).metadata["x.file.big"] == .string(big))

        // The raw bytes are not checked: a default open rejects invalid UTF-8, a raw one hands the bytes on
        // (the embedded file's reader validates them).
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let at = try #require(bytes.range(of: Data("{\"k\": \"é\"} ".utf8))).lowerBound
        bytes[at] = 0xFF
        try bytes.write(to: URL(fileURLWithPath: path))
        #expect(throws: GGUFError.self) { try GGUFFile(path: path) }
        let g = try GGUFFile(path: path, rawStrings: ("x.file.", 1 << 20))
        #expect(try #require(g.rawStrings["x.file.big"]).first == 0xFF)
    }

    @Test func emptyFileWithOnlyTheAlignmentKey() throws {
        let path = GGUFTestSupport.tempDir() + "/empty.gguf"
        try GGUFWriter(path: path).write { _, _ in Issue.record("no tensors, no calls") }
        let f = try GGUFFile(path: path)
        #expect(f.metadataKeys == ["general.alignment"] && f.tensors.isEmpty)
    }
}

@Suite struct GGUFPythonInteropTests {
    static let fixture = QuantFixtures.dir + "/gguf_python.gguf"

    /// scripts/gen_quant_fixtures.py `python_fixture_metadata()`, in file order after general.architecture.
    static let pythonMetadata: [(String, GGUFValue)] = [
        ("general.architecture", .string("nla-test")),
        ("general.alignment", .uint32(32)),
        ("test.u8", .uint8(200)), ("test.i8", .int8(-100)), ("test.u16", .uint16(60000)), ("test.i16", .int16(-30000)),
        ("test.u32", .uint32(4_000_000_000)), ("test.i32", .int32(-2_000_000_000)), ("test.f32", .float32(3.25)),
        ("test.u64", .uint64(1 << 63 + 5)), ("test.i64", .int64(-(1 << 62) - 3)), ("test.f64", .float64(-1.0e-300)),
        ("test.bool_true", .bool(true)), ("test.bool_false", .bool(false)),
        ("test.string", .string("héllo ✓ \"quoted\"\nline2")),
        ("test.arr_str", .array(.string(["a", "", "üñî", "<bos>"]))),
        ("test.arr_i32", .array(.int32([1, -2, 3, 2_000_000_000]))),
        ("test.arr_u8", .array(.uint8([0, 1, 255]))),
        ("test.arr_f32", .array(.float32([0.5, -1.25, 1e-3]))),
        ("test.arr_f64", .array(.float64([1e300, -2.5]))),
        ("test.arr_u64", .array(.uint64([.max, 0]))),
        ("test.arr_i64", .array(.int64([.min, 7]))),
        ("test.arr_bool", .array(.bool([true, false, true]))),
        ("test.arr_nested", .array(.array([.int32([1, 2]), .int32([3])]))),
    ]

    static let pythonTensors: [(String, QuantType, [Int])] = [
        ("src", .f32, [4, 64]), ("w.f16", .f16, [4, 64]), ("w.bf16", .bf16, [4, 64]), ("w.q8_0", .q8_0, [4, 64]),
        ("w.q4_0", .q4_0, [4, 64]), ("norm", .f32, [7]), ("cube", .f32, [2, 3, 32]),
    ]

    @Test func readsAFileWrittenByGGUFWriter() throws {
        let f = try GGUFFile(path: Self.fixture)
        #expect(f.version == 3 && f.alignment == 32)
        #expect(f.metadataKeys == Self.pythonMetadata.map(\.0))
        for (k, v) in Self.pythonMetadata { #expect(f.metadata[k] == v, "\(k): \(String(describing: f.metadata[k]))") }
        #expect(f.tensorNames == Self.pythonTensors.map(\.0))
        for (name, type, shape) in Self.pythonTensors {
            let t = try f.tensor(name)
            #expect(t.type == type && t.shape == shape, "\(name): \(t.type) \(t.shape)")
        }
        // Bytes: every quantized copy of "src" is exactly what our reference quantizer makes of it.
        let src = try f.tensor("src").toFloatArray()
        for name in ["w.f16", "w.bf16", "w.q8_0", "w.q4_0"] {
            let t = try f.tensor(name)
            #expect(Array(t.bytes) == (try t.type.quantize(src, width: 64)), "\(name)")
        }
        #expect(try f.tensor("cube").toFloatArray() == (0..<192).map { Float($0) / 8 })
        let norm = try f.tensor("norm").toFloatArray()
        #expect(norm.count == 7 && norm.first == -1 && norm.last == 1 && norm[3] == 0)
    }

    /// Same metadata, same tensors in the same order → our writer produces the gguf package's file exactly
    /// (header encoding, tensor info order, offsets, data alignment and the zero padding after every tensor).
    @Test func ourWriterReproducesGGUFWriterByteForByte() throws {
        let original = try QuantFixtures.data("gguf_python.gguf")
        let py = try GGUFFile(path: Self.fixture)
        let path = GGUFTestSupport.tempDir() + "/ours.gguf"
        let w = try GGUFWriter(path: path)
        for (k, v) in Self.pythonMetadata { try w.addMetadata(k, value: v) }
        for (name, type, shape) in Self.pythonTensors { try w.addTensor(name: name, shape: shape, type: type) }
        let src = try py.tensor("src").toFloatArray()
        try w.write { t, dst in
            if t.type.traits.isQuantized || t.type == .f16 || t.type == .bf16 {
                try src.withUnsafeBufferPointer { try t.type.quantizeRows($0, width: 64, into: dst) }
            } else {
                dst.copyMemory(from: try py.tensor(t.name).bytes)
            }
        }
        let ours = try #require(FileManager.default.contents(atPath: path).map { [UInt8]($0) })
        #expect(ours.count == original.count)
        if let i = zip(ours, original).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset {
            Issue.record("first differing byte at \(i) of \(original.count)")
        }
    }
}

@Suite struct GGUFWriterContractTests {
    @Test func failedWriteLeavesNoFileAndKeepsTheOldOne() throws {
        struct Boom: Error {}
        let dir = GGUFTestSupport.tempDir()
        let path = dir + "/model.gguf"
        // No file before: none after, and no temporary left behind.
        let w = try GGUFWriter(path: path)
        try w.addTensor(name: "a", shape: [32], type: .q8_0)
        try w.addTensor(name: "b", shape: [32], type: .q8_0)
        #expect(throws: Boom.self) {
            try w.write { t, dst in
                // While writing, only the temporary exists, in the target directory.
                #expect(!FileManager.default.fileExists(atPath: path))
                #expect(FileManager.default.fileExists(atPath: w.temporaryPath))
                #expect((w.temporaryPath as NSString).deletingLastPathComponent == dir)
                if t.name == "b" { throw Boom() }
                dst.initializeMemory(as: UInt8.self, repeating: 0)
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
        // An existing file survives a failed overwrite.
        GGUFTestSupport.write(Array("old".utf8), to: path)
        let w2 = try GGUFWriter(path: path)
        try w2.addTensor(name: "a", shape: [32], type: .f32)
        #expect(throws: Boom.self) { try w2.write { _, _ in throw Boom() } }
        #expect(FileManager.default.contents(atPath: path) == Data("old".utf8))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["model.gguf"])
    }

    @Test func misuseIsReportedWithTheFileAndTensor() throws {
        let path = GGUFTestSupport.tempDir() + "/m.gguf"
        #expect(throws: GGUFError.invalidWrite(file: path, reason: "alignment 48 is not a power of two")) {
            _ = try GGUFWriter(path: path, alignment: 48)
        }
        let w = try GGUFWriter(path: path)
        #expect(throws: GGUFError.badTensorInfo(file: path, tensor: "lm_head.weight",
                                                reason: "row width 33 is not a multiple of the Q4_0 block size 32")) {
            try w.addTensor(name: "lm_head.weight", shape: [4, 33], type: .q4_0)
        }
        #expect(throws: GGUFError.self) { try w.addTensor(name: "x", shape: [1, 1, 1, 1, 32], type: .f32) }
        try w.addTensor(name: "x", shape: [32], type: .f32)
        #expect(throws: GGUFError.invalidWrite(file: path, reason: "duplicate tensor name 'x'")) {
            try w.addTensor(name: "x", shape: [32], type: .f16)
        }
        try w.addMetadata("k", value: .bool(true))
        #expect(throws: GGUFError.self) { try w.addMetadata("k", value: .bool(false)) }
        #expect(throws: GGUFError.self) { try w.addMetadata("general.alignment", value: .uint32(64)) }
        #expect(throws: GGUFError.self) { try w.addMetadata("general.alignment", value: .uint64(32)) }
        try w.write { _, dst in dst.initializeMemory(as: UInt8.self, repeating: 0) }
        #expect(throws: GGUFError.self) { try w.write { _, _ in } }
        #expect(try GGUFFile(path: path).metadataKeys == ["general.alignment", "k"])
    }
}

@Suite struct GGUFCorruptionTests {
    static func fixtureBytes() throws -> (bytes: [UInt8], file: GGUFFile) {
        (try QuantFixtures.data("gguf_python.gguf"), try GGUFFile(path: GGUFPythonInteropTests.fixture))
    }

    /// Every prefix of the file shorter than the end of the last tensor fails to open with a GGUF error naming
    /// the file: `truncated` inside the header, `offsetPastEOF` / `tensorDataTruncated` inside the data.
    @Test func everyTruncationIsAClearError() throws {
        let (bytes, f) = try Self.fixtureBytes()
        let end = f.tensors.values.map { f.dataOffset + $0.offset + $0.byteCount }.max()!
        // End of the last tensor info ("cube", 3 dims): name, u32 n_dims, 3 × u64, u32 type, u64 offset.
        let headerEnd = GGUFTestSupport.position(of: "cube", in: bytes, before: f.dataOffset)! + 4 + 3 * 8 + 4 + 8
        let path = GGUFTestSupport.tempDir() + "/cut.gguf"
        GGUFTestSupport.write(bytes, to: path)
        var kinds: [String: Int] = [:]
        for len in stride(from: end - 1, through: 0, by: -1) {
            #expect(truncate(path, off_t(len)) == 0)
            do {
                _ = try GGUFFile(path: path)
                Issue.record("a \(len)-byte prefix opened")
            } catch let e as GGUFError {
                let kind: String
                switch e {
                case .truncated: kind = "truncated"
                case .offsetPastEOF: kind = "offsetPastEOF"
                case .tensorDataTruncated: kind = "tensorDataTruncated"
                default: kind = "other"
                }
                kinds[kind, default: 0] += 1
                if kind == "other" || !e.description.hasPrefix(path + ": ") || (len < headerEnd) != (kind == "truncated") {
                    Issue.record("\(len) bytes: \(e)")
                }
            }
        }
        print("[gguf] \(end) truncations: \(kinds)")
        #expect(kinds["truncated"]! > 1000 && kinds["tensorDataTruncated"]! > 1000)
    }

    @Test func corruptedFieldsAreNamed() throws {
        let (good, f) = try Self.fixtureBytes()
        let hdrEnd = f.dataOffset
        func tensorInfo(_ name: String) -> Int { GGUFTestSupport.position(of: name, in: good, before: hdrEnd)! }
        // tensor info after the name: u32 n_dims, n_dims × u64, u32 type, u64 offset (all 2-D fixtures but norm/cube)
        func typeOffset(_ name: String, dims: Int = 2) -> Int { tensorInfo(name) + 4 + 8 * dims }

        var b = good
        b[0] = UInt8(ascii: "X")
        GGUFTestSupport.expectError(b, { if case .badMagic(_, let m) = $0 { return m == "58 47 55 46" } else { return false } }, "bad magic")

        b = good
        GGUFTestSupport.patch(&b, at: 4, UInt32(2))
        GGUFTestSupport.expectError(b, { $0 == .unsupportedVersion(file: $0.file, version: 2) }, "version 2")
        GGUFTestSupport.patch(&b, at: 4, UInt32(0x0300_0000))
        GGUFTestSupport.expectError(b, { $0.description.contains("big-endian") }, "byte-swapped version")

        b = good
        GGUFTestSupport.patch(&b, at: typeOffset("w.q8_0"), UInt32(13))
        GGUFTestSupport.expectError(b, { $0 == .unsupportedType(file: $0.file, tensor: "w.q8_0", typeID: 13) && $0.description.contains("type id 13") }, "Q5_K id")
        // Q4_K is a type now: a 64-wide row is not whole 256-value super-blocks, and the reader says so.
        GGUFTestSupport.patch(&b, at: typeOffset("w.q8_0"), UInt32(12))
        GGUFTestSupport.expectError(b, { $0.description.contains("row width 64 is not a multiple of the Q4_K block size 256") }, "Q4_K width")
        GGUFTestSupport.patch(&b, at: typeOffset("w.q8_0"), UInt32(77))
        GGUFTestSupport.expectError(b, { $0 == .unsupportedType(file: $0.file, tensor: "w.q8_0", typeID: 77) }, "unknown id")

        b = good
        GGUFTestSupport.patch(&b, at: typeOffset("cube", dims: 3) + 4, UInt64(1) << 40)
        GGUFTestSupport.expectError(b, { if case .offsetPastEOF(_, "cube", 1 << 40, good.count) = $0 { return true } else { return false } }, "offset past EOF")

        b = good
        let cube = f.tensors["cube"]!
        GGUFTestSupport.patch(&b, at: typeOffset("cube", dims: 3) + 4, UInt64(cube.offset + 32))
        GGUFTestSupport.expectError(b, { if case .tensorDataTruncated(_, "cube", _, good.count) = $0 { return true } else { return false } }, "data past EOF")

        b = good
        GGUFTestSupport.patch(&b, at: typeOffset("cube", dims: 3) + 4, UInt64(cube.offset + 4))
        GGUFTestSupport.expectError(b, { if case .misalignedTensor(_, "cube", _, 32) = $0 { return true } else { return false } }, "misaligned")

        b = good
        GGUFTestSupport.patch(&b, at: typeOffset("w.bf16") + 4, UInt64(f.tensors["w.f16"]!.offset))
        GGUFTestSupport.expectError(b, { if case .overlappingTensors = $0 { return true } else { return false } }, "overlap")

        b = good
        GGUFTestSupport.patch(&b, at: tensorInfo("w.q4_0") + 4, UInt64(48))  // dims[0]: row width
        GGUFTestSupport.expectError(b, { if case .badTensorInfo(_, "w.q4_0", let r) = $0 { return r.contains("row width 48") } else { return false } }, "width 48")

        b = good
        GGUFTestSupport.patch(&b, at: tensorInfo("src"), UInt32(5))  // n_dims
        GGUFTestSupport.expectError(b, { if case .badTensorInfo(_, "src", _) = $0 { return true } else { return false } }, "n_dims 5")

        b = good
        let alignValue = GGUFTestSupport.position(of: "general.alignment", in: good, before: hdrEnd)! + 4
        GGUFTestSupport.patch(&b, at: alignValue, UInt32(48))
        GGUFTestSupport.expectError(b, { if case .badAlignment = $0 { return true } else { return false } }, "alignment 48")

        b = good
        GGUFTestSupport.patch(&b, at: GGUFTestSupport.position(of: "test.u8", in: good, before: hdrEnd)!, UInt32(99))
        GGUFTestSupport.expectError(b, { $0 == .badMetadata(file: $0.file, key: "test.u8", reason: "unknown value type id 99") }, "value type 99")

        b = good
        GGUFTestSupport.patch(&b, at: GGUFTestSupport.position(of: "test.bool_true", in: good, before: hdrEnd)! + 4, UInt8(2))
        GGUFTestSupport.expectError(b, { if case .badMetadata(_, "test.bool_true", _) = $0 { return true } else { return false } }, "bool 2")

        b = good
        let i8 = GGUFTestSupport.position(of: "test.i8", in: good, before: hdrEnd)!
        b.replaceSubrange(i8 - 7..<i8, with: Array("test.u8".utf8))
        GGUFTestSupport.expectError(b, { $0 == .badMetadata(file: $0.file, key: "test.u8", reason: "duplicate key") }, "duplicate key")

        b = good
        b[i8 - 1] = 0xFF  // invalid UTF-8 in a key
        GGUFTestSupport.expectError(b, { if case .badMetadata(_, _, let r) = $0 { return r.contains("UTF-8") } else { return false } }, "bad UTF-8")

        b = good
        GGUFTestSupport.patch(&b, at: 8, UInt64(1) << 40)  // tensor count
        GGUFTestSupport.expectError(b, { if case .truncated = $0 { return true } else { return false } }, "huge tensor count")
        b = good
        GGUFTestSupport.patch(&b, at: 24, UInt64(1) << 50)  // length of the first key
        GGUFTestSupport.expectError(b, { if case .truncated = $0 { return true } else { return false } }, "huge string")
    }

    @Test func unopenableFiles() throws {
        let dir = GGUFTestSupport.tempDir()
        #expect(throws: GGUFError.self) { try GGUFFile(path: dir + "/missing.gguf") }
        #expect(throws: GGUFError.cannotOpen(file: dir, reason: "is a directory")) { try GGUFFile(path: dir) }
        GGUFTestSupport.expectError([], { if case .truncated = $0 { return true } else { return false } }, "empty file")
        GGUFTestSupport.expectError(Array("GGUF".utf8), { if case .truncated = $0 { return true } else { return false } }, "magic only")
        GGUFTestSupport.expectError(Array("{\"__metadata__\": 1}".utf8), { if case .badMagic = $0 { return true } else { return false } }, "not GGUF")
    }
}

/// A GGUF's parsed header pages may leave the resident set and large metadata values may be dropped (an
/// embedded tokenizer.json, once copied out) without changing what the tensors read.
@Suite struct GGUFHeaderReleaseTests {
    @Test func releasedHeaderPagesAndRemovedMetadataLeaveTensorsIntact() throws {
        let path = GGUFTestSupport.tempDir() + "/header.gguf"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let w = try GGUFWriter(path: path)
        // A metadata string spanning many pages, as an embedded tokenizer.json does.
        let big = String(repeating: "tokenizer ", count: 50_000)
        try w.addMetadata("nla.file.tokenizer.json", value: .string(big))
        try w.addMetadata("general.name", value: .string("small"))
        let x = (0..<(64 * 96)).map { Float(sin(Double($0) * 0.37)) }
        try w.addTensor(name: "t.weight", shape: [64, 96], type: .q8_0)
        try w.write { _, dst in
            try x.withUnsafeBufferPointer { try QuantType.q8_0.quantizeRows($0, width: 96, into: dst) }
        }
        let f = try GGUFFile(path: path)
        #expect(f.dataOffset > 500_000)
        let before = Array(try f.tensor("t.weight").bytes)
        f.removeMetadata("nla.file.tokenizer.json")
        f.releaseHeaderPages()
        #expect(f.metadata["nla.file.tokenizer.json"] == nil)
        #expect(f.metadata["general.name"] == .string("small"))
        let t = try f.tensor("t.weight")
        #expect(Array(t.bytes) == before)
        #expect(try t.toFloatArray() == (try QuantType.q8_0.dequantize(try QuantType.q8_0.quantize(x, width: 96), width: 96)))
    }
}
