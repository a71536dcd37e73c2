// The type table, block layouts, round-trip error bounds, exact ramp values and the checked row API.
// Byte-identity with the gguf package is in QuantFixtureTests.swift.

import Foundation
import struct NLARuntime.SplitMix64
import Testing
@testable import Quant

/// Deterministic test data (SplitMix64), so every run sees the same inputs.
struct QuantTestRNG {
    private var generator: SplitMix64
    init(seed: UInt64) { generator = SplitMix64(seed: seed) }
    mutating func next() -> UInt64 { generator.next() }
    /// Uniform in [-1, 1).
    mutating func uniform() -> Float { Float(next() >> 40) / Float(1 << 23) - 1 }
    /// Standard normal (Box–Muller).
    mutating func normal() -> Float {
        let u1 = Double((next() >> 11) + 1) / Double(1 << 53)
        let u2 = Double(next() >> 11) / Double(1 << 53)
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }
}

enum QuantTestData {
    static let n = 4096
    static func uniform() -> [Float] { var r = QuantTestRNG(seed: 42); return (0..<n).map { _ in r.uniform() } }
    static func normal() -> [Float] { var r = QuantTestRNG(seed: 7); return (0..<n).map { _ in 0.05 * r.normal() } }
    static func ramp() -> [Float] { (0..<n).map { Float($0 - n / 2) / Float(n / 2) } }
    /// llama.cpp tests/test-quantize-fns.cpp `generate_data(0, n)`: 0.1 + 2 cos(i).
    static func ggml() -> [Float] { (0..<n).map { 0.1 + 2 * cos(Float($0)) } }
}

@Suite struct QuantTableTests {
    @Test func tableHasExactlyOneRowPerType() {
        #expect(QuantTraits.table.count == QuantType.allCases.count)
        for t in QuantType.allCases {
            #expect(QuantTraits.table.filter { $0.type == t }.count == 1, "\(t)")
            #expect(t.traits.type == t)
            #expect(t.traits.ggmlID == t.rawValue)
        }
    }

    /// The GGUF ids are file format: they must equal ggml's (gguf-py constants.py GGMLQuantizationType).
    /// The activation partner is this runtime's choice.
    @Test(arguments: [
        ("F32", UInt32(0), 1, 4, false, QuantType.f32),
        ("F16", 1, 1, 2, false, .f32),
        ("Q4_0", 2, 32, 18, true, .q8_0),
        ("Q8_0", 8, 32, 34, true, .f32),   // ours, not ggml's: measured, see QuantType.swift
        ("BF16", 30, 1, 2, false, .f32),
        ("Q4_K", 12, 256, 144, true, .f32),   // 4.5 bits/weight; f32 activations (exact dequantization)
        ("Q6_K", 14, 256, 210, true, .f32),   // 6.5625
        ("IQ4_NL", 20, 32, 18, true, .f32),   // 4.5
        ("Q5_0", 6, 32, 22, true, .f32),      // 5.5
    ] as [(String, UInt32, Int, Int, Bool, QuantType)])
    func rowMatchesGGML(name: String, id: UInt32, blockSize: Int, bytes: Int, quantized: Bool, partner: QuantType) throws {
        let t = try #require(QuantType(rawValue: id))
        let r = t.traits
        #expect(r.name == name)
        #expect(r.blockSize == blockSize)
        #expect(r.bytesPerBlock == bytes)
        #expect(r.isQuantized == quantized)
        #expect(r.activationType == partner)
        #expect(try QuantType(name: name.lowercased()) == t)
    }

    @Test func otherGGMLIDsAreNotTypes() {
        // Q4_1, Q5_1, Q8_1, K-quants, IQ*, I8..F64, retired 4/5/31..33: all rejected, never remapped.
        for id: UInt32 in [3, 4, 5, 7, 9, 10, 11, 13, 15, 16, 19, 21, 23, 24, 26, 28, 29, 31, 34, 39, 41, 1000] {
            #expect(QuantType(rawValue: id) == nil, "id \(id)")
        }
        #expect(throws: QuantError.unknownTypeName("q5_k")) { try QuantType(name: "q5_k") }
    }

    @Test func bitsPerWeight() {
        #expect(QuantType.q8_0.traits.bitsPerWeight == 8.5)
        #expect(QuantType.q4_0.traits.bitsPerWeight == 4.5)
        #expect(QuantType.bf16.traits.bitsPerWeight == 16)
        #expect(QuantType.f32.traits.bitsPerWeight == 32)
        #expect(QuantType.q4_k.traits.bitsPerWeight == 4.5)
        #expect(QuantType.q6_k.traits.bitsPerWeight == 6.5625)
        #expect(QuantType.iq4_nl.traits.bitsPerWeight == 4.5)
    }
}

@Suite struct BlockLayoutTests {
    /// ggml-common.h static_asserts: sizeof(block_q8_0) == sizeof(ggml_half) + QK8_0, sizeof(block_q4_0) ==
    /// sizeof(ggml_half) + QK4_0 / 2. Stride must equal size, or arrays of blocks would not match the file.
    @Test func blockStructsMatchGGML() {
        #expect(MemoryLayout<BlockQ8_0>.size == 34)
        #expect(MemoryLayout<BlockQ8_0>.stride == 34)
        #expect(MemoryLayout<BlockQ8_0>.alignment == 2)
        #expect(MemoryLayout<BlockQ8_0>.offset(of: \BlockQ8_0.qs) == 2)
        #expect(MemoryLayout<BlockQ4_0>.size == 18)
        #expect(MemoryLayout<BlockQ4_0>.stride == 18)
        #expect(MemoryLayout<BlockQ4_0>.alignment == 2)
        #expect(MemoryLayout<BlockQ4_0>.offset(of: \BlockQ4_0.qs) == 2)
        for t in [QuantType.q8_0, .q4_0] {
            #expect(t.traits.alignment == 2)
        }
    }

    @Test func blockAccessorsReadTheNibbleLayout() throws {
        // Element j in the low nibble of byte j, element j + 16 in the high nibble.
        let x: [Float] = (0..<32).map { Float($0 - 16) }
        let bytes = try QuantType.q4_0.quantize(x, width: 32)
        let b = bytes.withUnsafeBytes { $0.loadUnaligned(as: BlockQ4_0.self) }
        #expect(b.d == 0x4000 && b.scale == 2)
        #expect(b.q(0) == 0 && b.q(16) == 8 && b.q(31) == 15, "\((0..<32).map { b.q($0) }) \(bytes)")
        #expect(bytes[2] == 0x80)  // q(0) = 0 | q(16) = 8 << 4
        let b8 = try QuantType.q8_0.quantize(x, width: 32).withUnsafeBytes { $0.loadUnaligned(as: BlockQ8_0.self) }
        #expect(b8.q(0) == -127 && b8.q(31) == 119)
    }
}

@Suite struct RoundTripErrorTests {
    /// Largest |x - dequant(quant(x))| allowed for one element, derived from the format:
    /// - f32: exact. f16 (10 mantissa bits): half an ulp, |x|·2^-11 (2^-25 absolute in the subnormal range).
    ///   bf16 (7 mantissa bits): |x|·2^-8.
    /// - Q8_0: step d = amax/127; rounding costs d/2, storing d as f16 costs up to 127·d·2^-11. → 0.562·d
    /// - Q4_0: step d = amax/8; in range rounding costs d/2, but -m (the opposite of the signed max) clips from
    ///   +8 to +7: a full step. Plus 8·d·2^-11 for the f16 scale. → 1.004·d
    /// - Q5_0: the same with d = amax/16 (levels −16…15). → 1.008·d
    /// A relative slack of 1e-5 covers f32 arithmetic.
    static func elementBound(_ t: QuantType, x: Float, blockAmax: Float) -> Float {
        switch t {
        case .f32: return 0
        case .f16: return max(abs(x) * 0x1p-11, 0x1p-25)
        case .bf16: return abs(x) * 0x1p-8
        case .q8_0: return blockAmax / 127 * (0.5 + 127 * 0x1p-11) * (1 + 1e-5)
        case .q4_0: return blockAmax / 8 * (1 + 8 * 0x1p-11) * (1 + 1e-5)
        // Q5_0 as Q4_0 with twice the levels: step amax/16, the opposite of the signed max clips from +16 to +15.
        case .q5_0: return blockAmax / 16 * (1 + 16 * 0x1p-11) * (1 + 1e-5)
        // Searched scales (no closed form per element): loose sanity bounds; their quality is tested against
        // plain rounding in QuantizerQualityTests.
        case .q4_k, .iq4_nl: return blockAmax / 4
        case .q6_k: return blockAmax / 16
        }
    }

    /// RMSE bound as a multiple of the RMS of the quantization step over blocks. With errors spread uniformly
    /// over one step, RMSE = step/√12 = 0.289·step. The bound adds ~10 % for the f16 scale and clipping.
    /// (Float types are covered by the element bound.) Measured values are printed by the test.
    static let rmseStepFactor: [QuantType: Double] = [.q8_0: 0.32, .q4_0: 0.32, .q5_0: 0.32]

    static func step(_ t: QuantType, _ amax: Float) -> Double {
        switch t {
        case .q8_0: return Double(amax) / 127
        case .q4_0: return Double(amax) / 8
        case .q5_0: return Double(amax) / 16
        default: return 0
        }
    }

    @Test(arguments: QuantType.allCases, ["uniform", "normal", "ramp"])
    func quantizeDequantizeWithinBounds(type: QuantType, data: String) throws {
        let x: [Float] = data == "uniform" ? QuantTestData.uniform() : data == "normal" ? QuantTestData.normal() : QuantTestData.ramp()
        let y = try type.dequantize(try type.quantize(x, width: 256), width: 256)
        #expect(y.count == x.count)
        var sumSq = 0.0, stepSq = 0.0, sumX = 0.0, worst: Float = 0
        for b in stride(from: 0, to: x.count, by: 32) {
            let amax = x[b..<b + 32].map(abs).max()!
            stepSq += 32 * pow(Self.step(type, amax), 2)
            for j in b..<b + 32 {
                let e = abs(x[j] - y[j])
                let bound = Self.elementBound(type, x: x[j], blockAmax: amax)
                if e > bound { Issue.record("\(type) \(data): element \(j) x=\(x[j]) got \(y[j]) |err| \(e) > bound \(bound)"); return }
                worst = max(worst, bound > 0 ? e / bound : 0)
                sumSq += Double(e) * Double(e)
                sumX += Double(x[j]) * Double(x[j])
            }
        }
        let rmse = (sumSq / Double(x.count)).squareRoot()
        let rms = (sumX / Double(x.count)).squareRoot()
        if let f = Self.rmseStepFactor[type] {
            let stepRMS = (stepSq / Double(x.count)).squareRoot()
            print("[quant] \(type) \(data): RMSE \(rmse) = \(rmse / stepRMS)·step (bound \(f)), rel. to RMS \(rmse / rms), worst element at \(worst) of its bound")
            #expect(rmse <= f * stepRMS, "\(type) \(data): RMSE \(rmse) > \(f) × step \(stepRMS)")
        } else {
            print("[quant] \(type) \(data): RMSE \(rmse), rel. to RMS \(rmse / rms), worst element at \(worst) of its bound")
        }
    }

    /// llama.cpp tests/test-quantize-fns.cpp: "absolute quantization error" on 0.1 + 2 cos(i), n = 4096, as
    /// sqrt(Σ diff²) / n (their `array_rmse`, which divides by n, not √n) < MAX_QUANTIZATION_TOTAL_ERROR = 0.002.
    @Test(arguments: QuantType.allCases)
    func ggmlTotalQuantizationError(type: QuantType) throws {
        let x = QuantTestData.ggml()
        let y = try type.dequantize(try type.quantize(x, width: x.count), width: x.count)
        var sum = 0.0
        for i in x.indices { let d = Double(x[i] - y[i]); sum += d * d }
        let err = Float(sum.squareRoot()) / Float(x.count)
        print("[quant] \(type) ggml total quantization error \(err) (llama.cpp bound 0.002)")
        #expect(err < 0.002)
    }
}

@Suite struct ExactValueTests {
    /// Ramp -16..15 in one block. Q8_0: amax 16, d = 16/127 → f16 0x3008 = 0.1259765625, q = round-half-away(x·127/16).
    @Test func q8_0Ramp() throws {
        let x: [Float] = (0..<32).map { Float($0 - 16) }
        let bytes = try QuantType.q8_0.quantize(x, width: 32)
        let q: [Int8] = [-127, -119, -111, -103, -95, -87, -79, -71, -64, -56, -48, -40, -32, -24, -16, -8,
                         0, 8, 16, 24, 32, 40, 48, 56, 64, 71, 79, 87, 95, 103, 111, 119]
        #expect(Array(bytes[0..<2]) == [0x08, 0x30])
        #expect(bytes[2...].map { Int8(bitPattern: $0) } == q)
        let y = try QuantType.q8_0.dequantize(bytes, width: 32)
        #expect(y == q.map { Float($0) * 0.1259765625 })
        #expect(y[0] == -15.9990234375 && y[31] == 14.9912109375)
    }

    /// Same ramp. Q4_0: signed max -16 (element 0), d = -16/-8 = 2, q = trunc(x/2 + 8.5) clipped to 15:
    /// .5 ties go up (-15 → -14), +15 clips to 14, and the max element is exact.
    @Test func q4_0Ramp() throws {
        let x: [Float] = (0..<32).map { Float($0 - 16) }
        let bytes = try QuantType.q4_0.quantize(x, width: 32)
        #expect(Array(bytes[0..<2]) == [0x00, 0x40])
        let expected: [Float] = [-16, -14, -14, -12, -12, -10, -10, -8, -8, -6, -6, -4, -4, -2, -2, 0,
                                 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14, 14]
        #expect(try QuantType.q4_0.dequantize(bytes, width: 32) == expected)
        // Positive max: the ramp negated has m = +16 at element 0, d = -2: now +16 is exact and -15 clips.
        let neg = try QuantType.q4_0.dequantize(try QuantType.q4_0.quantize(x.map { -$0 }, width: 32), width: 32)
        #expect(neg[0] == 16 && neg[31] == -14 && neg[1] == 14)
    }

    /// An all-zero block: d = 0 and every quant is the zero point (Q4_0 nibble 8). Q4_0 stores d = -0.0
    /// (0 / -8) when the first element is +0, like ggml and gguf.
    @Test func zeroBlocks() throws {
        let z = [Float](repeating: 0, count: 32)
        #expect(try QuantType.q8_0.quantize(z, width: 32) == [UInt8](repeating: 0, count: 34))
        #expect(try QuantType.q4_0.quantize(z, width: 32) == [0x00, 0x80] + [UInt8](repeating: 0x88, count: 16))
        #expect(try QuantType.q4_0.dequantize(try QuantType.q4_0.quantize(z, width: 32), width: 32).allSatisfy { $0 == 0 })
    }
}

@Suite struct CheckedRowAPITests {
    @Test(arguments: QuantType.allCases.filter { $0.traits.isQuantized }, [1, 16, 31, 33, 48, 100, 640])
    func widthNotMultipleOfBlockIsANamedError(type: QuantType, width: Int) {
        let bs = type.traits.blockSize
        if width % bs == 0 { return }  // 640 is whole 32-value blocks (the 270M's rows); not whole Q4_K blocks
        let x = [Float](repeating: 1, count: width * 2)
        #expect(throws: QuantError.widthNotMultipleOfBlock(type: type, width: width, blockSize: bs)) {
            try type.quantize(x, width: width)
        }
        #expect(throws: QuantError.widthNotMultipleOfBlock(type: type, width: width, blockSize: bs)) {
            try type.rowByteCount(width: width)
        }
        let e = QuantError.widthNotMultipleOfBlock(type: type, width: width, blockSize: bs)
        #expect(e.description == "row width \(width) is not a multiple of the \(type.traits.name) block size \(bs)")
    }

    @Test(arguments: QuantType.allCases)
    func otherMisuseThrows(type: QuantType) throws {
        let w = type.traits.blockSize == 256 ? 256 : 64
        #expect(throws: QuantError.widthNotMultipleOfBlock(type: type, width: 0, blockSize: type.traits.blockSize)) {
            try type.quantize([], width: 0)
        }
        #expect(throws: QuantError.countNotMultipleOfWidth(type: type, count: w * 3 / 2, width: w)) {
            try type.quantize([Float](repeating: 0, count: w * 3 / 2), width: w)
        }
        let rowBytes = try type.rowByteCount(width: w)
        var small = [UInt8](repeating: 0, count: rowBytes - 1)
        let x = [Float](repeating: 0.5, count: w)
        #expect(throws: QuantError.bufferSizeMismatch(type: type, expectedBytes: rowBytes, gotBytes: rowBytes - 1)) {
            try x.withUnsafeBufferPointer { src in try small.withUnsafeMutableBytes { try type.quantizeRows(src, width: w, into: $0) } }
        }
        #expect(try type.byteCount(shape: [3, w]) == 3 * rowBytes)
        #expect(throws: QuantError.invalidShape(type: type, shape: [-1, w])) { try type.byteCount(shape: [-1, w]) }
        // Empty input is fine.
        #expect(try type.quantize([], width: w) == [])
    }

    @Test func nonFiniteValuesAreRejectedForBlockTypesOnly() throws {
        var x = [Float](repeating: 0.25, count: 256)
        x[40] = .nan
        for t in QuantType.allCases {
            if t.traits.isQuantized {
                #expect(throws: QuantError.self) { try t.quantize(x, width: 256) }
                #expect(throws: QuantError.self) { try t.quantizeImportance(x, width: 256) }
            } else {
                let y = try t.dequantize(try t.quantize(x, width: 256), width: 256)
                #expect(y[40].isNaN && y[39] == 0.25)
            }
        }
        x[40] = -.infinity
        #expect(throws: QuantError.nonFiniteValue(type: .q8_0, index: 40, value: -.infinity)) {
            try QuantType.q8_0.quantize(x, width: 64)
        }
    }

    @Test func misalignedBlockBufferIsAnError() throws {
        let x = [Float](repeating: 1, count: 32)
        var buf = [UInt8](repeating: 0, count: 35)
        #expect(throws: QuantError.misalignedBuffer(type: .q8_0, alignment: 2)) {
            try x.withUnsafeBufferPointer { src in
                try buf.withUnsafeMutableBytes { try QuantType.q8_0.quantizeRows(src, width: 32, into: UnsafeMutableRawBufferPointer(rebasing: $0[1...])) }
            }
        }
    }

    @Test func floatTypesTakeAnyWidth() throws {
        for t in [QuantType.f32, .f16, .bf16] {
            let x: [Float] = [1, -2, 0.5]
            #expect(try t.dequantize(try t.quantize(x, width: 3), width: 3) == x)
        }
    }
}
