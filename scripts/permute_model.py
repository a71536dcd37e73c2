#!/usr/bin/env python3
"""Write a function-preserving permuted copy of a Gemma 3 checkpoint (and of an NLA AR), then verify it.

Why: the test model's bf16 weights were dequantized from a Q4_K_M file, so they sit on the Q4_K grid and
re-quantizing them to Q4_K is nearly lossless. Permuting the hidden dimension and the FFN dimension with a
fixed seed gives the same function with blocks no longer aligned to that grid; every 4-bit quality number is
measured on the permuted models.

Hidden permutation P (d) and FFN permutation F (intermediate), numpy default_rng(seed):
  embed_tokens / lm_head [V, d]: columns P       every RMSNorm over d (4 per block + final): w[P]
  q/k/v_proj [*, d]: columns P                   o_proj [d, *]: rows P
  gate/up_proj [ff, d]: rows F, columns P        down_proj [d, ff]: rows P, columns F
  AR value_head [d_out, d]: input columns P (its output is the target model's vector: unchanged)
q_norm / k_norm (over head_dim) and the attention heads are untouched (RoPE pairs dims inside a head).
RMSNorm, GELU and attention are permutation-equivariant, so hidden states are permuted copies and logits /
AR vectors equal the originals up to f32 summation order. Values are moved bit for bit (bf16 stays bf16).

Verification (needs the Swift tools built: .build/release/nla): `nla hidden` on both models (every hidden state
h'[:, j] == h[:, P[j]] and the last logits equal, within 1e-4 of the largest magnitude), and for an AR
`nla reconstruct` (vectors equal within 1e-4 of the largest magnitude, cosine >= 0.99999).

    scripts/permute-model [--seed 20251130] [--model DIR] [--ar DIR] [--out-model DIR] [--out-ar DIR]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nla_build_common import VerifyError, safetensors_header  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("NLA_CACHE", Path.home() / ".cache" / "nla"))
DTYPES = {"BF16": np.uint16, "F16": np.uint16, "F32": np.uint32, "I32": np.int32}   # moved as bits, never converted
NORMS = ("input_layernorm.weight", "post_attention_layernorm.weight", "pre_feedforward_layernorm.weight",
         "post_feedforward_layernorm.weight")


def read_safetensors(path: Path):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        if info["dtype"] not in DTYPES:
            raise VerifyError(f"{path}: tensor {name} has dtype {info['dtype']}; expected BF16, F16 or F32")
        a, b = info["data_offsets"]
        arr = np.frombuffer(raw, dtype=DTYPES[info["dtype"]], count=(b - a) // np.dtype(DTYPES[info["dtype"]]).itemsize,
                            offset=8 + n + a).reshape(info["shape"])
        tensors[name] = (info["dtype"], arr)
    return tensors, meta


def write_safetensors(path: Path, tensors: dict, meta: dict):
    names = list(tensors)
    entries = [(k, tensors[k][0], tensors[k][1].shape, tensors[k][1].nbytes) for k in names]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(safetensors_header(entries, meta))
        for k in names:
            f.write(np.ascontiguousarray(tensors[k][1]).tobytes())
    os.replace(tmp, path)


def permute_tensor(name: str, arr: np.ndarray, P: np.ndarray, F: np.ndarray) -> np.ndarray:
    if name.endswith("embed_tokens.weight") or name.endswith("lm_head.weight"):
        return arr[:, P]
    if name.endswith("norm.weight") and not name.endswith(("q_norm.weight", "k_norm.weight")):
        if arr.shape != P.shape:
            raise VerifyError(f"norm {name} has shape {arr.shape}, expected ({len(P)},)")
        return arr[P]
    if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
        return arr[:, P]
    if name.endswith("o_proj.weight"):
        return arr[P, :]
    if name.endswith(("gate_proj.weight", "up_proj.weight")):
        return arr[F][:, P]
    if name.endswith("down_proj.weight"):
        return arr[P][:, F]
    if name.endswith(("q_norm.weight", "k_norm.weight")):
        return arr
    raise VerifyError(f"do not know how to permute tensor {name} {arr.shape}")


def permute_dir(src: Path, dst: Path, P, F, seed: int):
    cfg = json.loads((src / "config.json").read_text())
    cfg = cfg.get("text_config", cfg)
    d, ff = cfg["hidden_size"], cfg["intermediate_size"]
    if len(P) != d or len(F) != ff:
        raise VerifyError(f"{src}: hidden {d} / FFN {ff} do not match the permutation sizes {len(P)} / {len(F)}")
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors") and not f.name.startswith("."):
            shutil.copy2(f, dst / f.name)
    if (src / "model.safetensors.index.json").exists():
        raise VerifyError(f"{src}: sharded checkpoints are not supported by this script")
    tensors, meta = read_safetensors(src / "model.safetensors")
    out = {k: (dt, permute_tensor(k, a, P, F)) for k, (dt, a) in tensors.items()}
    meta = dict(meta)
    meta["nla.permuted"] = f"hidden and FFN permutations, numpy default_rng({seed}), from {src}"
    write_safetensors(dst / "model.safetensors", out, meta)
    vh = src / "value_head.safetensors"
    if vh.exists():
        t, m = read_safetensors(vh)
        if len(t) != 1:
            raise VerifyError(f"{vh}: expected one tensor")
        (k, (dt, a)), = t.items()
        if a.shape[1] != d:
            raise VerifyError(f"{vh}: value head input width {a.shape[1]} != hidden {d}")
        write_safetensors(dst / "value_head.safetensors", {k: (dt, a[:, P])}, m)
    print(f"[permute-model] wrote {dst}")


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise VerifyError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-400:]}")
    return r.stdout


def load_f32(path):
    tensors, _ = read_safetensors(path)
    return {k: a.view(np.float32) if dt == "F32" else a for k, (dt, a) in tensors.items()}


def verify_model(nla, src, dst, P, texts):
    worst = 0.0
    for text in texts:
        with tempfile.TemporaryDirectory() as td:
            a, b = Path(td) / "a.safetensors", Path(td) / "b.safetensors"
            run([nla, "hidden", "--model", str(src), "--last-logits", "--out", str(a), text])
            run([nla, "hidden", "--model", str(dst), "--last-logits", "--out", str(b), text])
            ha, hb = load_f32(a), load_f32(b)
            for k in ha:
                if not k.startswith("hidden_states."):
                    continue
                x, y = ha[k], hb[k]
                tol = 1e-4 * float(np.abs(x).max())
                err = float(np.abs(y - x[:, P]).max())
                worst = max(worst, err / max(tol, 1e-30) * 1e-4)
                if err > tol:
                    raise VerifyError(f"{k}: permuted hidden state differs by {err} > {tol}")
            la, lb = ha["logits"], hb["logits"]
            tol = 1e-4 * float(np.abs(la).max())
            err = float(np.abs(la - lb).max())
            if err > tol or int(la.argmax()) != int(lb.argmax()):
                raise VerifyError(f"logits differ by {err} > {tol} (argmax {la.argmax()} vs {lb.argmax()})")
            worst = max(worst, err / float(np.abs(la).max()))
    print(f"[permute-model] verified {dst}: hidden states and logits equal the original's on {len(texts)} texts "
          f"(worst relative difference {worst:.2e})")


def verify_ar(nla, src, dst, texts):
    worst, worst_cos = 0.0, 1.0
    for text in texts:
        va = np.array(json.loads(run([nla, "reconstruct", "--ar", str(src), "--json", text]))["vector"], dtype=np.float64)
        vb = np.array(json.loads(run([nla, "reconstruct", "--ar", str(dst), "--json", text]))["vector"], dtype=np.float64)
        err = float(np.abs(va - vb).max()) / float(np.abs(va).max())
        cos = float(va @ vb / np.linalg.norm(va) / np.linalg.norm(vb))
        worst, worst_cos = max(worst, err), min(worst_cos, cos)
        if err > 1e-4 or cos < 0.99999:
            raise VerifyError(f"AR vectors differ: relative {err}, cosine {cos}")
    print(f"[permute-model] verified {dst}: AR vectors equal the original's on {len(texts)} explanations "
          f"(worst relative difference {worst:.2e}, min cosine {worst_cos:.8f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=20251130)
    ap.add_argument("--model", type=Path, default=CACHE / "models" / "gemma-3-270m")
    ap.add_argument("--ar", type=Path, default=CACHE / "models" / "nla-demo" / "ar")
    ap.add_argument("--out-model", type=Path, default=CACHE / "models" / "gemma-3-270m-permuted")
    ap.add_argument("--out-ar", type=Path, default=CACHE / "models" / "nla-demo-permuted" / "ar")
    ap.add_argument("--nla", default=str(ROOT / ".build" / "release" / "nla"))
    ap.add_argument("--no-verify", action="store_true")
    a = ap.parse_args()
    try:
        cfg = json.loads((a.model / "config.json").read_text())
        cfg = cfg.get("text_config", cfg)
        rng = np.random.default_rng(a.seed)
        P = rng.permutation(cfg["hidden_size"])
        F = rng.permutation(cfg["intermediate_size"])
        permute_dir(a.model, a.out_model, P, F, a.seed)
        if a.ar and a.ar.exists():
            permute_dir(a.ar, a.out_ar, P, F, a.seed)
        if a.no_verify:
            return 0
        if not Path(a.nla).exists():
            raise VerifyError(f"{a.nla}: not built (swift build -c release), cannot verify; --no-verify skips")
        texts = ["The quick brown fox jumps over the lazy dog.",
                 "Bread is one of the oldest prepared foods, and its history is long."]
        verify_model(a.nla, a.model, a.out_model, P, texts)
        if a.ar and a.ar.exists():
            verify_ar(a.nla, a.ar, a.out_ar, ["The text is about a recipe for bread.",
                                              "A question about the capital of France."])
    except (VerifyError, OSError, KeyError, ValueError) as e:
        print(f"permute-model: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
