// swift-tools-version: 6.0
// nla-runtime: Natural Language Autoencoders on Gemma 3, on a CPU.
import PackageDescription
import Foundation

// OpenMP for the C matmul kernels: clang's `-fopenmp` emits calls into the LLVM OpenMP runtime
// (Debian/Ubuntu `libomp-dev`). OpenBLAS (`libopenblas-dev`) provides `cblas_sgemm` for the f32
// reference path. `scripts/ensure-system-deps` (run by the Makefile) installs both.
//
// Where libomp.so lives depends on the distribution and the clang version (Debian puts the
// unversioned link only in /usr/lib/llvm-N/lib; other systems in the multiarch or plain lib dir),
// so the manifest looks for it the way the linker would be told to: the newest LLVM lib dir that
// has it, else the standard lib dirs (already on the linker path, no flag needed).
func openMPLinkerFlags() -> [String] {
    let fm = FileManager.default
    let has = { (dir: String) in fm.fileExists(atPath: dir + "/libomp.so") || fm.fileExists(atPath: dir + "/libomp.dylib") }
    // On the default search path already: the linker finds it without help.
    #if arch(x86_64)
    let multiarch = "x86_64-linux-gnu"
    #elseif arch(arm64)
    let multiarch = "aarch64-linux-gnu"
    #else
    let multiarch = ""
    #endif
    for dir in ["/usr/lib/" + multiarch, "/usr/lib", "/usr/lib64", "/usr/local/lib"] where has(dir) { return [] }
    // LLVM toolchain dirs, newest version first (llvm-19 before llvm-14).
    let llvm = ((try? fm.contentsOfDirectory(atPath: "/usr/lib")) ?? [])
        .filter { $0.hasPrefix("llvm-") }
        .compactMap { name -> (Int, String)? in Int(name.dropFirst(5)).map { ($0, "/usr/lib/" + name + "/lib") } }
        .sorted { $0.0 > $1.0 }
    for (_, dir) in llvm where has(dir) { return ["-L" + dir] }
    // Homebrew's keg-only libomp on macOS.
    for dir in ["/opt/homebrew/opt/libomp/lib", "/usr/local/opt/libomp/lib"] where has(dir) { return ["-L" + dir] }
    // Not installed yet. SwiftPM keeps the flags of this evaluation until Package.swift changes, so a
    // `swift build` run before `make system-deps` would otherwise keep failing to find -lomp after the
    // install: name every LLVM lib dir libomp-dev may create (the linker skips the missing ones).
    return (11...25).reversed().map { "-L/usr/lib/llvm-\($0)/lib" }
}
let package = Package(
    name: "nla-runtime",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "NLARuntime", targets: ["NLARuntime"]),
        .executable(name: "nla", targets: ["nla"]),
        .executable(name: "quantize", targets: ["quantize"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        // `nla serve` (Sources/NLAServer): Hummingbird 2 on SwiftNIO; AsyncHTTPClient for `--backend sglang` and the tests.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        // SHA-256 keys of the tokenizer cache (TokenizerCache); already in the graph through AsyncHTTPClient.
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
    ],
    targets: [
        .target(
            name: "CKernels",
            path: "Sources/CKernels",
            cSettings: [.unsafeFlags(["-O3", "-fopenmp"])],
            linkerSettings: [.linkedLibrary("openblas"), .linkedLibrary("omp"),
                             .unsafeFlags(openMPLinkerFlags())]
        ),
        .target(name: "Quant", path: "Sources/Quant"),
        .target(
            name: "SIMDKernels",
            dependencies: ["CKernels", "Quant"],
            path: "Sources/SIMDKernels",
            swiftSettings: [.unsafeFlags(["-Ounchecked"])]
        ),
        .target(
            name: "NLARuntime",
            dependencies: ["Quant", "SIMDKernels", .product(name: "Yams", package: "Yams"),
                           .product(name: "Crypto", package: "swift-crypto")],
            path: "Sources/NLARuntime"
        ),
        // The request bodies of `nla serve` decoded without a model or a network (JSON reader, /generate and /api/*
        // bodies): used by NLAServer and by the fuzz target http_bodies (no Hummingbird/NIO in the fuzz build).
        .target(name: "NLAWire", dependencies: ["NLARuntime"], path: "Sources/NLAWire"),
        // The HTTP server of `nla serve` (JSON API, SGLang-compatible /generate, the page); a library so tests start it in-process.
        .target(
            name: "NLAServer",
            dependencies: ["NLARuntime", "NLAWire",
                           .product(name: "Hummingbird", package: "hummingbird"),
                           .product(name: "AsyncHTTPClient", package: "async-http-client"),
                           .product(name: "Logging", package: "swift-log"),
                           .product(name: "Yams", package: "Yams")],
            path: "Sources/NLAServer"
        ),
        .executableTarget(
            name: "nla",
            dependencies: ["NLARuntime", "NLAServer", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/nla"
        ),
        .executableTarget(
            name: "quantize",
            dependencies: ["NLARuntime", "Quant", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/quantize"
        ),
        // Fuzz targets for the readers (README "Fuzzing"; `make fuzz` builds them with libFuzzer into .build-fuzz).
        .target(name: "CFuzzSupport", path: "fuzz/CFuzzSupport"),
        .executableTarget(
            name: "nla-fuzz",
            dependencies: ["NLARuntime", "Quant", "CFuzzSupport", "NLAWire"],
            path: "fuzz/Sources/nla-fuzz"
        ),
        // Test support shared by the test targets: paths (fixtures, cache, temp dirs, the nla binary), the
        // CLI runner, error expectations, synthetic checkpoints and their f64 reference, the decode reference.
        .target(name: "NLATestSupport", dependencies: ["NLARuntime", "Quant", "SIMDKernels"], path: "Tests/NLATestSupport"),
        // (NLARuntime only for the one shared SplitMix64 of the test data generators)
        .testTarget(name: "QuantTests", dependencies: ["Quant", "NLARuntime", "NLATestSupport"], path: "Tests/QuantTests"),
        .testTarget(name: "SIMDKernelsTests", dependencies: ["SIMDKernels", "CKernels", "Quant", "NLARuntime"], path: "Tests/SIMDKernelsTests"),
        .testTarget(
            name: "NLARuntimeTests",
            dependencies: ["NLARuntime", "Quant", "SIMDKernels", "NLATestSupport"],
            path: "Tests/NLARuntimeTests"
        ),
        .testTarget(
            name: "NLAServerTests",
            dependencies: ["NLAServer", "NLAWire", "NLARuntime", "NLATestSupport",
                           .product(name: "AsyncHTTPClient", package: "async-http-client")],
            path: "Tests/NLAServerTests"
        ),
        .testTarget(
            name: "ModelTests",
            dependencies: ["NLARuntime", "Quant", "SIMDKernels", "nla", "NLATestSupport"],
            path: "Tests/ModelTests"
        ),
    ]
)
