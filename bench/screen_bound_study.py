#!/usr/bin/env python3
"""Screen + rigorous bound study for the exact greedy top-2 of the tied LM head (Gemma 3 270M demo AV:
V = 262144 rows of d = 640, 16384 tiles of 16 rows).

What it measures: for real final-normed hidden states h, how many 16-row tiles stay candidates when a cheap
screen s_j plus a rigorous bound |s_j - exact_j| <= B_j selects the tiles that may hold the exact top-2.
Exact = <Q8_0(w_j), h> (ggml reference rounding, f16 block scales). A tile is a candidate when its largest
s_j + B_j reaches the second largest s_j - B_j of the row. Variants:
  A / B / C: Q8_0 weights x 8 / 7 / 6-bit per-32-block activations, whole-row bound B_j = ||w_j||·||h - hk||
  A'/B'/C' : the same screens, per-block Cauchy-Schwarz bound B_j = sum_b ||w_jb||·||h_b - hk_b|| (20 blocks)
  D        : Q4_0 weights (ggml reference, applied to the dequantized Q8_0 weights) x 8-bit activations,
             B_j = ||w4_j - w_j||·||h8|| + ||w_j||·||h8 - h||
Why: the AVX-512 screened top-2 (ck_packed_top2_q8 in Sources/CKernels/packed_kernels.c) uses the whole-row
bound B_j = ||w_j||·β and falls back to the full scan when more than tiles/8 + 1 = 2049 tiles remain. One
outlier block of h inflates β for every block; a per-block bound would cut the candidates.

Inputs: `nla hidden --threads 1` on 8 English texts (3 of them also with --chat) for both the bf16 model dir
$NLA_CACHE/models/nla-demo/av and the Q8_0 GGUF $NLA_CACHE/models/nla-demo-av-q8_0.gguf, written to a
temporary directory. The binary is ./.build/release/nla (or $NLA_BIN). Sanity check: on the GGUF rows the
argmax of h·Q8_0(W) must match the stored logits (the runtime's head is Q8_0 there; the bf16 dir runs an
f32 head). viol counts (row, vocab) pairs with |screen - exact| > B and must be 0.
Optional: NLA_SCREEN_COUNTS=<file.npz> saves the per-row candidate counts with row labels.

Usage: OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ~/.cache/nla/venv/bin/python bench/screen_bound_study.py
(numpy + safetensors; 1142 rows, ~3.5 min on one core of the 2-core dev box, ~1 min of it `nla hidden`;
peak RSS ~1.9 GB.)
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors import safe_open

D, V, QK, TILE = 640, 262144, 32, 16
NB, NT = D // QK, V // TILE
CAP = NT // 8 + 1  # tiles; above this the kernel scans everything
SLACK = 1e-4  # covers the f32 accumulation of this simulation (logits are ~tens)
CHUNK = 32  # activation rows per step: keeps the [V, CHUNK] f64 temporaries small

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("NLA_CACHE", Path.home() / ".cache/nla"))
NLA = Path(os.environ.get("NLA_BIN", REPO / ".build/release/nla"))
MODELS = {"bf16dir": CACHE / "models/nla-demo/av", "q8gguf": CACHE / "models/nla-demo-av-q8_0.gguf"}

TEXTS = {
    "t1": "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined "
          "movable metal type, oil-based ink and a wooden screw press into a practical system. Within a few decades, "
          "print shops had spread across Europe, and the cost of books fell dramatically. Scholars argue about how "
          "quickly literacy rose, but there is little doubt that the flow of ideas accelerated.\n",
    "t2": 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    a, b = 0, 1\n    for _ in range(n):\n'
          "        a, b = b, a + b\n    return a\n\nprint([fibonacci(i) for i in range(10)])  # 0 1 1 2 3 5 8 13 21 34\n",
    "t3": "Can you explain why the sky is blue during the day but red and orange at sunset? Please keep it short and "
          "simple, like you would for a ten-year-old.\n",
    "t4": "Quarterly revenue rose 12% to $4.3 billion, while operating margin narrowed to 18.5% amid higher freight "
          "costs. The board approved a dividend of $0.42 per share, payable on March 15, 2024. Meanwhile, in Paris, "
          "Marie said: « Je pense que c'est une bonne nouvelle pour tout le monde. » Les marchés ont réagi calmement.\n",
    "t5": "Write a haiku about autumn leaves falling into a quiet river.\n",
    "t6": "In 1905, Albert Einstein published four papers that changed physics. One explained the photoelectric "
          "effect, another Brownian motion, and two laid out special relativity, including the famous relation "
          "E = mc^2. At the time he was working as a patent clerk in Bern, Switzerland.\n",
    "t7": "Ingredients: 2 cups flour, 1 tsp baking soda, 1/2 tsp salt, 1 cup butter (softened), 3/4 cup sugar, 2 eggs, "
          "2 cups chocolate chips. Preheat the oven to 375°F. Mix the dry ingredients, cream the butter and sugar, add "
          "the eggs, then combine everything and bake for 9 to 11 minutes.\n",
    "t8": "What is the capital of Australia, and why isn't it Sydney?\n",
}
RUNS = [(t, False) for t in TEXTS] + [(t, True) for t in ("t3", "t5", "t8")]


def load_bf16(path, name):
    """One bf16 tensor of a safetensors file, widened to f32 (numpy has no bf16)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        info = json.loads(f.read(n))[name]
        if info["dtype"] != "BF16":
            sys.exit(f"screen_bound_study: {name} in {path} is {info['dtype']}, expected BF16")
        a, b = info["data_offsets"]
        f.seek(8 + n + a)
        raw = np.frombuffer(f.read(b - a), dtype=np.uint16)
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])


def ggml_round(x):  # C roundf: halves away from zero
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quant_sym(x, qmax):
    """Symmetric per-32-block quantization, dequantized (qmax = 127 is ggml's Q8_0 reference; scale kept as f16)."""
    xb = x.reshape(-1, NB, QK).astype(np.float32)
    d = np.abs(xb).max(-1, keepdims=True) / np.float32(qmax)
    inv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1), 0).astype(np.float32)
    q = np.clip(ggml_round(xb * inv), -qmax, qmax)
    return (q * d.astype(np.float16).astype(np.float32)).reshape(x.shape).astype(np.float32)


def quant_q4_0(x):
    """ggml's quantize_row_q4_0_ref, dequantized: d = (signed max-magnitude value) / -8, q = min(15, (int)(x/d + 8.5))."""
    xb = x.reshape(-1, NB, QK).astype(np.float32)
    mx = np.take_along_axis(xb, np.abs(xb).argmax(-1)[..., None], -1)
    d = mx / np.float32(-8)
    inv = np.where(d != 0, 1.0 / np.where(d != 0, d, 1), 0).astype(np.float32)
    q = np.minimum(15, np.trunc(xb * inv + np.float32(8.5)))
    return ((q - 8) * d.astype(np.float16).astype(np.float32)).reshape(x.shape).astype(np.float32)


def norm(x):  # row L2 norms in f64
    return np.sqrt((x.astype(np.float64) ** 2).sum(-1))


def blocknorm(x):  # [..., D] -> [..., NB] per-32-block L2 norms in f64
    return np.sqrt((x.reshape(*x.shape[:-1], NB, QK).astype(np.float64) ** 2).sum(-1))


def count_tiles(S, B):
    """S, B: [V, r]. Candidate tiles per row: max over the tile of S + B >= second largest S - B of the row."""
    L2 = -np.partition(-(S - B), 1, axis=0)[1]
    return ((S + B).reshape(NT, TILE, -1).max(1) >= L2[None, :]).sum(0)


def main():
    for p in (NLA, MODELS["bf16dir"] / "model.safetensors", MODELS["q8gguf"]):
        if not p.is_file():
            sys.exit(f"screen_bound_study: missing {p} (build with `swift build -c release`, set NLA_BIN / NLA_CACHE)")
    t0 = time.time()

    # Weights: exact Q8_0 head Wq (quantized in place over the widened bf16 copy) and the Q4_0 screen W4.
    Wq = load_bf16(MODELS["bf16dir"] / "model.safetensors", "model.embed_tokens.weight")
    W4 = np.empty_like(Wq)
    nWq, nD, bnWq = np.empty(V), np.empty(V), np.empty((V, NB))
    for a in range(0, V, 16384):
        s = slice(a, a + 16384)
        Wq[s] = quant_sym(Wq[s], 127)
        W4[s] = quant_q4_0(Wq[s])
        nWq[s], nD[s], bnWq[s] = norm(Wq[s]), norm(W4[s] - Wq[s]), blocknorm(Wq[s])

    # Hidden states (last hidden_states.N = the final-normed h) from `nla hidden`; GGUF rows get the sanity check.
    H, labels, sane = [], [], [0, 0, 0.0]  # sane: argmax agreements, rows, max |h·Wq - stored logit|
    with tempfile.TemporaryDirectory() as tmp:
        for mname, model in MODELS.items():
            for name, chat in RUNS:
                out = f"{tmp}/{mname}_{name}{'_chat' if chat else ''}.safetensors"
                cmd = [str(NLA), "hidden", "--model", str(model), "--threads", "1", "--out", out]
                r = subprocess.run(cmd + (["--chat"] if chat else []) + [TEXTS[name]], capture_output=True, text=True)
                if r.returncode != 0:
                    sys.exit(f"screen_bound_study: `nla hidden` failed on {mname}/{name}: {r.stderr.strip()[-300:]}")
                with safe_open(out, "numpy") as f:
                    key = max((k for k in f.keys() if k.startswith("hidden_states.")), key=lambda k: int(k[14:]))
                    h = f.get_tensor(key).astype(np.float32)
                    if mname == "q8gguf":
                        Z, lg = h @ Wq.T, f.get_tensor("logits")
                        sane[0] += int((Z.argmax(1) == lg.argmax(1)).sum())
                        sane[1] += len(h)
                        sane[2] = max(sane[2], float(np.abs(Z - lg).max()))
                        del Z, lg
                os.remove(out)
                H.append(h)
                labels += [f"{mname}/{name}{'/chat' if chat else ''}/{i}" for i in range(len(h))]
    X = np.concatenate(H)
    R = len(X)
    t_gen = time.time() - t0
    print(f"hidden states: {R} rows from {len(MODELS) * len(RUNS)} runs ({t_gen:.0f} s)", file=sys.stderr, flush=True)

    # Activation quantizations and their error norms (whole row and per block).
    X8, X7, X6 = quant_sym(X, 127), quant_sym(X, 63), quant_sym(X, 31)
    err = {k: np.sqrt(((Xk.astype(np.float64) - X) ** 2).sum(1)) for k, Xk in (("8", X8), ("7", X7), ("6", X6))}
    berr = {k: blocknorm(Xk - X) for k, Xk in (("8", X8), ("7", X7), ("6", X6))}
    n8 = norm(X8)

    counts, viol = {}, {}
    for c0 in range(0, R, CHUNK):
        sl = slice(c0, min(R, c0 + CHUNK))
        E = (Wq @ X[sl].T).astype(np.float64)  # exact Q8_0 logits (f32 h), [V, r]

        def tally(name, S, B):
            B = B + SLACK
            counts.setdefault(name, []).append(count_tiles(S.astype(np.float64), B))
            viol[name] = viol.get(name, 0) + int((np.abs(S - E) > B).sum())

        for row, blk, k, Xk in (("A", "A'", "8", X8), ("B", "B'", "7", X7), ("C", "C'", "6", X6)):
            S = Wq @ Xk[sl].T
            tally(row, S, np.outer(nWq, err[k][sl]))
            tally(blk, S, bnWq @ berr[k][sl].T)
        tally("D", W4 @ X8[sl].T, np.outer(nD, n8[sl]) + np.outer(nWq, err["8"][sl]))
        if (c0 // CHUNK) % 8 == 0:
            print(f"  rows {c0}..{sl.stop} of {R}, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)

    counts = {k: np.concatenate(v) for k, v in counts.items()}
    desc = {"A": "Q8_0 w, 8-bit act, row CS", "A'": "same, per-block CS", "B": "Q8_0 w, 7-bit act, row CS",
            "B'": "same, per-block CS", "C": "Q8_0 w, 6-bit act, row CS", "C'": "same, per-block CS",
            "D": "Q4_0 w, 8-bit act, row CS"}
    nrows = {m: sum(lab.startswith(m + "/") for lab in labels) for m in MODELS}
    print(f"Candidate tiles per row: {R} rows ({', '.join(f'{m} {n}' for m, n in nrows.items())}), "
          f"V={V}, {NT} tiles of {TILE}, cap {CAP} tiles")
    print(f"Sanity (GGUF rows): argmax(h·Q8_0(W)) == argmax(stored logits) on {sane[0]}/{sane[1]} rows, "
          f"max|diff| {sane[2]:.3g}")
    print(f"{'variant':30s} {'mean':>8s} {'median':>7s} {'p99':>7s} {'max':>6s} {'mean frac':>9s} {'>cap':>5s} {'viol':>5s}")
    for k, c in counts.items():
        print(f"{k + '  ' + desc[k]:30s} {c.mean():8.1f} {np.median(c):7.0f} {np.percentile(c, 99):7.0f} {c.max():6d} "
              f"{c.mean() / NT:9.2%} {int((c > CAP).sum()):5d} {viol[k]:5d}")
    print(f"elapsed {time.time() - t0:.0f} s (hidden states {t_gen:.0f} s)")
    if os.environ.get("NLA_SCREEN_COUNTS"):
        np.savez(os.environ["NLA_SCREEN_COUNTS"], labels=np.array(labels), **counts)


if __name__ == "__main__":
    main()
