// The quantizers' grid search: the arithmetic nearest-level of the integer grids (Q4_0, Q5_0, Q6_K) must
// give exactly the index of the midpoint binary search it replaced (ties to the lower level, NaN → 0),
// including values one ulp around every midpoint, where the subtraction in the arithmetic can round.

import Testing
@testable import Quant

@Suite struct GridNearestTests {
    @Test(arguments: [(-8, 16), (-16, 32), (-32, 64), (0, 16), (3, 5)])
    func uniformNearestEqualsTheSearch(first: Int, count: Int) {
        let grid = Grid((first..<(first + count)).map(Float.init))
        #expect(grid.uniformFirst == Float(first))
        var values: [Float] = [.nan, .infinity, -.infinity, 0, -0.0, .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
                               .leastNonzeroMagnitude, 1e30, -1e30]
        for m in grid.mids {
            var up = m, down = m
            for _ in 0..<4 { up = up.nextUp; down = down.nextDown; values += [up, down] }
            values.append(m)
        }
        for l in grid.levels { values += [l, l.nextUp, l.nextDown] }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<20_000 { values.append(Float.random(in: Float(first - 3)...Float(first + count + 3), using: &rng)) }
        for v in values {
            #expect(grid.nearest(v) == grid.nearestSearch(v), "v = \(v) (bits \(String(v.bitPattern, radix: 16)))")
        }
    }

    @Test func nonUniformGridsKeepTheSearch() {
        let g = Grid([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113])
        #expect(g.uniformFirst == nil)
        #expect(g.nearest(0) == g.nearestSearch(0) && g.nearest(-5.5) == 7 && g.nearest(200) == 15)
        #expect(Grid([0, 1, 2.5]).uniformFirst == nil && Grid([0.5, 1.5, 2.5]).uniformFirst == nil)
    }
}
