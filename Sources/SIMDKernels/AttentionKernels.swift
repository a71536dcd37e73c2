// Causal multi-head attention over a KV cache in one C call per layer (contract in
// CKernels/include/attention_kernels.h): every (query row, head) is computed from that row, its
// position and the cached keys/values only, so a row's output is bit-identical whether it runs in a
// long prefill, in a batch of sequences or alone in a decode step.

import CKernels

/// Geometry of one attention call.
public struct AttentionShape: Sendable {
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    /// Sliding window (nil: global attention).
    public var window: Int?
    /// Multiplies q·k.
    public var scale: Float
    /// Attention logit soft-capping (nil: none).
    public var softcap: Float?

    public init(heads: Int, kvHeads: Int, headDim: Int, window: Int?, scale: Float, softcap: Float?) {
        self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim
        self.window = window; self.scale = scale; self.softcap = softcap
    }
}

/// Scratch for `Kernels.attention` (one score row per thread); grows on demand, never shrinks.
public final class AttentionScratch: @unchecked Sendable {
    public private(set) var floats = 0
    public private(set) var pointer: UnsafeMutablePointer<Float>?

    public init() {}
    deinit { pointer?.deallocate() }

    func reserve(_ n: Int) -> UnsafeMutablePointer<Float> {
        if n > floats || pointer == nil {
            pointer?.deallocate()
            floats = max(n, 16)
            pointer = UnsafeMutablePointer<Float>.allocate(capacity: floats)
        }
        return pointer!
    }
}

extension Kernels {
    /// out[r, h·hd ..< (h+1)·hd] = softmax over the visible keys j of (q[r,h]·k[j,g]·scale, soft-capped)
    /// applied to v[j,g], for rows r < `rows` at positions pos0 + r. Key/value j live at row j % `ring`
    /// of `k` / `v` (row stride `ldkv`); visible keys are lo...i with lo = i − window + 1 on sliding layers.
    public static func attention(_ shape: AttentionShape, q: UnsafePointer<Float>, ldq: Int,
                                 k: UnsafePointer<Float>, v: UnsafePointer<Float>, ldkv: Int, ring: Int,
                                 out: UnsafeMutablePointer<Float>, ldo: Int, rows: Int, pos0: Int,
                                 scratch: AttentionScratch, isa: CKernelISA? = nil, threads: Int = 0) {
        var p = ck_attn_params(rows: Int64(rows), pos0: Int64(pos0), heads: Int64(shape.heads),
                               kv_heads: Int64(shape.kvHeads), head_dim: Int64(shape.headDim), ldq: Int64(ldq),
                               ldo: Int64(ldo), ldkv: Int64(ldkv), ring: Int64(ring),
                               window: Int64(shape.window ?? 0), scale: shape.scale, softcap: shape.softcap ?? 0,
                               shared: 0, sring: 0, sk: nil, sv: nil)
        kernelRequire(rows >= 0 && pos0 >= 0 && shape.heads > 0 && shape.kvHeads > 0
                      && shape.heads % shape.kvHeads == 0 && shape.headDim > 0, "attention: invalid shape \(shape)")
        kernelRequire(ldq >= shape.heads * shape.headDim && ldo >= shape.heads * shape.headDim
                      && ldkv >= shape.kvHeads * shape.headDim, "attention: row strides too small")
        let n = Int(ck_attention_scratch_floats(&p, Int32(threads)))
        let s = scratch.reserve(n)
        let rc = ck_attention(&p, q, k, v, out, s, Int64(scratch.floats), isa?.rawValue ?? -1, Int32(threads))
        kernelRequire(rc == 0, "attention: the KV ring of \(ring) rows cannot hold the visible keys (rows \(rows), pos0 \(pos0), window \(shape.window ?? 0))")
    }

    /// A read-only KV prefix several sequences attend to: keys/values of positions 0..<`count` at rows
    /// j % `ring` of `k` / `v` (same row stride as the sequences' own caches).
    public struct SharedKeys {
        public var k: UnsafePointer<Float>
        public var v: UnsafePointer<Float>
        public var count: Int
        public var ring: Int

        public init(k: UnsafePointer<Float>, v: UnsafePointer<Float>, count: Int, ring: Int) {
            self.k = k; self.v = v; self.count = count; self.ring = ring
        }
    }

    /// One piece of a `attention(pieces:)` call: the rows of one sequence against its own KV cache and,
    /// optionally, a shared prefix. Without `shared`, key j is at row j % `ring` of `k` / `v`; with it,
    /// keys j < shared.count come from the prefix and key j ≥ shared.count is at row
    /// (j − shared.count) % `ring` of `k` / `v` (and pos0 ≥ shared.count).
    public struct AttentionPiece {
        public var q: UnsafePointer<Float>
        public var k: UnsafePointer<Float>
        public var v: UnsafePointer<Float>
        public var ring: Int
        public var out: UnsafeMutablePointer<Float>
        public var rows: Int
        public var pos0: Int
        public var shared: SharedKeys?

        public init(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, ring: Int,
                    out: UnsafeMutablePointer<Float>, rows: Int, pos0: Int, shared: SharedKeys? = nil) {
            self.q = q; self.k = k; self.v = v; self.ring = ring; self.out = out; self.rows = rows; self.pos0 = pos0
            self.shared = shared
        }
    }

    /// `attention` for several sequences of one geometry and strides in one threaded pass (a batch's
    /// layer): piece i's output is bit-identical to an `attention` call for it alone.
    public static func attention(_ shape: AttentionShape, pieces: [AttentionPiece], ldq: Int, ldkv: Int, ldo: Int,
                                 scratch: AttentionScratch, isa: CKernelISA? = nil, threads: Int = 0) {
        guard !pieces.isEmpty else { return }
        kernelRequire(shape.heads > 0 && shape.kvHeads > 0 && shape.heads % shape.kvHeads == 0 && shape.headDim > 0,
                      "attention: invalid shape \(shape)")
        kernelRequire(ldq >= shape.heads * shape.headDim && ldo >= shape.heads * shape.headDim
                      && ldkv >= shape.kvHeads * shape.headDim, "attention: row strides too small")
        let most = Int(CK_ATTN_MAX_PIECES)
        if pieces.count > most {  // C takes at most CK_ATTN_MAX_PIECES per call
            for s in stride(from: 0, to: pieces.count, by: most) {
                attention(shape, pieces: Array(pieces[s..<min(s + most, pieces.count)]), ldq: ldq, ldkv: ldkv, ldo: ldo,
                          scratch: scratch, isa: isa, threads: threads)
            }
            return
        }
        var params = pieces.map { p in
            kernelRequire(p.rows >= 0 && p.pos0 >= 0, "attention: negative rows or position")
            return ck_attn_params(rows: Int64(p.rows), pos0: Int64(p.pos0), heads: Int64(shape.heads),
                                  kv_heads: Int64(shape.kvHeads), head_dim: Int64(shape.headDim), ldq: Int64(ldq),
                                  ldo: Int64(ldo), ldkv: Int64(ldkv), ring: Int64(p.ring),
                                  window: Int64(shape.window ?? 0), scale: shape.scale, softcap: shape.softcap ?? 0,
                                  shared: Int64(p.shared?.count ?? 0), sring: Int64(p.shared?.ring ?? 0),
                                  sk: p.shared?.k, sv: p.shared?.v)
        }
        var qs = pieces.map { Optional($0.q) }, ks = pieces.map { Optional($0.k) }, vs = pieces.map { Optional($0.v) }
        var outs = pieces.map { Optional($0.out) }
        let rc: Int32 = params.withUnsafeMutableBufferPointer { pb in
            withUnsafeTemporaryAllocation(of: UnsafePointer<ck_attn_params>?.self, capacity: pb.count) { pp in
                for i in 0..<pb.count { pp[i] = UnsafePointer(pb.baseAddress! + i) }
                let n = Int(ck_attention_multi_scratch_floats(Int64(pb.count), pp.baseAddress!, Int32(threads)))
                let s = scratch.reserve(n)
                return ck_attention_multi(Int64(pb.count), pp.baseAddress!, &qs, &ks, &vs, &outs, s, Int64(scratch.floats),
                                          isa?.rawValue ?? -1, Int32(threads))
            }
        }
        kernelRequire(rc == 0, "attention: a KV ring cannot hold its visible keys (pieces \(pieces.map { ($0.rows, $0.pos0, $0.ring, $0.shared?.count ?? 0, $0.shared?.ring ?? 0) }), window \(shape.window ?? 0))")
    }
}
