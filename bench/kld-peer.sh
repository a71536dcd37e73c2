#!/usr/bin/env bash
# 4-bit quality side by side with llama.cpp, on the same permuted weights and the same texts (README, "4-bit
# quality"). Both tools calibrate on Tests/Fixtures/calibration.txt with their own imatrix tool and are evaluated
# on Tests/Fixtures/kld.txt (never used for calibration). Every file is measured by both harnesses:
#   nla kld                           all positions of kld.txt in one sequence, vs the f32 safetensors;
#   llama-perplexity --kl-divergence  llama.cpp's chunked KLD (-c CTX: second half of each chunk), vs its f32 GGUF.
# Our files are written with --names llama.cpp so llama.cpp runs them; llama.cpp's files load in nla directly.
# The embedding stays Q8_0 on both sides (--token-embedding-type q8_0).
#
# Usage: bench/kld-peer.sh [schemes...]   (default: our q4_k q4_k_m iq4_nl, llama.cpp Q4_K_S Q4_K_M IQ4_NL Q4_0)
# Env: P (permuted model, default ~/.cache/nla/models/gemma-3-270m-permuted), OUT (default ~/.cache/nla/bench/kld),
#      CTX (llama-perplexity context, default 158: llama.cpp tokenizes kld.txt to 319 tokens and needs 2·CTX),
#      GPTQ (default 1: our files with and without --gptq, the imatrix with Hessians; 0: without only).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NLA_CACHE=${NLA_CACHE:-$HOME/.cache/nla}
P=${P:-$NLA_CACHE/models/gemma-3-270m-permuted}
OUT=${OUT:-$NLA_CACHE/bench/kld}
CTX=${CTX:-158}
GPTQ=${GPTQ:-1}; [ "$GPTQ" = 1 ] || GPTQ=
TEXT=$ROOT/Tests/Fixtures/kld.txt
CAL=$ROOT/Tests/Fixtures/calibration.txt
NLA=${NLA:-$ROOT/.build/release/nla}
QUANTIZE=${QUANTIZE:-$ROOT/.build/release/quantize}
log() { echo "[kld-peer] $*" >&2; }
[ -x "$NLA" ] && [ -x "$QUANTIZE" ] || { echo "kld-peer: build first (swift build -c release)" >&2; exit 1; }
[ -f "$P/model.safetensors" ] || { echo "kld-peer: no permuted model at $P (scripts/permute-model)" >&2; exit 1; }
BIN=$("$ROOT/bench/build-peer.sh")
mkdir -p "$OUT"

# References: our f32 file in llama.cpp's dialect, llama.cpp's base logits on it.
F32=$OUT/p-f32.llamacpp.gguf
[ -f "$F32" ] || "$QUANTIZE" "$P" "$F32" --type f32 --names llama.cpp >&2
BASE=$OUT/base-c$CTX.kld
[ -f "$BASE" ] || "$BIN/llama-perplexity" -m "$F32" -f "$TEXT" -c "$CTX" -b "$CTX" --kl-divergence-base "$BASE" >"$OUT/base.log" 2>&1 \
  || { tail -5 "$OUT/base.log" >&2; exit 1; }

# Imatrices, each tool its own on the calibration text.
IM_NLA=$OUT/p.imatrix.safetensors
[ -f "$IM_NLA" ] || "$NLA" imatrix --model "$P" --text-file "$CAL" --out "$IM_NLA" ${GPTQ:+--hessian} >&2
IM_LL=$OUT/p.imatrix.llamacpp.gguf
[ -f "$IM_LL" ] || "$BIN/llama-imatrix" -m "$F32" -f "$CAL" -c 128 -o "$IM_LL" >"$OUT/imatrix.log" 2>&1 \
  || { tail -5 "$OUT/imatrix.log" >&2; exit 1; }

ours=(q4_k q4_k_m iq4_nl)
theirs=(Q4_K_S Q4_K_M IQ4_NL Q4_0)
if [ $# -gt 0 ]; then ours=(); theirs=(); for s in "$@"; do case $s in [a-z]*) ours+=("$s");; *) theirs+=("$s");; esac; done; fi

files=()
for s in "${ours[@]}"; do
  for g in "" ${GPTQ:+gptq}; do
    f=$OUT/nla-$s${g:+-$g}.gguf
    if [ ! -f "$f" ]; then
      "$QUANTIZE" "$P" "$f" --type "$s" --imatrix "$IM_NLA" ${g:+--gptq} --names llama.cpp 2>"$f.log" >&2 || { tail -3 "$f.log" >&2; exit 1; }
    fi
    files+=("nla $s${g:+ + gptq}|$f")
  done
done
for s in "${theirs[@]}"; do
  f=$OUT/llamacpp-$s.gguf
  [ -f "$f" ] || "$BIN/llama-quantize" --imatrix "$IM_LL" --token-embedding-type q8_0 --output-tensor-type q8_0 "$F32" "$f" "$s" \
    >"$f.log" 2>&1 || { tail -5 "$f.log" >&2; exit 1; }
  files+=("llama.cpp $s|$f")
done

bpw() {  # bits per weight of the decoder blocks' 2-D weights
  "$NLA_CACHE/venv/bin/python" - "$1" <<'PY'
import sys
from gguf import GGUFReader
from gguf.constants import GGML_QUANT_SIZES
r = GGUFReader(sys.argv[1]); n = b = 0
for t in r.tensors:
    if t.name.startswith("blk.") and len(t.shape) == 2:
        bs, ts = GGML_QUANT_SIZES[t.tensor_type]; e = int(t.n_elements); n += e; b += e // bs * ts
print(f"{8 * b / n:.3f}")
PY
}

printf '| file | blocks bits/weight | nla kld: mean KLD | p99 | top-1 | llama-perplexity (c=%s): mean KLD | same top |\n' "$CTX"
printf '| --- | --- | --- | --- | --- | --- | --- |\n'
for item in "${files[@]}"; do
  name=${item%%|*}; f=${item#*|}
  k=$("$NLA" kld --model "$P" --model-q "$f" --text-file "$TEXT" --json 2>/dev/null || true)
  # nla reads every type of its table; llama.cpp's Q4_0 / IQ4_NL / Q4_K_S files also use Q4_1, Q5_1 and Q5_K.
  mk=$(echo "$k" | "$NLA_CACHE/venv/bin/python" -c 'import sys,json; j=json.load(sys.stdin); print("%.4f %.3f %.1f%%" % (j["mean_kld"], j["p99_kld"], 100*j["top1_agreement"]))' 2>/dev/null || echo "n/a n/a n/a")
  l=$("$BIN/llama-perplexity" -m "$f" --kl-divergence-base "$BASE" --kl-divergence -c "$CTX" -b "$CTX" 2>&1 || true)
  lk=$(echo "$l" | awk '/^Mean +KLD:/ {print $3; exit}')
  lt=$(echo "$l" | awk '/^Same top p:/ {print $4 " %"; exit}')
  read -r a b c <<<"$mk"
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$(bpw "$f")" "$a" "$b" "$c" "${lk:-?}" "${lt:-?}"
done
