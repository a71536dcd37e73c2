// Error expectations shared by the bad-input tests: the body must throw the expected error type, whose
// message is one line and names every given string (the file, the field, the problem).

import Foundation
import Testing

/// Expect `body` to throw an `E` whose description is one line and contains every string in `mentions`;
/// returns it (nil, with a recorded issue, otherwise).
@discardableResult
package func expectError<E: Error & CustomStringConvertible>(
    _ errorType: E.Type, mentioning mentions: [String] = [], sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) -> E? {
    do {
        try body()
        Issue.record("expected \(E.self), nothing was thrown", sourceLocation: sourceLocation)
        return nil
    } catch let e as E {
        let text = e.description
        #expect(!text.contains("\n") && !text.contains("\r"), "error spans several lines: \(text)", sourceLocation: sourceLocation)
        for m in mentions {
            #expect(text.contains(m), "'\(text)' does not mention '\(m)'", sourceLocation: sourceLocation)
        }
        return e
    } catch {
        Issue.record("expected \(E.self), got \(type(of: error)): \(error)", sourceLocation: sourceLocation)
        return nil
    }
}
