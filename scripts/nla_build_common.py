"""Helpers shared by the model build scripts (make_test_model.py, make_demo_models.py): numpy and the
standard library only."""
import hashlib
import json


class VerifyError(Exception):
    """A built file does not match what it must reproduce."""


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 22)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def safetensors_header(entries, metadata):
    """entries: [(name, dtype, shape, nbytes)] in data order. The same bytes the safetensors library
    writes: compact JSON, __metadata__ first, tensors in data order, padded with spaces to 8 bytes."""
    header = {"__metadata__": metadata}
    off = 0
    for name, dtype, shape, nbytes in entries:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + nbytes]}
        off += nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * ((8 - len(raw) % 8) % 8)
    return len(raw).to_bytes(8, "little") + raw
