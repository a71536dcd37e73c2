#!/usr/bin/env python3
"""Project seconds per explained conversation token for the 27B NLA pair from rates measured on the 270M
(issue 8). Not a measurement: a bandwidth/compute scaling of measured numbers.

Usage: bench/project_27b.py DECODE1_TOK_S DECODE16_TOK_S PREFILL_TOK_S [EXPL_TOKENS] [AR_TOKENS]
  DECODE1_TOK_S   270M q8_0 decode tok/s at one sequence      (nla bench --batch 1)
  DECODE16_TOK_S  270M q8_0 aggregate decode tok/s at 16      (nla bench --batch 16)
  PREFILL_TOK_S   270M q8_0 prefill tok/s (shared prompt)     (nla bench --batch N, any N)

Model: a decode step reads every weight once (q8_0 bytes) and does 2·params FLOPs per sequence; prefill
is compute-bound. From the 270M: effective bandwidth BW = decode1 × bytes_270M, compute rate
F = prefill × 2 × nonembedding_params_270M (DECODE16 is printed beside them as the measured batched rate). For the 27B,
a step at B sequences costs max(bytes_27B / BW, B · 2 · params_27B / F) (lm_head included in both), and
an explained token = EXPL_TOKENS AV decode tokens + 15 AV rows after the shared prefix + AR_TOKENS AR
prefill rows (42 of 62 blocks, no lm_head). The workstation scales BW to 80 GB/s and F by 16/2 cores.
"""
import sys

d1, d16, pf = (float(x) for x in sys.argv[1:4])
expl = int(sys.argv[4]) if len(sys.argv) > 4 else 64
ar_tokens = int(sys.argv[5]) if len(sys.argv) > 5 else 80

Q8 = 34 / 32                                  # q8_0 bytes per weight
P270_EMB, P270_ALL = 262144 * 640, 268_098_176
P270_NONEMB = P270_ALL - P270_EMB
BYTES_270 = P270_ALL * Q8                     # tied lm_head read once per step
BW = d1 * BYTES_270                           # bytes/s, measured decode at one sequence
F = pf * 2 * P270_NONEMB                      # FLOP/s, measured prefill

# 27B (released config): d 5376, FFN 21504, 62 blocks, vocab 262208; AR runs 42 blocks, no lm_head.
d, ff, vocab, heads, kv, hd = 5376, 21504, 262208, 32, 16, 128
per_block = d * heads * hd * 2 + d * kv * hd * 2 + 3 * d * ff
P_AV = 62 * per_block + vocab * d             # compute params per decoded token (lm_head tied)
P_AR = 42 * per_block
BYTES_AV = (62 * per_block + vocab * d) * Q8


def seconds_per_explained_token(bw, f, batch):
    step = max(BYTES_AV / bw, batch * 2 * P_AV / f)          # one step: `batch` AV tokens
    av_decode = expl * step / batch
    av_rows = 15 * 2 * P_AV / f                              # rows from the injection site on
    ar = ar_tokens * 2 * P_AR / f
    return av_decode + av_rows + ar, step / batch

for name, bw, f in (("this box (2 cores)", BW, F), ("16-core / 80 GB/s workstation", 80e9, F * 8)):
    for b in (1, 16):
        s, per_tok = seconds_per_explained_token(bw, f, b)
        print(f"{name:32s} batch {b:2d}: {per_tok:7.3f} s per AV token, {s:8.1f} s per explained token "
              f"({expl} AV tokens + AR {ar_tokens} tokens)")
print(f"measured basis: BW {BW / 1e9:.1f} GB/s (270M decode {d1} tok/s), compute {F / 1e9:.1f} GFLOP/s (270M prefill {pf} tok/s); "
      f"270M batch-16 aggregate {d16} tok/s")
