"""Sum of the tensor data bytes of a GGUF v3 file (standard library only): the weight bytes a decode step
reads (every matrix once; the tied embedding is read whole as the LM head, its one-row lookup is
negligible)."""
import struct

# ggml type id -> (block size, bytes per block); only the types `quantize` writes plus the common float ones.
_SIZES = {0: (1, 4), 1: (1, 2), 30: (1, 2), 2: (32, 18), 8: (32, 34), 3: (32, 20), 6: (32, 22), 7: (32, 24),
          12: (256, 144), 13: (256, 176), 14: (256, 210), 20: (32, 18)}


def tensor_bytes(path):
    with open(path, "rb") as f:
        def u(fmt):
            return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]

        def skip_string():
            f.seek(u("Q"), 1)

        def skip_value(t):
            fixed = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
            if t in fixed:
                f.seek(fixed[t], 1)
            elif t == 8:
                skip_string()
            elif t == 9:
                et, n = u("I"), u("Q")
                if et in fixed:
                    f.seek(fixed[et] * n, 1)
                else:
                    for _ in range(n):
                        skip_value(et)
            else:
                raise ValueError(f"{path}: unknown GGUF value type {t}")

        if f.read(4) != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        u("I")
        nt, nkv = u("Q"), u("Q")
        for _ in range(nkv):
            skip_string()
            skip_value(u("I"))
        total = 0
        for _ in range(nt):
            skip_string()
            nd = u("I")
            n = 1
            for _ in range(nd):
                n *= u("Q")
            t = u("I")
            u("Q")
            if t not in _SIZES:
                raise ValueError(f"{path}: tensor type {t} not in the size table")
            bs, bb = _SIZES[t]
            total += n // bs * bb
        return total
