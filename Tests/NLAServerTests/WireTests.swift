// Findings of the http_bodies fuzz target (fuzz/Sources/nla-fuzz), as regression tests of the request decoders.

import Foundation
import NLARuntime
import NLAWire
import Testing

@Suite struct WireFindingTests {
    /// SGLang's default max_new_tokens (128) passed a server whose --max-new-tokens-limit is lower (test-ui runs 4):
    /// a request without max_new_tokens then generated past the limit.
    @Test func defaultMaxNewTokensStaysWithinTheLimit() throws {
        let body = try JSONReader.parse(Array(#"{"text":"hi","sampling_params":{"stop":"x"}}"#.utf8))
        let small = try GenerateBody.decode(body, d: 4, vocab: 300, maxNewTokensLimit: 64)
        #expect(small.params.map(\.options.maxNewTokens) == [64])
        #expect(small.params.map(\.stopStrings) == [["x"]])
        let large = try GenerateBody.decode(body, d: 4, vocab: 300, maxNewTokensLimit: 4096)
        #expect(large.params.map(\.options.maxNewTokens) == [128])
        let none = try GenerateBody.decode(try JSONReader.parse(Array(#"{"input_ids":[1,2]}"#.utf8)), d: 4, vocab: 300, maxNewTokensLimit: 4)
        #expect(none.params.map(\.options.maxNewTokens) == [4])
    }
}
