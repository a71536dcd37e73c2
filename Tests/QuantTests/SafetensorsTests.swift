import Foundation
import Testing
import NLATestSupport
@testable import Quant

@Suite struct DTypeTests {
    @Test func bf16RoundsToNearestEven() {
        // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties go to even (1.0).
        #expect(floatToBF16(1 + 1.0 / 256) == 0x3F80)
        // 1 + 3·2^-8 is halfway between 1.0078125 (odd mantissa) and 1.015625: rounds up to even.
        #expect(floatToBF16(1 + 3.0 / 256) == 0x3F82)
        #expect(floatToBF16(1 + 1.0 / 256 + 1.0 / 65536) == 0x3F81)
        #expect(floatToBF16(-2.5) == 0xC020)
        #expect(bf16ToFloat(0x3F80) == 1)
        #expect(floatToBF16(.infinity) == 0x7F80)
        #expect(bf16ToFloat(floatToBF16(.nan)).isNaN)
    }

    @Test func widenMatchesScalarConversions() {
        let values: [Float] = [0, 1, -1, 3.14159, 1e-8, -65504, 123456.789]
        let bits = values.map(floatToBF16)
        var out = [Float](repeating: 0, count: values.count)
        bits.withUnsafeBytes { src in out.withUnsafeMutableBufferPointer { widenToFloat(.bf16, src.baseAddress!, $0.baseAddress!, count: values.count) } }
        #expect(out == bits.map(bf16ToFloat))
        let halves = values.map { Float16($0).bitPattern }
        halves.withUnsafeBytes { src in out.withUnsafeMutableBufferPointer { widenToFloat(.f16, src.baseAddress!, $0.baseAddress!, count: values.count) } }
        #expect(out == values.map { Float(Float16($0)) })
    }
}

@Suite struct SafetensorsFormatTests {
    func tempPath(_ name: String) -> String {
        TestPaths.tempDirectory("st") + "/" + name
    }

    @Test func writeThenReadRoundTrips() throws {
        var w = SafetensorsWriter()
        w.metadata["note"] = "a \"quoted\" value"
        w.add(.init(name: "a", shape: [2, 3], floats: [1, 2, 3, 4, 5, 6]))
        w.add(.init(name: "b.weight", shape: [4], bf16FromFloats: [0.5, -1, 2, 1e3]))
        w.add(.init(name: "ids", shape: [3], int32s: [7, -1, 262143]))
        let path = tempPath("x.safetensors")
        try w.write(to: path)
        let f = try SafetensorsFile(path: path)
        #expect(f.metadata == ["format": "pt", "note": "a \"quoted\" value"])
        #expect(try f.tensor("a").toFloatArray() == [1, 2, 3, 4, 5, 6])
        #expect(try f.tensor("a").shape == [2, 3])
        #expect(try f.tensor("b.weight").dtype == .bf16)
        #expect(try f.tensor("b.weight").toFloatArray() == [0.5, -1, 2, 1000])
        #expect(f.names == ["a", "b.weight", "ids"])
        // The header is 8-byte aligned, so f32 data is aligned in the mapping.
        #expect(Int(bitPattern: try f.tensor("a").data) % 4 == 0)
        #expect(!FileManager.default.fileExists(atPath: path + ".tmp-\(getpid())"))
    }

    @Test func missingTensorNamesFileAndTensor() throws {
        var w = SafetensorsWriter()
        w.add(.init(name: "a", shape: [1], floats: [1]))
        let path = tempPath("y.safetensors")
        try w.write(to: path)
        let f = try SafetensorsFile(path: path)
        #expect(throws: SafetensorsError.missingTensor(file: path, tensor: "zz")) { try f.tensor("zz") }
    }

    @Test func emptyAndTinyFilesAreTruncationErrors() throws {
        let path = tempPath("empty.safetensors")
        FileManager.default.createFile(atPath: path, contents: Data([1, 2, 3]))
        do {
            _ = try SafetensorsFile(path: path)
            Issue.record("expected an error")
        } catch let e as SafetensorsError {
            #expect(e.description.contains("empty.safetensors"))
            #expect(e.description.contains("truncated"))
        }
    }
}

@Suite struct MappedFileTests {
    /// A file of `count` pseudo-random bytes and its contents.
    func randomFile(_ name: String, count: Int) throws -> (path: String, bytes: [UInt8]) {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        let bytes = (0..<count).map { _ -> UInt8 in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: state >> 56)
        }
        let path = TestPaths.tempDirectory("mapped") + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return (path, bytes)
    }

    @Test func copyReturnsTheFileBytesAndCopiesOwnedMemoryDirectly() throws {
        let (path, bytes) = try randomFile("copy.bin", count: 1 << 20)
        let f = try MappedFile(path: path)
        var out = [UInt8](repeating: 0, count: 4096)
        for (offset, count) in [(0, 1), (12345, 680), (bytes.count - 4096, 4096), (700_000, 2560)] {
            out.withUnsafeMutableBytes { f.copy(f.base + offset, count: count, into: $0.baseAddress!) }
            #expect(Array(out[0..<count]) == Array(bytes[offset..<offset + count]), "offset \(offset)")
        }
        // A pointer outside the mapping (memory the caller owns, e.g. a converted tensor) is copied as is.
        let owned: [UInt8] = [1, 2, 3, 4, 5]
        owned.withUnsafeBytes { src in out.withUnsafeMutableBytes { f.copy(src.baseAddress!, count: 5, into: $0.baseAddress!) } }
        #expect(Array(out[0..<5]) == owned)
    }

    #if os(Linux)
    @Test func scatteredCopiesLeaveTheMappingNonResident() throws {
        let (path, _) = try randomFile("scatter.bin", count: 16 << 20)
        let f = try MappedFile(path: path)
        f.dropPages(f.base, count: f.size)
        let before = try residentKB(ofMappingAt: f.base)
        #expect(before == 0, "resident \(before) KB after dropping the pages (-1: mapping not found)")
        var row = [UInt8](repeating: 0, count: 680)
        for i in 0..<200 {  // one "embedding row" in every 80 KB, as token lookups do
            row.withUnsafeMutableBytes { f.copy(f.base + i * 81_920, count: 680, into: $0.baseAddress!) }
        }
        let after = try residentKB(ofMappingAt: f.base)
        #expect(after == 0, "resident \(after) KB after 200 scattered copies")
        // The check sees residency: reading the same rows through the mapping makes pages resident.
        var sum = 0
        for i in 0..<200 { sum &+= Int(f.base.load(fromByteOffset: i * 81_920, as: UInt8.self)) }
        let touched = try residentKB(ofMappingAt: f.base)
        #expect(touched >= 200 * 4, "resident \(touched) KB after reading the rows through the mapping (sum \(sum))")
    }
    #endif
}
