#!/usr/bin/env python3
"""Fixtures for the Q4_K / Q6_K / IQ4_NL / Q5_0 byte layouts: the `gguf` PyPI package dequantizes our bytes.

The gguf package has no quantizer for these types, so the direction is: our bytes -> gguf.quants.dequantize ->
committed floats, which Tests/QuantTests/KQuantFixtureTests.swift compares bit for bit with our dequantizer.

Two fixture sets in Tests/Fixtures/quant/ (override with --out):

  kraw.<T>.bin / kraw.<T>.f32   seeded random raw blocks (every byte random, f16 scales set to finite values)
                                and gguf's dequantization of them: covers every bit of the layout.
  kinputs.f32, kcases.json      float inputs (seeded, written here) and their cases;
  kours.<T>.bin                 OUR quantizer's bytes for those inputs, written by the Swift test with
                                NLA_WRITE_KQUANT_FIXTURES=1 (step 1 below);
  kours.<T>.f32                 gguf's dequantization of kours.<T>.bin (step 2).

    ~/.cache/nla/venv/bin/python scripts/gen_kquant_fixtures.py --inputs        # kraw.*, kinputs.f32, kcases.json
    NLA_WRITE_KQUANT_FIXTURES=1 swift test -c release --filter KQuantFixture      # kours.<T>.bin
    ~/.cache/nla/venv/bin/python scripts/gen_kquant_fixtures.py --dequant-ours   # kours.<T>.f32
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "Tests" / "Fixtures" / "quant"
TYPES = {"Q4_K": (256, 144, [0, 2]), "Q6_K": (256, 210, [208]), "IQ4_NL": (32, 18, [0]), "Q5_0": (32, 22, [0])}
# Seeds of the types added after the first fixtures (Q5_0: llama.cpp's Q4_K_M files use it). Their quantizer
# output is not in kours.*: Q5_0's reference quantizer is byte-identical to gguf's (scripts/gen_quant_fixtures.py).
LATER_TYPES = {"Q5_0": 20260101}


def raw_blocks(tname: str, nblocks: int, rng) -> np.ndarray:
    bs, bb, f16_offsets = TYPES[tname]
    b = rng.integers(0, 256, size=(nblocks, bb), dtype=np.uint8)
    for off in f16_offsets:
        d = (np.exp2(rng.uniform(-12, -4, nblocks)) * rng.choice([-1, 1], nblocks)).astype(np.float16)
        b[:, off:off + 2] = d.view(np.uint8).reshape(nblocks, 2)
    return b


def cases(rng) -> list[tuple[str, np.ndarray]]:
    c = []
    c.append(("normal", rng.normal(0, 0.05, (3, 512))))
    c.append(("heavy_tail", rng.standard_t(3, (2, 256)) * 0.1))
    c.append(("uniform", rng.uniform(-1, 1, (1, 768))))
    pos = np.abs(rng.normal(0, 1, (1, 256)))
    c.append(("all_positive", pos))
    neg = -np.abs(rng.normal(0, 1, (1, 256)))
    c.append(("all_negative", neg))
    z = np.zeros((1, 512))
    z[0, 300] = 0.5
    c.append(("mostly_zero", z))
    o = rng.normal(0, 0.02, (1, 256))
    o[0, 17] = 3.0
    o[0, 200] = -5.0
    c.append(("outliers", o))
    c.append(("ramp", ((np.arange(256) - 128) / 37.0).reshape(1, 256)))
    return [(n, np.asarray(x, dtype=np.float32)) for n, x in c]


def dequant(b: np.ndarray, tname: str) -> np.ndarray:
    return quants.dequantize(b, T[tname]).astype("<f4")


def write_inputs(out: Path) -> None:
    rng = np.random.default_rng(20251130)
    for t in TYPES:
        # Types added later draw from their own seeded generator, so the earlier fixtures stay byte-identical.
        b = raw_blocks(t, 37, rng if t not in LATER_TYPES else np.random.default_rng(LATER_TYPES[t]))
        b.tofile(out / f"kraw.{t}.bin")
        dequant(b, t).tofile(out / f"kraw.{t}.f32")
    cs = cases(rng)
    off = 0
    manifest = []
    for n, x in cs:
        manifest.append(dict(name=n, rows=x.shape[0], width=x.shape[1], input_offset=off))
        off += x.size
    np.concatenate([x.ravel() for _, x in cs]).astype("<f4").tofile(out / "kinputs.f32")
    (out / "kcases.json").write_text(json.dumps(dict(generator="scripts/gen_kquant_fixtures.py", raw_blocks=37,
                                                      cases=manifest), indent=1) + "\n")
    print(f"wrote kraw.* and {len(cs)} input cases ({off} floats) to {out}")


def dequant_ours(out: Path) -> int:
    for t, (bs, bb, _) in TYPES.items():
        if t in LATER_TYPES:
            continue
        p = out / f"kours.{t}.bin"
        if not p.exists():
            print(f"missing {p}: run the Swift test with NLA_WRITE_KQUANT_FIXTURES=1 first")
            return 1
        b = np.fromfile(p, dtype=np.uint8).reshape(-1, bb)
        dequant(b, t).tofile(out / f"kours.{t}.f32")
        print(f"{t}: {b.shape[0]} blocks dequantized by gguf {quants.__name__}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--inputs", action="store_true")
    ap.add_argument("--dequant-ours", action="store_true")
    a = ap.parse_args()
    if a.inputs:
        write_inputs(a.out)
    if a.dequant_ours:
        return dequant_ours(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
