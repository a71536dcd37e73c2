#!/usr/bin/env bash
# Builds the peer for `make bench`: llama.cpp's llama-bench, llama-batched-bench, llama-perplexity, llama-quantize,
# llama-imatrix and llama-simple, from the vendored llama.cpp in the PyPI sdist of llama-cpp-python (pinned), with cmake,
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
TARGETS=(llama-bench llama-batched-bench llama-perplexity llama-simple llama-quantize llama-imatrix)
JOBS=${PEER_JOBS:-$(nproc)}
log() { echo "[bench-peer] $*" >&2; }

done_already=1
for t in "${TARGETS[@]}"; do [ -x "$BIN/$t" ] || done_already=0; done
[ -f "$BUILD/.nla-peer-ok" ] || done_already=0
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

# GGML_NATIVE=ON compiles ggml's AMX path when the CPU lists AMX, but some VMs list the flags without
# enabling the tile state: the first tile instruction is SIGILL. Probe it; without working AMX, build
# with the CPU's other native ISA extensions named explicitly (GGML_NATIVE=OFF, same kernels minus AMX).
ISA_FLAGS=(-DGGML_NATIVE=ON)
if grep -q ' amx_int8' /proc/cpuinfo; then
  probe=$(mktemp -d)
  cat > "$probe/amx.c" <<'C'
#include <immintrin.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    if (syscall(SYS_arch_prctl, 0x1023, 18)) return 1;          /* ARCH_REQ_XCOMP_PERM, XTILEDATA */
    unsigned char cfg[64]; memset(cfg, 0, sizeof cfg); cfg[0] = 1; cfg[16] = 64; cfg[48] = 16;
    _tile_loadconfig(cfg); _tile_zero(0); _tile_release();
    return 0;
}
C
  if ! { cc -O1 -mamx-tile -mamx-int8 "$probe/amx.c" -o "$probe/amx" && "$probe/amx"; } >/dev/null 2>&1; then
    log "the CPU lists AMX but a tile instruction fails here: building without AMX (explicit native ISA flags)"
    has() { grep -m1 '^flags' /proc/cpuinfo | grep -qw "$1" && echo ON || echo OFF; }
    ISA_FLAGS=(-DGGML_NATIVE=OFF -DGGML_AVX=$(has avx) -DGGML_AVX2=$(has avx2) -DGGML_FMA=$(has fma) -DGGML_F16C=$(has f16c)
               -DGGML_BMI2=$(has bmi2) -DGGML_AVX_VNNI=$(has avx_vnni) -DGGML_AVX512=$(has avx512f)
               -DGGML_AVX512_VBMI=$(has avx512vbmi) -DGGML_AVX512_VNNI=$(has avx512_vnni) -DGGML_AVX512_BF16=$(has avx512_bf16)
               -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
  fi
  rm -rf "$probe"
fi
log "configuring $SRC/vendor/llama.cpp -> $BUILD (${ISA_FLAGS[*]})"
cmake -S "$SRC/vendor/llama.cpp" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release "${ISA_FLAGS[@]}" -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF \
  -DCMAKE_RUNTIME_OUTPUT_DIRECTORY="$BIN" >&2
log "building ${TARGETS[*]} with $JOBS jobs (about 10 minutes on 2 cores)"
cmake --build "$BUILD" --config Release -j "$JOBS" --target "${TARGETS[@]}" >&2
for t in "${TARGETS[@]}"; do [ -x "$BIN/$t" ] || { echo "bench-peer: $BIN/$t was not built" >&2; exit 1; }; done
touch "$BUILD/.nla-peer-ok"
log "done: $BIN"
echo "$BIN"
