// Shape and bounds checks at the public kernel API that survive `-Ounchecked`.
//
// This target is compiled with `-Ounchecked` (Package.swift) so that the inner loops carry no
// overflow or bounds traps. That flag also removes every `precondition`, so a check written as a
// precondition at an entry point would silently disappear and a bad shape would read or write out of
// bounds. The checks that guard memory (non-negative sizes, leading dimensions at least the row width,
// whole Q8_0/Q4_0 blocks, sizes that fit the C kernels' Int32/Int64 parameters) are written with
// `kernelRequire`, which traps through `fatalError` and is kept in every build mode. They run once per
// call, never per element. Kernel internals are unchanged.

/// Trap with `message` unless `ok`; kept under `-Ounchecked` (unlike `precondition`).
@inline(__always) @usableFromInline
func kernelRequire(_ ok: Bool, _ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) {
    if _slowPath(!ok) { fatalError("kernel API: " + message(), file: file, line: line) }
}

/// Checks for an f32 matmul Y[m,n] = X[m,k]·W: sizes non-negative, leading dimensions cover the rows,
/// and (for the C/BLAS tier) everything fits Int32.
@inline(__always) @usableFromInline
func kernelCheckMatmul(_ name: String, m: Int, n: Int, k: Int, ldx: Int, ldw: Int, minLdw: Int, ldy: Int) {
    kernelRequire(m >= 0 && n >= 0 && k >= 0, "\(name): negative size m \(m), n \(n), k \(k)")
    kernelRequire(ldx >= k && ldw >= minLdw && ldy >= n,
                  "\(name): leading dimensions ldx \(ldx), ldw \(ldw), ldy \(ldy) smaller than the rows (k \(k), \(minLdw), n \(n))")
    let limit = Int(Int32.max)
    kernelRequire(m <= limit && n <= limit && k <= limit && ldx <= limit && ldw <= limit && ldy <= limit,
                  "\(name): sizes exceed Int32 (m \(m), n \(n), k \(k))")
    let (xEnd, o1) = max(m - 1, 0).multipliedReportingOverflow(by: ldx)
    let (yEnd, o2) = max(m - 1, 0).multipliedReportingOverflow(by: ldy)
    kernelRequire(!o1 && !o2 && xEnd <= Int.max - k && yEnd <= Int.max - n, "\(name): m × leading dimension overflows")
}

/// Checks for the quantized kernels: whole blocks (32 values, 256 for K-quants), non-negative sizes.
@inline(__always) @usableFromInline
func kernelCheckBlocks(_ name: String, k: Int, block: Int = 32, rows: Int...) {
    kernelRequire(k >= 0 && k % block == 0, "\(name): k \(k) is not a non-negative multiple of the block size \(block)")
    for r in rows { kernelRequire(r >= 0, "\(name): negative size \(r)") }
}
