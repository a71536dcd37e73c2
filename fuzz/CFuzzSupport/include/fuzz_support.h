// libFuzzer's driver entry, resolved only in the fuzz build (`make fuzz` links libFuzzer with
// `-sanitize=fuzzer` and forces this symbol in); in ordinary builds it is a weak null reference and
// `nla-fuzz` says how to build it.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef int (*nla_fuzz_callback)(const uint8_t *data, size_t size);

/// Runs libFuzzer with argv (flags and corpus dirs) on `callback`; -1 when libFuzzer is not linked.
int nla_fuzz_run_driver(int *argc, char ***argv, nla_fuzz_callback callback);
