// swift-tools-version: 6.0
// nla-runtime: Natural Language Autoencoders on Gemma 3, on a CPU.
import PackageDescription

// OpenMP for the C matmul kernels: clang's `-fopenmp` emits calls into the LLVM OpenMP runtime
// (Debian `libomp-dev`, which also installs `libiomp5.so` as a compatible alias). OpenBLAS
// (`libopenblas-dev`) provides `cblas_sgemm` for the f32 reference path.
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
    ],
    targets: [
        .target(
            name: "CKernels",
            path: "Sources/CKernels",
            cSettings: [.unsafeFlags(["-O3", "-fopenmp"])],
            linkerSettings: [.linkedLibrary("openblas"), .linkedLibrary("omp"),
                             .unsafeFlags(["-L/usr/lib/llvm-14/lib"])]
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
            dependencies: ["Quant", "SIMDKernels", .product(name: "Yams", package: "Yams")],
            path: "Sources/NLARuntime"
        ),
        .executableTarget(
            name: "nla",
            dependencies: ["NLARuntime", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/nla"
        ),
        .executableTarget(
            name: "quantize",
            dependencies: ["NLARuntime", "Quant", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/quantize"
        ),
        .testTarget(name: "QuantTests", dependencies: ["Quant"], path: "Tests/QuantTests"),
        .testTarget(name: "SIMDKernelsTests", dependencies: ["SIMDKernels", "CKernels", "Quant"], path: "Tests/SIMDKernelsTests"),
        .testTarget(
            name: "NLARuntimeTests",
            dependencies: ["NLARuntime", "Quant", "SIMDKernels"],
            path: "Tests/NLARuntimeTests"
        ),
        .testTarget(
            name: "ModelTests",
            dependencies: ["NLARuntime", "Quant", "nla"],
            path: "Tests/ModelTests"
        ),
    ]
)
