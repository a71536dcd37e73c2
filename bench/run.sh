#!/usr/bin/env bash
# Speed of the f32 path on a model directory: prefill tok/s (a 512-token prompt) and decode tok/s
# (128 greedy tokens), at 1 and 2 threads, plus peak RSS. Benchmarks only: nothing here asserts.
# Usage: bench/run.sh [MODEL_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-${NLA_CACHE:-$HOME/.cache/nla}/models/gemma-3-270m}
NLA=.build/release/nla
[ -x "$NLA" ] || swift build -c release >&2

printf '%-8s %-8s %12s %12s %12s\n' format threads prefill_tok/s decode_tok/s peak_rss_MB
for threads in 1 2; do
  line=$("$NLA" bench --model "$MODEL" --threads "$threads" --prompt-tokens 512 --decode-tokens 128 --json)
  python3 - "$threads" "$line" <<'PY'
import json, sys
t, j = sys.argv[1], json.loads(sys.argv[2])
print(f"{'f32':<8} {t:<8} {j['prefill_tok_s']:12.1f} {j['decode_tok_s']:12.1f} {j['peak_rss_mb']:12.0f}")
PY
done
