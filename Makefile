# nla-runtime: the commands a newcomer runs. Everything numeric is built optimized (-c release):
# debug builds of the kernels are far too slow for real model work.
SWIFT ?= swift
CONFIG ?= release
NLA_CACHE ?= $(HOME)/.cache/nla
MODEL ?= $(NLA_CACHE)/models/gemma-3-270m
NLA := .build/$(CONFIG)/nla
DEMO_QUESTION ?= What is the capital of France?
DEMO := $(NLA_CACHE)/models/nla-demo

.PHONY: system-deps build test test-model demo-models demo chat serve test-ui bench bench-peer bench-batched-peer clean fuzz fuzz-build fuzz-smoke

## System packages the build and the tests need (OpenBLAS, LLVM OpenMP, python3-venv, xz): installed
## when missing and possible (root or passwordless sudo), otherwise stops with the apt-get command.
system-deps:
	@scripts/ensure-system-deps

build: system-deps
	$(SWIFT) build -c $(CONFIG)

## The real Gemma 3 270M test checkpoint at ~/.cache/nla/models/gemma-3-270m (idempotent, verified).
test-model: system-deps
	NLA_CACHE=$(NLA_CACHE) scripts/make-test-model

## The demo NLA pair (untrained, built from the test model) at ~/.cache/nla/models/nla-demo/{av,ar}.
demo-models: test-model
	NLA_CACHE=$(NLA_CACHE) scripts/make-demo-models

## Everything CI runs: the test model and demo pair, then every test target (unit, synthetic, real-model goldens).
## The tests' tokenizers go to their own disk cache (the synthetic ones would crowd out the real one).
test: system-deps test-model demo-models
	NLA_TEST_MODEL=$(MODEL) NLA_TOKENIZER_CACHE=$(NLA_CACHE)/tokenizers-test NLA_PACK_CACHE=$(NLA_CACHE)/packed-test $(SWIFT) test -c $(CONFIG)

## The main job on the embedded default: the 270M answers DEMO_QUESTION, and every token of the
## conversation is explained by the demo AV and scored by the demo AR (both quantized to q8_0).
## The demo pair is UNTRAINED: its explanations are not meaningful, the pipeline is.
demo: demo-models build
	@test -f $(DEMO)/av-q8_0.gguf || .build/$(CONFIG)/quantize $(DEMO)/av $(DEMO)/av-q8_0.gguf --type q8_0
	@test -f $(DEMO)/ar-q8_0.gguf || .build/$(CONFIG)/quantize $(DEMO)/ar $(DEMO)/ar-q8_0.gguf --type q8_0
	$(NLA) explain --target $(MODEL) --av $(DEMO)/av-q8_0.gguf --ar $(DEMO)/ar-q8_0.gguf --chat \
	  --max-reply-tokens 12 --max-new-tokens 40 "$(DEMO_QUESTION)"

## Chat with the Gemma 3 270M.
chat: test-model build
	$(NLA) chat --model $(MODEL) --max-new-tokens 96 "$(DEMO_QUESTION)"

## The local server (README "Local server and UI"): the page, the JSON API and /generate on the test model and the
## demo pair (q8_0 GGUFs, as `make demo`), on http://127.0.0.1:$(SERVE_PORT)/ (SERVE_PORT=0: any free port).
SERVE_PORT ?= 8080
serve: demo-models build
	@test -f $(DEMO)/av-q8_0.gguf || .build/$(CONFIG)/quantize $(DEMO)/av $(DEMO)/av-q8_0.gguf --type q8_0
	@test -f $(DEMO)/ar-q8_0.gguf || .build/$(CONFIG)/quantize $(DEMO)/ar $(DEMO)/ar-q8_0.gguf --type q8_0
	@echo "nla serve: open http://127.0.0.1:$(SERVE_PORT)/ (Ctrl-C stops it)"
	$(NLA) serve --target $(MODEL) --av $(DEMO)/av-q8_0.gguf --ar $(DEMO)/ar-q8_0.gguf --port $(SERVE_PORT)

## The page in headless Chromium, a bounded /generate load test and schemathesis against the OpenAPI document
## (scripts/test-ui; installs chromium, chromium-driver, selenium and schemathesis when missing). .ci/run runs it.
## Uses the binaries `make test` built (swift test -c release builds them with testing enabled; a plain
## `swift build -c release` would recompile every module), or builds them when missing.
test-ui: demo-models
	@test -x .build/$(CONFIG)/nla -a -x .build/$(CONFIG)/quantize || $(MAKE) build
	NLA_CACHE=$(NLA_CACHE) MODEL=$(MODEL) scripts/test-ui

## Side-by-side speed table: nla and llama.cpp on the same GGUF files (270M, 27B- and 12B-shaped bench
## models), alternating rounds. BENCH_QUICK=1 for a smoke run; BENCH_MODELS / BENCH_TYPES / BENCH_ROUNDS.
bench: test-model demo-models build
	bench/run.sh $(MODEL)
	bench/explain.sh

## The peer for `make bench`: llama.cpp's llama-bench, llama-batched-bench, llama-perplexity built from the
## pinned llama-cpp-python sdist into ~/.cache/nla/peer (about 10 minutes on 2 cores; cached).
bench-peer:
	NLA_CACHE=$(NLA_CACHE) bench/build-peer.sh

## llama-batched-bench on the 270M q8_0 file: 108-token shared prompt, 64 generated, B = 1, 4, 16.
bench-batched-peer: test-model build
	NLA_CACHE=$(NLA_CACHE) bench/batched-peer.sh

## Coverage-guided fuzzing of every file reader (libFuzzer; README "Fuzzing"): a separate build in
## .build-fuzz with -sanitize=fuzzer, then each target for FUZZ_SECONDS from the seeds in fuzz/corpus.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= safetensors gguf config generation_config tokenizer tokenizer_disk_cache tokenizer_config special_tokens_map nla_meta vectors_npy vectors_jsonl vectors_safetensors http_bodies

fuzz-build: system-deps
	$(SWIFT) build -c release --scratch-path .build-fuzz --product nla-fuzz \
	  -Xswiftc -sanitize=fuzzer -Xswiftc -use-ld=lld -Xlinker -u -Xlinker LLVMFuzzerRunDriver

fuzz: fuzz-build
	NLA_CACHE=$(NLA_CACHE) scripts/run-fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)

## What CI runs: a few seconds per target.
fuzz-smoke: FUZZ_SECONDS = 5
fuzz-smoke: fuzz

clean:
	rm -rf .build .build-fuzz
