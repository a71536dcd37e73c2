// `nla imatrix --av` and `nla av-kld` end to end on the demo NLA pair (AV = the base 270M with the demo sidecar,
// K = 12) and the 270M target: the file the command writes is the library's AV calibration (same columns, the
// metadata of the text mode plus the AV keys), and bad flag combinations fail with one line naming the flag.

import Foundation
import Quant
import Testing
import NLARuntime
import NLATestSupport

@Suite(.serialized) struct AVImatrixCLITests {
    static let text = "The quick brown fox jumps over the lazy dog.\n\nBread is one of the oldest prepared foods.\n"

    @Test func avModeWritesTheLibrarysCalibration() throws {
        try FidelityDemo.require()
        let dir = CLI.tempDir()
        let textFile = dir + "/cal.txt", out = dir + "/av.imatrix.safetensors"
        try Self.text.write(toFile: textFile, atomically: true, encoding: .utf8)
        let r = try CLI.run(["imatrix", "--model", FidelityDemo.av, "--av", "--target", TestModel.directory, "--text-file", textFile,
                             "--out", out, "--positions-per-paragraph", "2", "--max-new-tokens", "4", "--batch", "2"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("4 vectors at layer 12"), "\(r.stderr)")
        let im = try Imatrix(path: out)
        let m = im.metadata
        #expect(m["format"] == "nla-imatrix" && m["source"] == "av" && m["model"] == FidelityDemo.av && m["target"] == TestModel.directory)
        #expect(m["layer"] == "12" && m["vectors"] == "4" && m["sequences"] == "4" && m["paragraphs"] == "2")
        #expect(m["positions_per_paragraph"] == "2" && m["max_new_tokens"] == "4")
        #expect(m["text_sha256"] == sha256Hex(Data(Self.text.utf8)))

        // The same calibration through the library.
        let options = AVCalibrationOptions(positionsPerParagraph: 2, maxNewTokens: 4, batch: 2)
        let lib = try AVCalibration.run(av: FidelityDemo.av, target: TestModel.directory, paragraphs: AVCalibration.paragraphs(Self.text), options: options)
        #expect(m["tokens"] == "\(lib.collector.tokens)" && m["explanation_tokens"] == "\(lib.samples.reduce(0) { $0 + $1.fedIds.count })")
        let prompt = try ActivationVerbalizer(path: FidelityDemo.av, blocks: 1).promptIds.count
        #expect(lib.collector.tokens == 4 * prompt + lib.samples.reduce(0) { $0 + $1.fedIds.count })
        let means = lib.collector.means
        #expect(im.columns.count == means.count && means.count == 18 * 7)
        var worst = 0.0
        for (name, col) in means {
            let got = try #require(im.columns[name], "\(name) missing from the file")
            for (a, b) in zip(got, col) { worst = max(worst, Double(abs(a - b)) / max(Double(abs(b)), 1e-30)) }
        }
        print("[av-imatrix] CLI vs library: max relative column difference \(worst)")
        #expect(worst < 1e-5)
    }

    @Test func avModeBadFlagsFailCleanly() throws {
        let dir = CLI.tempDir()
        let textFile = dir + "/cal.txt", out = dir + "/o.imatrix.safetensors"
        try Self.text.write(toFile: textFile, atomically: true, encoding: .utf8)
        let model = TestModel.directory
        let base = ["imatrix", "--text-file", textFile, "--out", out]
        expectCleanFailure(try CLI.run(base + ["--model", model, "--av"]), mentions: ["--av needs --target"])
        expectCleanFailure(try CLI.run(base + ["--model", model, "--av", "--target", model]),
                           mentions: [model, "--av needs an NLA AV", "nla_meta.yaml"])
        expectCleanFailure(try CLI.run(base + ["--model", model, "--target", model]), mentions: ["--target is only used with --av"])
        expectCleanFailure(try CLI.run(base + ["--model", model, "--max-new-tokens", "4"]), mentions: ["--max-new-tokens is only used with --av"])
        expectCleanFailure(try CLI.run(base + ["--model", model, "--av", "--target", model, "--positions-per-paragraph", "0"]),
                           mentions: ["--positions-per-paragraph must be >= 1"])
        expectCleanFailure(try CLI.run(base + ["--model", model, "--av", "--target", model, "--max-new-tokens", "0"]),
                           mentions: ["--max-new-tokens must be >= 1"])
        expectCleanFailure(try CLI.run(base + ["--model", model, "--av", "--target", model, "--batch", "0"]), mentions: ["--batch must be in"])
        #expect(!FileManager.default.fileExists(atPath: out))
        try FidelityDemo.require()
        // An AR given as the AV; a target of another width is caught before any AV work.
        expectCleanFailure(try CLI.run(base + ["--model", FidelityDemo.ar, "--av", "--target", model]), mentions: ["nla_meta.yaml", "role is 'ar'"])
        #expect(!FileManager.default.fileExists(atPath: out))
        expectCleanFailure(try CLI.run(["av-kld", "--av", FidelityDemo.av, "--av-q", model, "--target", model, "--text-file", textFile]),
                           mentions: [model, "--av-q needs an NLA AV"])
        expectCleanFailure(try CLI.run(["av-kld", "--av", FidelityDemo.av, "--av-q", FidelityDemo.av, "--target", model, "--text-file", textFile,
                                        "--positions-per-paragraph", "0"]), mentions: ["--positions-per-paragraph must be >= 1"])
    }

    /// `nla av-kld` of the AV against itself: identical explanations, zero KLD (the reference path really runs).
    @Test func avKldOfTheAVAgainstItselfIsZero() throws {
        try FidelityDemo.require()
        let dir = CLI.tempDir()
        let textFile = dir + "/held.txt"
        try "A lighthouse keeper wrote down the weather every evening.\n".write(toFile: textFile, atomically: true, encoding: .utf8)
        let r = try CLI.run(["av-kld", "--av", FidelityDemo.av, "--av-q", FidelityDemo.av, "--target", TestModel.directory, "--text-file", textFile,
                             "--positions-per-paragraph", "2", "--max-new-tokens", "4", "--batch", "2", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(obj["vectors"] as? Int == 2 && obj["identical"] as? Int == 2 && obj["layer"] as? Int == 12)
        let positions = try #require(obj["positions"] as? Int)
        #expect(positions >= 2 && positions <= 8)
        #expect((obj["mean_kld"] as? Double ?? 1) < 1e-9 && (obj["top1_agreement"] as? Double) == 1)
    }
}
