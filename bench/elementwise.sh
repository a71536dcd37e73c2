#!/bin/sh
# Element-wise kernels (GELU-tanh·up, RMSNorm rows, residual add, per-head norm + RoPE) at the 270M's
# prefill shapes on every tier and C instruction-set path, one thread, best of N in process CPU time.
# Usage: bench/elementwise.sh [nla bench-elementwise options, e.g. --rows 1 --reps 2000 for decode]
set -e
cd "$(dirname "$0")/.."
[ -x .build/release/nla ] || swift build -c release --product nla
exec .build/release/nla bench-elementwise "$@"
