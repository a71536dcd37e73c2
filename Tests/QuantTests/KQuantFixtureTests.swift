// Q4_K / Q6_K / IQ4_NL against the `gguf` PyPI package (which has dequantizers but no quantizers for them):
// gguf dequantizes (1) seeded random raw blocks and (2) our quantizer's bytes to exactly our values.
// Fixtures: Tests/Fixtures/quant/k*, made by scripts/gen_kquant_fixtures.py (see its docstring for the steps).

import Foundation
import Testing
@testable import Quant

enum KFixtures {
    static let types = ["Q4_K", "Q6_K", "IQ4_NL"]
    /// Types with random-block fixtures only (their reference quantizer is pinned against gguf's in
    /// QuantFixtureTests): Q5_0.
    static let rawOnlyTypes = ["Q5_0"]

    struct Case { var name: String; var rows: Int; var width: Int; var inputOffset: Int }

    static func cases() throws -> [Case] {
        let obj = try JSONSerialization.jsonObject(with: Data(try QuantFixtures.data("kcases.json"))) as! [String: Any]
        return (obj["cases"] as! [[String: Any]]).map {
            Case(name: $0["name"] as! String, rows: $0["rows"] as! Int, width: $0["width"] as! Int, inputOffset: $0["input_offset"] as! Int)
        }
    }

    /// Our quantizer's bytes for every input case, concatenated in case order.
    static func ours(_ type: QuantType) throws -> [UInt8] {
        let inputs = try QuantFixtures.floats("kinputs.f32")
        var out = [UInt8]()
        for c in try cases() {
            out += try type.quantize(Array(inputs[c.inputOffset..<c.inputOffset + c.rows * c.width]), width: c.width)
        }
        return out
    }
}

@Suite struct KQuantGGUFPackageTests {
    @Test(arguments: KFixtures.types + KFixtures.rawOnlyTypes)
    func ggufDequantizesRandomBlocksToOurValues(typeName: String) throws {
        let type = try QuantType(name: typeName)
        let raw = try QuantFixtures.data("kraw.\(typeName).bin")
        let want = try QuantFixtures.floats("kraw.\(typeName).f32")
        let bs = type.traits.blockSize
        #expect(raw.count % type.traits.bytesPerBlock == 0 && raw.count / type.traits.bytesPerBlock * bs == want.count)
        let got = try type.dequantize(raw, width: bs)
        #expect(got.count == want.count)
        let bad = zip(got, want).enumerated().filter { $0.element.0.bitPattern != $0.element.1.bitPattern }
        #expect(bad.isEmpty, "\(typeName): \(bad.count) values differ, first at \(bad.first.map { "\($0.offset): ours \($0.element.0), gguf \($0.element.1)" } ?? "")")
        print("[quant] \(typeName): \(got.count) values of random blocks bit-identical to gguf.quants.dequantize")
    }

    /// Our quantizer is deterministic and its bytes are pinned; gguf dequantizes them to exactly our values.
    @Test(arguments: KFixtures.types)
    func ggufDequantizesOurQuantizerBytes(typeName: String) throws {
        let type = try QuantType(name: typeName)
        let bytes = try KFixtures.ours(type)
        if ProcessInfo.processInfo.environment["NLA_WRITE_KQUANT_FIXTURES"] == "1" {
            try Data(bytes).write(to: URL(fileURLWithPath: QuantFixtures.dir + "/kours.\(typeName).bin"))
            print("[quant] wrote kours.\(typeName).bin (\(bytes.count) bytes); now run scripts/gen_kquant_fixtures.py --dequant-ours")
            return
        }
        let pinned = try QuantFixtures.data("kours.\(typeName).bin")
        #expect(bytes == pinned, "\(typeName): our quantizer's bytes changed; regenerate the fixture if intended")
        let want = try QuantFixtures.floats("kours.\(typeName).f32")
        let got = try type.dequantize(pinned, width: type.traits.blockSize)
        #expect(got.count == want.count)
        let bad = zip(got, want).enumerated().filter { $0.element.0.bitPattern != $0.element.1.bitPattern }
        #expect(bad.isEmpty, "\(typeName): \(bad.count) values differ from gguf")
        // And the values are a sane approximation of the inputs (not just any bytes).
        let inputs = try QuantFixtures.floats("kinputs.f32")
        var se = 0.0, sx = 0.0
        for (i, v) in got.enumerated() { se += Double(v - inputs[i]) * Double(v - inputs[i]); sx += Double(inputs[i]) * Double(inputs[i]) }
        print("[quant] \(typeName): our bytes dequantized by gguf bit-identically; relative RMSE \((se / sx).squareRoot())")
        #expect((se / sx).squareRoot() < (type == .q6_k ? 0.03 : 0.12))
    }
}

@Suite struct QuantizerQualityTests {
    static func weightedError(_ x: [Float], _ y: [Float], _ w: [Float], width: Int) -> Double {
        var e = 0.0
        for i in x.indices { let d = Double(x[i] - y[i]); e += Double(w[i % width]) * d * d }
        return e
    }

    static func data(seed: UInt64, rows: Int, width: Int) -> [Float] {
        var r = QuantTestRNG(seed: seed)
        // Weight-like rows: Gaussian with a few heavy outliers.
        return (0..<(rows * width)).map { i in r.normal() * 0.02 * (i % 61 == 0 ? 6 : 1) }
    }

    /// Importance (an imatrix column): log-normal-ish spread over channels, as real activations have.
    static func importance(seed: UInt64, width: Int) -> [Float] {
        var r = QuantTestRNG(seed: seed)
        return (0..<width).map { _ in exp(2 * r.normal()) }
    }

    /// The Q4_0 search beats the reference (plain rounding of the max element) on Σ imp·err², with and without
    /// an importance vector (then judged with the default weighting's plain squared error too).
    @Test func q4_0SearchBeatsPlainRounding() throws {
        let width = 512, rows = 16
        let x = Self.data(seed: 3, rows: rows, width: width)
        let imp = Self.importance(seed: 4, width: width)
        let ref = try QuantType.q4_0.dequantize(try QuantType.q4_0.quantize(x, width: width), width: width)
        let withImp = try QuantType.q4_0.dequantize(try QuantType.q4_0.quantizeImportance(x, width: width, importance: imp), width: width)
        let noImp = try QuantType.q4_0.dequantize(try QuantType.q4_0.quantizeImportance(x, width: width), width: width)
        let eRef = Self.weightedError(x, ref, imp, width: width), eImp = Self.weightedError(x, withImp, imp, width: width)
        let ones = [Float](repeating: 1, count: width)
        let mRef = Self.weightedError(x, ref, ones, width: width), mNo = Self.weightedError(x, noImp, ones, width: width)
        print("[quant] Q4_0 Σimp·err²: reference \(eRef), search with imatrix \(eImp) (\(eImp / eRef)); plain MSE: reference \(mRef), search without imatrix \(mNo) (\(mNo / mRef))")
        #expect(eImp < 0.85 * eRef)
        #expect(mNo < mRef)
    }

    /// Q4_K and IQ4_NL (4.5 bits/weight, like Q4_0) beat the Q4_0 reference; with an imatrix they do better on
    /// the imatrix-weighted error than without one; Q6_K is far better still.
    @Test(arguments: [QuantType.q4_k, .iq4_nl, .q6_k, .q5_0])
    func blockTypesBeatQ4_0AndUseTheImatrix(type: QuantType) throws {
        let width = 512, rows = 16
        let x = Self.data(seed: 5, rows: rows, width: width)
        let imp = Self.importance(seed: 6, width: width)
        let ref = try QuantType.q4_0.dequantize(try QuantType.q4_0.quantize(x, width: width), width: width)
        let plain = try type.dequantize(try type.quantize(x, width: width), width: width)
        let withImp = try type.dequantize(try type.quantizeImportance(x, width: width, importance: imp), width: width)
        let ones = [Float](repeating: 1, count: width)
        let mRef = Self.weightedError(x, ref, ones, width: width), mPlain = Self.weightedError(x, plain, ones, width: width)
        let iPlain = Self.weightedError(x, plain, imp, width: width), iImp = Self.weightedError(x, withImp, imp, width: width)
        print("[quant] \(type): MSE vs Q4_0 reference \(mPlain / mRef); Σimp·err² with imatrix / without \(iImp / iPlain)")
        // Q5_0's reference is plain rounding on a grid twice as fine: about a quarter of Q4_0's error.
        #expect(mPlain < (type == .q6_k ? 0.15 : type == .q5_0 ? 0.35 : 0.9) * mRef)
        #expect(iImp < 0.95 * iPlain)
    }

    @Test func importanceOfWrongLengthIsAnError() {
        #expect(throws: QuantError.self) { try QuantType.q4_k.quantizeImportance([Float](repeating: 0, count: 256), width: 256, importance: [1, 2]) }
    }
}
