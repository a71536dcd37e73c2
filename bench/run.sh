#!/usr/bin/env bash
# Speed table for a model: prefill tok/s (512-token prompt) and decode tok/s (128 greedy tokens) for
# f32 (the HF directory, bf16 widened to f32), q8_0 and q4_0 (GGUF files made by `quantize`, cached
# beside the model), at 1 and 2 threads, with peak RSS and file sizes. Benchmarks only: nothing here
# asserts. Usage: bench/run.sh [MODEL_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-${NLA_CACHE:-$HOME/.cache/nla}/models/gemma-3-270m}
PROMPT=${BENCH_PROMPT_TOKENS:-512}
DECODE=${BENCH_DECODE_TOKENS:-128}
BIN=.build/release
[ -x "$BIN/nla" ] && [ -x "$BIN/quantize" ] || swift build -c release >&2

for t in q8_0 q4_0; do
  f="$MODEL-$t.gguf"
  [ -f "$f" ] || "$BIN/quantize" "$MODEL" "$f" --type "$t" >&2
done

size() { du -sb "$1" | cut -f1; }
printf '%-6s %-7s %14s %13s %12s %10s\n' format threads prefill_tok/s decode_tok/s peak_rss_MB file_MB
for fmt in f32 q8_0 q4_0; do
  if [ "$fmt" = f32 ]; then m="$MODEL"; else m="$MODEL-$fmt.gguf"; fi
  for threads in 1 2; do
    line=$("$BIN/nla" bench --model "$m" --threads "$threads" --prompt-tokens "$PROMPT" --decode-tokens "$DECODE" --json)
    python3 - "$fmt" "$threads" "$line" "$(size "$m")" <<'PY'
import json, sys
fmt, t, j, size = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
print(f"{fmt:<6} {t:<7} {j['prefill_tok_s']:14.1f} {j['decode_tok_s']:13.1f} {j['peak_rss_mb']:12.0f} {size/1e6:10.0f}")
PY
  done
done
