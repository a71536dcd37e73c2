import ArgumentParser
import Foundation
import NLARuntime
import Quant
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
    @Flag(name: .customLong("top2"), help: "Instead: the full int16 packed Q8_0 matmul + top2 vs the screened exact top-2 (PackedWeights.top2) at each --top2-m row count, on random --n × --k weights or --top2-model's LM head.")
    var top2 = false
    @Option(name: .customLong("top2-m"), help: "Activation row counts for --top2, comma-separated.") var top2M: String = "1,4,16"
    @Option(name: .customLong("top2-model"), help: "With --top2: a model whose LM head is Q8_0 (e.g. a q8_0 GGUF); its final hidden states of a built-in text are the activation rows.")
    var top2Model: String?

    func run() throws {
        try runReportingErrors {
            if top2 { return try runTop2() }
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

    private func now() -> Double {
        if !cpuTime { return Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Full int16 matmul + top2 per row against the screened exact top-2: best-of-reps µs per call, mean
    /// weight rows computed exactly per activation row, and a check that both give the same results.
    private func runTop2() throws {
        let ms = try top2M.split(separator: ",").map { s -> Int in
            guard let v = Int(s.trimmingCharacters(in: .whitespaces)), v >= 1, v <= 4096 else {
                throw ModelError.input("bench-kernels: --top2-m must list row counts in 1...4096, got '\(s)'")
            }
            return v
        }
        guard reps >= 1, !ms.isEmpty else { throw ModelError.input("bench-kernels: need reps >= 1 and at least one --top2-m") }
        Kernels.setThreads(threads)
        let packed: PackedWeights
        var rows: [Float]  // activation rows to cycle through, width packed.cols
        var source: String
        if let path = top2Model {
            let lm = try LanguageModel(directory: path)
            guard let p = lm.model.lmHead.packed, p.type == .q8_0, PackedWeights.screensTop2 else {
                throw ModelError.input("\(path): the LM head is not a packed Q8_0 matrix (need a q8_0 model on an AVX-512 VNNI CPU)")
            }
            packed = p
            let text = "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined "
                + "movable metal type, oil-based ink and a screw press. Within decades, presses spread across Europe, books "
                + "became cheaper, and literacy rose. Scholars argue about how much the press changed science and religion, "
                + "but few doubt that it altered how knowledge moved between people, cities and generations."
            let ids = try lm.promptIds(text, chat: false)
            let hs = try lm.session(for: ids).forwardHiddenStates(ids: ids, logits: .last)
            rows = Array(hs.states.last!.dropFirst(p.cols))  // positions 1…, after the final norm
            source = "\(path) LM head, final hidden states of \(ids.count - 1) positions"
        } else {
            guard n % 16 == 0, PackedWeights.screensTop2, let p = try randomQ8Packed() else {
                throw ModelError.input("bench-kernels --top2: need packed kernels (AVX-512 VNNI) and n a multiple of 16")
            }
            packed = p
            var rng = UInt64(12345)
            rows = (0..<(64 * k)).map { _ in
                rng = rng &* 6364136223846793005 &+ 1442695040888963407
                return Float(Int64(bitPattern: rng >> 11) % 2000 - 1000) / 1000
            }
            source = "random \(n) × \(k) Q8_0 weights, random activations"
        }
        let t0 = now()
        _ = packed.rowNorms
        let normTime = now() - t0
        let d = packed.cols, nRows = rows.count / d
        if !json { print("top2 bench: \(source); \(packed.rows) × \(d); row norms \(String(format: "%.1f", normTime * 1e3)) ms (once)") }
        var results: [[String: Any]] = []
        for m in ms {
            let x = (0..<(m * d)).map { rows[(($0 / d) % nRows) * d + $0 % d] }
            let scratch16 = UnsafeMutableRawPointer.allocate(byteCount: m * GemvActivation.q16.rowBytes(cols: d), alignment: 64)
            let scratch = UnsafeMutableRawPointer.allocate(byteCount: packed.top2ScratchBytes(m: m), alignment: 64)
            let y = UnsafeMutablePointer<Float>.allocate(capacity: m * packed.rows)
            defer { scratch16.deallocate(); scratch.deallocate(); y.deallocate() }
            var cand = [Int](repeating: 0, count: m)
            var fullTop: [(index: Int, first: Float, second: Float)] = []
            var screened: [(index: Int, first: Float, second: Float)] = []
            let full = {
                packed.matmul(x: x, y: y, m: m, scratch: scratch16)
                fullTop = (0..<m).map { Kernels.top2(UnsafeBufferPointer(start: y + $0 * packed.rows, count: packed.rows)) }
            }
            let screen = { screened = cand.withUnsafeMutableBufferPointer { packed.top2(x: x, m: m, scratch: scratch, candidates: $0.baseAddress!) } }
            func best(_ body: () -> Void) -> Double {
                body()
                var b = Double.infinity
                for _ in 0..<reps { let t = now(); body(); b = min(b, now() - t) }
                return b
            }
            // Alternate the two paths so both see the same machine state.
            var tf = Double.infinity, ts = Double.infinity
            for _ in 0..<2 { tf = min(tf, best(full)); ts = min(ts, best(screen)) }
            let same = zip(fullTop, screened).allSatisfy {
                $0.index == $1.index && $0.first.bitPattern == $1.first.bitPattern && $0.second.bitPattern == $1.second.bitPattern
            }
            let meanCand = Double(cand.reduce(0, +)) / Double(m)
            let fallbacks = cand.filter { $0 == packed.rows }.count
            results.append(["m": m, "n": packed.rows, "k": d, "full_us": tf * 1e6, "screened_us": ts * 1e6, "speedup": tf / ts,
                            "mean_candidates": meanCand, "full_path_rows": fallbacks, "identical": same])
            if !json {
                print(String(format: "m=%-3d full matmul+top2 %9.1f µs   screened %9.1f µs   %5.2fx   mean candidates %8.1f   full-path rows %d   identical %@",
                             m, tf * 1e6, ts * 1e6, tf / ts, meanCand, fallbacks, same ? "yes" : "NO"))
            }
            if !same { throw ModelError.input("bench-kernels --top2: screened top-2 differs from the full path at m = \(m)") }
        }
        if json { try printJSON(results) }
    }

    /// Random Q8_0 weights (Gaussian-like quants, scale 0.01) packed, for --top2 without a model.
    private func randomQ8Packed() throws -> PackedWeights? {
        let bb = QuantType.q8_0.traits.bytesPerBlock
        let w = UnsafeMutableRawPointer.allocate(byteCount: n * k / 32 * bb, alignment: 64)
        defer { w.deallocate() }
        var rng = UInt64(0x9E3779B97F4A7C15)
        for b in 0..<(n * k / 32) {
            let p = w + b * bb
            p.storeBytes(of: Float16(0.01).bitPattern, toByteOffset: 0, as: UInt16.self)
            for j in 2..<bb {
                rng = rng &* 6364136223846793005 &+ 1442695040888963407
                let g = Int((rng >> 33) % 64) + Int((rng >> 40) % 64) - 63  // triangular in [-63, 63]
                p.storeBytes(of: UInt8(bitPattern: Int8(g)), toByteOffset: j, as: UInt8.self)
            }
        }
        return PackedWeights(.q8_0, blocks: w, rows: n, cols: k)
    }
}
