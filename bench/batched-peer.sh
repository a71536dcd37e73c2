#!/usr/bin/env bash
# llama.cpp's batched throughput on the 270M q8_0 file (the same file `make bench` uses), for comparing
# with nla's batched explain: a 108-token shared prompt, 64 generated tokens, B = 1, 4, 16 parallel
# sequences (llama-batched-bench -pps: the prompt is shared). Prints llama-batched-bench's table.
# Needs the peer (`make bench-peer`) and the bench file (made here if missing).
# Usage: bench/batched-peer.sh [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
NLA_CACHE=${NLA_CACHE:-$HOME/.cache/nla}
THREADS=${1:-${BENCH_THREADS:-2}}
PEER=${PEER_BIN:-$NLA_CACHE/peer/build-0.3.36/bin}
[ -x "$PEER/llama-batched-bench" ] || { echo "batched-peer: $PEER/llama-batched-bench missing: run \`make bench-peer\`" >&2; exit 1; }
MODEL=${MODEL:-$NLA_CACHE/models/gemma-3-270m}
F=$NLA_CACHE/bench/270m-q8_0.llamacpp.gguf
[ -x .build/release/quantize ] || swift build -c release >&2
if [ ! -f "$F" ]; then
  mkdir -p "$(dirname "$F")"
  .build/release/quantize "$MODEL" "$F" --type q8_0 --embedding-type q8_0 --names llama.cpp >&2
fi
# context: the shared prompt once + 16 × 64 generated tokens, rounded up
"$PEER/llama-batched-bench" -m "$F" -c 2048 -b 2048 -ub 512 -npp 108 -ntg 64 -npl 1,4,16 -pps -t "$THREADS" 2>/dev/null
