// Causal multi-head attention over a KV cache, one call per layer (decode, prefill and batches alike).
//
// For each query row r (absolute position i = pos0 + r) and query head h (KV head g = h / (H / G)):
//   visible keys j = lo..i, lo = window > 0 ? max(0, i − window + 1) : 0 (Gemma 3 sliding layers see
//   i − window < j ≤ i); key / value j live at row ((j − shared) % ring) of kc / vc (ring = the rows the
//   cache buffers hold; a cache that never wraps passes its capacity), except keys j < shared, which
//   live at row (j % sring) of sk / sv: a read-only prompt prefix many sequences attend to (shared = 0:
//   none, every key in kc / vc);
//   s_j = dot(q[r,h], k[j,g]) · scale, then s_j = tanh(s_j / softcap) · softcap when softcap > 0;
//   p = softmax(s) (max-subtracted; exp to ≤ 2 ulp); out[r,h] = Σ_j p_j · v[j,g].
//
// Batch invariance: the arithmetic for one (row, head) depends only on that query row, its position
// and the cached keys/values — not on how many rows the call holds, which rows come with it, or the
// thread count. A row computed in a 512-row prefill, in a batch of sequences or alone in a decode
// step gives bit-identical output (on one instruction-set path). That is what lets batched and
// shared-prefix runs reproduce the sequential path exactly. Where a key is stored (the shared prefix
// or the sequence's own ring) does not change its arithmetic either: keys are visited in position order
// and each score is computed on its own.
//
// Work is spread over (row, head) pairs, or (row, KV head) groups when there are enough of them,
// with OpenMP; a group's heads then walk the keys and values in shared chunks, so each chunk comes from
// L2 once for all of them. No allocation: `scratch` holds per thread one score row per query head of a
// KV group (ck_attention_scratch_floats).
#ifndef CK_ATTENTION_KERNELS_H
#define CK_ATTENTION_KERNELS_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int64_t rows;       ///< query rows t
    int64_t pos0;       ///< absolute position of row 0
    int64_t heads;      ///< query heads H
    int64_t kv_heads;   ///< KV heads G (H % G == 0)
    int64_t head_dim;   ///< values per head (multiple of 16 on the AVX-512 path, of 8 on AVX2; any on generic)
    int64_t ldq;        ///< row stride of q (floats)
    int64_t ldo;        ///< row stride of out
    int64_t ldkv;       ///< row stride of kc / vc
    int64_t ring;       ///< rows held by kc / vc; key j at row j % ring (ring ≥ visible span)
    int64_t window;     ///< sliding window (0: global attention)
    float scale;        ///< multiplies q·k
    float softcap;      ///< attention logit soft-capping (0: none)
    int64_t shared;     ///< keys 0..<shared are read from sk / sv (0: no shared prefix; sk, sv unused)
    int64_t sring;      ///< rows held by sk / sv; key j < shared at row j % sring
    const float *sk;    ///< shared prefix keys (row stride ldkv)
    const float *sv;    ///< shared prefix values
} ck_attn_params;

/// Floats of scratch `ck_attention` needs for these parameters and thread count (0 = current).
int64_t ck_attention_scratch_floats(const ck_attn_params *p, int nthreads);

/// out[r, h·hd ..< (h+1)·hd] for every row and head, as described above. isa: CK_ISA_* of
/// quant_kernels.h (-1 = best available: AVX-512 on CPUs with AVX-512 VNNI and head_dim % 16 == 0, AVX2 + FMA
/// with head_dim % 8 == 0, else portable C).
/// Returns 0, or -1 for invalid parameters or a scratch too small (nothing written).
int ck_attention(const ck_attn_params *p, const float *q, const float *kc, const float *vc, float *out,
                 float *scratch, int64_t scratch_floats, int isa, int nthreads);

/// Most pieces of one ck_attention_multi call.
#define CK_ATTN_MAX_PIECES 256
/// Most query heads per KV head that a grouped item scores together (larger groups go head by head).
#define CK_ATTN_GROUP_MAX 8

/// Floats of scratch `ck_attention_multi` needs for these pieces and thread count (0 = current).
int64_t ck_attention_multi_scratch_floats(int64_t n, const ck_attn_params *const *p, int nthreads);

/// `ck_attention` for n independent pieces (the sequences of a batch: each its own rows, positions and
/// KV cache) in one threaded pass: piece i reads q[i], kc[i], vc[i] with parameters p[i] and writes
/// out[i]. Every output is bit-identical to a `ck_attention` call for its piece alone. Returns 0, or -1
/// for n outside 1...CK_ATTN_MAX_PIECES, invalid parameters or a scratch too small (nothing written).
int ck_attention_multi(int64_t n, const ck_attn_params *const *p, const float *const *q, const float *const *kc,
                       const float *const *vc, float *const *out, float *scratch, int64_t scratch_floats, int isa,
                       int nthreads);

#ifdef __cplusplus
}
#endif
#endif
