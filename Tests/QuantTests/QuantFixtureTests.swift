// Our reference quantizers and dequantizers against the `gguf` PyPI package, byte for byte.
// Fixtures: Tests/Fixtures/quant/, written by scripts/gen_quant_fixtures.py (see its docstring).

import Foundation
import Testing
import NLATestSupport
@testable import Quant

enum QuantFixtures {
    static let dir = TestPaths.fixture("quant")

    static func data(_ name: String) throws -> [UInt8] {
        let path = dir + "/" + name
        guard let d = FileManager.default.contents(atPath: path) else {
            throw CocoaError(.fileReadNoSuchFile, userInfo: [NSFilePathErrorKey: path])
        }
        return [UInt8](d)
    }

    static func floats(_ name: String) throws -> [Float] {
        let b = try data(name)
        return b.withUnsafeBytes { raw in (0..<b.count / 4).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) } }
    }

    struct Case {
        var name: String
        var rows: Int
        var width: Int
        var inputOffset: Int
        /// type name → (byte offset, byte count, dequant element offset)
        var types: [String: (byteOffset: Int, byteCount: Int, dequantOffset: Int)]
    }

    static func cases() throws -> [Case] {
        let obj = try JSONSerialization.jsonObject(with: Data(try data("cases.json"))) as! [String: Any]
        return (obj["cases"] as! [[String: Any]]).map { c in
            var types: [String: (Int, Int, Int)] = [:]
            for (t, v) in c["types"] as! [String: [String: Int]] {
                types[t] = (v["byte_offset"]!, v["byte_count"]!, v["dequant_offset"]!)
            }
            return Case(name: c["name"] as! String, rows: c["rows"] as! Int, width: c["width"] as! Int,
                        inputOffset: c["input_offset"] as! Int, types: types)
        }
    }
}

@Suite struct GGUFPackageByteIdentityTests {
    /// Every fixture case of this type: our reference quantizer must produce exactly the gguf package's bytes,
    /// and our dequantizer exactly its floats (bit patterns; NaN matches NaN).
    @Test(arguments: ["F16", "BF16", "Q8_0", "Q4_0", "Q5_0"])
    func referenceQuantizerMatchesGGUFPackage(typeName: String) throws {
        let type = try QuantType(name: typeName)
        let inputs = try QuantFixtures.floats("inputs.f32")
        let expected = try QuantFixtures.data("expected.\(typeName).bin")
        let dequant = try QuantFixtures.floats("dequant.\(typeName).f32")
        var checked = 0
        for c in try QuantFixtures.cases() {
            guard let span = c.types[typeName] else { continue }
            let x = Array(inputs[c.inputOffset..<c.inputOffset + c.rows * c.width])
            let want = Array(expected[span.byteOffset..<span.byteOffset + span.byteCount])
            let got = try type.quantize(x, width: c.width)
            #expect(got.count == want.count, "\(typeName) \(c.name): \(got.count) bytes, gguf wrote \(want.count)")
            if let i = zip(got, want).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset {
                let bpb = type.traits.bytesPerBlock
                Issue.record("\(typeName) \(c.name): first differing byte \(i) (block \(i / bpb), byte \(i % bpb) in block): ours \(got[i]), gguf \(want[i])")
            }
            let y = try type.dequantize(want, width: c.width)
            let ref = dequant[span.dequantOffset..<span.dequantOffset + y.count]
            for (j, (a, b)) in zip(y, ref).enumerated() where a.bitPattern != b.bitPattern && !(a.isNaN && b.isNaN) {
                Issue.record("\(typeName) \(c.name): dequantized element \(j): ours \(a), gguf \(b)")
                break
            }
            checked += 1
        }
        print("[quant] \(typeName): \(checked) fixture cases byte-identical to gguf.quants")
        #expect(checked >= (type.traits.isQuantized ? 13 : 14))
    }

    /// F32 "quantization" is the identity on the bit pattern, NaN payloads included.
    @Test func f32IsBitIdentity() throws {
        let inputs = try QuantFixtures.floats("inputs.f32")
        let n = inputs.count / 32 * 32
        let x = Array(inputs[0..<n])
        let b = try QuantType.f32.quantize(x, width: 32)
        #expect(b == x.withUnsafeBytes { Array($0) })
        #expect(try QuantType.f32.dequantize(b, width: 32).map(\.bitPattern) == x.map(\.bitPattern))
    }
}
