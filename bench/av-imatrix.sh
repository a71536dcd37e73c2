#!/usr/bin/env bash
# Does calibrating an NLA AV on its own inputs help its 4-bit file? (README, "4-bit quality", `nla imatrix --av`.)
# The AV is quantized to q4_k_m with (i) no imatrix, (ii) a text-mode imatrix (the AV run over the calibration
# paragraphs as plain text), (iii) the AV-mode imatrix (its prompt with the target's layer-K vectors injected, plus
# the explanations it writes), all from Tests/Fixtures/calibration.txt, and each file is compared with the f32 AV on
# held-out vectors taken from Tests/Fixtures/kld.txt (never used for calibration) by `nla av-kld`: identical greedy
# explanations, mean common prefix, and the KLD of the next-token distributions along the f32 AV's explanations.
#
# Usage: bench/av-imatrix.sh [demo|permuted ...]   (default: both)
#   demo:     the demo AV (~/.cache/nla/models/nla-demo/av: the base 270M with the demo sidecar), target the 270M.
#             Its bf16 weights sit on the Q4_K grid (they come from a Q4_K_M file), which flatters every 4-bit file.
#   permuted: the same AV on the function-preserving permuted 270M (scripts/permute-model), target the permuted 270M
#             (the residual basis is permuted too, so the pair is the demo pair up to f32 rounding); off the grid.
# Env: OUT (default ~/.cache/nla/bench/av-imatrix), PPP (held-out vectors per paragraph, default 8), NEW (explanation
#      cap, default 32), CALPPP / CALNEW (calibration vectors per paragraph, default 4; their cap, default 64), GPTQ (1: also q4_k_m + --gptq with
#      Hessians from each imatrix; default 0), THREADS (default 2).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NLA_CACHE=${NLA_CACHE:-$HOME/.cache/nla}
OUT=${OUT:-$NLA_CACHE/bench/av-imatrix}
PPP=${PPP:-8}; NEW=${NEW:-32}; CALPPP=${CALPPP:-4}; CALNEW=${CALNEW:-64}; GPTQ=${GPTQ:-0}; THREADS=${THREADS:-2}
CAL=$ROOT/Tests/Fixtures/calibration.txt
HELD=$ROOT/Tests/Fixtures/kld.txt
NLA=${NLA:-$ROOT/.build/release/nla}
QUANTIZE=${QUANTIZE:-$ROOT/.build/release/quantize}
log() { echo "[av-imatrix] $*" >&2; }
[ -x "$NLA" ] && [ -x "$QUANTIZE" ] || { echo "av-imatrix: build first (swift build -c release)" >&2; exit 1; }
mkdir -p "$OUT"
log "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) logical CPUs, --threads $THREADS"

run_pair() {
  local name=$1 av=$2 target=$3
  [ -f "$av/nla_meta.yaml" ] || { echo "av-imatrix: no AV at $av" >&2; return 1; }
  local h=; [ "$GPTQ" = 1 ] && h=--hessian
  local imt=$OUT/$name-text.imatrix.safetensors ima=$OUT/$name-av.imatrix.safetensors
  if [ ! -f "$imt" ]; then
    log "$name: text-mode imatrix"
    /usr/bin/time -f "[av-imatrix] $name text imatrix: %e s wall, %M KB peak RSS" \
      "$NLA" imatrix --model "$av" --text-file "$CAL" --out "$imt" --threads "$THREADS" $h
  fi
  if [ ! -f "$ima" ]; then
    log "$name: AV-mode imatrix"
    /usr/bin/time -f "[av-imatrix] $name AV imatrix: %e s wall, %M KB peak RSS" \
      "$NLA" imatrix --model "$av" --av --target "$target" --text-file "$CAL" --out "$ima" \
        --positions-per-paragraph "$CALPPP" --max-new-tokens "$CALNEW" --threads "$THREADS" $h
  fi
  # Quantize every variant, then ONE av-kld run: the f32 AV's explanations are made once and every file is
  # compared along them (one JSON line per file).
  local files=() labels=()
  for v in "none:" "text:$imt" "av:$ima"; do
    local label=${v%%:*} im=${v#*:}
    local modes=("")
    [ "$GPTQ" = 1 ] && [ -n "$im" ] && modes+=("--gptq")
    for g in "${modes[@]}"; do
      local f=$OUT/$name-q4_k_m-$label${g:+-gptq}.gguf
      if [ ! -f "$f" ]; then
        log "$name: quantize q4_k_m, imatrix $label ${g}"
        "$QUANTIZE" "$av" "$f" --type q4_k_m ${im:+--imatrix "$im"} $g --threads "$THREADS" >&2
      fi
      files+=("$f"); labels+=("$label${g:+ + gptq}")
    done
  done
  local args=()
  for f in "${files[@]}"; do args+=(--av-q "$f"); done
  log "$name: av-kld on $HELD ($PPP vectors per paragraph, $NEW new tokens)"
  local i=0
  "$NLA" av-kld --av "$av" "${args[@]}" --target "$target" --text-file "$HELD" \
      --positions-per-paragraph "$PPP" --max-new-tokens "$NEW" --threads "$THREADS" --json |
    while read -r line; do
      echo "{\"model\": \"$name\", \"imatrix\": \"${labels[$i]}\", \"result\": $line}" | tee -a "$OUT/results.jsonl"
      i=$((i + 1))
    done
}

pairs=("$@"); [ ${#pairs[@]} -gt 0 ] || pairs=(demo permuted)
for p in "${pairs[@]}"; do
  case $p in
    demo) run_pair demo "$NLA_CACHE/models/nla-demo/av" "$NLA_CACHE/models/gemma-3-270m" ;;
    permuted)
      P=$NLA_CACHE/models/gemma-3-270m-permuted
      [ -f "$P/model.safetensors" ] || { echo "av-imatrix: no permuted model at $P (scripts/permute-model)" >&2; exit 1; }
      PAV=$NLA_CACHE/models/nla-demo-permuted/av
      if [ ! -f "$PAV/nla_meta.yaml" ]; then
        mkdir -p "$PAV"
        for f in config.json generation_config.json model.safetensors special_tokens_map.json tokenizer.json tokenizer_config.json; do
          ln -sf "$P/$f" "$PAV/$f"
        done
        cp "$NLA_CACHE/models/nla-demo/av/nla_meta.yaml" "$PAV/nla_meta.yaml"
      fi
      run_pair permuted "$PAV" "$P" ;;
    *) echo "av-imatrix: unknown pair '$p' (demo or permuted)" >&2; exit 1 ;;
  esac
done
