// Importance matrix ("imatrix"): per linear layer, the mean of the squared input activation per input channel
// over a calibration text. The quantizers weight each column's error by it (Σ imatrix[j]·err², see
// Sources/Quant/QuantKBlocks.swift), which is the expected squared output error of the layer when inputs are
// uncorrelated across channels.
//
// File: safetensors, one F32 tensor [in_features] per linear weight, named exactly like the weight in the
// checkpoint ("model.layers.3.mlp.down_proj.weight"), and metadata: format "nla-imatrix", tokens (positions
// observed), sequences, text_sha256 (of the calibration file's bytes), model (its path).
// With `hessian: true` (`nla imatrix --hessian`) the file also holds, per distinct layer input, the F32 matrix
// [in, in] of mean x·xᵀ (named "<weight>.hessian" after the first weight reading that input: q_proj for q/k/v,
// gate_proj for gate/up, o_proj, down_proj), for `quantize --gptq` (Sources/Quant/GPTQ.swift).

import Foundation
import Quant
import SIMDKernels

public final class ImatrixCollector {
    public let model: Gemma3Model
    private var names: [ObjectIdentifier: String] = [:]
    private var sums: [String: [Double]] = [:]
    private var widths: [String: Int] = [:]
    public private(set) var tokens = 0
    public private(set) var sequences = 0
    /// Weight name → accumulated Σ x·xᵀ (cols×cols, f32) for the weights that own a Hessian.
    private var hessians: [String: UnsafeMutablePointer<Float>] = [:]
    private var transposeScratch: [Float] = []

    /// The weights whose input owns the Hessian: the other weights reading the same input share it.
    static let hessianOwners = ["self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"]

    public init(model: Gemma3Model, hessian: Bool = false) {
        self.model = model
        let p = model.weightPrefix
        for (i, l) in model.layers.enumerated() {
            let named: [(String, WeightMatrix)] = [
                ("self_attn.q_proj", l.qProj), ("self_attn.k_proj", l.kProj), ("self_attn.v_proj", l.vProj),
                ("self_attn.o_proj", l.oProj), ("mlp.gate_proj", l.gateProj), ("mlp.up_proj", l.upProj),
                ("mlp.down_proj", l.downProj),
            ]
            for (n, w) in named {
                let full = "\(p)layers.\(i).\(n).weight"
                names[ObjectIdentifier(w)] = full
                widths[full] = w.cols
                sums[full] = [Double](repeating: 0, count: w.cols)
                if hessian && Self.hessianOwners.contains(n) {
                    let h = UnsafeMutablePointer<Float>.allocate(capacity: w.cols * w.cols)
                    h.initialize(repeating: 0, count: w.cols * w.cols)
                    hessians[full] = h
                }
            }
        }
    }

    deinit { for h in hessians.values { h.deallocate() } }

    /// Run one sequence (BOS + tokens, as the caller tokenized it) through every block and accumulate x².
    public func observe(ids: [Int]) throws {
        guard !ids.isEmpty else { return }
        let e = try model.embed(ids)
        try observe(embeddings: e, rows: ids.count)
    }

    /// Run one sequence given as input-embedding rows ([rows, d], scaled as the model expects: `Gemma3Model.embed`
    /// for token rows; an NLA AV's injected row as is) through every block and accumulate x².
    public func observe(embeddings: [Float], rows: Int) throws {
        guard rows > 0 else { return }
        guard embeddings.count == rows * model.config.hiddenSize else {
            throw ModelError.input("imatrix: \(embeddings.count) embedding values for \(rows) rows of width \(model.config.hiddenSize)")
        }
        let session = try model.makeSession(capacity: rows)
        session.linearInputObserver = { [unowned self] w, x, rows in
            guard let name = self.names[ObjectIdentifier(w)] else { return }
            let cols = w.cols
            self.sums[name]!.withUnsafeMutableBufferPointer { s in
                for r in 0..<rows {
                    let xr = x + r * cols
                    for c in 0..<cols { s[c] += Double(xr[c] * xr[c]) }
                }
            }
            if let h = self.hessians[name] {
                // H += Xᵀ X (sgemm on the transposed rows).
                if self.transposeScratch.count < rows * cols { self.transposeScratch = [Float](repeating: 0, count: rows * cols) }
                self.transposeScratch.withUnsafeMutableBufferPointer { t in
                    for r in 0..<rows { for c in 0..<cols { t[c * rows + r] = x[r * cols + c] } }
                    Kernels.matmulNN(t.baseAddress!, x, h, m: cols, n: cols, k: rows, beta: 1)
                }
            }
        }
        defer { session.linearInputObserver = nil }
        _ = try embeddings.withUnsafeBufferPointer { try session.forward(embeddings: $0.baseAddress!, rows: rows, logits: .none) }
        tokens += rows
        sequences += 1
    }

    /// Mean of x² per input channel, per weight name.
    public var means: [String: [Float]] {
        sums.mapValues { s in s.map { Float($0 / Double(max(tokens, 1))) } }
    }

    /// `extraMetadata` adds keys to the file's metadata (AV calibration: source, target, layer, vectors…); it cannot
    /// replace the standard ones.
    public func write(to path: String, textSHA256: String, extraMetadata: [String: String] = [:]) throws {
        guard tokens > 0 else { throw ModelError.input("imatrix: no tokens observed") }
        var w = SafetensorsWriter()
        w.metadata = ["format": "nla-imatrix", "tokens": String(tokens), "sequences": String(sequences),
                      "text_sha256": textSHA256, "model": model.directory]
        for (k, v) in extraMetadata where w.metadata[k] == nil { w.metadata[k] = v }
        for name in sums.keys.sorted() {
            w.add(.init(name: name, shape: [widths[name]!], floats: means[name]!))
        }
        let scale = 1 / Float(tokens)
        for name in hessians.keys.sorted() {
            let n = widths[name]!
            let h = hessians[name]!
            w.add(.init(name: name + ".hessian", shape: [n, n], floats: (0..<(n * n)).map { h[$0] * scale }))
        }
        try w.write(to: path)
    }
}

/// A loaded importance matrix: weight name → per-column importance.
public struct Imatrix: Sendable {
    public let path: String
    public let columns: [String: [Float]]
    public let metadata: [String: String]
    /// Hessians (mean x·xᵀ, row-major [in, in]) by owner weight name, when the file has them (`--hessian`).
    public let hessians: [String: [Float]]

    public init(path: String) throws {
        let f: SafetensorsFile
        do { f = try SafetensorsFile(path: path) } catch {
            throw ModelError.input("\(path): not an imatrix safetensors file (\(error))")
        }
        var cols: [String: [Float]] = [:]
        var hess: [String: [Float]] = [:]
        for (name, t) in f.tensors {
            if name.hasSuffix(".hessian") {
                let sh = t.entry.shape
                guard sh.count == 2, sh[0] == sh[1], t.entry.type == .f32 else {
                    throw ModelError.input("\(path): tensor '\(name)' must be a square 2-D F32 matrix (got \(t.entry.typeName) \(sh))")
                }
                let v = try f.tensor(name).toFloatArray()
                if let i = v.firstIndex(where: { !$0.isFinite }) {
                    throw ModelError.input("\(path): tensor '\(name)' has a non-finite value at \(i)")
                }
                hess[String(name.dropLast(".hessian".count))] = v
                continue
            }
            guard t.entry.shape.count == 1, t.entry.type == .f32 else {
                throw ModelError.input("\(path): tensor '\(name)' must be a 1-D F32 vector (got \(t.entry.typeName) \(t.entry.shape))")
            }
            let v = try f.tensor(name).toFloatArray()
            if let i = v.firstIndex(where: { !$0.isFinite || $0 < 0 }) {
                throw ModelError.input("\(path): tensor '\(name)' has an invalid value \(v[i]) at \(i) (must be finite and >= 0)")
            }
            cols[name] = v
        }
        guard !cols.isEmpty else { throw ModelError.input("\(path): no imatrix tensors") }
        self.path = path
        columns = cols
        hessians = hess
        metadata = f.metadata
    }

    /// The Hessian of `tensor`'s input and the name of its owner (k/v_proj share q_proj's, up_proj gate_proj's),
    /// matched with any accepted checkpoint prefix; nil when the file has none for it.
    public func hessian(for tensor: String, width: Int) throws -> (owner: String, values: [Float])? {
        guard !hessians.isEmpty else { return nil }
        var owner = tensor
        for (from, to) in [("self_attn.k_proj.", "self_attn.q_proj."), ("self_attn.v_proj.", "self_attn.q_proj."),
                           ("mlp.up_proj.", "mlp.gate_proj.")] {
            owner = owner.replacingOccurrences(of: from, with: to)
        }
        var key: String? = hessians[owner] != nil ? owner : nil
        if key == nil {
            for p in WeightNames.knownPrefixes where owner.hasPrefix(p) {
                let bare = String(owner.dropFirst(p.count))
                key = hessians.keys.first { k in WeightNames.knownPrefixes.contains { k == $0 + bare } }
                if key != nil { break }
            }
        }
        guard let key, let v = hessians[key] else { return nil }
        guard v.count == width * width else {
            throw ModelError.input("\(path): Hessian for '\(tensor)' is \(Int(Double(v.count).squareRoot()))², the tensor has \(width) columns")
        }
        return (key, v)
    }

    /// The importance of `tensor`'s columns, matched by name with any accepted checkpoint prefix.
    public func importance(for tensor: String, width: Int) throws -> [Float]? {
        var v = columns[tensor]
        if v == nil {
            for p in WeightNames.knownPrefixes where tensor.hasPrefix(p) {
                let bare = String(tensor.dropFirst(p.count))
                v = columns.first { k, _ in WeightNames.knownPrefixes.contains { k == $0 + bare } }?.value
                if v != nil { break }
            }
        }
        guard let v else { return nil }
        guard v.count == width else {
            throw ModelError.input("\(path): imatrix for '\(tensor)' has \(v.count) columns, the tensor has \(width)")
        }
        return v
    }
}

/// SHA-256 (FIPS 180-4) of `data`, lowercase hex. Small and dependency-free: used for the imatrix metadata.
public func sha256Hex(_ data: Data) -> String {
    let k: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2]
    var h: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
    var msg = [UInt8](data)
    let bitLen = UInt64(msg.count) * 8
    msg.append(0x80)
    while msg.count % 64 != 56 { msg.append(0) }
    for i in (0..<8).reversed() { msg.append(UInt8((bitLen >> (8 * UInt64(i))) & 0xff)) }
    @inline(__always) func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }
    var w = [UInt32](repeating: 0, count: 64)
    for chunk in stride(from: 0, to: msg.count, by: 64) {
        for i in 0..<16 {
            w[i] = UInt32(msg[chunk + 4 * i]) << 24 | UInt32(msg[chunk + 4 * i + 1]) << 16 |
                UInt32(msg[chunk + 4 * i + 2]) << 8 | UInt32(msg[chunk + 4 * i + 3])
        }
        for i in 16..<64 {
            let s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
            let s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
            w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
        }
        var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7]
        for i in 0..<64 {
            let s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
            let ch = (e & f) ^ (~e & g)
            let t1 = hh &+ s1 &+ ch &+ k[i] &+ w[i]
            let s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
            let maj = (a & b) ^ (a & c) ^ (b & c)
            let t2 = s0 &+ maj
            hh = g; g = f; f = e; e = d &+ t1; d = c; c = b; b = a; a = t1 &+ t2
        }
        h[0] = h[0] &+ a; h[1] = h[1] &+ b; h[2] = h[2] &+ c; h[3] = h[3] &+ d
        h[4] = h[4] &+ e; h[5] = h[5] &+ f; h[6] = h[6] &+ g; h[7] = h[7] &+ hh
    }
    return h.map { String(format: "%08x", $0) }.joined()
}
