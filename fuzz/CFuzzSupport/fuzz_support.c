#include "fuzz_support.h"

// Weak: ordinary builds do not link libFuzzer and leave this null.
extern int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*cb)(const uint8_t *, size_t)) __attribute__((weak));

int nla_fuzz_run_driver(int *argc, char ***argv, nla_fuzz_callback callback) {
    if (!LLVMFuzzerRunDriver) return -1;
    return LLVMFuzzerRunDriver(argc, argv, callback);
}
