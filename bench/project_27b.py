#!/usr/bin/env python3
"""Project seconds per explained conversation token for the 27B NLA pair (issue 8) from rates MEASURED on
the 27B-shaped bench model (bench/make-bench-model 27b: the released 27B dimensions, 4 blocks + the full
262144 x 5376 embedding / LM head). A projection, not a measurement: the measured per-step times are scaled
by parameter counts.

Usage: bench/project_27b.py [GGUF]   (default ~/.cache/nla/bench/27b-q4_0.llamacpp.gguf, made by `make bench`)
  Runs `nla bench --model GGUF --prompt-tokens 108 --decode-tokens 16 --batch B` for B = 1 and 16 (the
  AV's shared-prompt shape) and reads: prefill tok/s of the shared prompt, decode-only tok/s at B.
  Or: bench/project_27b.py --rates DECODE1 DECODE16 PREFILL  (tok/s measured elsewhere on that model).

Model. A decode step of the bench model at B sequences took T4(B) = B / decode_B seconds; its work is the
4 blocks plus the head, and both its bytes and its MACs are proportional to the parameters, so the 27B AV
(62 blocks + head) takes T4(B) * P_AV / P_4L per step (bandwidth-bound at B = 1, compute-bound at 16:
either way proportional). Prefill rows of the bench model cost 1 / prefill seconds for 4 blocks (no head
but the last row), so a row of the 27B AV costs 62/4 of that and an AR row (42 blocks, no head) 42/4. An
explained token = EXPL AV decode tokens (64) + 15 AV rows after the shared prefix + AR_TOKENS (80) AR rows.
Attention grows with the context; at these lengths (< 250 rows) it is a few percent and is left out.
The workstation line scales the batch-1 (bandwidth-bound) step by 80 GB/s / this box's read bandwidth
(measured here by bench/bench.py's copy program if a compiler is present, else 22 GB/s) and the batch-16
(compute-bound) step and prefill by 16 / 2 cores.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("NLA_CACHE", Path.home() / ".cache/nla"))
EXPL, AR_TOKENS, INJECT_ROWS = 64, 80, 15

# 27B text config (released): d 5376, FFN 21504, 62 blocks, 32 q / 16 kv heads x 128, vocab 262208.
d, ff, heads, kv, hd = 5376, 21504, 32, 16, 128
per_block = d * heads * hd * 2 + d * kv * hd * 2 + 3 * d * ff
P_HEAD = 262144 * d                       # the bench model's head (the released vocab is 262208: +0.02 %)
P_4L = 4 * per_block + P_HEAD
P_AV = 62 * per_block + 262208 * d


def measure(gguf):
    nla = REPO / ".build/release/nla"
    out = {}
    for b in (1, 16):
        r = subprocess.run([str(nla), "bench", "--model", str(gguf), "--threads", os.environ.get("BENCH_THREADS", "2"),
                            "--prompt-tokens", "108", "--decode-tokens", "16", "--batch", str(b), "--json"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"project_27b: nla bench failed: {r.stderr.strip()[-300:]}")
        out[b] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def read_bandwidth():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import bench  # noqa: E402  (bench/bench.py: the same copy/read program as `make bench`)
        bws = bench.copy_bandwidth()
        return bws[1] * 1e9 if bws else None
    except Exception:
        return None


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--rates":
        d1, d16, pf = (float(x) for x in sys.argv[2:5])
        source = "rates given on the command line"
    else:
        gguf = Path(sys.argv[1]) if len(sys.argv) > 1 else CACHE / "bench/27b-q4_0.llamacpp.gguf"
        if not gguf.is_file():
            sys.exit(f"project_27b: {gguf} missing (run `make bench` first: it writes the 27B-shaped GGUFs)")
        m = measure(gguf)
        d1, d16 = m[1]["decode_tok_s"], m[16]["decode_tok_s"]
        pf = m[1]["prefill_tok_s"]
        source = f"measured now on {gguf.name} (nla bench --batch 1 / 16, 108-token shared prompt)"
    bw = read_bandwidth() or 22e9
    t_row4 = 1 / pf                                   # one prefill row through the bench model's 4 blocks
    av_row = t_row4 * 62 / 4
    ar_row = t_row4 * 42 / 4
    print(f"basis ({source}): 27B shape, 4 blocks + head: decode {d1:.2f} tok/s at 1 sequence, {d16:.2f} tok/s "
          f"aggregate at 16; shared-prompt prefill {pf:.1f} tok/s; read bandwidth {bw / 1e9:.1f} GB/s")
    print(f"scale: P_AV / P_4L = {P_AV / P_4L:.2f} per decode step; AV row = 62/4, AR row = 42/4 bench prefill rows")
    print()
    print("| where | batch | s per AV token | s per explained token (64 AV tokens + 15 AV rows + 80 AR rows) |")
    print("| --- | --- | --- | --- |")
    for name, bw_scale, cpu_scale in (("this box (2 threads)", 1.0, 1.0), ("16-core / 80 GB/s workstation", 80e9 / bw, 8.0)):
        for b, rate in ((1, d1), (16, d16)):
            step = b / rate * P_AV / P_4L                 # seconds per step of the 27B AV
            step /= bw_scale if b == 1 else cpu_scale     # batch 1 bandwidth-bound, batch 16 compute-bound
            per_tok = step / b
            total = EXPL * per_tok + (INJECT_ROWS * av_row + AR_TOKENS * ar_row) / cpu_scale
            print(f"| {name} | {b} | {per_tok:.2f} | {total:.1f} |")


if __name__ == "__main__":
    main()
