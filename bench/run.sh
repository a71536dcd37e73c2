#!/usr/bin/env bash
# `make bench`: the side-by-side speed table, nla and llama.cpp on the same GGUF files, alternating
# rounds in one run, with the CPU, the copy bandwidth and the effective decode bandwidth. See
# bench/bench.py for what is measured and the BENCH_* settings (BENCH_QUICK=1 for a fast smoke).
# Without the peer (`make bench-peer`) it prints our side only. Benchmarks only: nothing here asserts.
# Usage: bench/run.sh [MODEL_DIR of the 270M]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then export MODEL=$1; fi
PY=python3
command -v "$PY" >/dev/null || PY=${NLA_CACHE:-$HOME/.cache/nla}/venv/bin/python
exec "$PY" bench/bench.py
