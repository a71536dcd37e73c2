#!/usr/bin/env python3
"""The side-by-side bench (`make bench` = bench/run.sh): nla and llama.cpp on the very same GGUF files.

For each model (Gemma 3 270M; the 27B- and 12B-shaped bench checkpoints of bench/make-bench-model) and
type (q8_0, q4_0; the embedding at the same type), `quantize --names llama.cpp` writes one file (cached
under ~/.cache/nla/bench) that both runtimes load. Rounds alternate in the same run: nla, peer, nla,
peer, … (BENCH_ROUNDS, default 2). Each round measures prefill (a P-token prompt) and decode (D tokens)
at BENCH_THREADS (default 2) threads: `nla bench --json` and `llama-bench -p P -n D -t T -r 1 -o json`
(llama-bench times its prompt and its generation as separate tests, the generation from an empty
context; ours decodes after the prompt). Peak RSS is the child's ru_maxrss.

Also measured in the same run: the copy bandwidth (a C copy loop over 2 × 1 GiB, OpenMP with the same
thread count, compiled here with cc -O3 -march=native -fopenmp; STREAM's convention: read + written
bytes / time), the read bandwidth (the same program summing one 1 GiB array: the roof for a decode, which
only reads weights), and the effective decode bandwidth = weight bytes read per token (every tensor of the file, the tied
embedding once as the LM head, minus the one embedding row lookup) × decode tok/s.

Prints ONE table; writes bench/results/bench-<time>.jsonl (not committed) with every round.
Without the peer (bench/build-peer.sh, `make bench-peer`) it prints our side and says so.

Environment: BENCH_MODELS (default "270m 27b 12b"), BENCH_TYPES ("q8_0 q4_0"), BENCH_ROUNDS (2),
BENCH_THREADS (2), BENCH_QUICK=1 (270m q8_0, 64/16 tokens, one round), PEER_BIN (llama.cpp bin dir),
NLA_CACHE (~/.cache/nla).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("NLA_CACHE", Path.home() / ".cache/nla"))
BIN = REPO / ".build/release"
QUICK = os.environ.get("BENCH_QUICK") == "1"
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1" if QUICK else "2"))
MODELS = os.environ.get("BENCH_MODELS", "270m" if QUICK else "270m 27b 12b").split()
TYPES = os.environ.get("BENCH_TYPES", "q8_0" if QUICK else "q8_0 q4_0").split()
PEER_VERSION = "0.3.36"


def log(*a):
    print("[bench]", *a, file=sys.stderr, flush=True)


def run_rss(cmd):
    """Run a command and return (stdout, peak RSS in MB) using wait4 on the child."""
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        pid = os.posix_spawnp(cmd[0], [str(c) for c in cmd], os.environ,
                              file_actions=[(os.POSIX_SPAWN_DUP2, fo.fileno(), 1), (os.POSIX_SPAWN_DUP2, fe.fileno(), 2)])
        _, status, ru = os.wait4(pid, 0)
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read().decode(), fe.read().decode()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"bench: {' '.join(map(str, cmd))} failed ({code}): {err.strip()[-800:]}")
    return out, ru.ru_maxrss / 1024.0


def cpu_info():
    name, flags = "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and name == "unknown CPU":
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    keep = sorted(f for f in flags if f in ("avx2", "fma", "f16c", "avx_vnni") or f.startswith("avx512") or f.startswith("amx"))
    return name, keep, os.cpu_count()


COPY_C = r"""
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    size_t n = (size_t)1 << 30;   /* bytes per array */
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    char *a = aligned_alloc(4096, n), *b = aligned_alloc(4096, n);
    if (!a || !b) return 1;
    #pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)(n >> 12); i++) { memset(a + (i << 12), 1, 4096); memset(b + (i << 12), 2, 4096); }
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = omp_get_wtime();
        #pragma omp parallel
        {
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
            size_t chunk = n / nt, lo = chunk * t, hi = t == nt - 1 ? n : lo + chunk;
            memcpy(b + lo, a + lo, hi - lo);
        }
        double dt = omp_get_wtime() - t0;
        if (dt < best) best = dt;
    }
    /* Read only (what a decode does with the weights): sum the array in 64-byte vectors, 4 sums per thread. */
    typedef unsigned long long v8 __attribute__((vector_size(64)));
    double best_read = 1e30;
    unsigned long long sink = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = omp_get_wtime();
        const v8 *w = (const v8 *)a;
        long vecs = (long)(n / 64);
        #pragma omp parallel reduction(+:sink)
        {
            v8 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
            #pragma omp for schedule(static)
            for (long i = 0; i < vecs; i += 4) { s0 += w[i]; s1 += w[i + 1]; s2 += w[i + 2]; s3 += w[i + 3]; }
            v8 t = s0 + s1 + s2 + s3;
            for (int j = 0; j < 8; j++) sink += t[j];
        }
        double dt = omp_get_wtime() - t0;
        if (dt < best_read) best_read = dt;
    }
    printf("%.3f %.3f\n", 2.0 * n / best / 1e9, n / best_read / 1e9);   /* STREAM copy (bytes read + written), read */
    return b[12345] == 1 && sink != 1 ? 0 : 2;
}
"""


def copy_bandwidth():
    d = Path(tempfile.mkdtemp(prefix="nla-copybw-"))
    try:
        (d / "copy.c").write_text(COPY_C)
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            return None
        r = subprocess.run([cc, "-O3", "-march=native", "-fopenmp", str(d / "copy.c"), "-o", str(d / "copy")],
                           capture_output=True, text=True)
        if r.returncode != 0:
            log("copy bandwidth: cannot compile the copy loop:", r.stderr.strip()[-300:])
            return None
        env = dict(os.environ, OMP_NUM_THREADS=str(THREADS))
        r = subprocess.run([str(d / "copy"), "3" if QUICK else "5"], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            return None
        copy, read = (float(v) for v in r.stdout.split())
        return copy, read
    finally:
        shutil.rmtree(d, ignore_errors=True)


def peer_bin():
    cands = []
    if os.environ.get("PEER_BIN"):
        cands.append(Path(os.environ["PEER_BIN"]))
    cands.append(CACHE / f"peer/build-{PEER_VERSION}/bin")
    for c in cands:
        if (c / "llama-bench").is_file() and os.access(c / "llama-bench", os.X_OK):
            return c
    return None


def peer_config(pbin):
    """The ISA settings the peer was built with (from its CMakeCache.txt)."""
    try:
        cache = (pbin.parent / "CMakeCache.txt").read_text()
    except OSError:
        return "build settings unknown"
    on = dict(re.findall(r"^(GGML_[A-Z0-9_]+):BOOL=(ON|OFF)$", cache, re.M))
    if on.get("GGML_NATIVE") == "ON":
        return "GGML_NATIVE=ON"
    isa = [k[5:] for k in ("GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_AVX_VNNI", "GGML_AVX512", "GGML_AVX512_VBMI",
                           "GGML_AVX512_VNNI", "GGML_AVX512_BF16", "GGML_AMX_INT8") if on.get(k) == "ON"]
    return "native ISA without AMX (tile instructions fault on this VM): " + " ".join(isa)


def ensure_build():
    if not ((BIN / "nla").is_file() and (BIN / "quantize").is_file()):
        log("building (swift build -c release)")
        subprocess.run(["swift", "build", "-c", "release"], cwd=REPO, check=True, stdout=sys.stderr)


def model_source(key):
    """(label, HF dir, prompt tokens, decode tokens)."""
    if key == "270m":
        d = Path(os.environ.get("MODEL", CACHE / "models/gemma-3-270m"))
        if not (d / "config.json").is_file():
            raise SystemExit(f"bench: {d} missing: run `make test-model`")
        return "Gemma 3 270M", d, (64, 16) if QUICK else (512, 128)
    if key in ("27b", "12b"):
        d = CACHE / f"bench/gemma3-{key}-shape-4L"
        subprocess.run([str(REPO / "bench/make-bench-model"), key, str(d)], check=True, stdout=sys.stderr)
        dims = "5376/21504, 32/16 heads × 128" if key == "27b" else "3840/15360, 16/8 heads × 256"
        return f"{key.upper()} dims ({dims}), 4 blocks + 262144 head", d, (32, 8) if QUICK else (128, 32)
    raise SystemExit(f"bench: unknown model '{key}' (270m, 27b, 12b)")


def quantized(key, src, qtype):
    out = CACHE / f"bench/{key}-{qtype}.llamacpp.gguf"
    stamp = out.with_suffix(".stamp")
    want = f"{src}|{(src / 'model.safetensors').stat().st_mtime_ns}|{qtype}|names=llama.cpp|emb={qtype}\n"
    if out.is_file() and stamp.is_file() and stamp.read_text() == want:
        return out
    log(f"quantize {src} -> {out} ({qtype}, embedding {qtype}, --names llama.cpp)")
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(BIN / "quantize"), str(src), str(out), "--type", qtype, "--embedding-type", qtype,
                    "--names", "llama.cpp"], check=True, stdout=sys.stderr, stderr=sys.stderr)
    stamp.write_text(want)
    return out


def weight_bytes_per_token(path):
    """Bytes of every tensor, minus one embedding row's worth of the (tied) embedding read as the head."""
    sys.path.insert(0, str(REPO / "bench"))
    from gguf_sizes import tensor_bytes  # standard library only
    return tensor_bytes(path)


def nla_round(path, p, n):
    out, rss = run_rss([BIN / "nla", "bench", "--model", path, "--threads", THREADS, "--prompt-tokens", p,
                        "--decode-tokens", n, "--json"])
    j = json.loads(out.strip().splitlines()[-1])
    return {"prefill": j["prefill_tok_s"], "decode": j["decode_tok_s"], "rss_mb": rss}


def peer_round(pbin, path, p, n):
    out, rss = run_rss([pbin / "llama-bench", "-m", path, "-p", p, "-n", n, "-t", THREADS, "-r", 1, "-o", "json"])
    rows = json.loads(out)
    res = {"rss_mb": rss}
    for r in rows:
        if r.get("n_prompt", 0) > 0 and r.get("n_gen", 0) == 0:
            res["prefill"] = r["avg_ts"]
        elif r.get("n_gen", 0) > 0 and r.get("n_prompt", 0) == 0:
            res["decode"] = r["avg_ts"]
    if "prefill" not in res or "decode" not in res:
        raise SystemExit(f"bench: unexpected llama-bench output: {out[:400]}")
    return res


def rng(vals, fmt="{:.1f}"):
    if not vals:
        return "–"
    lo, hi = min(vals), max(vals)
    return fmt.format(lo) if abs(hi - lo) < 0.05 * max(abs(hi), 1e-9) and len(vals) == 1 else f"{fmt.format(lo)}–{fmt.format(hi)}"


def main():
    ensure_build()
    name, flags, ncpu = cpu_info()
    pbin = peer_bin()
    res_dir = REPO / "bench/results"
    res_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    jl = open(res_dir / f"bench-{stamp}.jsonl", "w")
    log(f"CPU {name} ({ncpu} logical), threads {THREADS}, rounds {ROUNDS}, peer {pbin or 'absent'}")
    bws = copy_bandwidth()
    bw, rbw = bws if bws else (None, None)
    log(f"copy bandwidth ({THREADS} threads): {bw} GB/s, read {rbw} GB/s")
    jl.write(json.dumps({"kind": "machine", "cpu": name, "flags": flags, "logical_cpus": ncpu, "threads": THREADS,
                         "copy_gb_s": bw, "read_gb_s": rbw, "peer": str(pbin) if pbin else None, "time": stamp}) + "\n")
    rows = []
    for key in MODELS:
        label, src, (p, n) = model_source(key)
        for qtype in TYPES:
            f = quantized(key, src, qtype)
            wb = weight_bytes_per_token(f)
            ours, peer = [], []
            for r in range(ROUNDS):
                log(f"{key} {qtype} round {r + 1}/{ROUNDS}: nla")
                o = nla_round(f, p, n)
                ours.append(o)
                jl.write(json.dumps({"kind": "round", "model": key, "type": qtype, "runtime": "nla", "round": r + 1,
                                     "prompt": p, "decode_tokens": n, **o}) + "\n")
                if pbin:
                    log(f"{key} {qtype} round {r + 1}/{ROUNDS}: llama.cpp")
                    q = peer_round(pbin, f, p, n)
                    peer.append(q)
                    jl.write(json.dumps({"kind": "round", "model": key, "type": qtype, "runtime": "llama.cpp",
                                         "round": r + 1, "prompt": p, "decode_tokens": n, **q}) + "\n")
                jl.flush()
            rows.append((key, label, qtype, p, n, f, wb, ours, peer))
    jl.close()

    print(f"CPU: {name}, {ncpu} logical CPUs; flags: {' '.join(flags) or 'none of avx2/avx512/amx'}")
    print(f"threads {THREADS}; {ROUNDS} alternating round(s) per row; copy bandwidth (STREAM copy, {THREADS} threads): "
          f"{bw:.1f} GB/s; read bandwidth (sum over 1 GiB, {THREADS} threads): {rbw:.1f} GB/s" if bw else f"threads {THREADS}; copy bandwidth: not measured (no cc -fopenmp)")
    print(f"peer: llama.cpp (llama-cpp-python {PEER_VERSION} sdist, {peer_config(pbin)}) at {pbin}" if pbin
          else "peer: absent -- run `make bench-peer` (builds llama.cpp into ~/.cache/nla/peer, ~10 min) for the side-by-side")
    print()
    hdr = ["model", "type", "P/D", "nla prefill", "nla decode", "peer prefill", "peer decode", "ratio pre", "ratio dec",
           "nla GB/s", "peer GB/s", "nla % of read", "nla RSS MB", "peer RSS MB", "file MB"]
    table = []
    for key, label, qtype, p, n, f, wb, ours, peer in rows:
        op, od = [o["prefill"] for o in ours], [o["decode"] for o in ours]
        pp, pd = [o["prefill"] for o in peer], [o["decode"] for o in peer]
        mean = lambda v: sum(v) / len(v)
        ratio = lambda a, b: f"{mean(a) / mean(b):.2f}×" if a and b else "–"
        gb = lambda v: rng([x * wb / 1e9 for x in v]) if v else "–"
        table.append([label if key != "270m" else "Gemma 3 270M", qtype, f"{p}/{n}", rng(op), rng(od), rng(pp), rng(pd),
                      ratio(op, pp), ratio(od, pd), gb(od), gb(pd),
                      f"{100 * mean(od) * wb / 1e9 / rbw:.0f} %" if od and rbw else "–", f"{max(o['rss_mb'] for o in ours):.0f}",
                      f"{max(o['rss_mb'] for o in peer):.0f}" if peer else "–", f"{f.stat().st_size / 1e6:.0f}"])
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join("---" for _ in hdr) + "|")
    for t in table:
        print("| " + " | ".join(t) + " |")
    print()
    print("tok/s ranges are min–max over the rounds; ratio = mean nla / mean peer; GB/s = weight bytes per "
          "decoded token × decode tok/s; % of read = mean nla decode GB/s / the read bandwidth above "
          "(bytes per token: " +
          ", ".join(f"{k} {q} {wb / 1e9:.2f} GB" for k, _, q, _, _, _, wb, _, _ in rows) + ")")
    print(f"rounds: {res_dir / f'bench-{stamp}.jsonl'}")


if __name__ == "__main__":
    main()
