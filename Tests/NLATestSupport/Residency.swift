import Foundation

#if os(Linux)
/// Resident KB of the mapping that starts at `base` (from /proc/self/smaps).
package func residentKB(ofMappingAt base: UnsafeRawPointer) throws -> Int {
    // /proc files report size 0: read to the end rather than by size.
    let fh = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/self/smaps"))
    defer { try? fh.close() }
    let text = String(decoding: try fh.readToEnd() ?? Data(), as: UTF8.self)
    let start = String(UInt(bitPattern: Int(bitPattern: base)), radix: 16)
    var inside = false
    for line in text.split(separator: "\n") {
        if let dash = line.firstIndex(of: "-"), line[..<dash].allSatisfy(\.isHexDigit) {
            inside = line[..<dash].drop(while: { $0 == "0" }) == Substring(start)
        } else if inside, line.hasPrefix("Rss:") {
            return Int(line.split(separator: " ")[1]) ?? -1
        }
    }
    return -1
}
#endif
