/* ops/ops_ref.c: the scalar reference of every kernel in struct ops_table, written to read like
 * the formulas of qwen35.md §3-§6 and §12.2. Every SIMD kernel is tested against these. All
 * math is fp32 except the RoPE angles, which are computed in double so that large positions
 * keep their precision. */
#include "ops/ops.h"
#include "ops/quant.h"
#include "ops/repack.h"

#include <math.h>
#include <string.h>

typedef void (*dequant_fn)(const void *restrict, float *restrict, int64_t);

static const dequant_fn dequant[DT_COUNT] = {
    [DT_F32] = dequantize_row_f32,   [DT_F16] = dequantize_row_f16,
    [DT_BF16] = dequantize_row_bf16, [DT_Q4_0] = dequantize_row_q4_0,
    [DT_Q4_1] = dequantize_row_q4_1, [DT_Q5_0] = dequantize_row_q5_0,
    [DT_Q5_1] = dequantize_row_q5_1, [DT_Q8_0] = dequantize_row_q8_0,
    [DT_Q4_K] = dequantize_row_q4_k, [DT_Q5_K] = dequantize_row_q5_k,
    [DT_Q6_K] = dequantize_row_q6_k,
};

static float silu(float x) {
    return x / (1.0f + expf(-x));
}

static float dot(const float *a, const float *b, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* Every dtype: dequantize one block (or 256 elements of a float type) of the row, then dot it
 * with each token's activations, adding the block's partial sum into y. Each weight block is
 * read once for all n tokens. */
static void matmul_ref(const struct mat *w, const float *restrict x, int64_t ldx, int64_t n,
                       float *restrict y, int64_t ldy, int64_t r0, int64_t r1) {
    const struct dtype_traits *tr = &dtype_traits[w->dt];
    dequant_fn deq = dequant[w->dt];
    int64_t step = tr->block > 1 ? tr->block : 256; /* elements dequantized at a time */
    float buf[256];
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
        for (int64_t t = 0; t < n; t++)
            y[t * ldy + r] = 0.0f;
        for (int64_t c = 0; c < w->cols; c += step) {
            int64_t len = w->cols - c < step ? w->cols - c : step;
            deq(row + (size_t)(c / tr->block) * tr->block_bytes, buf, len);
            for (int64_t t = 0; t < n; t++)
                y[t * ldy + r] += dot(buf, x + t * ldx + c, len);
        }
    }
}

/* ---- quantized activations (ops.h matmul_q_fn, spec §12.3) ----
 * Each block's dot product is an exact integer sum of weight codes times activation codes;
 * the float part is one scaling per block: for Q8_0 activations sum += isum * (d_w * d_x), for
 * Q8_K sum += d_x * (d * isum - dmin * msum) (msum = the min codes times the 16-value sums). */

static float vdot_q8_0_ref(const uint8_t *w, const uint8_t *x, int64_t nb) {
    const struct block_q8_0 *a = (const struct block_q8_0 *)(const void *)w;
    const struct block_q8_0 *b = (const struct block_q8_0 *)(const void *)x;
    float sum = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int isum = 0;
        for (int j = 0; j < 32; j++)
            isum += a[i].qs[j] * b[i].qs[j];
        sum += (float)isum * (fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d));
    }
    return sum;
}

static float vdot_q4_0_ref(const uint8_t *w, const uint8_t *x, int64_t nb) {
    const struct block_q4_0 *a = (const struct block_q4_0 *)(const void *)w;
    const struct block_q8_0 *b = (const struct block_q8_0 *)(const void *)x;
    float sum = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int isum = 0;
        for (int j = 0; j < 16; j++)
            isum +=
                ((a[i].qs[j] & 15) - 8) * b[i].qs[j] + ((a[i].qs[j] >> 4) - 8) * b[i].qs[j + 16];
        sum += (float)isum * (fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d));
    }
    return sum;
}

static float vdot_q5_0_ref(const uint8_t *w, const uint8_t *x, int64_t nb) {
    const struct block_q5_0 *a = (const struct block_q5_0 *)(const void *)w;
    const struct block_q8_0 *b = (const struct block_q8_0 *)(const void *)x;
    float sum = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        uint32_t qh;
        memcpy(&qh, a[i].qh, 4);
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            int lo = (a[i].qs[j] & 15) | (int)((qh >> j) & 1) << 4;
            int hi = (a[i].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            isum += (lo - 16) * b[i].qs[j] + (hi - 16) * b[i].qs[j + 16];
        }
        sum += (float)isum * (fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d));
    }
    return sum;
}

/* Q4_K / Q5_K: codes q in [0, 2^bits) per sub-block s of 32 with (scale, min) pairs:
 * x = d*sc*q - dmin*mn, so the dot is d*sum_s sc_s*(q.y)_s - dmin*sum_s mn_s*bsum_s. */
static float vdot_k45_ref(const uint8_t *w, const uint8_t *x, int64_t nb, int five) {
    size_t bb = five ? sizeof(struct block_q5_k) : sizeof(struct block_q4_k);
    float sum = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *blk = w + (size_t)i * bb;
        const uint8_t *y = x + (size_t)i * sizeof(struct block_q8_k); /* any alignment */
        const int8_t *yq = q8k_qs(y);
        const struct block_q4_k *k4 = (const struct block_q4_k *)(const void *)blk;
        const struct block_q5_k *k5 = (const struct block_q5_k *)(const void *)blk;
        const uint8_t *scales = five ? k5->scales : k4->scales, *qs = five ? k5->qs : k4->qs;
        uint16_t dh = five ? k5->d : k4->d, mh = five ? k5->dmin : k4->dmin;
        int isum = 0, msum = 0;
        for (int s = 0; s < 8; s++) {
            uint8_t sc, mn;
            quant_scale_min_k4(s, scales, &sc, &mn);
            int c = s / 2, sub = 0;
            for (int l = 0; l < 32; l++) {
                int q = s & 1 ? qs[32 * c + l] >> 4 : qs[32 * c + l] & 15;
                if (five) q |= ((k5->qh[l] >> s) & 1) << 4;
                sub += q * yq[32 * s + l];
            }
            isum += sc * sub;
            msum += mn * (q8k_bsum(y, 2 * s) + q8k_bsum(y, 2 * s + 1));
        }
        sum += q8k_d(y) * (fp16_to_f32(dh) * (float)isum - fp16_to_f32(mh) * (float)msum);
    }
    return sum;
}

static float vdot_q4_k_ref(const uint8_t *w, const uint8_t *x, int64_t nb) {
    return vdot_k45_ref(w, x, nb, 0);
}
static float vdot_q5_k_ref(const uint8_t *w, const uint8_t *x, int64_t nb) {
    return vdot_k45_ref(w, x, nb, 1);
}

/* Q6_K: x = d * sc_g * (q - 32) with a signed scale per 16 values. */
static float vdot_q6_k_ref(const uint8_t *w, const uint8_t *x, int64_t nb) {
    const struct block_q6_k *a = (const struct block_q6_k *)(const void *)w;
    float sum = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *y = x + (size_t)i * sizeof(struct block_q8_k); /* any alignment */
        const int8_t *yq = q8k_qs(y);
        int q[QK_K];
        for (int h = 0; h < 2; h++) /* spec §12.2: halves of 128, quarters of 32 */
            for (int l = 0; l < 32; l++) {
                const uint8_t *ql = a[i].ql + 64 * h, *qh = a[i].qh + 32 * h;
                int *o = q + 128 * h;
                o[l] = ((ql[l] & 15) | ((qh[l] >> 0) & 3) << 4) - 32;
                o[l + 32] = ((ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4) - 32;
                o[l + 64] = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                o[l + 96] = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
            }
        int isum = 0;
        for (int g = 0; g < 16; g++) {
            int sub = 0;
            for (int j = 0; j < 16; j++)
                sub += q[16 * g + j] * yq[16 * g + j];
            isum += a[i].scales[g] * sub;
        }
        sum += q8k_d(y) * fp16_to_f32(a[i].d) * (float)isum;
    }
    return sum;
}

typedef float (*vdot_fn)(const uint8_t *w, const uint8_t *x, int64_t nb);

static void matmul_q_ref_with(vdot_fn vdot, const struct mat *w, const void *restrict xq,
                              size_t ldxq, int64_t n, float *restrict y, int64_t ldy, int64_t r0,
                              int64_t r1) {
    int64_t nb = w->cols / dtype_traits[w->dt].block;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
        for (int64_t t = 0; t < n; t++)
            y[t * ldy + r] = vdot(row, (const uint8_t *)xq + (size_t)t * ldxq, nb);
    }
}

#define DEF_MATMUL_Q_REF(T)                                                                        \
    static void matmul_q_##T##_ref(const struct mat *w, const void *restrict xq, size_t ldxq,      \
                                   int64_t n, float *restrict y, int64_t ldy, int64_t r0,          \
                                   int64_t r1) {                                                   \
        matmul_q_ref_with(vdot_##T##_ref, w, xq, ldxq, n, y, ldy, r0, r1);                         \
    }
DEF_MATMUL_Q_REF(q8_0)
DEF_MATMUL_Q_REF(q4_0)
DEF_MATMUL_Q_REF(q5_0)
DEF_MATMUL_Q_REF(q4_k)
DEF_MATMUL_Q_REF(q5_k)
DEF_MATMUL_Q_REF(q6_k)

/* K-quant x16 (ops/repack.h): each block is restored to its GGUF bytes and multiplied as
 * that type, block by block in the same order, so the sums are the GGUF type's bit for bit. */
union x16_restored {
    struct block_q4_k k4;
    struct block_q5_k k5;
    struct block_q6_k k6;
};

static void x16_restore(const struct mat *w, int64_t r, int64_t i, union x16_restored *b) {
    if (w->dt == DT_Q6_K_X16)
        repack_q6_k_x16_block(w, r, i, &b->k6);
    else if (w->dt == DT_Q5_K_X16)
        repack_q5_k_x16_block(w, r, i, &b->k5);
    else
        repack_q4_k_x16_block(w, r, i, &b->k4);
}

static void matmul_q_x16_ref(const struct mat *w, const void *restrict xq, size_t ldxq, int64_t n,
                             float *restrict y, int64_t ldy, int64_t r0, int64_t r1) {
    int64_t nb = w->cols / QK_K;
    union x16_restored b;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t t = 0; t < n; t++) {
            const uint8_t *x = (const uint8_t *)xq + (size_t)t * ldxq;
            float sum = 0.0f;
            for (int64_t i = 0; i < nb; i++) {
                const uint8_t *xb = x + (size_t)i * sizeof(struct block_q8_k);
                x16_restore(w, r, i, &b);
                sum += w->dt == DT_Q6_K_X16   ? vdot_q6_k_ref((const uint8_t *)&b.k6, xb, 1)
                       : w->dt == DT_Q5_K_X16 ? vdot_q5_k_ref((const uint8_t *)&b.k5, xb, 1)
                                              : vdot_q4_k_ref((const uint8_t *)&b.k4, xb, 1);
            }
            y[t * ldy + r] = sum;
        }
}

/* f32 activations (exact mode): as matmul_ref, one restored block of 256 at a time */
static void matmul_x16_ref(const struct mat *w, const float *restrict x, int64_t ldx, int64_t n,
                           float *restrict y, int64_t ldy, int64_t r0, int64_t r1) {
    float buf[QK_K];
    union x16_restored b;
    for (int64_t r = r0; r < r1; r++) {
        for (int64_t t = 0; t < n; t++)
            y[t * ldy + r] = 0.0f;
        for (int64_t c = 0; c < w->cols; c += QK_K) {
            x16_restore(w, r, c / QK_K, &b);
            if (w->dt == DT_Q6_K_X16)
                dequantize_row_q6_k(&b.k6, buf, QK_K);
            else if (w->dt == DT_Q5_K_X16)
                dequantize_row_q5_k(&b.k5, buf, QK_K);
            else
                dequantize_row_q4_k(&b.k4, buf, QK_K);
            for (int64_t t = 0; t < n; t++)
                y[t * ldy + r] += dot(buf, x + t * ldx + c, QK_K);
        }
    }
}

static void rmsnorm_ref(float *y, const float *x, const float *w, int64_t n, float eps) {
    float ss = dot(x, x, n);
    float inv = 1.0f / sqrtf(ss / (float)n + eps);
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] * inv * (w ? w[i] : 1.0f);
}

static void gated_rmsnorm_ref(float *y, const float *x, const float *z, const float *w, int64_t n,
                              float eps) {
    float ss = dot(x, x, n);
    float inv = 1.0f / sqrtf(ss / (float)n + eps);
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] * inv * (w ? w[i] : 1.0f) * silu(z[i]);
}

static void l2norm_scale_ref(float *x, int64_t n, float eps, float scale) {
    float inv = scale / sqrtf(dot(x, x, n) + eps);
    for (int64_t i = 0; i < n; i++)
        x[i] *= inv;
}

static void rope_neox_ref(float *x, int64_t n_rot, int64_t pos, float theta) {
    int64_t half = n_rot / 2;
    for (int64_t i = 0; i < half; i++) {
        double freq = pow((double)theta, -2.0 * (double)i / (double)n_rot);
        double ang = (double)pos * freq;
        float c = (float)cos(ang), s = (float)sin(ang);
        float a = x[i], b = x[i + half];
        x[i] = a * c - b * s;
        x[i + half] = a * s + b * c;
    }
}

void conv1d_taps_ref(float *out, float *state, const float *x, const float *w, int64_t k,
                     int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; c++) {
        float *st = state + c * (k - 1);
        const float *wc = w + c * k;
        float acc = wc[k - 1] * x[c];
        for (int64_t i = 0; i < k - 1; i++)
            acc += wc[i] * st[i];
        for (int64_t i = 0; i + 1 < k - 1; i++) /* drop the oldest input, append x */
            st[i] = st[i + 1];
        if (k > 1) st[k - 2] = x[c];
        out[c] = acc;
    }
}

static void conv1d_step_ref(float *out, float *state, const float *x, const float *w, int64_t k,
                            int64_t c0, int64_t c1) {
    conv1d_taps_ref(out, state, x, w, k, c0, c1);
    for (int64_t c = c0; c < c1; c++)
        out[c] = silu(out[c]);
}

static void conv1d_seq_ref(float *out, int64_t ldo, float *state, const float *x, int64_t ldx,
                           int64_t n, const float *w, int64_t k, int64_t c0, int64_t c1) {
    for (int64_t t = 0; t < n; t++)
        conv1d_step_ref(out + t * ldo, state, x + t * ldx, w, k, c0, c1);
}

/* Spec §6.6, with row c of the transposed state S_c = S[c*dk .. c*dk+dk) holding column c of
 * the spec's S. Steps per row: decay, read u = S_c.k, delta, write S_c += k*delta, output from
 * the updated row. Rows are independent, so doing all five steps row by row is exact. */
static void delta_rule_step_ref(float *S, const float *q, const float *k, const float *v,
                                float decay, float beta, float *o, int64_t dk, int64_t dv) {
    for (int64_t c = 0; c < dv; c++) {
        float *Sc = S + c * dk;
        for (int64_t i = 0; i < dk; i++)
            Sc[i] *= decay;
        float u = dot(Sc, k, dk);
        float delta = beta * (v[c] - u);
        for (int64_t i = 0; i < dk; i++)
            Sc[i] += k[i] * delta;
        o[c] = dot(Sc, q, dk);
    }
}

/* Spec §6.7 for chunks of up to DELTA_CHUNK tokens. Scratch: A (C x C; the decayed k.k
 * system, later the decayed q.k weights), U (C x dv; becomes Delta), W (C x dk), gam (C). */
static void delta_rule_chunk_ref(float *S, const float *q, int64_t ldq, const float *k, int64_t ldk,
                                 const float *v, int64_t ldv, const float *g, const float *beta,
                                 float *o, int64_t ldo, int64_t n, int64_t dk, int64_t dv,
                                 float *scratch) {
    const int64_t C = DELTA_CHUNK;
    float *A = scratch, *U = A + C * C, *W = U + C * dv, *gam = W + C * dk;
    for (int64_t t0 = 0; t0 < n; t0 += C) {
        int64_t m = n - t0 < C ? n - t0 : C;
        const float *qc = q + t0 * ldq, *kc = k + t0 * ldk, *vc = v + t0 * ldv;
        const float *bc = beta + t0;
        float *oc = o + t0 * ldo;
        /* gamma_i: cumulative log decay inside the chunk */
        for (int64_t i = 0; i < m; i++)
            gam[i] = (i ? gam[i - 1] : 0.0f) + g[t0 + i];
        /* A_ij = beta_i exp(gam_i - gam_j) k_i.k_j, j < i */
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < i; j++)
                A[i * C + j] = bc[i] * expf(gam[i] - gam[j]) * dot(kc + i * ldk, kc + j * ldk, dk);
        /* forward substitution: (I + A) U = beta v, (I + A) W = beta Gamma k */
        for (int64_t i = 0; i < m; i++) {
            float *Ui = U + i * dv, *Wi = W + i * dk;
            float bg = bc[i] * expf(gam[i]);
            for (int64_t c = 0; c < dv; c++)
                Ui[c] = bc[i] * vc[i * ldv + c];
            for (int64_t c = 0; c < dk; c++)
                Wi[c] = bg * kc[i * ldk + c];
            for (int64_t j = 0; j < i; j++) {
                float a = A[i * C + j];
                for (int64_t c = 0; c < dv; c++)
                    Ui[c] -= a * U[j * dv + c];
                for (int64_t c = 0; c < dk; c++)
                    Wi[c] -= a * W[j * dk + c];
            }
        }
        /* Delta = U - W S0: row i is token i's delta */
        for (int64_t i = 0; i < m; i++)
            for (int64_t c = 0; c < dv; c++)
                U[i * dv + c] -= dot(W + i * dk, S + c * dk, dk);
        /* outputs: o_i = Gamma_i q_i S0 + sum_{j<=i} exp(gam_i - gam_j) (q_i.k_j) Delta_j */
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j <= i; j++)
                A[i * C + j] = expf(gam[i] - gam[j]) * dot(qc + i * ldq, kc + j * ldk, dk);
        for (int64_t i = 0; i < m; i++) {
            float Gi = expf(gam[i]);
            for (int64_t c = 0; c < dv; c++) {
                float acc = Gi * dot(qc + i * ldq, S + c * dk, dk);
                for (int64_t j = 0; j <= i; j++)
                    acc += A[i * C + j] * U[j * dv + c];
                oc[i * ldo + c] = acc;
            }
        }
        /* state: S = Gamma_m S0 + sum_j exp(gam_m - gam_j) k_j Delta_j^T */
        float Gm = expf(gam[m - 1]);
        for (int64_t j = 0; j < m; j++)
            gam[j] = expf(gam[m - 1] - gam[j]); /* gam is not needed any more */
        for (int64_t c = 0; c < dv; c++) {
            float *Sc = S + c * dk;
            for (int64_t i = 0; i < dk; i++)
                Sc[i] *= Gm;
            for (int64_t j = 0; j < m; j++) {
                float f = gam[j] * U[j * dv + c];
                const float *kj = kc + j * ldk;
                for (int64_t i = 0; i < dk; i++)
                    Sc[i] += f * kj[i];
            }
        }
    }
}

static void softmax_ref(float *x, int64_t n) {
    if (n <= 0) return;
    float mx = x[0];
    for (int64_t i = 1; i < n; i++)
        mx = fmaxf(mx, x[i]);
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int64_t i = 0; i < n; i++)
        x[i] *= inv;
}

static void attention_ref(float *o, const float *q, const float *k_cache, const float *v_cache,
                          int64_t kv_stride, int64_t n_ctx, int64_t head_dim, float scale,
                          float *scratch) {
    for (int64_t t = 0; t < n_ctx; t++)
        scratch[t] = dot(q, k_cache + t * kv_stride, head_dim) * scale;
    softmax_ref(scratch, n_ctx);
    for (int64_t i = 0; i < head_dim; i++)
        o[i] = 0.0f;
    for (int64_t t = 0; t < n_ctx; t++) {
        const float *vt = v_cache + t * kv_stride;
        for (int64_t i = 0; i < head_dim; i++)
            o[i] += scratch[t] * vt[i];
    }
}

static void silu_mul_ref(float *out, const float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        out[i] = silu(g[i]) * u[i];
}

static void add_ref(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

const struct ops_table ops_ref = {
    .isa = "ref",
    .matmul =
        {
            [DT_F32] = matmul_ref,
            [DT_F16] = matmul_ref,
            [DT_BF16] = matmul_ref,
            [DT_Q4_0] = matmul_ref,
            [DT_Q4_1] = matmul_ref,
            [DT_Q5_0] = matmul_ref,
            [DT_Q5_1] = matmul_ref,
            [DT_Q8_0] = matmul_ref,
            [DT_Q4_K] = matmul_ref,
            [DT_Q4_K_X16] = matmul_x16_ref,
            [DT_Q5_K_X16] = matmul_x16_ref,
            [DT_Q6_K_X16] = matmul_x16_ref,
            [DT_Q5_K] = matmul_ref,
            [DT_Q6_K] = matmul_ref,
        },
    .matmul_q =
        {
            [DT_Q8_0] = matmul_q_q8_0_ref,
            [DT_Q4_0] = matmul_q_q4_0_ref,
            [DT_Q5_0] = matmul_q_q5_0_ref,
            [DT_Q4_K] = matmul_q_q4_k_ref,
            [DT_Q4_K_X16] = matmul_q_x16_ref,
            [DT_Q5_K_X16] = matmul_q_x16_ref,
            [DT_Q6_K_X16] = matmul_q_x16_ref,
            [DT_Q5_K] = matmul_q_q5_k_ref,
            [DT_Q6_K] = matmul_q_q6_k_ref,
        },
    .quantize_act = {[DT_Q8_0] = quantize_act_q8_0, [DT_Q8_K] = quantize_row_q8_k},
    .dequantize_row =
        {
            [DT_F32] = dequantize_row_f32,
            [DT_F16] = dequantize_row_f16,
            [DT_BF16] = dequantize_row_bf16,
            [DT_Q4_0] = dequantize_row_q4_0,
            [DT_Q4_1] = dequantize_row_q4_1,
            [DT_Q5_0] = dequantize_row_q5_0,
            [DT_Q5_1] = dequantize_row_q5_1,
            [DT_Q8_0] = dequantize_row_q8_0,
            [DT_Q4_K] = dequantize_row_q4_k,
            [DT_Q5_K] = dequantize_row_q5_k,
            [DT_Q6_K] = dequantize_row_q6_k,
            [DT_Q8_K] = dequantize_row_q8_k,
        },
    .quantize_row =
        {
            [DT_F32] = quantize_row_f32,
            [DT_F16] = quantize_row_f16,
            [DT_BF16] = quantize_row_bf16,
            [DT_Q4_0] = quantize_row_q4_0,
            [DT_Q4_1] = quantize_row_q4_1,
            [DT_Q5_0] = quantize_row_q5_0,
            [DT_Q5_1] = quantize_row_q5_1,
            [DT_Q8_0] = quantize_row_q8_0,
            [DT_Q4_K] = quantize_row_q4_k,
            [DT_Q5_K] = quantize_row_q5_k,
            [DT_Q6_K] = quantize_row_q6_k,
            [DT_Q8_K] = quantize_row_q8_k,
        },
    .rmsnorm = rmsnorm_ref,
    .gated_rmsnorm = gated_rmsnorm_ref,
    .l2norm_scale = l2norm_scale_ref,
    .rope_neox = rope_neox_ref,
    .conv1d_step = conv1d_step_ref,
    .delta_rule_step = delta_rule_step_ref,
    .delta_rule_chunk = delta_rule_chunk_ref,
    .conv1d_seq = conv1d_seq_ref,
    .attention = attention_ref,
    .silu_mul = silu_mul_ref,
    .add = add_ref,
    .softmax = softmax_ref,
};
