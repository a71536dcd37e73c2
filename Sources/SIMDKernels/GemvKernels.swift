// Decode-sized quantized matmuls (C tier only; contracts in CKernels/include/gemv_kernels.h): the
// activation rows are quantized once per call to the integer format paired with the weight type
// (Q8_0 weights → int16 activations, as accurate as f32 for the model; Q4_0 → int8, as ggml does),
// then every weight row is streamed once with integer block dot products.

import CKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Quant
import Synchronization

/// Integer activation formats of the decode kernels.
public enum GemvActivation: Int32, Sendable, CaseIterable, CustomStringConvertible {
    /// int8 per 32 values with an f32 scale and the block sum.
    case q8 = 1
    /// int16 per 32 values with an f32 scale.
    case q16 = 2

    /// The default partner of a weight type: int16 for Q8_0 (keeps f32-level accuracy), int8 for Q4_0.
    public static func partner(of type: QuantType) -> GemvActivation { type == .q8_0 ? .q16 : .q8 }
    /// Weight types with gemv and packed kernels.
    public static let weightTypes: [QuantType] = [.q8_0, .q4_0]
    /// Weight types the model runs on these kernels (packed on AVX-512 VNNI and AVX2, else gemv, for every row
    /// count): Q4_0 and Q8_0. NLA_Q8_ACT=f32 keeps Q8_0 on f32 activations (the slower reference path).
    /// Int16 activations are as accurate for Q8_0 (same KLD); since every kernel on this path and the
    /// attention kernel compute a row the same way whatever rows come with it, batched and sequential
    /// runs agree bit for bit, so the int16 rounding cannot turn batching differences into jumps.
    public static let modelTypes: [QuantType] = {
        let env = getenv("NLA_Q8_ACT").map { String(cString: $0) }
        return env == "f32" ? [.q4_0] : [.q8_0, .q4_0]
    }()

    /// Bytes of one quantized row of `cols` values (cols % 32 == 0); rows are 64-byte multiples.
    public func rowBytes(cols: Int) -> Int { Int(ck_gemv_act_row_bytes(rawValue, Int64(cols))) }
    public var description: String { self == .q8 ? "q8" : "q16" }
}

extension QuantKernels {
    /// Y[m,n] (row stride ldy) = X[m,k] · W[n,k]ᵀ with the activation rows quantized to `act` in
    /// `scratch` (at least m · act.rowBytes(cols: k) bytes, 64-byte aligned). Meant for m < 16.
    /// f32 accumulation in an order that depends on the instruction-set path; thread count never
    /// changes the result. `isa` nil = the selected path; `threads` 0 = `Kernels.threads`.
    public static func gemv(_ type: QuantType, act: GemvActivation, weights: UnsafeRawPointer,
                            x: UnsafePointer<Float>, ldx: Int? = nil, y: UnsafeMutablePointer<Float>, ldy: Int? = nil,
                            m: Int, n: Int, k: Int, scratch: UnsafeMutableRawPointer,
                            isa: CKernelISA? = nil, threads: Int = 0) {
        kernelRequire(k > 0 && k % 32 == 0, "gemv: k \(k) is not a positive multiple of 32")
        kernelRequire(m >= 0 && n >= 0, "gemv: negative shape m \(m) n \(n)")
        kernelRequire(Int(bitPattern: scratch) % 64 == 0, "gemv: scratch is not 64-byte aligned")
        kernelRequire(GemvActivation.weightTypes.contains(type), "gemv: no kernel for \(type)")
        ck_gemv_quantize(act.rawValue, x, Int64(ldx ?? k), scratch, Int64(m), Int64(k))
        let rc = ck_gemv(type.ckID, act.rawValue, weights, scratch, y, Int64(ldy ?? n), Int64(m), Int64(n), Int64(k),
                         isa?.rawValue ?? -1, Int32(threads))
        kernelRequire(rc == 0, "gemv: unsupported pair \(type) × \(act)")
    }
}

/// Row-interleaved ("packed") weights for AVX-512 VNNI and AVX2 CPUs (contracts in
/// CKernels/include/packed_kernels.h): a load-time copy of a Q8_0 / Q4_0 matrix whose 16-row tiles
/// let one integer instruction advance 16 (AVX-512) or 8 (AVX2) rows. Owns its memory.
public final class PackedWeights: @unchecked Sendable {
    public let type: QuantType
    public let rows: Int
    public let cols: Int
    /// The packed copy (its own huge-page mapping when 4 MB or more, see `LargeBuffer`), or read-only
    /// memory some `owner` keeps alive (a mapped cache file). Never written after construction.
    public var bytes: UnsafeMutableRawPointer { pointer }
    public let byteCount: Int
    private let pointer: UnsafeMutableRawPointer
    private let storage: LargeBuffer?
    private let owner: AnyObject?
    /// Whether the bytes are borrowed from an owner (a mapped cache file) rather than packed here.
    public var isBorrowed: Bool { storage == nil }

    /// Bytes of one tile row (16 weight rows, every block column).
    public var tileRowBytes: Int { (cols / 32) * Self.blockBytes(type) }

    /// Bytes of one packed 16-row × 32-column tile of `type` (0 for types that are not packed).
    public static func blockBytes(_ type: QuantType) -> Int { Int(ck_packed_block_bytes(type.ckID)) }

    /// Packed kernels run on this CPU (and NLA_PACK=0 does not turn them off).
    public static var isAvailable: Bool { ck_packed_available() != 0 }

    /// The screened top-2 (`top2(x:…)`) and the Q8_0 × int8 matmul run here (the AVX-512 layout).
    public static var screensTop2: Bool { ck_packed_top2_available() != 0 }

    /// The packed layout of this process: 1 AVX-512 VNNI, 2 AVX2, 0 none (ck_packed_layout).
    public static var layout: Int { Int(ck_packed_layout()) }

    /// Bytes of the packed copy of a `rows` × `cols` matrix of `type`, nil when it would not be packed.
    public static func byteCount(_ type: QuantType, rows: Int, cols: Int) -> Int? {
        guard isAvailable, GemvActivation.weightTypes.contains(type), rows > 0, cols > 0, rows % 16 == 0, cols % 32 == 0 else { return nil }
        return rows / 16 * (cols / 32) * Int(ck_packed_block_bytes(type.ckID))
    }

    /// Pack `rows` × `cols` ggml blocks, or nil when this CPU has no packed kernels or the shape does
    /// not tile (rows % 16, cols % 32). Packs in slices of about 16 MB and calls `consumed` with each
    /// source byte range once it is packed (e.g. to release the pages of a mapped file as it goes, so
    /// the peak memory is the packed copy plus one slice).
    public init?(_ type: QuantType, blocks: UnsafeRawPointer, rows: Int, cols: Int, threads: Int = 0,
                 consumed: ((UnsafeRawPointer, Int) -> Void)? = nil) {
        guard let n = Self.byteCount(type, rows: rows, cols: cols) else { return nil }
        let tileBytes = (cols / 32) * Int(ck_packed_block_bytes(type.ckID))
        // Matrices of 4 MB and more get their own 2 MB-aligned mapping offered as huge pages.
        let storage = LargeBuffer.allocate(byteCount: n)
        let srcRow = type.kernelRowBytes(cols: cols)
        let sliceRows = max(16, (16 << 20) / max(srcRow, 1) / 16 * 16)
        var r0 = 0
        while r0 < rows {
            let r = min(sliceRows, rows - r0)
            guard ck_pack(type.ckID, blocks + r0 * srcRow, storage.pointer + r0 / 16 * tileBytes, Int64(r), Int64(cols),
                          Int32(threads)) == 0 else {
                storage.free()
                return nil
            }
            consumed?(blocks + r0 * srcRow, r * srcRow)
            r0 += r
        }
        self.type = type
        self.rows = rows
        self.cols = cols
        byteCount = n
        self.storage = storage
        pointer = storage.pointer
        owner = nil
    }

    /// A packed matrix whose `byteCount(type, rows:, cols:)` bytes at `packed` were written by an earlier
    /// pack (e.g. read from a cache file); `owner` keeps that memory alive and unchanged as long as this
    /// object lives. Nil when this CPU would not pack the shape. The caller vouches for the bytes
    /// (`tileRowMatches` spot-checks them against the source).
    public init?(_ type: QuantType, packed: UnsafeRawPointer, rows: Int, cols: Int, owner: AnyObject) {
        guard let n = Self.byteCount(type, rows: rows, cols: cols) else { return nil }
        self.type = type
        self.rows = rows
        self.cols = cols
        byteCount = n
        storage = nil
        pointer = UnsafeMutableRawPointer(mutating: packed)
        self.owner = owner
    }

    /// Whether tile row `t` (weight rows 16t…16t+15) holds exactly the pack of `source`: those 16 rows as
    /// ggml blocks (16 · kernelRowBytes(cols:) bytes).
    public func tileRowMatches(_ t: Int, source: UnsafeRawPointer) -> Bool {
        guard t >= 0, t < rows / 16 else { return false }
        let n = tileRowBytes
        return withUnsafeTemporaryAllocation(byteCount: n, alignment: 64) { tmp in
            guard ck_pack(type.ckID, source, tmp.baseAddress!, 16, Int64(cols), 1) == 0 else { return false }
            return memcmp(tmp.baseAddress!, pointer + t * n, n) == 0
        }
    }

    deinit {
        storage?.free()
        rowNormCache.withLock { $0?.deallocate() }
    }

    // Row norms for top2(x:…): computed on first use, once (the lock also orders the first use).
    private let rowNormCache = Mutex<UnsafeMutablePointer<Float>?>(nil)

    /// Row `r` as f32 (exact).
    public func dequantizeRow(_ r: Int, into dst: UnsafeMutablePointer<Float>) {
        kernelRequire(r >= 0 && r < rows, "PackedWeights: row \(r) out of 0..<\(rows)")
        ck_packed_dequantize_row(type.ckID, bytes, Int64(r), Int64(cols), dst)
    }

    /// Y[m, rows] (row stride ldy) = X[m, cols] · Wᵀ, activations quantized into `scratch` (at least
    /// m · act.rowBytes(cols:) bytes, 64-byte aligned). Any m. `act` nil = the type's partner
    /// (GemvActivation.partner(of:)); Q8_0 also takes `.q8` (int8 activations: faster, less accurate).
    public func matmul(x: UnsafePointer<Float>, ldx: Int? = nil, y: UnsafeMutablePointer<Float>, ldy: Int? = nil, m: Int,
                       scratch: UnsafeMutableRawPointer, act: GemvActivation? = nil, threads: Int = 0) {
        kernelRequire(m >= 0, "PackedWeights.matmul: negative row count \(m)")
        kernelRequire(Int(bitPattern: scratch) % 64 == 0, "PackedWeights.matmul: scratch is not 64-byte aligned")
        let act = act ?? GemvActivation.partner(of: type)
        kernelRequire(act == GemvActivation.partner(of: type) || (type == .q8_0 && act == .q8 && Self.screensTop2),
                      "PackedWeights.matmul: no packed kernel for \(type) × \(act) in layout \(Self.layout)")
        ck_packed_quantize(act.rawValue, x, Int64(ldx ?? cols), scratch, Int64(m), Int64(cols))
        multiply(act: act, rows: 0..<rows, scratch: scratch, y: y, ldy: ldy ?? rows, m: m, threads: threads)
    }

    /// Y = Xa · W[rows]ᵀ for activations already quantized into scratch (checked by the callers).
    private func multiply(act: GemvActivation, rows range: Range<Int>, scratch: UnsafeMutableRawPointer,
                          y: UnsafeMutablePointer<Float>, ldy: Int, m: Int, threads: Int) {
        let rc = ck_packed_matmul(type.ckID, act.rawValue, bytes + range.lowerBound / 16 * tileRowBytes, scratch, y, Int64(ldy),
                                  Int64(m), Int64(range.count), Int64(cols), Int32(threads))
        kernelRequire(rc == 0, "PackedWeights.matmul: packed kernels unavailable")
    }

    /// X[m, cols] · Wᵀ one slice of `width` weight rows at a time (a multiple of 16; the last slice may be
    /// shorter): X is quantized once, each slice's Y[m, count] (row stride count) is written to `y`
    /// (m · width floats) and `body(lo, count)` reads it before the next slice overwrites it. Every output
    /// is bit-identical to the same output of `matmul(x:…)`.
    public func matmulSlices(x: UnsafePointer<Float>, m: Int, width: Int, y: UnsafeMutablePointer<Float>,
                             scratch: UnsafeMutableRawPointer, threads: Int = 0, _ body: (_ lo: Int, _ count: Int) -> Void) {
        kernelRequire(width > 0 && width % 16 == 0, "PackedWeights.matmulSlices: width \(width) is not a positive multiple of 16")
        kernelRequire(m >= 0, "PackedWeights.matmulSlices: negative row count \(m)")
        kernelRequire(Int(bitPattern: scratch) % 64 == 0, "PackedWeights.matmulSlices: scratch is not 64-byte aligned")
        if m == 0 { return }
        let act = GemvActivation.partner(of: type)
        ck_packed_quantize(act.rawValue, x, Int64(cols), scratch, Int64(m), Int64(cols))
        for lo in stride(from: 0, to: rows, by: width) {
            let count = min(width, rows - lo)
            multiply(act: act, rows: lo..<(lo + count), scratch: scratch, y: y, ldy: count, m: m, threads: threads)
            body(lo, count)
        }
    }

    /// Whether `parts` can share one `matmul(parts:…)` call: 1…8 matrices of one type and one width.
    public static func canFuse(_ parts: [PackedWeights]) -> Bool {
        guard let f = parts.first, parts.count <= Int(CK_PACKED_MAX_PARTS) else { return false }
        return parts.allSatisfy { $0.type == f.type && $0.cols == f.cols }
    }

    /// Y_p[m, parts[p].rows] = X[m, cols] · W_pᵀ for every part in one threaded pass (one activation
    /// quantization, one parallel region: the q/k/v projections of a layer, gate and up). Each `ys[p]`
    /// has row stride parts[p].rows. Every output is bit-identical to `parts[p].matmul`.
    public static func matmul(parts: [PackedWeights], x: UnsafePointer<Float>, ys: [UnsafeMutablePointer<Float>], m: Int,
                              scratch: UnsafeMutableRawPointer, threads: Int = 0) {
        kernelRequire(canFuse(parts) && ys.count == parts.count, "PackedWeights.matmul(parts:): parts do not share a type and width")
        kernelRequire(m >= 0, "PackedWeights.matmul(parts:): negative row count \(m)")
        kernelRequire(Int(bitPattern: scratch) % 64 == 0, "PackedWeights.matmul(parts:): scratch is not 64-byte aligned")
        let f = parts[0], act = GemvActivation.partner(of: f.type)
        ck_packed_quantize(act.rawValue, x, Int64(f.cols), scratch, Int64(m), Int64(f.cols))
        let ws: [UnsafeRawPointer?] = parts.map { UnsafeRawPointer($0.bytes) }
        let ns = parts.map { Int64($0.rows) }
        let yp: [UnsafeMutablePointer<Float>?] = ys
        let rc = ws.withUnsafeBufferPointer { w in
            yp.withUnsafeBufferPointer { y in
                ck_packed_matmul_multi(f.type.ckID, act.rawValue, Int32(parts.count), w.baseAddress, ns, y.baseAddress, ns,
                                       scratch, Int64(m), Int64(f.cols), Int32(threads))
            }
        }
        kernelRequire(rc == 0, "PackedWeights.matmul(parts:): packed kernels unavailable")
    }

    // MARK: Screened exact top-2 (Q8_0)

    /// Per weight row an upper bound of its Euclidean norm (f32, rounded up), then [max norm, max |block
    /// scale|] (rows + 2 floats; see ck_packed_row_norms). Computed once on first use, thread-safe.
    public var rowNorms: UnsafePointer<Float> {
        rowNormCache.withLock { cache in
            if let p = cache { return UnsafePointer(p) }
            let p = UnsafeMutablePointer<Float>.allocate(capacity: rows + 2)
            let rc = ck_packed_row_norms(type.ckID, bytes, Int64(rows), Int64(cols), p, p + rows, 0)
            kernelRequire(rc == 0, "PackedWeights.rowNorms: unsupported matrix")
            cache = p
            return UnsafePointer(p)
        }
    }

    /// Scratch bytes `top2(x:…)` needs for m activation rows (64-byte aligned memory).
    public func top2ScratchBytes(m: Int) -> Int {
        kernelRequire(m >= 0, "PackedWeights.top2ScratchBytes: negative row count \(m)")
        return Int(ck_packed_top2_q8_scratch_bytes(Int64(m), Int64(rows), Int64(cols)))
    }

    /// For each of the m rows of X[m, cols] (row stride ldx): exactly `Kernels.top2` of that row of
    /// `matmul(x:…)` (int16 activations), found by screening every weight row with int8 activations,
    /// bounding the screen's error rigorously and recomputing only the 16-row tiles that can hold the
    /// top 2 (contract in CKernels/include/packed_kernels.h, proof in packed_kernels.c). Q8_0 only.
    /// `scratch`: top2ScratchBytes(m:) bytes, 64-byte aligned. `candidates`: nil, or m values that
    /// receive the weight rows computed exactly per activation row (diagnostics; `rows` when a row took
    /// the full path). `screen`: nil, or m · rows floats for the int8 screen values (tests).
    public func top2(x: UnsafePointer<Float>, ldx: Int? = nil, m: Int, scratch: UnsafeMutableRawPointer,
                     candidates: UnsafeMutablePointer<Int>? = nil, screen: UnsafeMutablePointer<Float>? = nil,
                     threads: Int = 0) -> [(index: Int, first: Float, second: Float)] {
        kernelRequire(type == .q8_0, "PackedWeights.top2: only Q8_0 matrices (this one is \(type))")
        kernelRequire(Self.screensTop2, "PackedWeights.top2: the screen needs the AVX-512 layout (this process has \(Self.layout))")
        kernelRequire(m >= 0, "PackedWeights.top2: negative row count \(m)")
        let ldx = ldx ?? cols
        kernelRequire(ldx >= cols, "PackedWeights.top2: ldx \(ldx) < cols \(cols)")
        kernelRequire(Int(bitPattern: scratch) % 64 == 0, "PackedWeights.top2: scratch is not 64-byte aligned")
        if m == 0 { return [] }
        let norms = rowNorms
        var index = [Int64](repeating: 0, count: m)
        var first = [Float](repeating: 0, count: m), second = first
        var cand = [Int64](repeating: 0, count: candidates == nil ? 0 : m)
        let rc = index.withUnsafeMutableBufferPointer { ip in
            first.withUnsafeMutableBufferPointer { fp in
                second.withUnsafeMutableBufferPointer { sp in
                    cand.withUnsafeMutableBufferPointer { cp in
                        ck_packed_top2_q8(bytes, norms, norms + rows, x, Int64(ldx), Int64(m), Int64(rows), Int64(cols),
                                          scratch, top2ScratchBytes(m: m), screen, ip.baseAddress, fp.baseAddress,
                                          sp.baseAddress, candidates == nil ? nil : cp.baseAddress, Int32(threads))
                    }
                }
            }
        }
        kernelRequire(rc == 0, "PackedWeights.top2: packed kernels unavailable")
        if let candidates { for i in 0..<m { candidates[i] = Int(cand[i]) } }
        return (0..<m).map { (Int(index[$0]), first[$0], second[$0]) }
    }

    /// The screen bound of one activation row: |screen_j − exact_j| <= rowNorms[j]·beta + abs for every
    /// weight row j; nil when that row would take the full exact path because of its values. Tests.
    public func top2Bound(x: UnsafePointer<Float>) -> (beta: Double, abs: Double)? {
        var a = 0.0
        let b = ck_packed_top2_q8_bound(x, Int64(cols), rowNorms + rows, &a)
        return b.isNaN ? nil : (b, a)
    }
}
