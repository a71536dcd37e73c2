// The kernel target is built with -Ounchecked, which removes `precondition`. The shape checks at the
// public entry points must still stop a bad call before it touches memory: each case runs in a child
// process (an exit test) and must die with a failure, not return (or scribble past a buffer).

import Foundation
import SIMDKernels
import Testing

@Suite struct KernelAPICheckTests {
    @Test func quantizeRowsRefusesPartialBlocks() async {
        await #expect(processExitsWith: .failure) {
            let x = [Float](repeating: 1, count: 48)
            var out = [UInt8](repeating: 0, count: 64)
            x.withUnsafeBufferPointer { xp in
                out.withUnsafeMutableBytes { QuantKernels.quantizeRows(xp.baseAddress!, rows: 1, cols: 48, out: $0.baseAddress!) }
            }
        }
    }

    @Test func dequantizeRowRefusesPartialBlocks() async {
        await #expect(processExitsWith: .failure) {
            let src = [UInt8](repeating: 0, count: 34)
            var dst = [Float](repeating: 0, count: 40)
            src.withUnsafeBytes { s in
                dst.withUnsafeMutableBufferPointer { QuantKernels.dequantizeRow(.q8_0, s.baseAddress!, $0.baseAddress!, count: 33) }
            }
        }
    }

    @Test func quantMatmulRefusesNegativeRows() async {
        await #expect(processExitsWith: .failure) {
            let w = [UInt8](repeating: 0, count: 34), a = [UInt8](repeating: 0, count: 34)
            var y = [Float](repeating: 0, count: 4)
            w.withUnsafeBytes { wp in
                a.withUnsafeBytes { ap in
                    y.withUnsafeMutableBufferPointer {
                        QuantKernels.matmulQ8(.q8_0, weights: wp.baseAddress!, activations: ap.baseAddress!, y: $0.baseAddress!,
                                              m: -1, n: 1, k: 32, tier: .scalar)
                    }
                }
            }
        }
    }

    @Test func f32MatmulRefusesShortLeadingDimension() async {
        await #expect(processExitsWith: .failure) {
            let x = [Float](repeating: 1, count: 64), w = [Float](repeating: 1, count: 64)
            var y = [Float](repeating: 0, count: 64)
            x.withUnsafeBufferPointer { xp in
                w.withUnsafeBufferPointer { wp in
                    y.withUnsafeMutableBufferPointer {
                        Kernels.matmulNT(xp.baseAddress!, wp.baseAddress!, $0.baseAddress!, m: 4, n: 4, k: 8, ldx: 4)
                    }
                }
            }
        }
    }

    @Test func elementwiseRefusesNegativeCount() async {
        await #expect(processExitsWith: .failure) {
            var a = [Float](repeating: 1, count: 8)
            let b = [Float](repeating: 1, count: 8)
            b.withUnsafeBufferPointer { bp in a.withUnsafeMutableBufferPointer { Kernels.add($0.baseAddress!, bp.baseAddress!, -8) } }
        }
    }

    @Test func ropeRefusesOddHeadDim() async {
        await #expect(processExitsWith: .failure) {
            var x = [Float](repeating: 1, count: 8)
            let c = [Float](repeating: 1, count: 4)
            c.withUnsafeBufferPointer { cp in
                x.withUnsafeMutableBufferPointer { Kernels.ropeRotateHalf($0.baseAddress!, cos: cp.baseAddress!, sin: cp.baseAddress!, headDim: 7) }
            }
        }
    }

    @Test func validCallsStillRun() {
        // The same entry points with good shapes: no trap, correct values.
        let x = [Float](repeating: 127.0 / 128, count: 32)  // Q8_0: d = 1/128 (exact in f16), q = 127
        var q = [UInt8](repeating: 0, count: QuantKernels.activationBytes(rows: 1, cols: 32))
        var back = [Float](repeating: 0, count: 32)
        x.withUnsafeBufferPointer { xp in q.withUnsafeMutableBytes { QuantKernels.quantizeRows(xp.baseAddress!, rows: 1, cols: 32, out: $0.baseAddress!) } }
        q.withUnsafeBytes { qp in back.withUnsafeMutableBufferPointer { QuantKernels.dequantizeRow(.q8_0, qp.baseAddress!, $0.baseAddress!, count: 32) } }
        #expect(back == x)
        var y = [Float](repeating: 0, count: 1)
        x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { Kernels.matmulNT(xp.baseAddress!, xp.baseAddress!, $0.baseAddress!, m: 1, n: 1, k: 32) } }
        #expect(y == [16129.0 / 512])
    }
}
