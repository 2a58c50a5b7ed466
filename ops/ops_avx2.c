/* ops/ops_avx2.c: AVX2 kernels (built with -mavx2 -mfma -mf16c). Same scheme as ops_avx512.c:
 * each 32-value piece of a weight row is dequantized into four 8-float registers and FMA'd with
 * up to 4 tokens at once; each token keeps two accumulators (pieces 0+2 and 1+3) in a fixed
 * order, so its result does not depend on n, on its token group, or on the row split. Slots
 * left NULL come from ops_ref. */
#include "common/assert.h"
#include "ops/ops.h"
#include "ops/quant.h"
#include "ops/repack.h"

#include <immintrin.h>
#include <math.h>

#define G 4 /* tokens per pass over a weight row (16 ymm registers) */

static inline float h2f(uint16_t h) {
    return _cvtsh_ss(h);
}

struct prep {
    float d[16], m[8];
};

#define NOPREP(b, P) (void)(b), (void)(P)

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 16 bytes -> two registers of 8 int32 (unsigned / signed bytes). */
static inline void widen16u(__m128i q, __m256i *a, __m256i *b) {
    *a = _mm256_cvtepu8_epi32(q);
    *b = _mm256_cvtepu8_epi32(_mm_srli_si128(q, 8));
}

static inline __m256 i2f(__m256i v) {
    return _mm256_cvtepi32_ps(v);
}

static inline void deq_f32(const uint8_t *p, const struct prep *P, int s, __m256 *v) {
    (void)P, (void)s;
    const float *f = (const float *)(const void *)p;
    for (int j = 0; j < 4; j++)
        v[j] = _mm256_loadu_ps(f + 8 * j);
}

static inline void deq_f16(const uint8_t *p, const struct prep *P, int s, __m256 *v) {
    (void)P, (void)s;
    for (int j = 0; j < 4; j++)
        v[j] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p + 16 * j)));
}

static inline void deq_bf16(const uint8_t *p, const struct prep *P, int s, __m256 *v) {
    (void)P, (void)s;
    for (int j = 0; j < 4; j++) {
        __m256i u =
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p + 16 * j)));
        v[j] = _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
    }
}

static inline void deq_q8_0(const uint8_t *p, const struct prep *P, int s, __m256 *v) {
    (void)P, (void)s;
    const struct block_q8_0 *b = (const struct block_q8_0 *)(const void *)p;
    __m256 d = _mm256_set1_ps(h2f(b->d));
    for (int j = 0; j < 4; j++) {
        __m128i q = _mm_loadl_epi64((const __m128i *)(const void *)(b->qs + 8 * j));
        v[j] = _mm256_mul_ps(d, i2f(_mm256_cvtepi8_epi32(q)));
    }
}

/* 16 packed bytes -> 32 nibble values as int32 x 4 registers (low nibbles first). */
static inline void nibbles32(const uint8_t *qs, __m256i *n) {
    __m128i q = _mm_loadu_si128((const __m128i *)(const void *)qs);
    __m128i m = _mm_set1_epi8(15);
    widen16u(_mm_and_si128(q, m), &n[0], &n[1]);
    widen16u(_mm_and_si128(_mm_srli_epi16(q, 4), m), &n[2], &n[3]);
}

static inline void deq_q4_0(const uint8_t *p, const struct prep *P, int s, __m256 *v) {
    (void)P, (void)s;
    const struct block_q4_0 *b = (const struct block_q4_0 *)(const void *)p;
    __m256 d = _mm256_set1_ps(h2f(b->d));
    __m256i n[4], eight = _mm256_set1_epi32(8);
    nibbles32(b->qs, n);
    for (int j = 0; j < 4; j++)
        v[j] = _mm256_mul_ps(d, i2f(_mm256_sub_epi32(n[j], eight)));
}

static inline void deq_q5_0(const uint8_t *p, const struct prep *P, int s, __m256 *v) {
    (void)P, (void)s;
    const struct block_q5_0 *b = (const struct block_q5_0 *)(const void *)p;
    __m256 d = _mm256_set1_ps(h2f(b->d));
    uint32_t qh = (uint32_t)b->qh[0] | (uint32_t)b->qh[1] << 8 | (uint32_t)b->qh[2] << 16 |
                  (uint32_t)b->qh[3] << 24;
    __m256i n[4], sixteen = _mm256_set1_epi32(16), one = _mm256_set1_epi32(1);
    __m256i bits = _mm256_set1_epi32((int)qh);
    nibbles32(b->qs, n);
    for (int j = 0; j < 4; j++) {
        /* fifth bit of element 8j+l is bit 8j+l of qh */
        __m256i sh =
            _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(8 * j));
        __m256i hb = _mm256_slli_epi32(_mm256_and_si256(_mm256_srlv_epi32(bits, sh), one), 4);
        v[j] = _mm256_mul_ps(d, i2f(_mm256_sub_epi32(_mm256_or_si256(n[j], hb), sixteen)));
    }
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

/* 32 bytes -> 32 int32 in four registers. */
static inline void widen32u(__m256i q, __m256i *n) {
    widen16u(_mm256_castsi256_si128(q), &n[0], &n[1]);
    widen16u(_mm256_extracti128_si256(q, 1), &n[2], &n[3]);
}

static inline void deq_q4_k(const uint8_t *p, const struct prep *P, int s, __m256 *v) {
    const struct block_q4_k *b = (const struct block_q4_k *)(const void *)p;
    __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)(b->qs + 32 * (s / 2)));
    if (s & 1) q = _mm256_srli_epi16(q, 4);
    q = _mm256_and_si256(q, _mm256_set1_epi8(15));
    __m256i n[4];
    widen32u(q, n);
    __m256 d = _mm256_set1_ps(P->d[s]), m = _mm256_set1_ps(P->m[s]);
    for (int j = 0; j < 4; j++)
        v[j] = _mm256_fmsub_ps(d, i2f(n[j]), m);
}

static inline void prep_q6_k(const uint8_t *p, struct prep *P) {
    const struct block_q6_k *b = (const struct block_q6_k *)(const void *)p;
    float d = h2f(b->d);
    for (int i = 0; i < 16; i++)
        P->d[i] = d * (float)b->scales[i];
}

static inline void deq_q6_k(const uint8_t *p, const struct prep *P, int s, __m256 *v) {
    const struct block_q6_k *b = (const struct block_q6_k *)(const void *)p;
    int h = s / 4, j = s % 4;
    __m256i L = _mm256_loadu_si256((const __m256i *)(const void *)(b->ql + 64 * h + 32 * (j & 1)));
    __m256i H = _mm256_loadu_si256((const __m256i *)(const void *)(b->qh + 32 * h));
    __m256i lo4 = _mm256_and_si256(j < 2 ? L : _mm256_srli_epi16(L, 4), _mm256_set1_epi8(15));
    __m256i hi2 =
        _mm256_and_si256(_mm256_srl_epi16(H, _mm_cvtsi32_si128(2 * j)), _mm256_set1_epi8(3));
    __m256i n[4], off = _mm256_set1_epi32(32);
    widen32u(_mm256_or_si256(lo4, _mm256_slli_epi16(hi2, 4)), n);
    for (int k = 0; k < 4; k++) /* values 8k.. of the piece; 16 values per scale */
        v[k] = _mm256_mul_ps(_mm256_set1_ps(P->d[2 * s + k / 2]), i2f(_mm256_sub_epi32(n[k], off)));
}

// clang-format off
#define DEF_MATMUL(NAME, QK, BB, PREP, DEQ, TAILF)                                                \
    static inline __attribute__((always_inline)) void NAME##_row(                                \
        const uint8_t *row, int64_t cols, const float *restrict x, int64_t ldx, float *restrict y, \
        int64_t ldy, const int g) {                                                                \
        __m256 a[G], b[G];                                                                         \
        _Pragma("GCC unroll 4") for (int t = 0; t < g; t++) a[t] = b[t] = _mm256_setzero_ps();     \
        int64_t nb = cols / (QK);                                                                  \
        for (int64_t i = 0; i < nb; i++) {                                                         \
            const uint8_t *blk = row + (size_t)i * (BB);                                           \
            struct prep P;                                                                         \
            PREP(blk, &P);                                                                         \
            for (int s = 0; s < (QK) / 32; s++) {                                                  \
                __m256 v[4];                                                                       \
                DEQ(blk, &P, s, v);                                                                \
                const float *xs = x + i * (QK) + s * 32;                                           \
                _Pragma("GCC unroll 4") for (int t = 0; t < g; t++) {                              \
                    const float *xt = xs + t * ldx;                                                \
                    a[t] = _mm256_fmadd_ps(v[0], _mm256_loadu_ps(xt), a[t]);                       \
                    b[t] = _mm256_fmadd_ps(v[1], _mm256_loadu_ps(xt + 8), b[t]);                   \
                    a[t] = _mm256_fmadd_ps(v[2], _mm256_loadu_ps(xt + 16), a[t]);                  \
                    b[t] = _mm256_fmadd_ps(v[3], _mm256_loadu_ps(xt + 24), b[t]);                  \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 4") for (int t = 0; t < g; t++) {                                      \
            float sum = hsum(_mm256_add_ps(a[t], b[t]));                                           \
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
                default: NAME##_row(row, w->cols, xt, ldx, yt, ldy, 4); break;                     \
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
static inline float tail_none(const uint8_t *row, int64_t c) {
    (void)row, (void)c;
    return 0.0f;
}

// clang-format off
DEF_MATMUL(matmul_f32_avx2,  32,  128, NOPREP,    deq_f32,  tail_f32)
DEF_MATMUL(matmul_f16_avx2,  32,  64,  NOPREP,    deq_f16,  tail_f16)
DEF_MATMUL(matmul_bf16_avx2, 32,  64,  NOPREP,    deq_bf16, tail_bf16)
DEF_MATMUL(matmul_q8_0_avx2, 32,  34,  NOPREP,    deq_q8_0, tail_none)
DEF_MATMUL(matmul_q4_0_avx2, 32,  18,  NOPREP,    deq_q4_0, tail_none)
DEF_MATMUL(matmul_q5_0_avx2, 32,  22,  NOPREP,    deq_q5_0, tail_none)
DEF_MATMUL(matmul_q4_k_avx2, 256, 144, prep_q4_k, deq_q4_k, tail_none)
DEF_MATMUL(matmul_q6_k_avx2, 256, 210, prep_q6_k, deq_q6_k, tail_none)
// clang-format on

/* ---- vector helpers (scalar tails) ----------------------------------------------------- */

static float dot(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    float s = hsum(_mm256_add_ps(s0, s1));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* ---- activation quantizers: bit for bit quant.c's, as in ops_avx512.c ----------------- */
static inline __m256 absf_avx2(__m256 v) {
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

static inline float hmax_avx2(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

/* 8 codes from 8 rounded floats: clamp (NaN -> -127), convert, narrow to 8 bytes at q;
 * returns their sum */
static inline int codes8_avx2(__m256 v, int8_t *q) {
    v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f));
    __m256i c = _mm256_cvtps_epi32(v);
    __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
    _mm_storel_epi64((__m128i *)(void *)q, _mm_packs_epi16(w, w));
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

static void quantize_act_q8_k_avx2(const float *restrict src, void *restrict dst, int64_t n) {
    uint8_t *out = dst;
    for (int64_t i = 0; i < n / QK_K; i++, out += sizeof(struct block_q8_k), src += QK_K) {
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < QK_K; j += 8)
            m = _mm256_max_ps(absf_avx2(_mm256_loadu_ps(src + j)), m);
        float amax = hmax_avx2(m);
        struct block_q8_k b;
        b.d = amax / 127.0f;
        __m256 id = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
        for (int g = 0; g < 16; g++) {
            int s0 = codes8_avx2(_mm256_mul_ps(_mm256_loadu_ps(src + 16 * g), id), b.qs + 16 * g);
            int s1 = codes8_avx2(_mm256_mul_ps(_mm256_loadu_ps(src + 16 * g + 8), id),
                                 b.qs + 16 * g + 8);
            b.bsums[g] = (int16_t)(s0 + s1);
        }
        memcpy(out, &b, sizeof b);
    }
}

static void quantize_act_q8_0_avx2(const float *restrict src, void *restrict dst, int64_t n) {
    uint8_t *out = dst;
    for (int64_t i = 0; i < n / 32; i++, out += sizeof(struct block_q8_0), src += 32) {
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < 32; j += 8)
            m = _mm256_max_ps(absf_avx2(_mm256_loadu_ps(src + j)), m);
        float amax = hmax_avx2(m);
        float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        struct block_q8_0 b;
        b.d = f32_to_fp16(d);
        for (int j = 0; j < 32; j += 8) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(src + j), _mm256_set1_ps(id));
            /* roundf: truncate, then one step away from zero where |fraction| >= 0.5 */
            __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            __m256 up =
                _mm256_cmp_ps(absf_avx2(_mm256_sub_ps(v, t)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
            __m256 one =
                _mm256_or_ps(_mm256_and_ps(v, _mm256_set1_ps(-0.0f)), _mm256_set1_ps(1.0f));
            (void)codes8_avx2(_mm256_add_ps(t, _mm256_and_ps(up, one)), b.qs + j);
        }
        memcpy(out, &b, sizeof b);
    }
}

/* e^x, Cephes' expf as in ops_avx512.c; 2^n is built in the exponent field (n is in
 * [-126, 127] after the clamp, so the result stays normal). */
static inline __m256 exp_avx2(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline __m256 silu_avx2(__m256 x) {
    __m256 e = exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), x));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

/* lanes [0, m) of a vector from p (m <= 8; the rest 0), and back: the tail of a loop over
 * 8-float steps goes through a stack copy so nothing past p + m is touched */
static inline __m256 load_n(const float *p, int64_t m) {
    if (m == 8) return _mm256_loadu_ps(p);
    float b[8] = {0};
    memcpy(b, p, (size_t)m * sizeof(float));
    return _mm256_loadu_ps(b);
}
static inline void store_n(float *p, __m256 v, int64_t m) {
    if (m == 8) {
        _mm256_storeu_ps(p, v);
        return;
    }
    float b[8];
    _mm256_storeu_ps(b, v);
    memcpy(p, b, (size_t)m * sizeof(float));
}

/* out[i] = silu(g[i]) * u[i], or silu(g[i]) where u is NULL */
static void silu_mul_avx2(float *out, const float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i += 8) {
        int64_t m = n - i < 8 ? n - i : 8;
        __m256 v = silu_avx2(load_n(g + i, m));
        if (u) v = _mm256_mul_ps(v, load_n(u + i, m));
        store_n(out + i, v, m);
    }
}

static void gated_rmsnorm_avx2(float *y, const float *x, const float *z, const float *w, int64_t n,
                               float eps) {
    __m256 vi = _mm256_set1_ps(1.0f / sqrtf(dot(x, x, n) / (float)n + eps));
    for (int64_t i = 0; i < n; i += 8) {
        int64_t m = n - i < 8 ? n - i : 8;
        __m256 v = _mm256_mul_ps(load_n(x + i, m), vi);
        if (w) v = _mm256_mul_ps(v, load_n(w + i, m));
        store_n(y + i, _mm256_mul_ps(v, silu_avx2(load_n(z + i, m))), m);
    }
}

static void l2norm_scale_avx2(float *x, int64_t n, float eps, float scale) {
    float inv = scale / sqrtf(dot(x, x, n) + eps);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(inv)));
    for (; i < n; i++)
        x[i] *= inv;
}

/* scalar taps, vector silu over the channel range (see conv1d_seq_avx512) */
static void conv1d_seq_avx2(float *out, int64_t ldo, float *state, const float *x, int64_t ldx,
                            int64_t n, const float *w, int64_t k, int64_t c0, int64_t c1) {
    for (int64_t t = 0; t < n; t++) {
        float *o = out + t * ldo;
        conv1d_taps_ref(o, state, x + t * ldx, w, k, c0, c1);
        silu_mul_avx2(o + c0, o + c0, NULL, c1 - c0);
    }
}

static void rmsnorm_avx2(float *y, const float *x, const float *w, int64_t n, float eps) {
    float inv = 1.0f / sqrtf(dot(x, x, n) / (float)n + eps);
    __m256 vi = _mm256_set1_ps(inv);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), vi);
        if (w) v = _mm256_mul_ps(v, _mm256_loadu_ps(w + i));
        _mm256_storeu_ps(y + i, v);
    }
    for (; i < n; i++)
        y[i] = x[i] * inv * (w ? w[i] : 1.0f);
}

static void delta_rule_step_avx2(float *S, const float *q, const float *k, const float *v,
                                 float decay, float beta, float *o, int64_t dk, int64_t dv) {
    __m256 vd = _mm256_set1_ps(decay);
    for (int64_t c = 0; c < dv; c++) {
        float *Sc = S + c * dk;
        __m256 u = _mm256_setzero_ps();
        int64_t i = 0;
        for (; i + 8 <= dk; i += 8) {
            __m256 s = _mm256_mul_ps(_mm256_loadu_ps(Sc + i), vd);
            _mm256_storeu_ps(Sc + i, s);
            u = _mm256_fmadd_ps(s, _mm256_loadu_ps(k + i), u);
        }
        float us = hsum(u);
        for (; i < dk; i++) {
            Sc[i] *= decay;
            us += Sc[i] * k[i];
        }
        float delta = beta * (v[c] - us);
        __m256 vdel = _mm256_set1_ps(delta), acc = _mm256_setzero_ps();
        for (i = 0; i + 8 <= dk; i += 8) {
            __m256 s = _mm256_fmadd_ps(_mm256_loadu_ps(k + i), vdel, _mm256_loadu_ps(Sc + i));
            _mm256_storeu_ps(Sc + i, s);
            acc = _mm256_fmadd_ps(s, _mm256_loadu_ps(q + i), acc);
        }
        float os = hsum(acc);
        for (; i < dk; i++) {
            Sc[i] += k[i] * delta;
            os += Sc[i] * q[i];
        }
        o[c] = os;
    }
}

/* On a CPU the chunked form (spec §6.7) does the same flops as n steps, and the SIMD step
 * streams each state row once per token from L1/L2; measured 16x faster than the scalar chunk
 * kernel for n = 512, dk = dv = 128. So the SIMD table runs the steps. */
static void delta_rule_chunk_avx2(float *S, const float *q, int64_t ldq, const float *k,
                                  int64_t ldk, const float *v, int64_t ldv, const float *g,
                                  const float *beta, float *o, int64_t ldo, int64_t n, int64_t dk,
                                  int64_t dv, float *scratch) {
    (void)scratch;
    for (int64_t t = 0; t < n; t++)
        delta_rule_step_avx2(S, q + t * ldq, k + t * ldk, v + t * ldv, expf(g[t]), beta[t],
                             o + t * ldo, dk, dv);
}

static void attention_avx2(float *o, const float *q, const float *k_cache, const float *v_cache,
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
    float inv = 1.0f / sum;
    for (int64_t i = 0; i < head_dim; i++)
        o[i] = 0.0f;
    for (int64_t t = 0; t < n_ctx; t++) {
        const float *vt = v_cache + t * kv_stride;
        float a = scratch[t] * inv;
        __m256 va = _mm256_set1_ps(a);
        int64_t i = 0;
        for (; i + 8 <= head_dim; i += 8)
            _mm256_storeu_ps(o + i,
                             _mm256_fmadd_ps(va, _mm256_loadu_ps(vt + i), _mm256_loadu_ps(o + i)));
        for (; i < head_dim; i++)
            o[i] += a * vt[i];
    }
}

#define QSFX avx2
#define QATTR
#define QVNNI 0
#define QZ512 0
#include "ops/matmul_q_x86.h"
/* after it: the x16 kernels use its helpers */
#include "ops/matmul_q_x8_avx2.h"

const struct ops_table ops_avx2 = {
    .isa = "avx2",
    .matmul_q = {QSLOTS(avx2), [DT_Q4_K_X16] = matmul_q_q4_k_x16_avx2,
                 [DT_Q5_K_X16] = matmul_q_q5_k_x16_avx2},
    .matmul =
        {
            [DT_F32] = matmul_f32_avx2,
            [DT_F16] = matmul_f16_avx2,
            [DT_BF16] = matmul_bf16_avx2,
            [DT_Q8_0] = matmul_q8_0_avx2,
            [DT_Q4_0] = matmul_q4_0_avx2,
            [DT_Q5_0] = matmul_q5_0_avx2,
            [DT_Q4_K] = matmul_q4_k_avx2,
            [DT_Q6_K] = matmul_q6_k_avx2,
        },
    .rmsnorm = rmsnorm_avx2,
    .delta_rule_step = delta_rule_step_avx2,
    .delta_rule_chunk = delta_rule_chunk_avx2,
    .attention = attention_avx2,
    .quantize_act = {[DT_Q8_0] = quantize_act_q8_0_avx2, [DT_Q8_K] = quantize_act_q8_k_avx2},
    .silu_mul = silu_mul_avx2,
    .gated_rmsnorm = gated_rmsnorm_avx2,
    .l2norm_scale = l2norm_scale_avx2,
    .conv1d_seq = conv1d_seq_avx2,
};
