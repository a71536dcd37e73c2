# nla-runtime: the commands a newcomer runs. Everything numeric is built optimized (-c release):
# debug builds of the kernels are far too slow for real model work.
SWIFT ?= swift
CONFIG ?= release
NLA_CACHE ?= $(HOME)/.cache/nla
MODEL ?= $(NLA_CACHE)/models/gemma-3-270m
NLA := .build/$(CONFIG)/nla
DEMO_QUESTION ?= Why is the sky blue? Answer in two sentences.

.PHONY: build test test-model demo-models demo bench clean

build:
	$(SWIFT) build -c $(CONFIG)

## The real Gemma 3 270M test checkpoint at ~/.cache/nla/models/gemma-3-270m (idempotent, verified).
test-model:
	NLA_CACHE=$(NLA_CACHE) scripts/make-test-model

## The demo NLA pair (untrained, built from the test model) at ~/.cache/nla/models/nla-demo/{av,ar}.
demo-models: test-model
	NLA_CACHE=$(NLA_CACHE) scripts/make-demo-models

## Everything CI runs: the test model, then every test target (unit, synthetic, real-model goldens).
test: test-model
	NLA_TEST_MODEL=$(MODEL) $(SWIFT) test -c $(CONFIG)

## The main job on the embedded default model: for now, chat with the Gemma 3 270M.
demo: test-model build
	$(NLA) chat --model $(MODEL) --max-new-tokens 96 "$(DEMO_QUESTION)"

bench: test-model build
	bench/run.sh $(MODEL)

clean:
	rm -rf .build
