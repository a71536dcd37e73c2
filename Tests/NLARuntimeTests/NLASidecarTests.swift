// NLA pieces that need no model: the sidecar (spec §1: every field, alias and null rule, the PyYAML dump
// forms, refusals naming the file), prompt-template formatting, explanation extraction and warnings,
// vector files, the score formulas (spec §4.3, test vectors T7/T10/T11) and the injection-site scan.

import Foundation
import Quant
import Testing
import NLATestSupport
@testable import NLARuntime

/// Expect `body` to throw an NLAError (one line, mentioning every string); returns it.
@discardableResult
func expectNLAError(sourceLocation: SourceLocation = #_sourceLocation, mentioning: [String] = [],
                    _ body: () throws -> Void) -> NLAError? {
    expectError(NLAError.self, mentioning: mentioning, sourceLocation: sourceLocation, body)
}

enum NLAFixtures {
    static let dir: String = TestPaths.fixture("nla-demo")
    static var avPath: String { dir + "/av/nla_meta.yaml" }
    static var arPath: String { dir + "/ar/nla_meta.yaml" }

    /// Spec §2.1: paragraphs joined by a blank line, no trailing newline.
    static let canonicalAVTemplate = [
        "You are a meticulous AI researcher conducting an important investigation into activation vectors from a language model. Your overall task is to describe the semantic content of that activation vector.",
        "We will pass the vector enclosed in <concept> tags into your context. You must then produce an explanation for the vector, enclosed within <explanation> tags. The explanation consists of 2-3 text snippets describing that vector.",
        "Here is the vector:",
        "<concept>{injection_char}</concept>",
        "Please provide an explanation.",
    ].joined(separator: "\n\n")
    static let canonicalARTemplate = "Summary of the following text: <text>{explanation}</text> <summary>"

    /// A minimal valid AV sidecar; `extra` lines are appended at the top level, `replace` edits it.
    static func avYAML(_ edits: [(String, String)] = []) -> String {
        var y = """
        kind: nla_model
        role: av
        d_model: 640
        extraction:
          layer_index: 12
          injection_scale: 15000.0
        tokens:
          injection_char: "\\u321C"
          injection_token_id: 246566
          injection_left_neighbor_id: 236813
          injection_right_neighbor_id: 954
        prompt_templates:
          av: 'Here is the vector: <concept>{injection_char}</concept>'

        """
        for (a, b) in edits { y = y.replacingOccurrences(of: a, with: b) }
        return y
    }
}

@Suite struct NLASidecarTests {
    @Test func demoAVSidecar() throws {
        let s = try NLASidecar.load(path: NLAFixtures.avPath)
        #expect(s.role == .av)
        #expect(s.dModel == 640)
        #expect(s.extractionLayer == 12 && s.extractionLayerKey == "extraction.layer_index")
        #expect(s.injectionScale == 15000 && s.injectionScaleState == .number)
        #expect(s.mseScale == nil && s.mseScaleState == .null)   // explicit null: raw-MSE mode
        #expect(s.injectionChar == "\u{321C}")
        #expect(s.injectionTokenId == 246566 && s.leftNeighborId == 236813 && s.rightNeighborId == 954)
        #expect(s.criticSuffixIds == nil)
        #expect(s.avTemplate == NLAFixtures.canonicalAVTemplate)
        #expect(s.arTemplate == nil)
        #expect(s.file == NLAFixtures.avPath)
    }

    @Test func demoARSidecar() throws {
        let s = try NLASidecar.load(path: NLAFixtures.arPath)
        #expect(s.role == .ar)
        #expect(s.dModel == 640)
        // ar.num_hidden_layers wins over extraction.layer_index (both 12 here).
        #expect(s.extractionLayer == 12 && s.extractionLayerKey == "ar.num_hidden_layers")
        #expect(s.injectionScale == nil && s.injectionScaleState == .null)
        #expect(s.mseScale == 25.298 && s.mseScaleState == .number)
        #expect(s.criticSuffixIds == [1005, 236813, 655, 6011, 236813])
        #expect(s.arTemplate == NLAFixtures.canonicalARTemplate)
        #expect(s.avTemplate == nil)
    }

    /// The form PyYAML `safe_dump` (allow_unicode=False, width 80) writes: `"\u321C"` and a folded
    /// single-quoted template whose blank lines are paragraph breaks.
    @Test func pyyamlDumpForms() throws {
        let yaml = """
        kind: nla_model
        schema_version: 2
        role: av
        stage: rl
        d_model: 640
        extraction_layer_index: 12
        extraction:
          injection_scale: 15000.0
          mse_scale: 25.298221281347036
        tokens:
          injection_char: "\\u321C"
          injection_token_id: 246566
          injection_left_neighbor_id: 236813
          injection_right_neighbor_id: 954
          critic_suffix_ids: null
        prompt_templates:
        \(ReleasedSidecarYAML.avTemplateEntry)
          ar: 'Summary of the following text: <text>{explanation}</text> <summary>'

        """
        let s = try NLASidecar.decode(yaml: yaml, file: "dump.yaml")
        #expect(s.injectionChar == "㈜")
        #expect(s.injectionChar.unicodeScalars.map(\.value) == [0x321C])
        #expect(s.avTemplate == NLAFixtures.canonicalAVTemplate)
        #expect(s.arTemplate == NLAFixtures.canonicalARTemplate)
        #expect(s.schemaVersion == 2 && s.stage == "rl")
        #expect(s.extractionLayer == 12 && s.extractionLayerKey == "extraction_layer_index")
        #expect(s.mseScale == Float(25.298221281347036))
        #expect(s.criticSuffixIds == nil)
    }

    @Test(arguments: [("av", NLASidecar.Role.av), ("actor", .av), ("ar", .ar), ("critic", .ar)])
    func roleAliases(name: String, role: NLASidecar.Role) throws {
        let s = try NLASidecar.decode(yaml: NLAFixtures.avYAML([("role: av", "role: \(name)")]), file: "r.yaml")
        #expect(s.role == role)
    }

    @Test func unknownRoleWrongKindMissingKind() {
        let e1 = expectNLAError(mentioning: ["r.yaml", "judge"]) {
            _ = try NLASidecar.decode(yaml: NLAFixtures.avYAML([("role: av", "role: judge")]), file: "r.yaml")
        }
        #expect(e1 == .sidecarUnknownRole(file: "r.yaml", role: "judge"))
        let e2 = expectNLAError(mentioning: ["k.yaml", "nla_dataset", "nla_model"]) {
            _ = try NLASidecar.decode(yaml: NLAFixtures.avYAML([("kind: nla_model", "kind: nla_dataset")]), file: "k.yaml")
        }
        #expect(e2 == .sidecarWrongKind(file: "k.yaml", kind: "nla_dataset"))
        let e3 = expectNLAError(mentioning: ["m.yaml", "kind"]) {
            _ = try NLASidecar.decode(yaml: NLAFixtures.avYAML([("kind: nla_model\n", "")]), file: "m.yaml")
        }
        #expect(e3 == .sidecarMissingField(file: "m.yaml", field: "kind"))
        let e4 = expectNLAError(mentioning: ["m.yaml", "role"]) {
            _ = try NLASidecar.decode(yaml: NLAFixtures.avYAML([("role: av\n", "")]), file: "m.yaml")
        }
        #expect(e4 == .sidecarMissingField(file: "m.yaml", field: "role"))
    }

    @Test func malformedYAML() {
        let e = expectNLAError(mentioning: ["bad.yaml", "malformed YAML"]) {
            _ = try NLASidecar.decode(yaml: "kind: nla_model\nrole: [av\nd_model: 640\n", file: "bad.yaml")
        }
        if case .sidecarMalformed = e {} else { Issue.record("expected sidecarMalformed, got \(String(describing: e))") }
        let e2 = expectNLAError(mentioning: ["list.yaml", "not a mapping"]) {
            _ = try NLASidecar.decode(yaml: "- kind\n- role\n", file: "list.yaml")
        }
        if case .sidecarMalformed = e2 {} else { Issue.record("expected sidecarMalformed, got \(String(describing: e2))") }
        let e3 = expectNLAError(mentioning: ["empty.yaml"]) { _ = try NLASidecar.decode(yaml: "", file: "empty.yaml") }
        if case .sidecarMalformed = e3 {} else { Issue.record("expected sidecarMalformed, got \(String(describing: e3))") }
        let e4 = expectNLAError(mentioning: ["/nonexistent/nla_meta.yaml", "no such file"]) {
            _ = try NLASidecar.load(path: "/nonexistent/nla_meta.yaml")
        }
        if case .sidecarUnreadable = e4 {} else { Issue.record("expected sidecarUnreadable, got \(String(describing: e4))") }
    }

    @Test func badFieldTypes() {
        let e1 = expectNLAError(mentioning: ["t.yaml", "d_model"]) {
            _ = try NLASidecar.decode(yaml: NLAFixtures.avYAML([("d_model: 640", "d_model: '640'")]), file: "t.yaml")
        }
        if case .sidecarBadField(_, "d_model", _) = e1 {} else { Issue.record("got \(String(describing: e1))") }
        let e2 = expectNLAError(mentioning: ["t.yaml", "d_model"]) {
            _ = try NLASidecar.decode(yaml: NLAFixtures.avYAML([("d_model: 640\n", "")]), file: "t.yaml")
        }
        #expect(e2 == .sidecarMissingField(file: "t.yaml", field: "d_model"))
        let e3 = expectNLAError(mentioning: ["t.yaml", "tokens.injection_token_id"]) {
            _ = try NLASidecar.decode(yaml: NLAFixtures.avYAML([("injection_token_id: 246566", "injection_token_id: ten")]), file: "t.yaml")
        }
        if case .sidecarBadField(_, "tokens.injection_token_id", _) = e3 {} else { Issue.record("got \(String(describing: e3))") }
        // An AV needs its token fields; an AR may omit them.
        let e4 = expectNLAError(mentioning: ["t.yaml", "tokens.injection_left_neighbor_id"]) {
            _ = try NLASidecar.decode(yaml: NLAFixtures.avYAML([("  injection_left_neighbor_id: 236813\n", "")]), file: "t.yaml")
        }
        #expect(e4 == .sidecarMissingField(file: "t.yaml", field: "tokens.injection_left_neighbor_id"))
        let ar = try? NLASidecar.decode(yaml: "kind: nla_model\nrole: ar\nd_model: 640\ncritic:\n  extraction_layer_index: 3\n", file: "a.yaml")
        #expect(ar?.injectionTokenId == -1 && ar?.injectionChar == "" && ar?.mseScale == Float(640.0.squareRoot()))
        // d_model from extraction.d_model (dataset-sidecar place) when there is no top-level one.
        let ds = try? NLASidecar.decode(yaml: NLAFixtures.avYAML([("d_model: 640\n", ""), ("  layer_index: 12", "  layer_index: 12\n  d_model: 640")]), file: "t.yaml")
        #expect(ds?.dModel == 640)
    }

    // MARK: K, every place and precedence

    @Test(arguments: ["critic.extraction_layer_index", "critic.num_hidden_layers", "ar.num_hidden_layers",
                      "extraction_layer_index", "extraction.layer_index"])
    func layerKey(key: String) throws {
        let parts = key.split(separator: ".").map(String.init)
        let block = parts.count == 1 ? "\(parts[0]): 41\n" : "\(parts[0]):\n  \(parts[1]): 41\n"
        let yaml = "kind: nla_model\nrole: ar\nd_model: 5376\n" + block
        let s = try NLASidecar.decode(yaml: yaml, file: "k.yaml")
        #expect(s.extractionLayer == 41 && s.extractionLayerKey == key)
    }

    @Test func layerPrecedenceAndConflict() throws {
        let agree = """
        kind: nla_model
        role: ar
        d_model: 5376
        extraction_layer_index: 41
        critic:
          extraction_layer_index: 41
        """
        let s = try NLASidecar.decode(yaml: agree, file: "k.yaml")
        #expect(s.extractionLayer == 41 && s.extractionLayerKey == "critic.extraction_layer_index")
        let none = try NLASidecar.decode(yaml: "kind: nla_model\nrole: ar\nd_model: 8\n", file: "k.yaml")
        #expect(none.extractionLayer == nil && none.extractionLayerKey == nil)
        let e = expectNLAError(mentioning: ["k.yaml", "critic.extraction_layer_index=41", "extraction_layer_index=40"]) {
            _ = try NLASidecar.decode(yaml: agree.replacingOccurrences(of: "extraction_layer_index: 41\ncritic", with: "extraction_layer_index: 40\ncritic"), file: "k.yaml")
        }
        if case .sidecarConflictingLayer = e {} else { Issue.record("got \(String(describing: e))") }
    }

    // MARK: scales (spec §1.3)

    static let scaleCases: [(String, Float?, NLASidecar.ScaleState)] = [
        ("null", nil, .null), ("~", nil, .null), ("'raw'", nil, .raw), ("raw", nil, .raw), ("\"none\"", nil, .raw),
        ("sqrt_d_model", Float(640.0.squareRoot()), .sqrtDModel), ("'sqrt_d_model'", Float(640.0.squareRoot()), .sqrtDModel),
        ("'60000'", 60000, .number), ("\"73.32121111929344\"", Float(73.32121111929344), .number),
        ("60000.0", 60000, .number), ("80000", 80000, .number), ("1.5e4", 15000, .number),
    ]

    @Test func scaleValues() throws {
        for (text, value, state) in Self.scaleCases {
            let inj = try NLASidecar.decode(yaml: NLAFixtures.avYAML([("injection_scale: 15000.0", "injection_scale: \(text)")]), file: "s.yaml")
            #expect(inj.injectionScale == value && inj.injectionScaleState == state, "injection_scale: \(text)")
            let mse = try NLASidecar.decode(yaml: NLAFixtures.avYAML([("injection_scale: 15000.0", "injection_scale: 1\n  mse_scale: \(text)")]), file: "s.yaml")
            #expect(mse.mseScale == value && mse.mseScaleState == state, "mse_scale: \(text)")
        }
    }

    @Test func absentVersusNull() throws {
        // Absent injection_scale: nil, no default (an AV then refuses to start); absent mse_scale: √d.
        let s = try NLASidecar.decode(yaml: NLAFixtures.avYAML([("  injection_scale: 15000.0\n", "")]), file: "s.yaml")
        #expect(s.injectionScale == nil && s.injectionScaleState == .absent)
        #expect(s.mseScale == Float(640.0.squareRoot()) && s.mseScaleState == .absent)
        let n = try NLASidecar.decode(yaml: NLAFixtures.avYAML([("injection_scale: 15000.0", "injection_scale: null\n  mse_scale: null")]), file: "s.yaml")
        #expect(n.injectionScale == nil && n.injectionScaleState == .null)
        #expect(n.mseScale == nil && n.mseScaleState == .null)
        // No extraction section at all.
        let bare = try NLASidecar.decode(yaml: "kind: nla_model\nrole: ar\nd_model: 3840\n", file: "s.yaml")
        #expect(bare.injectionScaleState == .absent && bare.mseScale == Float(3840.0.squareRoot()))
    }

    @Test(arguments: ["abc", "-5", "0", "'1e999'", "[1, 2]", "true"])
    func badScale(text: String) {
        let e = expectNLAError(mentioning: ["s.yaml", "extraction.injection_scale"]) {
            _ = try NLASidecar.decode(yaml: NLAFixtures.avYAML([("injection_scale: 15000.0", "injection_scale: \(text)")]), file: "s.yaml")
        }
        if case .sidecarBadField(_, "extraction.injection_scale", _) = e {} else { Issue.record("\(text): got \(String(describing: e))") }
    }

    // MARK: templates (spec §1.3: Python `or` fallbacks)

    @Test func templateFallbacks() throws {
        let actorOnly = NLAFixtures.avYAML([("  av: 'Here", "  actor: 'Here")])
        #expect(try NLASidecar.decode(yaml: actorOnly, file: "t").avTemplate == "Here is the vector: <concept>{injection_char}</concept>")
        let emptyAV = NLAFixtures.avYAML([("  av: 'Here", "  av: ''\n  actor: 'From actor")])
        #expect(try NLASidecar.decode(yaml: emptyAV, file: "t").avTemplate == "From actor is the vector: <concept>{injection_char}</concept>")
        let both = NLAFixtures.avYAML([("  av: 'Here", "  actor: 'Old'\n  av: 'Here")])
        #expect(try NLASidecar.decode(yaml: both, file: "t").avTemplate == "Here is the vector: <concept>{injection_char}</concept>")
        let critic = NLAFixtures.avYAML([("prompt_templates:\n", "prompt_templates:\n  critic: 'C {explanation}'\n")])
        #expect(try NLASidecar.decode(yaml: critic, file: "t").arTemplate == "C {explanation}")
        let arWins = NLAFixtures.avYAML([("prompt_templates:\n", "prompt_templates:\n  critic: 'C {explanation}'\n  ar: 'A {explanation}'\n")])
        #expect(try NLASidecar.decode(yaml: arWins, file: "t").arTemplate == "A {explanation}")
    }

    @Test func distinctMessages() {
        // Every failure mode names its file and reads differently.
        let errors: [NLAError] = [
            .sidecarMissing(model: "m"), .sidecarUnreadable(file: "f", reason: "r"), .sidecarMalformed(file: "f", reason: "r"),
            .sidecarWrongKind(file: "f", kind: "k"), .sidecarUnknownRole(file: "f", role: "x"),
            .sidecarMissingField(file: "f", field: "x"), .sidecarBadField(file: "f", field: "x", reason: "is bad"),
            .sidecarConflictingLayer(file: "f", values: "a=1, b=2"), .wrongRole(file: "f", expected: "AV", found: "ar"),
            .injectionCharTokenization(file: "f", char: "x", expectedId: 1, got: [2, 3]),
            .templatePlaceholderMissing(file: "f", placeholder: "{x}"), .templateFormat(file: "f", reason: "r"),
            .injectionSiteMissing(file: "f", tokenId: 1, promptLength: 9),
            .injectionNeighborsDrifted(file: "f", position: 3, expectedLeft: 1, expectedRight: 2, gotLeft: 5, gotRight: 6),
            .injectionSiteAtEdge(file: "f", position: 0, promptLength: 9), .injectionSiteCount(file: "f", sites: [2, 5]),
            .doubleBOS(file: "f", positions: [0, 1]), .missingBOS(file: "f", bos: 2, first: 5),
            .injectionScaleMissing(file: "f", state: "absent"), .dModelMismatch(file: "f", sidecar: 1, config: 2, configFile: "c"),
            .extractionLayerMissing(file: "f"), .layerCountMismatch(file: "f", k: 12, configLayers: 18, configFile: "c"),
            .valueHeadMissing(model: "m"), .valueHeadShape(model: "m", shape: [1], d: 2), .valueHeadType(model: "m", type: "I32"),
            .criticSuffixMismatch(file: "f", expected: [1], got: [2]),
        ]
        let texts = errors.map(\.description)
        #expect(Set(texts).count == texts.count)
        for t in texts {
            #expect(t.hasPrefix("f:") || t.hasPrefix("m:"), "\(t)")
            #expect(!t.contains("\n"))
        }
    }
}

@Suite struct NLAPromptPieceTests {
    @Test func pythonFormat() throws {
        #expect(try NLAPrompt.format("a {x} {{b}} c", ["x": "1"], file: "f") == "a 1 {b} c")
        #expect(try NLAPrompt.format("<concept>{injection_char}</concept>", ["injection_char": "㈜"], file: "f") == "<concept>㈜</concept>")
        let e = expectNLAError(mentioning: ["f", "{y}"]) { _ = try NLAPrompt.format("a {y}", ["x": "1"], file: "f") }
        if case .templateFormat = e {} else { Issue.record("got \(String(describing: e))") }
        expectNLAError(mentioning: ["f"]) { _ = try NLAPrompt.format("a { b", ["x": "1"], file: "f") }
        expectNLAError(mentioning: ["f"]) { _ = try NLAPrompt.format("a } b", ["x": "1"], file: "f") }
    }

    @Test func injectionSiteScan() throws {
        var s = try NLASidecar.decode(yaml: NLAFixtures.avYAML(), file: "s.yaml")
        s.injectionTokenId = 9; s.leftNeighborId = 7; s.rightNeighborId = 8
        #expect(try NLAPrompt.validateInjectionSite([2, 5, 7, 9, 8, 4], sidecar: s, label: "p") == 3)
        #expect(expectNLAError { _ = try NLAPrompt.validateInjectionSite([2, 5, 7, 6, 8, 4], sidecar: s, label: "p") }
                == .injectionSiteMissing(file: "p", tokenId: 9, promptLength: 6))
        #expect(expectNLAError { _ = try NLAPrompt.validateInjectionSite([2, 5, 1, 9, 8, 4], sidecar: s, label: "p") }
                == .injectionNeighborsDrifted(file: "p", position: 3, expectedLeft: 7, expectedRight: 8, gotLeft: 1, gotRight: 8))
        #expect(try NLAPrompt.validateInjectionSite([2, 7, 9, 8, 7, 9], sidecar: s, label: "p") == 2)   // last position never valid
        #expect(expectNLAError { _ = try NLAPrompt.validateInjectionSite([9, 5, 4], sidecar: s, label: "p") }
                == .injectionSiteAtEdge(file: "p", position: 0, promptLength: 3))
        #expect(expectNLAError { _ = try NLAPrompt.validateInjectionSite([2, 7, 9, 8, 7, 9, 8, 1], sidecar: s, label: "p") }
                == .injectionSiteCount(file: "p", sites: [2, 5]))
    }

    @Test func bosChecks() throws {
        try NLAPrompt.validateBOS([2, 5, 6], bos: 2, label: "p", anywhere: true)
        #expect(expectNLAError { try NLAPrompt.validateBOS([2, 2, 5], bos: 2, label: "p", anywhere: false) } == .doubleBOS(file: "p", positions: [0, 1]))
        #expect(expectNLAError { try NLAPrompt.validateBOS([2, 5, 2], bos: 2, label: "p", anywhere: true) } == .doubleBOS(file: "p", positions: [0, 2]))
        try NLAPrompt.validateBOS([2, 5, 2], bos: 2, label: "p", anywhere: false)
        #expect(expectNLAError { try NLAPrompt.validateBOS([5, 6], bos: 2, label: "p", anywhere: false) } == .missingBOS(file: "p", bos: 2, first: 5))
    }

    @Test func explanationExtraction() {
        #expect(NLAExplanation.extract("<explanation>\n  A\n\nB \n</explanation>") == "A\n\nB")
        #expect(NLAExplanation.extract("x <explanation>one</explanation> <explanation>two</explanation>") == "one")
        #expect(NLAExplanation.extract("<explanation>unterminated") == nil)
        #expect(NLAExplanation.extract("</explanation> <explanation>late</explanation>") == "late")
        #expect(NLAExplanation.extract("no tags") == nil)
        #expect(NLAExplanation.extract("<explanation></explanation>") == "")
        let w1 = NLAExplanation.warnings(text: "plain", explanation: nil, stoppedOnEOS: true, maxNewTokens: 200)
        #expect(w1.count == 1 && w1[0].contains("raw text"))
        let w2 = NLAExplanation.warnings(text: "<explanation>cut", explanation: nil, stoppedOnEOS: false, maxNewTokens: 200)
        #expect(w2.count == 1 && w2[0].contains("truncated") && w2[0].contains("200"))
        let w3 = NLAExplanation.warnings(text: "<explanation>株式会社の説明です</explanation>", explanation: "株式会社の説明です", stoppedOnEOS: true, maxNewTokens: 200)
        #expect(w3.count == 1 && w3[0].contains("CJK"))
        #expect(NLAExplanation.warnings(text: "<explanation>Paris, France</explanation>", explanation: "Paris, France", stoppedOnEOS: true, maxNewTokens: 200).isEmpty)
    }
}

@Suite struct NLAScoreMathTests {
    /// A vector pair with the requested cosine, at different raw norms.
    static func pair(cos c: Double, d: Int) -> ([Float], [Float]) {
        var a = [Float](repeating: 0, count: d), b = [Float](repeating: 0, count: d)
        a[0] = 3
        b[0] = Float(c) * 1000; b[1] = Float((1 - c * c).squareRoot()) * 1000
        return (a, b)
    }

    @Test func metricIdentities() throws {   // T10: mse = 2(1 − cos) with s = √d
        let d = 64
        for (c, m) in [(0.9, 0.2), (0.5, 1.0), (0.0, 2.0), (-1.0, 4.0)] {
            let (a, b) = Self.pair(cos: c, d: d)
            let s = try NLAScore.compute(prediction: a, gold: b, mseScale: Float(Double(d).squareRoot()), d: d, fveBaseline: 0.0579)
            #expect(abs(s.mseNrm - m) < 1e-5, "cos \(c): mse \(s.mseNrm)")
            #expect(abs(s.cos - c) < 1e-6)
            #expect(abs(s.fveNrm! - (1 - m / 0.0579)) < 1e-3)
        }
        // T11: EX27 pos1 mse .543 → fve ≈ −8.37.
        #expect(abs((1 - 0.543 / FVEBaselines.builtIn(dModel: 5376, layer: 41)!) - -8.378) < 0.01)
        #expect(FVEBaselines.builtIn(dModel: 3840, layer: 32) == 0.0302)
        #expect(FVEBaselines.builtIn(dModel: 640, layer: 12) == nil)
        // Raw-MSE mode: raw vectors, no fve.
        let raw = try NLAScore.compute(prediction: [1, 0], gold: [0, 1], mseScale: nil, d: 2, fveBaseline: 0.1)
        #expect(raw.mseNrm == 1 && raw.fveNrm == nil && raw.cos == 0)
    }

    @Test func scoreRefusesBadVectors() {
        #expect(expectNLAError { _ = try NLAScore.compute(prediction: [1, 2], gold: [1, 2, 3], mseScale: 1, d: 3, fveBaseline: nil) }
                == .vectorLength(label: "predicted vector", got: 2, expected: 3))
        #expect(expectNLAError { _ = try NLAScore.compute(prediction: [1, 2, 3], gold: [0, 0, 0], mseScale: 1, d: 3, fveBaseline: nil) }
                == .vectorZeroNorm(label: "gold vector"))
        let e = expectNLAError { _ = try NLAScore.compute(prediction: [1, .nan, 3], gold: [1, 2, 3], mseScale: 1, d: 3, fveBaseline: nil) }
        if case .vectorNotFinite(_, 1, _) = e {} else { Issue.record("got \(String(describing: e))") }
    }

    @Test func injectionNormalization() {   // T7: ‖v_scaled‖ = injection_scale
        var rng = SplitMix64(seed: 7)
        let v = (0..<5376).map { _ in Float(Double(rng.next() % 20001) / 100 - 100) }
        let s = NLAVectorMath.scaledForInjection(v, scale: 60000)
        #expect(abs(NLAVectorMath.norm(s) - 60000) / 60000 < 1e-6)
        #expect(NLAVectorMath.scaledForInjection([0, 0], scale: 60000) == [0, 0])   // zero stays zero
    }
}

@Suite struct VectorFileTests {
    static func tmp(_ name: String) -> String {
        TestPaths.processScratch("vecfile") + "/" + name
    }

    @Test func npyFloat32And64() throws {
        let f4 = [Float(1.5), -2, 3.25, 4, 5, 6].flatMap { leBytes($0.bitPattern) }
        let p1 = Self.tmp("a.npy")
        try NpyBytes.file(descr: "<f4", shape: "(2, 3)", payload: f4).write(to: URL(fileURLWithPath: p1))
        #expect(try VectorFile.read(path: p1, key: nil) == [[1.5, -2, 3.25], [4, 5, 6]])
        let f8 = [0.1, 0.2, 0.3].flatMap { leBytes($0.bitPattern) }
        let p2 = Self.tmp("b.npy")
        try NpyBytes.file(descr: "<f8", shape: "(3,)", payload: f8).write(to: URL(fileURLWithPath: p2))
        #expect(try VectorFile.read(path: p2, key: nil) == [[Float(0.1), Float(0.2), Float(0.3)]])
        let p3 = Self.tmp("c.npy")
        try NpyBytes.file(descr: ">f4", shape: "(3,)", payload: f4).write(to: URL(fileURLWithPath: p3))
        expectNLAError(mentioning: [p3, "big-endian"]) { _ = try VectorFile.read(path: p3, key: nil) }
        let p4 = Self.tmp("d.npy")
        try NpyBytes.file(descr: "<f4", shape: "(2, 3)", payload: f4, fortran: true).write(to: URL(fileURLWithPath: p4))
        expectNLAError(mentioning: [p4, "Fortran"]) { _ = try VectorFile.read(path: p4, key: nil) }
        let p5 = Self.tmp("e.npy")
        try NpyBytes.file(descr: "<i8", shape: "(3,)", payload: f8).write(to: URL(fileURLWithPath: p5))
        expectNLAError(mentioning: [p5, "<i8"]) { _ = try VectorFile.read(path: p5, key: nil) }
        let p6 = Self.tmp("f.npy")
        try NpyBytes.file(descr: "<f4", shape: "(4, 3)", payload: f4).write(to: URL(fileURLWithPath: p6))
        expectNLAError(mentioning: [p6, "truncated"]) { _ = try VectorFile.read(path: p6, key: nil) }
    }

    @Test func jsonlVectors() throws {
        let p = Self.tmp("v.jsonl")
        try "{\"activation_vector\": [1, 2.5, -3], \"text\": \"x\"}\n\n{\"activation_vector\": [4, 5, 6]}\n".write(toFile: p, atomically: true, encoding: .utf8)
        #expect(try VectorFile.read(path: p, key: nil) == [[1, 2.5, -3], [4, 5, 6]])
        let q = Self.tmp("w.jsonl")
        try "{\"activation_vector\": [1, 2]}\n{\"other\": [1, 2]}\n".write(toFile: q, atomically: true, encoding: .utf8)
        expectNLAError(mentioning: [q, "line 2", "activation_vector"]) { _ = try VectorFile.read(path: q, key: nil) }
        let r = Self.tmp("x.jsonl")
        try "{\"activation_vector\": [1, 2]}\n{\"activation_vector\": [1, 2, 3]}\n".write(toFile: r, atomically: true, encoding: .utf8)
        expectNLAError(mentioning: [r, "vector 1"]) { _ = try VectorFile.read(path: r, key: nil) }
    }

    @Test func safetensorsVectors() throws {
        func file(_ tensors: [(String, [Int], [Float])]) throws -> String {
            var header: [String: Any] = [:]
            var payload = Data()
            for (name, shape, values) in tensors {
                let begin = payload.count
                for v in values { payload.append(contentsOf: leBytes(v.bitPattern)) }
                header[name] = ["dtype": "F32", "shape": shape, "data_offsets": [begin, payload.count]]
            }
            let h = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
            var d = Data(leBytes(UInt64(h.count)))
            d.append(h); d.append(payload)
            let p = Self.tmp("t\(tensors.count)-\(tensors[0].0).safetensors")
            try d.write(to: URL(fileURLWithPath: p))
            return p
        }
        let one = try file([("vectors", [2, 2], [1, 2, 3, 4])])
        #expect(try VectorFile.read(path: one, key: nil) == [[1, 2], [3, 4]])
        let two = try file([("a", [3], [1, 2, 3]), ("b", [2, 2], [5, 6, 7, 8])])
        #expect(try VectorFile.read(path: two, key: "a") == [[1, 2, 3]])
        #expect(try VectorFile.read(path: two, key: "b") == [[5, 6], [7, 8]])
        expectNLAError(mentioning: [two, "--key"]) { _ = try VectorFile.read(path: two, key: nil) }
        expectNLAError(mentioning: [two, "'zz'"]) { _ = try VectorFile.read(path: two, key: "zz") }
        expectNLAError(mentioning: ["/no/such.safetensors"]) { _ = try VectorFile.read(path: "/no/such.safetensors", key: nil) }
        expectNLAError(mentioning: ["v.txt", "unknown vector file type"]) { _ = try VectorFile.read(path: "v.txt", key: nil) }
    }
}
