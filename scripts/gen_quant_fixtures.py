#!/usr/bin/env python3
"""Fixtures for Tests/QuantTests: block quantizers and GGUF files produced by the `gguf` PyPI package.

Run with the project venv (numpy + gguf; the versions used are written into the manifest):

    ~/.cache/nla/venv/bin/python scripts/gen_quant_fixtures.py            # (re)write Tests/Fixtures/quant/
    ~/.cache/nla/venv/bin/python scripts/gen_quant_fixtures.py --verify F.gguf [F2.gguf ...]

Default mode writes, into Tests/Fixtures/quant/ (override with --out):

    cases.json          manifest: every input case (name, rows, width, element offset into inputs.f32, the
                        types it applies to, why it exists) and, per type, the byte / element offsets of each
                        case in the expected files; plus the numpy / gguf versions used
    inputs.f32          all case inputs, float32 little-endian, concatenated in manifest order
    expected.<T>.bin    gguf.quants.quantize(input, T) bytes, concatenated (T in F16, BF16, Q8_0, Q4_0, Q5_0)
    dequant.<T>.f32     gguf.quants.dequantize(expected, T) as float32 little-endian, concatenated
    gguf_python.gguf    a small GGUF v3 file written by gguf.GGUFWriter: metadata of every value type
                        (including arrays of strings and a nested array) and one tensor per table type;
                        the quantized tensors are gguf.quants.quantize of the F32 tensor "src"

--verify mode is the other direction: it opens GGUF files written by the Swift side with gguf.GGUFReader and
checks them. Convention for such files: a tensor named "<base>@F32" is the f32 source; every tensor
"<base>@<T>" must have the same shape and hold exactly gguf.quants.quantize(source, T). If the file has
the key "test.expect_python_fixture_metadata" = true, its metadata must also equal gguf_python.gguf's.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T, GGUFValueType as V
from gguf import quants

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "Tests" / "Fixtures" / "quant"

QUANT_TYPES = ["F16", "BF16", "Q8_0", "Q4_0", "Q5_0"]   # F32 is the identity; it is checked in Swift directly
FLOAT_TYPES = ["F32", "F16", "BF16"]


def quantize(x: np.ndarray, tname: str) -> np.ndarray:
    """Bytes of `x` (float32, rows x width) in type `tname`, as the gguf package writes them."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if tname == "F32":
        return x.view(np.uint8)
    if tname == "F16":
        with np.errstate(over="ignore"):
            return x.astype(np.float16).view(np.uint8)
    with np.errstate(over="ignore", invalid="ignore"):
        return quants.quantize(x, T[tname])


def dequantize(b: np.ndarray, tname: str) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        if tname == "F16":
            return b.view(np.float16).astype(np.float32)
        return quants.dequantize(b, T[tname]).astype(np.float32)


def build_cases() -> list[dict]:
    """Inputs: name, data (rows x width float32), which types, and why the case exists."""
    rng = np.random.default_rng(20250101)
    cases = []

    def add(name, data, why, types=None):
        data = np.asarray(data, dtype=np.float32)
        if data.ndim == 1:
            data = data.reshape(1, -1)
        assert data.shape[1] % 32 == 0, name
        cases.append(dict(name=name, data=data, why=why, types=types or QUANT_TYPES))

    add("random_normal", rng.normal(0, 0.05, (4, 256)), "seeded N(0, 0.05), weight-like")
    add("random_uniform", rng.uniform(-1, 1, (2, 128)), "seeded U(-1, 1)")
    add("random_heavy_tail", rng.standard_t(3, (1, 256)) * 0.1, "seeded Student-t(3): outliers inside blocks")
    add("ramp_small", np.arange(-16, 16), "ramp -16..15: Q4_0 clipping at +15 and .5 ties; Q8_0 d = 16/127")
    add("ramp_long", (np.arange(256) - 128) / 37.0, "ramp over 8 blocks, non-dyadic step")

    z = np.zeros(64, dtype=np.float32)
    z[32:] = -0.0
    add("zeros", z, "block of +0 and block of -0: d = 0, id = 0 (Q4_0 stores d = -0 for +0 blocks)")

    h = rng.normal(0, 0.01, 64).astype(np.float32)
    h[5] = 1.0e4
    h[32 + 17] = -3.0e5
    add("one_huge", h, "one huge value per block: every other element quantizes to ~0")

    o = rng.normal(0, 0.1, 32).astype(np.float32)
    o[9] = 1.0e9
    add("d_overflows_f16", o, "amax 1e9: d overflows f16 to inf in both formats (stored as is)")

    n = rng.uniform(-1.5, 1.5, 64).astype(np.float32)
    n[3] = -2.0
    n[32 + 20] = 2.0
    add("negative_max", n, "Q4_0 keeps the sign of the max-|x| element: block 0 negative, block 1 positive")

    t = rng.uniform(-1, 1, 64).astype(np.float32)
    t[2], t[7] = 3.0, -3.0
    t[32 + 2], t[32 + 7] = -3.0, 3.0
    add("abs_tie_order", t, "two elements of equal |max| and opposite sign: the first one wins (argmax)")

    q8 = np.array([127, -126.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 125.5, -125.5, 126.5, 4.5, -4.5, 0, -0.0,
                   10.5, -10.5, 63.5, -63.5, 99.5, -99.5, 0.25, -0.75, 7, -7, 8.5, -8.5, 11.5, -11.5, 1, -1],
                  dtype=np.float32)
    add("ties_q8", q8, "Q8_0 d = 1: values at k+0.5 must round away from zero (np.round would go to even)")

    q4 = np.array([-8, -7.5, -6.5, -5.5, -4.5, -3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5,
                   7.5, 7, 6, -7, -6, 0, 0.25, -0.25, 0.75, -0.75, 3, -3, 8, 7.9, -7.9, 1], dtype=np.float32)
    add("ties_q4", q4, "Q4_0 d = 1: trunc(x + 8.5) rounds .5 ties up; +8 and 7.5 clip to 15")

    add("tiny", rng.uniform(-1e-5, 1e-5, 64), "amax ~1e-5: Q8_0 d is an f16 subnormal")

    sp = np.array([np.nan, np.inf, -np.inf, 65504, 65519, 65520, -65520, 1e-8, 6e-8, 3e-8, -0.0, 0.0,
                   1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-11, 1 + 3 * 2**-11, 3.0e38, -3.4e38, 1e-40, -1e-45,
                   0.1, -0.1, 1 / 3, 2 / 3, 1e5, -1e5, 6.1e-5, 6.0e-5, 5.96e-8, 2.98e-8, 2.99e-8, 1.0],
                  dtype=np.float32)
    add("float_specials", sp, "NaN, infinities, f16 overflow / subnormal / round-to-even ties (float types only)",
        types=["F16", "BF16"])
    return cases


def write_fixtures(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cases = build_cases()
    inputs = []
    expected = {t: [] for t in QUANT_TYPES}
    deq = {t: [] for t in QUANT_TYPES}
    manifest_cases = []
    elem_off = 0
    byte_off = {t: 0 for t in QUANT_TYPES}
    deq_off = {t: 0 for t in QUANT_TYPES}
    for c in cases:
        data = c["data"]
        rows, width = data.shape
        entry = dict(name=c["name"], rows=rows, width=width, input_offset=elem_off, why=c["why"], types={})
        inputs.append(data.ravel())
        elem_off += data.size
        for t in c["types"]:
            b = quantize(data, t)
            d = dequantize(b, t)
            entry["types"][t] = dict(byte_offset=byte_off[t], byte_count=int(b.nbytes),
                                     dequant_offset=deq_off[t])
            expected[t].append(b.ravel())
            deq[t].append(d.ravel())
            byte_off[t] += b.nbytes
            deq_off[t] += d.size
        manifest_cases.append(entry)

    np.concatenate(inputs).astype("<f4").tofile(out / "inputs.f32")
    for t in QUANT_TYPES:
        np.concatenate(expected[t]).astype(np.uint8).tofile(out / f"expected.{t}.bin")
        np.concatenate(deq[t]).astype("<f4").tofile(out / f"dequant.{t}.f32")
    manifest = dict(
        generator="scripts/gen_quant_fixtures.py",
        numpy=np.__version__, gguf=_gguf_version(),
        types={t: dict(ggml_id=int(T[t]), expected=f"expected.{t}.bin", dequant=f"dequant.{t}.f32")
               for t in QUANT_TYPES},
        cases=manifest_cases,
    )
    (out / "cases.json").write_text(json.dumps(manifest, indent=1) + "\n")
    write_python_gguf(out / "gguf_python.gguf")
    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"wrote {len(cases)} cases, {elem_off} input floats, {total} bytes in {out}")


def _gguf_version() -> str:
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:
        return "unknown"


# Metadata of the Python-written GGUF, in write order (general.architecture is added first by GGUFWriter).
def python_fixture_metadata() -> list[tuple[str, object, V, V | None]]:
    return [
        ("general.alignment", 32, V.UINT32, None),
        ("test.u8", 200, V.UINT8, None),
        ("test.i8", -100, V.INT8, None),
        ("test.u16", 60000, V.UINT16, None),
        ("test.i16", -30000, V.INT16, None),
        ("test.u32", 4_000_000_000, V.UINT32, None),
        ("test.i32", -2_000_000_000, V.INT32, None),
        ("test.f32", 3.25, V.FLOAT32, None),
        ("test.u64", 2**63 + 5, V.UINT64, None),
        ("test.i64", -(2**62) - 3, V.INT64, None),
        ("test.f64", -1.0e-300, V.FLOAT64, None),
        ("test.bool_true", True, V.BOOL, None),
        ("test.bool_false", False, V.BOOL, None),
        ("test.string", "h\u00e9llo \u2713 \"quoted\"\nline2", V.STRING, None),
        ("test.arr_str", ["a", "", "\u00fc\u00f1\u00ee", "<bos>"], V.ARRAY, V.STRING),
        ("test.arr_i32", [1, -2, 3, 2_000_000_000], V.ARRAY, V.INT32),
        ("test.arr_u8", [0, 1, 255], V.ARRAY, V.UINT8),
        ("test.arr_f32", [0.5, -1.25, 1e-3], V.ARRAY, V.FLOAT32),
        ("test.arr_f64", [1e300, -2.5], V.ARRAY, V.FLOAT64),
        ("test.arr_u64", [2**64 - 1, 0], V.ARRAY, V.UINT64),
        ("test.arr_i64", [-(2**63), 7], V.ARRAY, V.INT64),
        ("test.arr_bool", [True, False, True], V.ARRAY, V.BOOL),
        ("test.arr_nested", [[1, 2], [3]], V.ARRAY, V.ARRAY),
    ]


def write_python_gguf(path: Path) -> None:
    rng = np.random.default_rng(7)
    src = rng.normal(0, 0.5, (4, 64)).astype(np.float32)
    w = gguf.GGUFWriter(str(path), arch="nla-test")
    for key, val, vt, sub in python_fixture_metadata():
        w.add_key_value(key, val, vt, sub_type=sub)
    # HF-order shapes; GGUFWriter reverses them into GGUF dims.
    w.add_tensor("src", src)
    w.add_tensor("w.f16", src.astype(np.float16))
    w.add_tensor("w.bf16", quants.quantize(src, T.BF16), raw_dtype=T.BF16)
    w.add_tensor("w.q8_0", quants.quantize(src, T.Q8_0), raw_dtype=T.Q8_0)
    w.add_tensor("w.q4_0", quants.quantize(src, T.Q4_0), raw_dtype=T.Q4_0)
    w.add_tensor("norm", np.linspace(-1, 1, 7, dtype=np.float32))                        # 1-D, 28 bytes: padded
    w.add_tensor("cube", np.arange(2 * 3 * 32, dtype=np.float32).reshape(2, 3, 32) / 8)  # 3-D
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def field_value(f):
    """A ReaderField's value as plain Python (nested arrays come back flattened by the reader)."""
    if f.types[0] == V.ARRAY:
        if f.types[-1] == V.STRING:
            return [bytes(f.parts[i]).decode() for i in f.data]
        return [x for i in f.data for x in f.parts[i].tolist()]
    if f.types[0] == V.STRING:
        return bytes(f.parts[-1]).decode()
    return f.parts[-1].tolist()[0]


def expected_field(val, vt, sub):
    if vt == V.ARRAY and sub == V.ARRAY:
        return [x for inner in val for x in inner]
    if vt == V.FLOAT32:
        return float(np.float32(val))
    if vt == V.ARRAY and sub == V.FLOAT32:
        return [float(np.float32(v)) for v in val]
    return val


def verify(path: Path) -> int:
    r = gguf.GGUFReader(str(path))
    problems = []
    fields = {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}
    print(f"{path}: {len(r.tensors)} tensors, {len(fields)} metadata keys, alignment {r.alignment}, "
          f"data at {r.data_offset}")
    if "test.expect_python_fixture_metadata" in fields:
        for key, val, vt, sub in python_fixture_metadata():
            f = fields.get(key)
            if f is None:
                problems.append(f"missing key {key}")
                continue
            types = [vt] + ([sub] if sub is not None else [])
            if sub == V.ARRAY:
                types = [V.ARRAY, V.ARRAY, V.INT32]
            if f.types != types:
                problems.append(f"{key}: types {f.types} != {types}")
            got, want = field_value(f), expected_field(val, vt, sub)
            if got != want:
                problems.append(f"{key}: {got!r} != {want!r}")
        print(f"  checked {len(python_fixture_metadata())} metadata values against the python fixture")
    else:
        for k, f in fields.items():
            print(f"  {k}: {[t.name for t in f.types]} = {str(field_value(f))[:70]}")
    by_name = {t.name: t for t in r.tensors}
    checked = 0
    for t in r.tensors:
        if "@" not in t.name:
            continue
        base, tname = t.name.rsplit("@", 1)
        src = by_name.get(base + "@F32")
        if src is None:
            problems.append(f"{t.name}: no source tensor {base}@F32")
            continue
        if t.tensor_type != T[tname]:
            problems.append(f"{t.name}: type {t.tensor_type.name}")
        if list(t.shape) != list(src.shape):
            problems.append(f"{t.name}: GGUF dims {list(t.shape)} != source {list(src.shape)}")
        hf_shape = tuple(int(d) for d in reversed(src.shape.tolist()))
        x = np.asarray(src.data, dtype=np.float32).reshape(hf_shape)
        want = quantize(x.reshape(-1, hf_shape[-1]), tname).tobytes()
        got = np.asarray(t.data).tobytes()
        if got != want:
            problems.append(f"{t.name}: bytes differ from gguf.quants.quantize ({len(got)} vs {len(want)} bytes)")
        checked += 1
        print(f"  {t.name:28s} {t.tensor_type.name:5s} HF shape {list(hf_shape)}  {t.n_bytes} bytes  ok"
              if got == want else f"  {t.name}: MISMATCH")
    for p in problems:
        print("  PROBLEM:", p)
    print(f"  {checked} tensors compared with gguf.quants.quantize of their source, {len(problems)} problems")
    return len(problems)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--verify", type=Path, nargs="+", help="GGUF files written by the Swift side to check")
    a = ap.parse_args()
    if a.verify:
        return 1 if sum(verify(p) for p in a.verify) else 0
    write_fixtures(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
