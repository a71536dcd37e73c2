#!/usr/bin/env bash
# Batched explain bench (issue 8): 16 positions × 64 forced AV tokens on the demo pair at q8_0, 2 threads,
# `--batch 1` (sequential reference: full prompt prefill per vector) and `--batch N` (default 16) in the
# same run → positions per minute, AV tok/s (all steps, and decode-only steps at N sequences), KV bytes
# per sequence, peak RSS. Optionally llama.cpp's `llama-batched-bench` on the same weights when a peer
# build is announced in $PEER_READY (its bin dir) and a llama.cpp-named GGUF is given in $LLAMA_GGUF.
# Benchmarks only: nothing here asserts. Usage: bench/explain.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${NLA_CACHE:-$HOME/.cache/nla}
DEMO=$CACHE/models/nla-demo
TARGET=$CACHE/models/gemma-3-270m
THREADS=${BENCH_THREADS:-2}
BATCH=${BENCH_BATCH:-16}
BIN=.build/release
[ -x "$BIN/nla" ] && [ -x "$BIN/quantize" ] || swift build -c release >&2
[ -d "$DEMO/av" ] && [ -d "$DEMO/ar" ] || { echo "bench/explain.sh: demo pair missing ($DEMO): run make demo-models" >&2; exit 1; }

for m in av ar; do
  f="$CACHE/models/nla-demo-$m-q8_0.gguf"
  [ -f "$f" ] || "$BIN/quantize" "$DEMO/$m" "$f" --type q8_0 >&2
done
[ -f "$TARGET-q8_0.gguf" ] || "$BIN/quantize" "$TARGET" "$TARGET-q8_0.gguf" --type q8_0 >&2
AV=$CACHE/models/nla-demo-av-q8_0.gguf AR=$CACHE/models/nla-demo-ar-q8_0.gguf T=$TARGET-q8_0.gguf

run() {  # $1 = batch; prints the stats line of nla explain
  "$BIN/nla" explain --target "$T" --av "$AV" --ar "$AR" --chat "What is the capital of France?" \
    --max-reply-tokens 12 --positions 4-19 --max-new-tokens 64 --force-tokens --threads "$THREADS" \
    --batch "$1" --json 2>&1 >/dev/null | grep '^nla: stats:'
}
echo "demo pair q8_0 (AV = Gemma 3 270M, AR 13 blocks), 16 positions × 64 forced tokens, $THREADS threads, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
s1=$(run 1); sN=$(run "$BATCH")
echo "batch 1:  $s1"
echo "batch $BATCH: $sN"
python3 - "$s1" "$sN" "$BATCH" "$AV" <<'PY'
import os, re, sys
def f(line, pat):
    m = re.search(pat, line); return float(m.group(1)) if m else float('nan')
a, b, n, av = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
P_PM, P_AV = r'([\d.]+) positions/min', r'tokens in [\d.]+ s \(([\d.]+) tok/s'
P_DEC, P_KV, P_RSS = r'decode-only steps ([\d.]+) tok/s', r'KV ([\d.]+) MB', r'peak RSS ([\d.]+) MB'
P_SH = r'\+ ([\d.]+) MB shared prefix'
print("%6s %14s %9s %13s %10s %12s" % ("batch", "positions/min", "AV tok/s", "decode tok/s", "KV MB/seq", "peak RSS MB"))
for tag, l in (("1", a), (n, b)):
    print("%6s %14.1f %9.1f %13.1f %10.2f %12.0f" % (tag, f(l, P_PM), f(l, P_AV), f(l, P_DEC), f(l, P_KV), f(l, P_RSS)))
print("speedup (positions/min): %.2fx" % (f(b, P_PM) / f(a, P_PM)))
model_mb = os.path.getsize(av) / 1e6
# The KV of a batch: each sequence's own positions plus the prompt prefix all of them read (stored once).
shared = f(b, P_SH)
shared = 0.0 if shared != shared else shared
budget = (model_mb + int(n) * f(b, P_KV) + shared) * 1.1
print("peak RSS at %s: %.0f MB; one model + KV + 10%% = (%.1f MB AV file + %s x %.2f MB KV + %.2f MB shared prefix KV) x 1.1 = %.1f MB (%s)"
      % (n, f(b, P_RSS), model_mb, n, f(b, P_KV), shared, budget, "within" if f(b, P_RSS) <= budget else "over by %.0f MB" % (f(b, P_RSS) - budget)))
PY

# Aggregate decode at 1, 4 and 16 sequences after a shared 108-token prompt (64 tokens each), ours and
# llama.cpp's llama-batched-bench -pps on the same Q8_0 weights (the demo AV is the base 270M).
echo "nla bench --batch N (shared 108-token prompt, 64 tokens per sequence, $THREADS threads):"
for n in 1 4 16; do
  echo "  $n: $("$BIN/nla" bench --model "$AV" --threads "$THREADS" --prompt-tokens 108 --decode-tokens 64 --batch "$n")"
done
LLAMA_GGUF=${LLAMA_GGUF:-$CACHE/bench/270m-q8_0.llamacpp.gguf}
PEER=${PEER_BIN:-$CACHE/peer/build-0.3.36/bin}
if [ -x "$PEER/llama-batched-bench" ] && [ -f "$LLAMA_GGUF" ]; then
  echo "llama.cpp llama-batched-bench -pps on $LLAMA_GGUF (108-token shared prompt, 64 generated, $THREADS threads):"
  "$PEER/llama-batched-bench" -m "$LLAMA_GGUF" -c 2048 -b 2048 -ub 512 -npp 108 -ntg 64 -npl 1,4,16 -pps -t "$THREADS" 2>/dev/null | grep '^|'
else
  echo "llama.cpp peer: not run (needs make bench-peer, or PEER_BIN=<llama.cpp bin dir>, and LLAMA_GGUF=<llama.cpp-named GGUF of the same weights>, made by make bench)"
fi

# Issue 8's projection for the 27B pair, from rates measured now on the 27B-shaped bench model (made by bench/run.sh).
if [ -f "$CACHE/bench/27b-q4_0.llamacpp.gguf" ]; then
  echo "27B pair projection (bench/project_27b.py, rates measured now on the 27B-shaped q4_0 model):"
  python3 bench/project_27b.py "$CACHE/bench/27b-q4_0.llamacpp.gguf"
  if [ -x "$PEER/llama-batched-bench" ]; then
    echo "llama.cpp llama-batched-bench -pps on the same 27B-shaped q4_0 file (108-token shared prompt, 16 generated, $THREADS threads):"
    "$PEER/llama-batched-bench" -m "$CACHE/bench/27b-q4_0.llamacpp.gguf" -c 2048 -b 2048 -ub 512 -npp 108 -ntg 16 -npl 1,16 -pps \
      -t "$THREADS" 2>/dev/null | grep '^|'
  fi
else
  echo "27B projection: not run ($CACHE/bench/27b-q4_0.llamacpp.gguf missing: bench/run.sh makes it)"
fi
