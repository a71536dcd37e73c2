// One view over the tensors of either container (safetensors or GGUF), so model loading is written once.

/// A tensor in a mapped file, whatever the container.
public struct TensorEntry: @unchecked Sendable {
    public let name: String
    /// HF order: a 2-D weight is [out, in].
    public let shape: [Int]
    /// The storage type, or nil for element types no weight can have (I32, U8, …).
    public let type: QuantType?
    /// The container's own name of the element type ("BF16", "Q8_0", "I32", …), for messages.
    public let typeName: String
    public let data: UnsafeRawPointer
    public let byteCount: Int
    /// The mapping the data lives in (kept alive by this entry); its path names errors.
    public let file: MappedFile

    public var elementCount: Int { shape.reduce(1, *) }

    public init(name: String, shape: [Int], type: QuantType?, typeName: String, data: UnsafeRawPointer, byteCount: Int, file: MappedFile) {
        self.name = name; self.shape = shape; self.type = type; self.typeName = typeName
        self.data = data; self.byteCount = byteCount; self.file = file
    }
}

extension DType {
    /// The GGUF/ggml storage type with the same encoding, for the float dtypes.
    public var quantType: QuantType? {
        switch self {
        case .f32: return .f32
        case .f16: return .f16
        case .bf16: return .bf16
        default: return nil
        }
    }
}

extension TensorView {
    public var entry: TensorEntry {
        TensorEntry(name: name, shape: shape, type: dtype.quantType, typeName: dtype.rawValue,
                    data: data, byteCount: byteCount, file: file)
    }
}

extension GGUFTensorInfo {
    public var entry: TensorEntry {
        TensorEntry(name: name, shape: shape, type: type, typeName: type.traits.name,
                    data: data, byteCount: byteCount, file: file)
    }
}
