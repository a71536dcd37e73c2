#!/usr/bin/env bash
# Builds the peer for `make bench`: llama.cpp's llama-bench, llama-batched-bench, llama-perplexity and
# llama-simple, from the vendored llama.cpp in the PyPI sdist of llama-cpp-python (pinned), with cmake,
# GGML_NATIVE=ON, into ~/.cache/nla/peer (never into the repo). Cached: a second run is a no-op.
# Prints the bin dir on stdout. Needs cmake and a C/C++ compiler (installs Debian's cmake if missing).
# Usage: bench/build-peer.sh
set -euo pipefail
VERSION=${PEER_VERSION:-0.3.36}
NLA_CACHE=${NLA_CACHE:-$HOME/.cache/nla}
PEER=$NLA_CACHE/peer
SRC=$PEER/llama-cpp-python-$VERSION
BUILD=$PEER/build-$VERSION
BIN=$BUILD/bin
TARGETS=(llama-bench llama-batched-bench llama-perplexity llama-simple)
JOBS=${PEER_JOBS:-$(nproc)}
log() { echo "[bench-peer] $*" >&2; }

done_already=1
for t in "${TARGETS[@]}"; do [ -x "$BIN/$t" ] || done_already=0; done
if [ "$done_already" = 1 ]; then log "cached: $BIN"; echo "$BIN"; exit 0; fi

if ! command -v cmake >/dev/null; then
  log "installing cmake from Debian"
  apt-get install -y cmake >&2 || { apt-get update >&2 && apt-get install -y cmake >&2; }
fi
command -v c++ >/dev/null || { echo "bench-peer: no C++ compiler (apt-get install g++)" >&2; exit 1; }

mkdir -p "$PEER"
if [ ! -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ]; then
  PIP=${PIP:-}
  if [ -z "$PIP" ]; then
    if [ -x "$NLA_CACHE/venv/bin/pip" ]; then PIP="$NLA_CACHE/venv/bin/pip"; else PIP="python3 -m pip"; fi
  fi
  dl=$PEER/sdist
  mkdir -p "$dl"
  if ! ls "$dl"/llama_cpp_python-"$VERSION".tar.gz >/dev/null 2>&1; then
    log "downloading the llama-cpp-python $VERSION sdist from PyPI"
    $PIP download --no-binary llama-cpp-python --no-deps "llama-cpp-python==$VERSION" -d "$dl" >&2
  fi
  tgz=$(ls "$dl"/llama_cpp_python-"$VERSION".tar.gz 2>/dev/null || ls "$dl"/llama-cpp-python-"$VERSION".tar.gz)
  tmp=$(mktemp -d "$PEER/unpack.XXXXXX")
  tar -xzf "$tgz" -C "$tmp"
  rm -rf "$SRC"
  mv "$tmp"/*/ "$SRC"
  rmdir "$tmp"
  [ -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ] || { echo "bench-peer: $tgz has no vendor/llama.cpp" >&2; exit 1; }
fi

log "configuring $SRC/vendor/llama.cpp -> $BUILD"
cmake -S "$SRC/vendor/llama.cpp" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF \
  -DCMAKE_RUNTIME_OUTPUT_DIRECTORY="$BIN" >&2
log "building ${TARGETS[*]} with $JOBS jobs (about 10 minutes on 2 cores)"
cmake --build "$BUILD" --config Release -j "$JOBS" --target "${TARGETS[@]}" >&2
for t in "${TARGETS[@]}"; do [ -x "$BIN/$t" ] || { echo "bench-peer: $BIN/$t was not built" >&2; exit 1; }; done
log "done: $BIN"
echo "$BIN"
