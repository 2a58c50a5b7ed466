/* ops/ops_avx512.c: AVX-512 kernels (built with -mavx512f -mavx512bw -mavx512vl -mavx512dq
 * -mfma -mf16c). Activations stay f32: each 32-value piece of a weight row is dequantized into
 * two registers and FMA'd with up to 8 tokens at once, so a weight block is unpacked once per
 * group of 8 tokens. Each token keeps its own two accumulators in a fixed order, so its result
 * does not depend on n, on the token's group, or on the row split. Differences from ops_ref
 * are summation order (and fused multiply-adds) only. Slots left NULL come from ops_ref. */
#include "common/assert.h"
#include "ops/ops.h"
#include "ops/quant.h"
#include "ops/repack.h"

#include <immintrin.h>
#include <math.h>

#define G 8 /* tokens per pass over a weight row */

static inline float h2f(uint16_t h) {
    return _cvtsh_ss(h);
}

/* Per-block state computed once per block (scales), then used by each 32-value piece. */
struct prep {
    float d[16], m[8];
};

/* ---- per-type: PREP(block, prep) and DEQ(block, prep, piece, v0, v1) ------------------- */

#define NOPREP(b, P) (void)(b), (void)(P)

static inline void deq_f32(const uint8_t *p, const struct prep *P, int s, __m512 *v0, __m512 *v1) {
    (void)P, (void)s;
    const float *f = (const float *)(const void *)p;
    *v0 = _mm512_loadu_ps(f);
    *v1 = _mm512_loadu_ps(f + 16);
}

static inline void deq_f16(const uint8_t *p, const struct prep *P, int s, __m512 *v0, __m512 *v1) {
    (void)P, (void)s;
    *v0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)p));
    *v1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(p + 32)));
}

static inline __m512 bf16x16(const uint8_t *p) {
    __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
}

static inline void deq_bf16(const uint8_t *p, const struct prep *P, int s, __m512 *v0, __m512 *v1) {
    (void)P, (void)s;
    *v0 = bf16x16(p);
    *v1 = bf16x16(p + 32);
}

static inline void deq_q8_0(const uint8_t *p, const struct prep *P, int s, __m512 *v0, __m512 *v1) {
    (void)P, (void)s;
    const struct block_q8_0 *b = (const struct block_q8_0 *)(const void *)p;
    __m512 d = _mm512_set1_ps(h2f(b->d));
    __m128i q0 = _mm_loadu_si128((const __m128i *)(const void *)b->qs);
    __m128i q1 = _mm_loadu_si128((const __m128i *)(const void *)(b->qs + 16));
    *v0 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0)));
    *v1 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1)));
}

/* 16 packed bytes -> low nibbles (elements 0..15) and high nibbles (16..31) as int32 x16. */
static inline void nibbles16(const uint8_t *qs, __m512i *lo, __m512i *hi) {
    __m128i q = _mm_loadu_si128((const __m128i *)(const void *)qs);
    __m128i m = _mm_set1_epi8(15);
    *lo = _mm512_cvtepu8_epi32(_mm_and_si128(q, m));
    *hi = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), m));
}

static inline void deq_q4_0(const uint8_t *p, const struct prep *P, int s, __m512 *v0, __m512 *v1) {
    (void)P, (void)s;
    const struct block_q4_0 *b = (const struct block_q4_0 *)(const void *)p;
    __m512 d = _mm512_set1_ps(h2f(b->d));
    __m512i lo, hi, eight = _mm512_set1_epi32(8);
    nibbles16(b->qs, &lo, &hi);
    *v0 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(lo, eight)));
    *v1 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(hi, eight)));
}

static inline void deq_q5_0(const uint8_t *p, const struct prep *P, int s, __m512 *v0, __m512 *v1) {
    (void)P, (void)s;
    const struct block_q5_0 *b = (const struct block_q5_0 *)(const void *)p;
    __m512 d = _mm512_set1_ps(h2f(b->d));
    uint32_t qh = (uint32_t)b->qh[0] | (uint32_t)b->qh[1] << 8 | (uint32_t)b->qh[2] << 16 |
                  (uint32_t)b->qh[3] << 24;
    __m512i lo, hi, sixteen = _mm512_set1_epi32(16);
    nibbles16(b->qs, &lo, &hi);
    /* fifth bit: element j gets +16 where bit j of qh is set; then the -16 offset */
    lo = _mm512_mask_add_epi32(lo, (__mmask16)(qh & 0xffff), lo, sixteen);
    hi = _mm512_mask_add_epi32(hi, (__mmask16)(qh >> 16), hi, sixteen);
    *v0 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(lo, sixteen)));
    *v1 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(hi, sixteen)));
}

static inline void prep_q4_k(const uint8_t *p, struct prep *P) {
    const struct block_q4_k *b = (const struct block_q4_k *)(const void *)p;
    float d = h2f(b->d), dmin = h2f(b->dmin);
    for (int s = 0; s < 8; s++) {
        uint8_t sc, mn;
        quant_scale_min_k4(s, b->scales, &sc, &mn);
        P->d[s] = d * (float)sc;
        P->m[s] = dmin * (float)mn;
    }
}

/* 32 bytes -> 32 int32 in two registers. */
static inline void widen32(__m256i q, __m512i *lo, __m512i *hi) {
    *lo = _mm512_cvtepu8_epi32(_mm256_castsi256_si128(q));
    *hi = _mm512_cvtepu8_epi32(_mm256_extracti128_si256(q, 1));
}

static inline void deq_q4_k(const uint8_t *p, const struct prep *P, int s, __m512 *v0, __m512 *v1) {
    const struct block_q4_k *b = (const struct block_q4_k *)(const void *)p;
    /* piece s: chunk s/2 of qs, low nibbles for even s, high nibbles for odd s */
    __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)(b->qs + 32 * (s / 2)));
    if (s & 1) q = _mm256_srli_epi16(q, 4);
    q = _mm256_and_si256(q, _mm256_set1_epi8(15));
    __m512i lo, hi;
    widen32(q, &lo, &hi);
    __m512 d = _mm512_set1_ps(P->d[s]), m = _mm512_set1_ps(P->m[s]);
    *v0 = _mm512_fmsub_ps(d, _mm512_cvtepi32_ps(lo), m);
    *v1 = _mm512_fmsub_ps(d, _mm512_cvtepi32_ps(hi), m);
}

static inline void prep_q6_k(const uint8_t *p, struct prep *P) {
    const struct block_q6_k *b = (const struct block_q6_k *)(const void *)p;
    float d = h2f(b->d);
    for (int i = 0; i < 16; i++)
        P->d[i] = d * (float)b->scales[i];
}

static inline void deq_q6_k(const uint8_t *p, const struct prep *P, int s, __m512 *v0, __m512 *v1) {
    const struct block_q6_k *b = (const struct block_q6_k *)(const void *)p;
    /* piece s = values 32s..32s+31: half h = s/4, quarter j = s%4 (spec §12.2 q1..q4) */
    int h = s / 4, j = s % 4;
    __m256i L = _mm256_loadu_si256((const __m256i *)(const void *)(b->ql + 64 * h + 32 * (j & 1)));
    __m256i H = _mm256_loadu_si256((const __m256i *)(const void *)(b->qh + 32 * h));
    __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3);
    __m256i lo4 = _mm256_and_si256(j < 2 ? L : _mm256_srli_epi16(L, 4), m4);
    __m256i hi2 = _mm256_and_si256(_mm256_srl_epi16(H, _mm_cvtsi32_si128(2 * j)), m2);
    __m256i q = _mm256_or_si256(lo4, _mm256_slli_epi16(hi2, 4));
    __m512i lo, hi, off = _mm512_set1_epi32(32);
    widen32(q, &lo, &hi);
    *v0 = _mm512_mul_ps(_mm512_set1_ps(P->d[2 * s]), _mm512_cvtepi32_ps(_mm512_sub_epi32(lo, off)));
    *v1 = _mm512_mul_ps(_mm512_set1_ps(P->d[2 * s + 1]),
                        _mm512_cvtepi32_ps(_mm512_sub_epi32(hi, off)));
}

/* ---- the matmul driver ----------------------------------------------------------------- */

/* One row, tokens [0, g) of x (g <= G, a constant after inlining): QK values per block of
 * BB bytes, 32 values per piece. Float types may have a tail of cols % 32 values. */
// clang-format off
#define DEF_MATMUL(NAME, QK, BB, PREP, DEQ, TAILF)                                                \
    static inline __attribute__((always_inline)) void NAME##_row(                                \
        const uint8_t *row, int64_t cols, const float *restrict x, int64_t ldx, float *restrict y, \
        int64_t ldy, const int g) {                                                                \
        __m512 a[G], b[G];                                                                         \
        _Pragma("GCC unroll 8") for (int t = 0; t < g; t++) a[t] = b[t] = _mm512_setzero_ps();     \
        int64_t nb = cols / (QK);                                                                  \
        for (int64_t i = 0; i < nb; i++) {                                                         \
            const uint8_t *blk = row + (size_t)i * (BB);                                           \
            struct prep P;                                                                         \
            PREP(blk, &P);                                                                         \
            for (int s = 0; s < (QK) / 32; s++) {                                                  \
                __m512 v0, v1;                                                                     \
                DEQ(blk, &P, s, &v0, &v1);                                                         \
                const float *xs = x + i * (QK) + s * 32;                                           \
                _Pragma("GCC unroll 8") for (int t = 0; t < g; t++) {                              \
                    a[t] = _mm512_fmadd_ps(v0, _mm512_loadu_ps(xs + t * ldx), a[t]);               \
                    b[t] = _mm512_fmadd_ps(v1, _mm512_loadu_ps(xs + t * ldx + 16), b[t]);          \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 8") for (int t = 0; t < g; t++) {                                      \
            float sum = _mm512_reduce_add_ps(_mm512_add_ps(a[t], b[t]));                           \
            for (int64_t c = nb * (QK); c < cols; c++)                                             \
                sum += TAILF(row, c) * x[t * ldx + c];                                             \
            y[t * ldy] = sum;                                                                      \
        }                                                                                          \
    }                                                                                              \
    static void NAME(const struct mat *w, const float *restrict x, int64_t ldx, int64_t n,         \
                     float *restrict y, int64_t ldy, int64_t r0, int64_t r1) {                     \
        for (int64_t r = r0; r < r1; r++) {                                                        \
            const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;              \
            for (int64_t t0 = 0; t0 < n; t0 += G) {                                                \
                const float *xt = x + t0 * ldx;                                                    \
                float *yt = y + t0 * ldy + r;                                                      \
                switch (n - t0 < G ? (int)(n - t0) : G) {                                          \
                case 1: NAME##_row(row, w->cols, xt, ldx, yt, ldy, 1); break;                      \
                case 2: NAME##_row(row, w->cols, xt, ldx, yt, ldy, 2); break;                      \
                case 3: NAME##_row(row, w->cols, xt, ldx, yt, ldy, 3); break;                      \
                case 4: NAME##_row(row, w->cols, xt, ldx, yt, ldy, 4); break;                      \
                case 5: NAME##_row(row, w->cols, xt, ldx, yt, ldy, 5); break;                      \
                case 6: NAME##_row(row, w->cols, xt, ldx, yt, ldy, 6); break;                      \
                case 7: NAME##_row(row, w->cols, xt, ldx, yt, ldy, 7); break;                      \
                default: NAME##_row(row, w->cols, xt, ldx, yt, ldy, 8); break;                     \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

// clang-format on

static inline float tail_f32(const uint8_t *row, int64_t c) {
    return ((const float *)(const void *)row)[c];
}
static inline float tail_f16(const uint8_t *row, int64_t c) {
    return h2f(((const uint16_t *)(const void *)row)[c]);
}
static inline float tail_bf16(const uint8_t *row, int64_t c) {
    return bf16_to_f32(((const uint16_t *)(const void *)row)[c]);
}
/* Block types have no tail: rows are whole blocks. */
static inline float tail_none(const uint8_t *row, int64_t c) {
    (void)row, (void)c;
    return 0.0f;
}

// clang-format off
DEF_MATMUL(matmul_f32_avx512,  32,  128, NOPREP,    deq_f32,  tail_f32)
DEF_MATMUL(matmul_f16_avx512,  32,  64,  NOPREP,    deq_f16,  tail_f16)
DEF_MATMUL(matmul_bf16_avx512, 32,  64,  NOPREP,    deq_bf16, tail_bf16)
DEF_MATMUL(matmul_q8_0_avx512, 32,  34,  NOPREP,    deq_q8_0, tail_none)
DEF_MATMUL(matmul_q4_0_avx512, 32,  18,  NOPREP,    deq_q4_0, tail_none)
DEF_MATMUL(matmul_q5_0_avx512, 32,  22,  NOPREP,    deq_q5_0, tail_none)
DEF_MATMUL(matmul_q4_k_avx512, 256, 144, prep_q4_k, deq_q4_k, tail_none)
DEF_MATMUL(matmul_q6_k_avx512, 256, 210, prep_q6_k, deq_q6_k, tail_none)
// clang-format on

/* ---- vector helpers -------------------------------------------------------------------- */

static inline __mmask16 tail_mask(int64_t rem) {
    return (__mmask16)((1u << rem) - 1u);
}

static float dot(const float *a, const float *b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : tail_mask(n - i);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

/* y = y * a + x * b, elementwise over n. */
static void scale_axpy(float *y, float a, const float *x, float b, int64_t n) {
    __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : tail_mask(n - i);
        __m512 yv = _mm512_maskz_loadu_ps(m, y + i);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(xv, vb, _mm512_mul_ps(yv, va)));
    }
}

static void rmsnorm_avx512(float *y, const float *x, const float *w, int64_t n, float eps) {
    float inv = 1.0f / sqrtf(dot(x, x, n) / (float)n + eps);
    __m512 vi = _mm512_set1_ps(inv);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : tail_mask(n - i);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vi);
        if (w) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, w + i));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

/* ---- activation quantizers ----------------------------------------------------------- *
 * Bit for bit quant.c's (tests/ops_checks.c checks ties, zeros, NaN, infinities): the same
 * max |x| (a NaN never wins: vmaxps returns its second operand when either is NaN), the same
 * d and id, codes rounded as lrintf (Q8_K: the current mode, to nearest even, which
 * vcvtps2dq uses) or roundf (Q8_0: ties away from zero), clamped to [-127, 127] with NaN ->
 * -127 (the same vmaxps rule). Blocks are built on the stack and copied out: ops.h promises
 * no alignment of dst. They ran as ref's scalar loops, once per matmul call on the calling
 * thread while the others waited. */
static inline __m512i codes_avx512(__m512 v) {
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
    return _mm512_cvtps_epi32(v);
}

static void quantize_act_q8_k_avx512(const float *restrict src, void *restrict dst, int64_t n) {
    uint8_t *out = dst;
    for (int64_t i = 0; i < n / QK_K; i++, out += sizeof(struct block_q8_k), src += QK_K) {
        __m512 m = _mm512_setzero_ps();
        for (int j = 0; j < QK_K; j += 16)
            m = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(src + j)), m);
        float amax = _mm512_reduce_max_ps(m);
        struct block_q8_k b;
        b.d = amax / 127.0f;
        __m512 id = _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
        for (int g = 0; g < 16; g++) {
            __m512i q = codes_avx512(_mm512_mul_ps(_mm512_loadu_ps(src + 16 * g), id));
            b.bsums[g] = (int16_t)_mm512_reduce_add_epi32(q);
            _mm_storeu_si128((__m128i *)(void *)(b.qs + 16 * g), _mm512_cvtepi32_epi8(q));
        }
        memcpy(out, &b, sizeof b);
    }
}

static void quantize_act_q8_0_avx512(const float *restrict src, void *restrict dst, int64_t n) {
    uint8_t *out = dst;
    for (int64_t i = 0; i < n / 32; i++, out += sizeof(struct block_q8_0), src += 32) {
        __m512 x[2] = {_mm512_loadu_ps(src), _mm512_loadu_ps(src + 16)};
        __m512 m = _mm512_max_ps(_mm512_abs_ps(x[0]), _mm512_setzero_ps());
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x[1]), m));
        float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        struct block_q8_0 b;
        b.d = f32_to_fp16(d);
        for (int h = 0; h < 2; h++) {
            __m512 v = _mm512_mul_ps(x[h], _mm512_set1_ps(id));
            /* roundf: truncate, then one step away from zero where |fraction| >= 0.5 */
            __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            __mmask16 up = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(v, t)),
                                              _mm512_set1_ps(0.5f), _CMP_GE_OQ);
            __m512 one = _mm512_castsi512_ps(_mm512_or_si512(
                _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32((int)0x80000000u)),
                _mm512_castps_si512(_mm512_set1_ps(1.0f))));
            t = _mm512_mask_add_ps(t, up, t, one);
            _mm_storeu_si128((__m128i *)(void *)(b.qs + 16 * h),
                             _mm512_cvtepi32_epi8(codes_avx512(t)));
        }
        memcpy(out, &b, sizeof b);
    }
}

/* e^x, Cephes' expf: x = n ln2 + r (ln2 in two parts), e^r by its degree-7 polynomial, 2^n by
 * vscalefps; within 2 ulp of expf. x is clamped to [-87.3, 88.3] (results stay normal): the
 * callers only form 1 / (1 + e^-x), where beyond that the value no longer moves. */
static inline __m512 exp_avx512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* x / (1 + e^-x) */
static inline __m512 silu_avx512(__m512 x) {
    __m512 e = exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), x));
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

/* out[i] = silu(g[i]) * u[i], or silu(g[i]) where u is NULL */
static void silu_mul_avx512(float *out, const float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : tail_mask(n - i);
        __m512 v = silu_avx512(_mm512_maskz_loadu_ps(m, g + i));
        if (u) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, u + i));
        _mm512_mask_storeu_ps(out + i, m, v);
    }
}

static void gated_rmsnorm_avx512(float *y, const float *x, const float *z, const float *w,
                                 int64_t n, float eps) {
    __m512 vi = _mm512_set1_ps(1.0f / sqrtf(dot(x, x, n) / (float)n + eps));
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : tail_mask(n - i);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vi);
        if (w) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, w + i));
        v = _mm512_mul_ps(v, silu_avx512(_mm512_maskz_loadu_ps(m, z + i)));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

static void l2norm_scale_avx512(float *x, int64_t n, float eps, float scale) {
    __m512 vi = _mm512_set1_ps(scale / sqrtf(dot(x, x, n) + eps));
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vi));
    }
}

/* The taps stay scalar (a channel's state is k - 1 floats of its own); the silu, which cost
 * as much as the taps in scalar expf, runs on the whole channel range at once. */
static void conv1d_seq_avx512(float *out, int64_t ldo, float *state, const float *x, int64_t ldx,
                              int64_t n, const float *w, int64_t k, int64_t c0, int64_t c1) {
    for (int64_t t = 0; t < n; t++) {
        float *o = out + t * ldo;
        conv1d_taps_ref(o, state, x + t * ldx, w, k, c0, c1);
        silu_mul_avx512(o + c0, o + c0, NULL, c1 - c0);
    }
}

/* Same five steps as delta_rule_step_ref, row by row: one pass decays the row and reads
 * u = S_c.k, a second writes S_c += k*delta and reads o_c = S_c.q. */
/* dk = 128 (every Qwen3.5 size): a state row is 8 registers, so it is loaded once, decayed,
 * updated and stored once, with k and q held in registers for all rows (the general loop
 * below stores the decayed row and reads it back). Same operations in the same order. */
static void delta_rule_step128(float *S, const float *q, const float *k, const float *v,
                               float decay, float beta, float *o, int64_t dv) {
    __m512 vd = _mm512_set1_ps(decay), kv[8], qv[8];
    for (int i = 0; i < 8; i++)
        kv[i] = _mm512_loadu_ps(k + 16 * i), qv[i] = _mm512_loadu_ps(q + 16 * i);
    for (int64_t c = 0; c < dv; c++) {
        float *Sc = S + c * 128;
        __m512 s[8], u = _mm512_setzero_ps();
        for (int i = 0; i < 8; i++) {
            s[i] = _mm512_mul_ps(_mm512_loadu_ps(Sc + 16 * i), vd);
            u = _mm512_fmadd_ps(s[i], kv[i], u);
        }
        __m512 vdel = _mm512_set1_ps(beta * (v[c] - _mm512_reduce_add_ps(u)));
        __m512 acc = _mm512_setzero_ps();
        for (int i = 0; i < 8; i++) {
            s[i] = _mm512_fmadd_ps(kv[i], vdel, s[i]);
            _mm512_storeu_ps(Sc + 16 * i, s[i]);
            acc = _mm512_fmadd_ps(s[i], qv[i], acc);
        }
        o[c] = _mm512_reduce_add_ps(acc);
    }
}

static void delta_rule_step_avx512(float *S, const float *q, const float *k, const float *v,
                                   float decay, float beta, float *o, int64_t dk, int64_t dv) {
    if (dk == 128) {
        delta_rule_step128(S, q, k, v, decay, beta, o, dv);
        return;
    }
    __m512 vd = _mm512_set1_ps(decay);
    for (int64_t c = 0; c < dv; c++) {
        float *Sc = S + c * dk;
        __m512 u = _mm512_setzero_ps();
        for (int64_t i = 0; i < dk; i += 16) {
            __mmask16 m = dk - i >= 16 ? (__mmask16)0xffff : tail_mask(dk - i);
            __m512 s = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, Sc + i), vd);
            _mm512_mask_storeu_ps(Sc + i, m, s);
            u = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m, k + i), u);
        }
        float delta = beta * (v[c] - _mm512_reduce_add_ps(u));
        __m512 vdel = _mm512_set1_ps(delta), acc = _mm512_setzero_ps();
        for (int64_t i = 0; i < dk; i += 16) {
            __mmask16 m = dk - i >= 16 ? (__mmask16)0xffff : tail_mask(dk - i);
            __m512 s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, k + i), vdel,
                                       _mm512_maskz_loadu_ps(m, Sc + i));
            _mm512_mask_storeu_ps(Sc + i, m, s);
            acc = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m, q + i), acc);
        }
        o[c] = _mm512_reduce_add_ps(acc);
    }
}

/* On a CPU the chunked form (spec §6.7) does the same flops as n steps, and the SIMD step
 * streams each state row once per token from L1/L2; measured 16x faster than the scalar chunk
 * kernel for n = 512, dk = dv = 128. So the SIMD table runs the steps. */
static void delta_rule_chunk_avx512(float *S, const float *q, int64_t ldq, const float *k,
                                    int64_t ldk, const float *v, int64_t ldv, const float *g,
                                    const float *beta, float *o, int64_t ldo, int64_t n, int64_t dk,
                                    int64_t dv, float *scratch) {
    (void)scratch;
    for (int64_t t = 0; t < n; t++)
        delta_rule_step_avx512(S, q + t * ldq, k + t * ldk, v + t * ldv, expf(g[t]), beta[t],
                               o + t * ldo, dk, dv);
}

static void attention_avx512(float *o, const float *q, const float *k_cache, const float *v_cache,
                             int64_t kv_stride, int64_t n_ctx, int64_t head_dim, float scale,
                             float *scratch) {
    float mx = -INFINITY;
    for (int64_t t = 0; t < n_ctx; t++) {
        scratch[t] = dot(q, k_cache + t * kv_stride, head_dim) * scale;
        mx = fmaxf(mx, scratch[t]);
    }
    float sum = 0.0f;
    for (int64_t t = 0; t < n_ctx; t++) {
        scratch[t] = expf(scratch[t] - mx);
        sum += scratch[t];
    }
    for (int64_t i = 0; i < head_dim; i++)
        o[i] = 0.0f;
    float inv = 1.0f / sum;
    for (int64_t t = 0; t < n_ctx; t++)
        scale_axpy(o, 1.0f, v_cache + t * kv_stride, scratch[t] * inv, head_dim);
}

static void add_avx512(float *y, const float *x, int64_t n) {
    scale_axpy(y, 1.0f, x, 1.0f, n);
}

/* Quantized-activation kernels: 256-bit integer code (the loads are 32-byte pieces of
 * blocks anyway), once plain and once with VNNI (vpdpbusd/vpdpwssd) for CPUs that have
 * avx512_vnni; ops.c installs the VNNI slots as ISA "avx512vnni" after a CPUID check. */
#define QSFX avx512
#define QATTR
#define QVNNI 0
#define QZ512 1
#include "ops/matmul_q_x86.h"
/* after it: the x16 kernels use its helpers */
#include "ops/matmul_q_x16_x86.h"
#undef QSFX
#undef QATTR
#undef QVNNI
#undef QZ512
#define QSFX  avx512vnni
#define QATTR __attribute__((target("avx512vnni")))
#define QVNNI 1
#define QZ512 1
#include "ops/matmul_q_x86.h"
/* after it: the x16 kernels use its helpers */
#include "ops/matmul_q_x16_x86.h"

const matmul_q_fn ops_avx512vnni_matmul_q[DT_COUNT] = {
    QSLOTS(avx512vnni), [DT_Q4_K_X16] = matmul_q_q4_k_x16_avx512vnni,
    [DT_Q5_K_X16] = matmul_q_q5_k_x16_avx512vnni, [DT_Q6_K_X16] = matmul_q_q6_k_x16_avx512vnni};

const struct ops_table ops_avx512 = {
    .isa = "avx512",
    .matmul_q =
        {QSLOTS(avx512), [DT_Q4_K_X16] = matmul_q_q4_k_x16_avx512,
         [DT_Q5_K_X16] = matmul_q_q5_k_x16_avx512, [DT_Q6_K_X16] = matmul_q_q6_k_x16_avx512},
    .matmul =
        {
            [DT_F32] = matmul_f32_avx512,
            [DT_F16] = matmul_f16_avx512,
            [DT_BF16] = matmul_bf16_avx512,
            [DT_Q8_0] = matmul_q8_0_avx512,
            [DT_Q4_0] = matmul_q4_0_avx512,
            [DT_Q5_0] = matmul_q5_0_avx512,
            [DT_Q4_K] = matmul_q4_k_avx512,
            [DT_Q6_K] = matmul_q6_k_avx512,
        },
    .rmsnorm = rmsnorm_avx512,
    .delta_rule_step = delta_rule_step_avx512,
    .delta_rule_chunk = delta_rule_chunk_avx512,
    .attention = attention_avx512,
    .quantize_act = {[DT_Q8_0] = quantize_act_q8_0_avx512, [DT_Q8_K] = quantize_act_q8_k_avx512},
    .silu_mul = silu_mul_avx512,
    .gated_rmsnorm = gated_rmsnorm_avx512,
    .l2norm_scale = l2norm_scale_avx512,
    .conv1d_seq = conv1d_seq_avx512,
    .add = add_avx512,
};
