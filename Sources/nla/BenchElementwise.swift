import ArgumentParser
import Foundation
import NLARuntime
import SIMDKernels

/// Micro-benchmark of the element-wise kernels of the forward pass on every tier and C instruction-set
/// path (bench/elementwise.sh), one thread, at the 270M's shapes. Best of `--reps` (the minimum filters
/// out interference), in process CPU time by default (preemption on a busy machine is not counted).
/// Random data; nothing is asserted (the tiers' agreement is tested in ElementwiseKernelTests).
struct BenchElementwise: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench-elementwise",
        abstract: "Time the element-wise kernels on every tier and C path (benchmark only).")

    @Option(help: "Rows (tokens) per call.") var rows: Int = 512
    @Option(help: "Model width (RMSNorm / residual length).") var d: Int = 640
    @Option(help: "MLP width (GELU length).") var ff: Int = 2048
    @Option(help: "Head dim (per-head norm + RoPE).") var headDim: Int = 256
    @Option(help: "Repetitions (the best is reported).") var reps: Int = 30
    @Flag(name: .customLong("wall"), help: "Time with the wall clock instead of the process CPU clock.") var wall = false

    func run() throws {
        try runReportingErrors {
            guard rows >= 1, d >= 1, ff >= 1, headDim >= 2, headDim % 2 == 0, reps >= 1 else {
                throw ModelError.input("bench-elementwise: need rows, d, ff, reps >= 1 and an even head-dim >= 2")
            }
            Kernels.setThreads(1)  // one thread: compare instruction sets, not OpenMP
            var rng = UInt64(0x9E3779B97F4A7C15)
            func next() -> Float {
                rng = rng &* 6364136223846793005 &+ 1442695040888963407
                return Float(Int64(bitPattern: rng >> 11) % 2000 - 1000) / 500
            }
            let x0 = (0..<(rows * ff)).map { _ in next() }
            let up = (0..<(rows * ff)).map { _ in next() }
            let w = (0..<max(d, headDim)).map { _ in 1 + next() / 10 }
            let cs = (0..<(headDim / 2)).map { _ in next() / 2 }, sn = cs.map { 1 - $0 * $0 }
            var buf = x0, out = [Float](repeating: 0, count: rows * ff)
            func now() -> Double {
                if wall { return Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
                var ts = timespec()
                clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
                return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
            }
            func best(_ body: () -> Void) -> Double {
                var b = Double.infinity
                for _ in 0..<reps {
                    buf.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: x0, count: x0.count) }
                    let t0 = now(); body(); b = min(b, now() - t0)
                }
                return b
            }
            var tiers: [(String, KernelDispatch, CKernelISA?)] = [("scalar", .all(.scalar), nil),
                                                                   ("simd", KernelDispatch(elementwise: .simd), nil)]
            for isa in CKernelISA.available { tiers.append(("c/\(isa)", KernelDispatch(elementwise: .c), isa)) }
            let saved = Kernels.dispatch, savedISA = CKernelISA.selected
            defer { Kernels.dispatch = saved; CKernelISA.select(savedISA) }
            print("element-wise kernels, 1 thread, best of \(reps) (\(wall ? "wall" : "CPU") time), µs per call")
            print("tier".padding(toLength: 16, withPad: " ", startingAt: 0)
                  + "gelu \(rows)x\(ff)  rmsNormRows \(rows)x\(d)  add \(rows)x\(d)  qk-norm+rope \(rows)x\(headDim)")
            for (name, disp, isa) in tiers {
                Kernels.dispatch = disp
                if let isa { CKernelISA.select(isa) }
                let tg = best { buf.withUnsafeMutableBufferPointer { b in Kernels.geluTanhMul(b.baseAddress!, up, out: &out, n: rows * ff) } }
                let tn = best { buf.withUnsafeMutableBufferPointer { b in Kernels.rmsNormRows(b.baseAddress!, weight: w, out: b.baseAddress!, rows: rows, n: d, eps: 1e-6) } }
                let ta = best { buf.withUnsafeMutableBufferPointer { b in Kernels.add(b.baseAddress!, up, rows * d) } }
                let th = best {
                    buf.withUnsafeMutableBufferPointer { b in
                        for r in 0..<rows {
                            let p = b.baseAddress! + r * headDim
                            Kernels.rmsNorm(p, weight: w, out: p, n: headDim, eps: 1e-6)
                            Kernels.ropeRotateHalf(p, cos: cs, sin: sn, headDim: headDim)
                        }
                    }
                }
                func f(_ t: Double, _ width: Int) -> String { String(format: "%.1f", t * 1e6).padding(toLength: width, withPad: " ", startingAt: 0) }
                print(name.padding(toLength: 16, withPad: " ", startingAt: 0) + f(tg, 16) + f(tn, 21) + f(ta, 14) + f(th, 10))
            }
        }
    }
}
