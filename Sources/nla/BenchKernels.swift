import ArgumentParser
import Foundation
import NLARuntime
import SIMDKernels

/// Micro-benchmark of one quantized matmul shape on every kernel path (bench/kernels.sh). Reports the
/// best of `--reps` runs (the minimum filters out interference on a shared machine) as time, weight
/// GB/s and GFLOP/s. Random weights; nothing is asserted.
struct BenchKernels: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench-kernels",
        abstract: "Time one quantized matmul shape on every kernel path (benchmark only).")

    @Option(help: "Weight rows (outputs).") var n: Int = 21504
    @Option(help: "Weight columns (inputs), a multiple of 32.") var k: Int = 5376
    @Option(help: "Activation rows.") var m: Int = 1
    @Option(help: "Repetitions (the best is reported).") var reps: Int = 20
    @Option(help: "Threads (0 = all cores).") var threads: Int = 0
    @Option(help: "Weight types, comma-separated.") var types: String = "q8_0,q4_0"
    @Flag(name: .customLong("cpu-time"), help: "Time with the process CPU clock (use with --threads 1 on a busy machine: preemption is not counted).")
    var cpuTime = false
    @Flag var json = false

    func run() throws {
        try runReportingErrors {
            guard n >= 1, m >= 1, reps >= 1, k >= 32, k % 32 == 0 else {
                throw ModelError.input("bench-kernels: need n, m, reps >= 1 and k a positive multiple of 32")
            }
            Kernels.setThreads(threads)
            var rng = UInt64(0x9E3779B97F4A7C15)
            func next() -> Float {
                rng = rng &* 6364136223846793005 &+ 1442695040888963407
                return Float(Int64(bitPattern: rng >> 11) % 2000 - 1000) / 1000
            }
            let x = (0..<(m * k)).map { _ in next() }
            var y = [Float](repeating: 0, count: m * n)
            let scratchBytes = max(QuantKernels.activationBytes(rows: m, cols: k), m * GemvActivation.q16.rowBytes(cols: k))
            let scratch = UnsafeMutableRawPointer.allocate(byteCount: scratchBytes, alignment: 64)
            defer { scratch.deallocate() }
            var results: [[String: Any]] = []
            for name in types.split(separator: ",").map(String.init) {
                guard let type = GemvActivation.weightTypes.first(where: { "\($0)".lowercased() == name.lowercased() }) else {
                    throw ModelError.input("bench-kernels: unknown type '\(name)' (q8_0, q4_0)")
                }
                let rowBytes = type.kernelRowBytes(cols: k)
                let w = UnsafeMutableRawPointer.allocate(byteCount: n * rowBytes, alignment: 64)
                defer { w.deallocate() }
                // Random quants with a small f16 scale in every block.
                let bb = type.traits.bytesPerBlock
                for b in 0..<(n * k / 32) {
                    let p = w + b * bb
                    p.storeBytes(of: Float16(0.01 + 0.001 * Float(b % 7)).bitPattern, toByteOffset: 0, as: UInt16.self)
                    for j in 2..<bb { p.storeBytes(of: UInt8(truncatingIfNeeded: Int(next() * 127) + 128), toByteOffset: j, as: UInt8.self) }
                }
                let packed = PackedWeights(type, blocks: w, rows: n, cols: k)
                var paths: [(String, () -> Void)] = []
                x.withUnsafeBufferPointer { xp in
                    y.withUnsafeMutableBufferPointer { yp in
                        let xb = xp.baseAddress!, yb = yp.baseAddress!
                        paths.append(("f32act", { QuantKernels.matmulF32(type, weights: w, x: xb, y: yb, m: m, n: n, k: k) }))
                        paths.append(("q8act", { QuantKernels.matmul(type, weights: w, x: xb, y: yb, m: m, n: n, k: k, scratch: scratch, activation: .q8_0) }))
                        if m >= 16 {
                            let panel = UnsafeMutablePointer<Float>.allocate(capacity: 256 * k)
                            paths.append(("f32panels", { QuantKernels.matmulF32Panels(type, weights: w, x: xb, y: yb, m: m, n: n, k: k,
                                                                                      panel: panel, panelFloats: 256 * k) }))
                        }
                        if let p = packed { paths.append(("packed", { p.matmul(x: xb, y: yb, m: m, scratch: scratch) })) }
                        for act in GemvActivation.allCases where !(type == .q4_0 && act == .q16) {
                            paths.append(("gemv-\(act)", { QuantKernels.gemv(type, act: act, weights: w, x: xb, y: yb, m: m, n: n, k: k, scratch: scratch) }))
                        }
                    }
                }
                for (label, body) in paths {
                    body()
                    var best = Double.infinity
                    func now() -> Double {
                        if !cpuTime { return Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
                        var ts = timespec()
                        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
                        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
                    }
                    for _ in 0..<reps {
                        let t0 = now()
                        body()
                        best = min(best, now() - t0)
                    }
                    let gbs = Double(n * rowBytes) / best / 1e9
                    let gflops = 2.0 * Double(m * n * k) / best / 1e9
                    results.append(["type": name, "path": label, "m": m, "n": n, "k": k, "best_ms": best * 1e3,
                                    "weight_gb_s": gbs, "gflop_s": gflops])
                    if !json {
                        print(String(format: "%-5@ %-9@ m=%d n=%d k=%d  %8.3f ms  %6.1f GB/s  %7.1f GFLOP/s",
                                     name as NSString, label as NSString, m, n, k, best * 1e3, gbs, gflops))
                    }
                }
            }
            if json { try printJSON(results) }
        }
    }
}
