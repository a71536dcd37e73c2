// The 4-row tile shared by the f32-activation matmuls of the Swift tier (Q8_0/Q4_0 in VectorKernels,
// the K-quants in KQuantKernels): one SIMD8 partial sum per activation row for one output column,
// reduced with `VectorMath.sum` when stored. Rows past `rows` (the last tile of m) are left untouched.

struct RowTile4 {
    var acc = (SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>())
    /// Rows in this tile (1…4).
    let rows: Int

    @inline(__always) init(rows: Int) { self.rows = rows }

    /// `body(r, &acc)` for each row r of the tile, in order.
    @inline(__always) mutating func accumulate(_ body: (_ row: Int, _ acc: inout SIMD8<Float>) -> Void) {
        body(0, &acc.0)
        if rows > 1 { body(1, &acc.1) }
        if rows > 2 { body(2, &acc.2) }
        if rows > 3 { body(3, &acc.3) }
    }

    /// y[(i + r) * ldy + j] = Σ lanes of row r's partial sums.
    @inline(__always) func store(_ y: UnsafeMutablePointer<Float>, row i: Int, column j: Int, ldy: Int) {
        y[i * ldy + j] = VectorMath.sum(acc.0)
        if rows > 1 { y[(i + 1) * ldy + j] = VectorMath.sum(acc.1) }
        if rows > 2 { y[(i + 2) * ldy + j] = VectorMath.sum(acc.2) }
        if rows > 3 { y[(i + 3) * ldy + j] = VectorMath.sum(acc.3) }
    }
}
