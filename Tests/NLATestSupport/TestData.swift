// Bytes of small test files: little-endian scalars and `.npy` (format 1.0) files.

import Foundation

/// Little-endian bytes of an integer.
package func leBytes<T: FixedWidthInteger>(_ x: T) -> [UInt8] { withUnsafeBytes(of: x.littleEndian) { Array($0) } }

/// Little-endian f32 bytes of `values`.
package func f32le(_ values: [Float]) -> [UInt8] { values.flatMap { leBytes($0.bitPattern) } }

package enum NpyBytes {
    /// A `.npy` file (format 1.0) with the header dict text given verbatim (padded to 64 bytes, newline-ended).
    package static func file(header dict: String, payload: [UInt8]) -> Data {
        var header = dict
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var d = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0])
        let n = UInt16(header.utf8.count)
        d.append(contentsOf: [UInt8(n & 0xFF), UInt8(n >> 8)])
        d.append(contentsOf: Array(header.utf8))
        d.append(contentsOf: payload)
        return d
    }

    /// The header dict numpy writes for `descr`, `shape` (Python tuple text) and the order.
    package static func file(descr: String, shape: String, payload: [UInt8], fortran: Bool = false) -> Data {
        file(header: "{'descr': '\(descr)', 'fortran_order': \(fortran ? "True" : "False"), 'shape': \(shape), }", payload: payload)
    }
}
