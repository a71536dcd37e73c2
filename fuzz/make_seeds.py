#!/usr/bin/env python3
"""Write the small seed corpus of the fuzz targets into fuzz/corpus/<target>/ (committed; rerun to
regenerate). Needs numpy and gguf (the test-model venv: ~/.cache/nla/venv/bin/python)."""
import io, json, os, struct, sys
import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
corpus = os.path.join(here, "corpus")

def put(target, name, data):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def safetensors(tensors, metadata=None):
    header, payload = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(payload), len(payload) + len(raw)]}
        payload += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + payload

f32 = lambda xs: np.asarray(xs, dtype="<f4").tobytes()
bf16 = lambda xs: (np.asarray(xs, dtype="<f4").view("<u4") >> 16).astype("<u2").tobytes()

# safetensors headers (model files)
put("safetensors", "two.safetensors", safetensors([("a", "F32", [2, 2], f32([1, 2, 3, 4])), ("b", "BF16", [3], bf16([1, -2, 0.5]))], {"format": "pt"}))
put("safetensors", "empty.safetensors", safetensors([]))
put("safetensors", "i32.safetensors", safetensors([("ids", "I32", [3], np.asarray([1, 2, 3], "<i4").tobytes()), ("z", "F16", [0], b"")]))

# vector files
put("vectors_safetensors", "rows.safetensors", safetensors([("activation_vector", "F32", [2, 3], f32([1, 2, 3, 4, 5, 6]))]))
put("vectors_safetensors", "one.safetensors", safetensors([("v", "BF16", [4], bf16([1, 0.5, -1, 2]))]))
for name, arr in [("f4.npy", np.arange(6, dtype="<f4").reshape(2, 3)), ("f8.npy", np.linspace(-1, 1, 5)),
                  ("i8.npy", np.arange(3, dtype="<i8")), ("fortran.npy", np.asfortranarray(np.ones((2, 2), "<f4")))]:
    b = io.BytesIO(); np.save(b, arr); put("vectors_npy", name, b.getvalue())
b = io.BytesIO(); np.lib.format.write_array(b, np.ones(3, "<f4"), version=(2, 0)); put("vectors_npy", "v2.npy", b.getvalue())
put("vectors_jsonl", "two.jsonl", '{"activation_vector": [1, 2.5, -3e-2], "text": "x"}\n\n{"activation_vector": [4, 5, 6]}\n')
put("vectors_jsonl", "one.jsonl", '{"activation_vector": [1e38, -0.0, 7]}')

# config.json / generation_config.json
put("config", "gemma3_text.json", json.dumps({
    "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 640,
    "intermediate_size": 2048, "num_hidden_layers": 18, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
    "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
    "rope_scaling": None, "query_pre_attn_scalar": 256, "sliding_window": 512, "sliding_window_pattern": 6,
    "final_logit_softcapping": None, "attn_logit_softcapping": None, "hidden_activation": "gelu_pytorch_tanh",
    "bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0, "tie_word_embeddings": True}))
put("config", "v5_wrapper.json", json.dumps({
    "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "eos_token_id": [1, 106],
    "text_config": {"model_type": "gemma3_text", "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
                    "num_key_value_heads": 1, "head_dim": 32, "intermediate_size": 128, "vocab_size": 300,
                    "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
                    "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                                        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}}}))
put("config", "generation_config.json", json.dumps({"bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0,
                                                      "cache_implementation": "hybrid", "top_k": 64, "top_p": 0.95}))

# tokenizer.json (small BPE with added tokens, normalizer, pre-tokenizer, post-processor, decoder)
tok = {"version": "1.0", "truncation": None, "padding": None,
       "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
                        for i, c in [(0, "<pad>"), (2, "<bos>"), (3, "<start_of_turn>"), (4, "<end_of_turn>")]]
                       + [{"id": 13, "content": "yo", "single_word": True, "lstrip": True, "rstrip": True, "normalized": True, "special": False}],
       "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
       "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": False},
       "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                          "pair": [{"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}}},
       "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}]},
       "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
                 "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                 "vocab": {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<start_of_turn>": 3, "<end_of_turn>": 4, "<0x0A>": 5, "▁": 6, "h": 7, "i": 8, "hi": 9, "▁hi": 10, "y": 11, "o": 12},
                 "merges": [["h", "i"], ["▁", "hi"]]}}
put("tokenizer", "bpe.json", json.dumps(tok, ensure_ascii=False))
tok2 = dict(tok); tok2["model"] = dict(tok["model"], merges=["h i", "▁ hi"]); tok2["normalizer"] = None
tok2["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True}
tok2["post_processor"] = {"type": "BertProcessing", "cls": ["<bos>", 2], "sep": ["<eos>", 1]}
put("tokenizer", "bpe_legacy_merges.json", json.dumps(tok2, ensure_ascii=False))

# tokenizer disk cache: not files but edits of the valid .nlatok file the target builds from its tokenizer.json:
# flags (bit 0 reseal the checksum, bit 1 truncate to the next u32), then (u32 offset, xor byte) patches
put("tokenizer_disk_cache", "intact", b"\x00")
put("tokenizer_disk_cache", "resealed", b"\x01")
put("tokenizer_disk_cache", "resealed_patched", b"\x01\x30\x00\x00\x00\x05\x90\x00\x00\x00\x01")
put("tokenizer_disk_cache", "truncated_resealed", b"\x03\x00\x02\x00\x00")

# tokenizer_config.json / special_tokens_map.json (the same bytes feed both in the target)
gemma_template = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
                  "{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
                  "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}")
put("tokenizer_config", "gemma.json", json.dumps({"bos_token": "<bos>", "eos_token": "<eos>", "chat_template": gemma_template, "add_bos_token": True}))
put("tokenizer_config", "list_template.json", json.dumps({"bos_token": {"content": "<bos>", "special": True},
                                                         "chat_template": [{"name": "default", "template": "{% for m in messages %}{{ m.content }}{% endfor %}"}]}))
put("tokenizer_config", "special_tokens_map.json", json.dumps({"bos_token": {"content": "<bos>", "lstrip": False}, "eos_token": "<eos>"}))

# generation_config.json on its own (GenerationConfig over a fixed config.json)
put("generation_config", "gemma3.json", json.dumps({"bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0,
                                                    "cache_implementation": "hybrid", "top_k": 64, "top_p": 0.95, "transformers_version": "4.50.0"}))
put("generation_config", "int_eos.json", json.dumps({"eos_token_id": 1, "bos_token_id": 2}))
put("generation_config", "nulls.json", json.dumps({"eos_token_id": None, "pad_token_id": None, "do_sample": True}))

# special_tokens_map.json on its own (read when tokenizer_config.json has no bos_token)
put("special_tokens_map", "objects.json", json.dumps({"bos_token": {"content": "<bos>", "lstrip": False, "normalized": False, "rstrip": False,
                                                                    "single_word": False}, "eos_token": {"content": "<eos>"}, "pad_token": "<pad>"}))
put("special_tokens_map", "strings.json", json.dumps({"bos_token": "<bos>", "eos_token": "<eos>", "additional_special_tokens": ["<start_of_turn>"]}))

# nla_meta.yaml
for name in ("av", "ar"):
    src = os.path.expanduser(f"~/.cache/nla/models/nla-demo/{name}/nla_meta.yaml")
    if os.path.exists(src):
        put("nla_meta", f"demo_{name}.yaml", open(src, "rb").read())

# HTTP request bodies of `nla serve` (target http_bodies: every route's decoder on the same bytes; width 4, vocab 300)
row = [0.5, -1.25, 3e-05, 1e+20]
sp = {"temperature": 0, "max_new_tokens": 8, "top_p": 1, "top_k": -1, "stop_token_ids": [1, 106], "skip_special_tokens": False}
for name, body in [
    ("generate_embeds.json", {"input_embeds": [row, row], "sampling_params": sp}),
    ("generate_batch.json", {"input_embeds": [[row], [row, row]], "sampling_params": [sp, {"temperature": 0.7, "sampling_seed": 3, "stop": ["\n\n", "</explanation>"]}], "stream": True}),
    ("generate_text.json", {"text": ["hi", "there"], "sampling_params": {"stop": "x", "ignore_eos": True, "n": 1}, "model": "av"}),
    ("generate_ids.json", {"input_ids": [2, 9259, 299], "sampling_params": {"max_new_tokens": 3, "repetition_penalty": 1}}),
    ("chat.json", {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}], "max_new_tokens": 16, "stream": False}),
    ("explain_ids.json", {"ids": [2, 3, 4, 5], "prompt_length": 2, "positions": [1, 3], "fve_baseline": 0.05, "temperature": 0}),
    ("explain_prompt.json", {"prompt": "What is \u00e9?", "chat": True, "reply": "A letter.", "positions": "4-", "max_reply_tokens": 4, "stream": True}),
    ("verbalize.json", {"vectors": [row, row], "max_new_tokens": 12, "top_k": 5, "seed": 1}),
    ("verbalize_one.json", {"vector": row}),
    ("score.json", {"explanation": "<explanation>a city</explanation>", "gold": row, "fve_baseline": 0.0579}),
]:
    put("http_bodies", name, json.dumps(body, ensure_ascii=False))

# GGUF (with embedded config.json, like quantize writes)
try:
    import gguf
    path = os.path.join(corpus, "gguf", "tiny.gguf")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    w = gguf.GGUFWriter(path, "gemma3")
    w.add_string("nla.file.config.json", json.dumps({"model_type": "gemma3_text", "hidden_size": 32, "num_hidden_layers": 1,
                                                      "num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 32,
                                                      "intermediate_size": 32, "vocab_size": 4}))
    w.add_uint32("test.u32", 7); w.add_array("test.arr", [1, 2, 3]); w.add_float32("test.f", 0.5)
    w.add_tensor("token_embd.weight", np.ones((4, 32), dtype=np.float32))
    q = np.zeros((2, 34), dtype=np.uint8)
    w.add_tensor("blk.0.q", q, raw_shape=(2, 34), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
except Exception as e:  # noqa: BLE001
    print("gguf seed skipped:", e, file=sys.stderr)
print("seeds in", corpus)
