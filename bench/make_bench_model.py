#!/usr/bin/env python3
"""Bench-only Hugging Face checkpoints with the released Gemma 3 27B / 12B text dimensions, truncated to
a few decoder blocks plus the full 262144-row embedding (tied LM head), random bf16 weights from a fixed
seed. They measure speed on big shapes; they are not language models.

    make_bench_model.py SHAPE OUT_DIR [--blocks 4] [--seed 7] [--tokenizer-from DIR]

SHAPE: 27b (hidden 5376, FFN 21504, 32 q / 16 kv heads, head_dim 128, query_pre_attn_scalar 168) or
12b (3840, 15360, 16 / 8, 256, 256); both: vocab 262144, sliding window 1024 every layer but each 6th,
RoPE 1e6 with linear factor 8 on full-attention layers, 10000 on sliding ones (the released configs).
27b with 4 blocks: 6.1 GB. Streamed: numpy holds one chunk (≤ 64 Mi values) at a time.

Weights: uniform with std 0.02 (embedding) or 1/sqrt(fan_in) (projections), from 16 random bits per
value through a 65536-entry table of bf16 values (fast, deterministic); norm weights small (std 0.1):
with Gemma's pre/post norms every activation stays finite. Cached: a stamp records shape, blocks, seed
and the generator version; a matching stamp means nothing is done.
"""
import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from nla_build_common import safetensors_header  # noqa: E402

VERSION = "1"
SHAPES = {
    "27b": dict(hidden_size=5376, intermediate_size=21504, num_attention_heads=32, num_key_value_heads=16,
                head_dim=128, query_pre_attn_scalar=168),
    "12b": dict(hidden_size=3840, intermediate_size=15360, num_attention_heads=16, num_key_value_heads=8,
                head_dim=256, query_pre_attn_scalar=256),
}
VOCAB = 262144
CHUNK = 64 << 20
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"]


def log(*a):
    print("[make-bench-model]", *a, file=sys.stderr, flush=True)


def config(shape, blocks):
    s = SHAPES[shape]
    layer_types = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(blocks)]
    return {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "attention_bias": False,
        "attn_logit_softcapping": None, "final_logit_softcapping": None, "bos_token_id": 2, "eos_token_id": 1,
        "pad_token_id": 0, "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 131072,
        "num_hidden_layers": blocks, "layer_types": layer_types, "rms_norm_eps": 1e-6, "sliding_window": 1024,
        "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
        "tie_word_embeddings": True, "vocab_size": VOCAB, "torch_dtype": "bfloat16",
        "nla_bench": f"random weights, {shape} dimensions truncated to {blocks} blocks (bench/make_bench_model.py)",
        **s,
    }


def tensors(cfg):
    d, f = cfg["hidden_size"], cfg["intermediate_size"]
    q, kv = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"]
    out = [("model.embed_tokens.weight", [VOCAB, d], 0.02)]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", [d], None), (p + "post_attention_layernorm.weight", [d], None),
                (p + "pre_feedforward_layernorm.weight", [d], None), (p + "post_feedforward_layernorm.weight", [d], None),
                (p + "self_attn.q_norm.weight", [cfg["head_dim"]], None), (p + "self_attn.k_norm.weight", [cfg["head_dim"]], None),
                (p + "self_attn.q_proj.weight", [q, d], d ** -0.5), (p + "self_attn.k_proj.weight", [kv, d], d ** -0.5),
                (p + "self_attn.v_proj.weight", [kv, d], d ** -0.5), (p + "self_attn.o_proj.weight", [d, q], q ** -0.5),
                (p + "mlp.gate_proj.weight", [f, d], d ** -0.5), (p + "mlp.up_proj.weight", [f, d], d ** -0.5),
                (p + "mlp.down_proj.weight", [d, f], f ** -0.5)]
    out.append(("model.norm.weight", [d], None))
    return sorted(out, key=lambda t: t[0])


def bf16_table(std):
    """65536 bf16 bit patterns, uniform on [-a, a] with std `std` (a = std·√3), round-to-nearest-even."""
    a = np.float32(std * np.sqrt(3.0))
    x = ((np.arange(65536, dtype=np.float64) + 0.5) / 65536.0 * 2.0 - 1.0).astype(np.float32) * a
    u = x.view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)


def build(shape, out, blocks, seed, tokenizer_from):
    cfg = config(shape, blocks)
    plan = tensors(cfg)
    entries = [(n, "BF16", s, int(np.prod(s)) * 2) for n, s, _ in plan]
    total = sum(e[3] for e in entries)
    free = shutil.disk_usage(out.parent).free
    if free < total + (1 << 30):
        raise SystemExit(f"make-bench-model: {out.parent} has {free / 1e9:.1f} GB free, needs {total / 1e9:.1f} GB")
    tmp = out.parent / (out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    t0 = time.time()
    done = 0
    with open(tmp / "model.safetensors", "wb") as f:
        f.write(safetensors_header(entries, {"format": "pt"}))
        for name, s, std in plan:
            n = int(np.prod(s))
            if std is None:  # norm weights: small, so (1 + w) stays near 1
                f.write(bf16_table_values(rng.normal(0.0, 0.1, n).astype(np.float32)).tobytes())
            else:
                table = bf16_table(std)
                for off in range(0, n, CHUNK):
                    m = min(CHUNK, n - off)
                    idx = np.frombuffer(rng.bytes(2 * m), dtype=np.uint16)
                    f.write(table[idx].tobytes())
                    done += 2 * m
                    log(f"{done / 1e9:5.1f} / {total / 1e9:.1f} GB  {name}") if off == 0 else None
        f.flush()
        os.fsync(f.fileno())
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    for fn in TOKENIZER_FILES:
        src = tokenizer_from / fn
        if src.is_file():
            shutil.copyfile(src, tmp / fn)
    (tmp / ".nla-bench-stamp").write_text(stamp(shape, blocks, seed))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log(f"wrote {out} ({total / 1e9:.2f} GB of tensors) in {time.time() - t0:.0f} s")


def bf16_table_values(x):
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)


def stamp(shape, blocks, seed):
    return f"version={VERSION}\nshape={shape}\nblocks={blocks}\nseed={seed}\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("out", type=Path)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--tokenizer-from", type=Path,
                    default=Path(os.environ.get("NLA_CACHE", Path.home() / ".cache/nla")) / "models/gemma-3-270m")
    a = ap.parse_args()
    if a.blocks < 1:
        raise SystemExit("make-bench-model: --blocks must be >= 1")
    if not (a.tokenizer_from / "tokenizer.json").is_file():
        raise SystemExit(f"make-bench-model: {a.tokenizer_from}/tokenizer.json missing (run `make test-model`)")
    st = a.out / ".nla-bench-stamp"
    if st.is_file() and st.read_text() == stamp(a.shape, a.blocks, a.seed) and (a.out / "model.safetensors").is_file():
        log(f"cached: {a.out}")
        return
    a.out.parent.mkdir(parents=True, exist_ok=True)
    build(a.shape, a.out, a.blocks, a.seed, a.tokenizer_from)


if __name__ == "__main__":
    main()
