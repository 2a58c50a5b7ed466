/* ops/ops.h: the kernel table, the only ops header engine/ includes (besides threadpool.h).
 *
 * One struct ops_table per instruction set ("ref", "avx2", "avx512", "neon"). ops_ref.c is the
 * scalar reference for every kernel: the executable spec (qwen35.md §3-§6). ops_init() picks the
 * best table the CPU supports (or the one named by force_isa / $BT_ISA), fills every NULL slot
 * from ops_ref, and logs the choice. The table is read-only afterwards.
 *
 * Kernels never fail and never allocate: shapes are checked once at load time. Kernels that the
 * forward pass splits across threads take a row range [r0, r1); splitting rows (never a
 * reduction) keeps results independent of the thread count. All math is fp32. */
#ifndef BT_OPS_OPS_H
#define BT_OPS_OPS_H
#include "common/err.h"
#include "engine/dtype.h"

#include <stddef.h>
#include <stdint.h>

/* A weight matrix as stored: rows x cols elements of dtype dt, rows contiguous, each row
 * row_bytes = dtype_row_bytes(dt, cols) bytes. A 1-D tensor is rows = 1. */
struct mat {
    enum dtype dt;
    const void *data;
    int64_t rows, cols;
    size_t row_bytes;
};

/* y[t * ldy + r] = sum_c W[r][c] * x[t * ldx + c] for t in [0, n), r in [r0, r1).
 * Weights are read once for all n tokens (the batch shares one pass over W). */
typedef void (*matmul_fn)(const struct mat *w, const float *restrict x, int64_t ldx, int64_t n,
                          float *restrict y, int64_t ldy, int64_t r0, int64_t r1);

/* Quantized activations (spec §12.3, what llama.cpp does): the inputs of a matmul are
 * quantized once per token to the weight type's activation format (ops_act_dtype: Q8_0 per 32
 * for Q8_0/Q4_0/Q5_0, Q8_K per 256 with 16-value sums for Q4_K/Q5_K/Q6_K), and each weight
 * block is multiplied by its activation block with integer dot products; the integer sums are
 * exact, so only the per-block float scaling differs between ISAs. xq holds n token rows of
 * ldxq bytes, each ops_act_row_bytes(w->dt, w->cols) long, from quantize_act[ops_act_dtype].
 * y as for matmul_fn. */
typedef void (*matmul_q_fn)(const struct mat *w, const void *restrict xq, size_t ldxq, int64_t n,
                            float *restrict y, int64_t ldy, int64_t r0, int64_t r1);

/* Activation format of a weight type's matmul_q: DT_Q8_0, DT_Q8_K, or DT_F32 (no quantized
 * path: float weights and the rarely used Q4_1/Q5_1 multiply f32 activations). */
static inline enum dtype ops_act_dtype(enum dtype w) {
    switch (w) {
    case DT_Q8_0:
    case DT_Q4_0:
    case DT_Q5_0:
        return DT_Q8_0;
    case DT_Q4_K:
    case DT_Q4_K_X16:
    case DT_Q5_K:
    case DT_Q5_K_X16:
    case DT_Q6_K:
    case DT_Q6_K_X16:
        return DT_Q8_K;
    default:
        return DT_F32;
    }
}
/* Bytes of one token's quantized activations for a weight of type w with cols columns. */
static inline size_t ops_act_row_bytes(enum dtype w, int64_t cols) {
    enum dtype a = ops_act_dtype(w);
    return a == DT_F32 ? (size_t)cols * sizeof(float) : dtype_row_bytes(a, cols);
}

struct ops_table {
    const char *isa;

    matmul_fn matmul[DT_COUNT];
    /* Quantized-activation matmul, NULL for types without one (see matmul_q_fn). ops_ref holds
     * the scalar definition; every table computes the same integer sums. */
    matmul_q_fn matmul_q[DT_COUNT];
    /* Row of n elements (n a multiple of the block) to/from f32. quantize_row may be NULL for
     * a type baton only reads. */
    void (*dequantize_row[DT_COUNT])(const void *restrict src, float *restrict dst, int64_t n);
    void (*quantize_row[DT_COUNT])(const float *restrict src, void *restrict dst, int64_t n);
    /* Activation quantizers, indexed by activation dtype (DT_Q8_0, DT_Q8_K): the rounding
     * llama.cpp uses for activations (which differs from the weight quantizer for Q8_0). */
    void (*quantize_act[DT_COUNT])(const float *restrict src, void *restrict dst, int64_t n);

    /* y = x / sqrt(mean(x^2) + eps) * w  (w may be NULL: no weight). y may alias x. */
    void (*rmsnorm)(float *y, const float *x, const float *w, int64_t n, float eps);
    /* y = rmsnorm(x; w) * silu(z), over one head of n values (spec §3.2). y may alias x. */
    void (*gated_rmsnorm)(float *y, const float *x, const float *z, const float *w, int64_t n,
                          float eps);
    /* x = x / sqrt(sum(x^2) + eps) * scale, in place (spec §3.3; eps inside the root). */
    void (*l2norm_scale)(float *x, int64_t n, float eps, float scale);
    /* NeoX rotation of dims [0, n_rot) of one head: pairs (i, i + n_rot/2), angle
     * pos * theta^(-2i/n_rot). Dims >= n_rot untouched. In place. */
    void (*rope_neox)(float *x, int64_t n_rot, int64_t pos, float theta);
    /* Causal depthwise conv over channels [c0, c1) for one new token: state holds the previous
     * (k-1) raw inputs per channel, oldest first ([channel][k-1]); taps w is [channel][k]
     * (oldest first, w[k-1] multiplies x). out = silu(conv); state is shifted to include x.
     * out, state, x and w are all indexed by absolute channel (out[c], x[c] for c in [c0,c1)). */
    void (*conv1d_step)(float *out, float *state, const float *x, const float *w, int64_t k,
                        int64_t c0, int64_t c1);
    /* One token of the gated delta rule for one value head (spec §6.6), state S stored
     * transposed: S[c * dk + i] (value index major). q already L2-normed and scaled, k
     * L2-normed. decay = exp(g). o gets dv values. */
    void (*delta_rule_step)(float *S, const float *q, const float *k, const float *v, float decay,
                            float beta, float *o, int64_t dk, int64_t dv);
    /* The gated delta rule over n tokens of one value head at once (spec §6.7): same result
     * as n calls of delta_rule_step (up to float rounding), in chunks of DELTA_CHUNK tokens.
     * Token t reads q + t*ldq, k + t*ldk (dk values, prepared as for delta_rule_step),
     * v + t*ldv (dv values), the log decay g[t] (<= 0; decay = exp(g[t])) and beta[t], and
     * writes o + t*ldo (dv values). scratch holds delta_rule_chunk_scratch(dk, dv) floats.
     * ops_ref implements the chunked algorithm; the SIMD tables run their SIMD steps, since on
     * a CPU the chunked form costs the same flops and the vector step is much faster. */
    void (*delta_rule_chunk)(float *S, const float *q, int64_t ldq, const float *k, int64_t ldk,
                             const float *v, int64_t ldv, const float *g, const float *beta,
                             float *o, int64_t ldo, int64_t n, int64_t dk, int64_t dv,
                             float *scratch);
    /* conv1d_step over n tokens: token t reads x + t*ldx and writes out + t*ldo (channels
     * [c0, c1) of each); equal to n calls of conv1d_step. */
    void (*conv1d_seq)(float *out, int64_t ldo, float *state, const float *x, int64_t ldx,
                       int64_t n, const float *w, int64_t k, int64_t c0, int64_t c1);
    /* Causal attention of one query head over n_ctx cached positions (kv cache rows of
     * stride kv_stride floats, for the query's KV head): o = softmax(q.K^T * scale) V.
     * scratch holds n_ctx floats. */
    void (*attention)(float *o, const float *q, const float *k_cache, const float *v_cache,
                      int64_t kv_stride, int64_t n_ctx, int64_t head_dim, float scale,
                      float *scratch);
    /* out[i] = silu(g[i]) * u[i]; out may alias g or u. */
    void (*silu_mul)(float *out, const float *g, const float *u, int64_t n);
    /* y[i] += x[i] (y and x do not overlap) */
    void (*add)(float *y, const float *x, int64_t n);
    /* In-place softmax over n values. */
    void (*softmax)(float *x, int64_t n);
};

/* Tokens per chunk of delta_rule_chunk, and the scratch floats it needs. */
#define DELTA_CHUNK 64
static inline size_t delta_rule_chunk_scratch(int64_t dk, int64_t dv) {
    return (size_t)DELTA_CHUNK * (size_t)(DELTA_CHUNK + dk + dv + 1);
}

extern const struct ops_table ops_ref;
extern const struct ops_table *ops; /* set by ops_init(); read-only afterwards */

/* For the ISA tables: conv1d_step without the silu (out[c] = the causal convolution, the
 * state shifted), so that a table applies its own vector silu to the whole range after. */
void conv1d_taps_ref(float *out, float *state, const float *x, const float *w, int64_t k,
                     int64_t c0, int64_t c1);

/* NULL or "" = best for this CPU (or $BT_ISA when set). BT_EUNSUPPORTED if the forced ISA is
 * unknown or not supported by this CPU. Idempotent for the same choice. */
int ops_init(const char *force_isa, bt_err *e);
/* Exact mode: when on, pool_matmul_multi multiplies f32 activations (matmul) even where a
 * matmul_q exists, so results match an exact float engine on dequantized weights (the
 * ref-dequant fixtures). Off by default (fast path, like llama.cpp); the first ops_init()
 * turns it on when $BT_EXACT is set to a non-zero value. Not thread-safe against running
 * forward passes: set it at start-up or between passes. */
void ops_set_exact(int on);
int ops_exact(void);

/* Names of the ISAs this CPU can run, best first, NULL-terminated (always ends with "ref"). */
const char *const *ops_available_isas(void);
/* Table for a named ISA, or NULL if this CPU cannot run it; with NULL slots filled from ref. */
const struct ops_table *ops_table_for(const char *isa);

#endif
