/* ops/matmul_q_x86.h: quantized-activation matmul kernels (ops.h matmul_q_fn) on 256-bit
 * integer vectors, included by ops_avx2.c and ops_avx512.c (twice: with and without VNNI).
 * The includer defines QSFX (name suffix), QATTR (function attributes, e.g. a target) and
 * QVNNI (0: maddubs+madd, 1: vpdpbusd/vpdpwssd). Not a public header.
 *
 * Per weight block the codes are unpacked once into registers and then multiplied with the
 * activation blocks of up to QG tokens (u8 x s8 byte products, exact int32 sums). The float
 * part per block is acc += cvt(int32 partial sums) * (d_w * d_x), kept in 8 lanes per token and
 * reduced once at the end of the row; a token's result does not depend on n or on its group.
 * Large batches are walked in tiles of QTILE tokens so a tile of activations stays in L2 while
 * the thread's rows stream past it. */
#include "ops/ops.h"
#include "ops/quant.h"

#include <immintrin.h>
#include <string.h>

#define QG    4  /* tokens per pass over a weight row */
#define QTILE 32 /* tokens per tile */

#define QCAT2(a, b) a##_##b
#define QCAT(a, b)  QCAT2(a, b)
#define QN(name)    QCAT(name, QSFX)

/* sum of 32 u8 x s8 products in groups of 4 -> 8 int32 lanes, added to acc */
static inline QATTR __m256i QN(dot_u8s8)(__m256i acc, __m256i u, __m256i s) {
#if QVNNI
    return _mm256_dpbusd_epi32(acc, u, s);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

/* acc += pairs of (u8 x s8 pair sums) times int16 scales: K-quant sub-block scaling */
static inline QATTR __m256i QN(dot_scaled)(__m256i acc, __m256i u, __m256i s, __m256i sc16) {
    __m256i p = _mm256_maddubs_epi16(u, s); /* |p| <= 63*127*2: no saturation */
#if QVNNI
    return _mm256_dpwssd_epi32(acc, p, sc16);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, sc16));
#endif
}

static inline QATTR float QN(hsum)(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline QATTR __m256i QN(load256)(const void *p) {
    return _mm256_loadu_si256((const __m256i *)p);
}

/* ---- Q8_0-activation types: one block of 32 signed codes ------------------------------ */

struct QN(u32) {
    __m256i a; /* |w| as u8 */
    __m256i w; /* w as s8 (its sign goes onto the activations) */
    float d;
};

static inline QATTR void QN(unpack_q8_0)(const uint8_t *p, struct QN(u32) * u) {
    const struct block_q8_0 *b = (const struct block_q8_0 *)(const void *)p;
    u->w = QN(load256)(b->qs);
    u->a = _mm256_sign_epi8(u->w, u->w);
    u->d = _cvtsh_ss(b->d);
}

/* 16 bytes of nibbles -> 32 u8 values: low nibbles first, then high (elements 0..31) */
static inline QATTR __m256i QN(nibbles32)(const uint8_t *qs) {
    __m128i q = _mm_loadu_si128((const __m128i *)(const void *)qs);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    return _mm256_and_si256(v, _mm256_set1_epi8(15));
}

static inline QATTR void QN(unpack_q4_0)(const uint8_t *p, struct QN(u32) * u) {
    const struct block_q4_0 *b = (const struct block_q4_0 *)(const void *)p;
    u->w = _mm256_sub_epi8(QN(nibbles32)(b->qs), _mm256_set1_epi8(8));
    u->a = _mm256_sign_epi8(u->w, u->w);
    u->d = _cvtsh_ss(b->d);
}

static inline QATTR void QN(unpack_q5_0)(const uint8_t *p, struct QN(u32) * u) {
    const struct block_q5_0 *b = (const struct block_q5_0 *)(const void *)p;
    uint32_t qh;
    memcpy(&qh, b->qh, 4);
    /* spread bit j of qh to byte j: broadcast, pick each byte's source byte, test its bit */
    __m256i h = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh),
                                    _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                                      0x0101010101010101, 0));
    __m256i bit = _mm256_set1_epi64x((int64_t)0x8040201008040201);
    h = _mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit); /* 0xff where the 5th bit is set */
    __m256i q = _mm256_or_si256(QN(nibbles32)(b->qs), _mm256_and_si256(h, _mm256_set1_epi8(16)));
    u->w = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
    u->a = _mm256_sign_epi8(u->w, u->w);
    u->d = _cvtsh_ss(b->d);
}

static inline QATTR __m256 QN(bdot_q8)(const struct QN(u32) * u, const uint8_t *xb, __m256 acc) {
    const struct block_q8_0 *y = (const struct block_q8_0 *)(const void *)xb;
    __m256i s = _mm256_sign_epi8(QN(load256)(y->qs), u->w);
    __m256i p = QN(dot_u8s8)(_mm256_setzero_si256(), u->a, s);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(u->d * _cvtsh_ss(y->d)), acc);
}

/* ---- Q8_K-activation types: 256 codes as 8 vectors of 32 unsigned bytes --------------- */

struct QN(uk) {
    __m256i q[8];    /* codes of values 32s..32s+31 */
    __m256i sc[8];   /* int16 scales for the maddubs pair sums of piece s */
    __m256i mn16;    /* int16 per 16 values: min codes (Q4_K/Q5_K) or scales (Q6_K) */
    float d, dmin;
};

/* (scale, min) bytes of a Q4_K/Q5_K block: sc[0..7] then mn[0..7] (quant_scale_min_k4 for
 * all eight sub-blocks at once: low 6 bits of bytes 0..7 for s < 4, nibbles of bytes 8..11 with
 * the top two bits of bytes 0..7 for s >= 4). */
static inline QATTR void QN(scales_k4)(const uint8_t *S, uint8_t out[16]) {
    uint32_t a[3], r[4];
    memcpy(a, S, 12);
    r[0] = a[0] & 0x3f3f3f3fu;                                               /* sc 0..3 */
    r[1] = (a[2] & 0x0f0f0f0fu) | (((a[0] >> 6) & 0x03030303u) << 4);        /* sc 4..7 */
    r[2] = a[1] & 0x3f3f3f3fu;                                               /* mn 0..3 */
    r[3] = ((a[2] >> 4) & 0x0f0f0f0fu) | (((a[1] >> 6) & 0x03030303u) << 4); /* mn 4..7 */
    memcpy(out, r, 16);
}

static inline QATTR void QN(prep_k45)(const uint8_t *scales, uint16_t d, uint16_t dmin,
                                      struct QN(uk) * u) {
    uint8_t sm[16];
    QN(scales_k4)(scales, sm);
    for (int s = 0; s < 8; s++)
        u->sc[s] = _mm256_set1_epi16(sm[s]);
    __m128i m = _mm_loadl_epi64((const __m128i *)(const void *)(sm + 8));
    u->mn16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m)); /* each min for two bsums */
    u->d = _cvtsh_ss(d);
    u->dmin = _cvtsh_ss(dmin);
}

static inline QATTR void QN(unpack_q4_k)(const uint8_t *p, struct QN(uk) * u) {
    const struct block_q4_k *b = (const struct block_q4_k *)(const void *)p;
    __m256i m4 = _mm256_set1_epi8(15);
    for (int c = 0; c < 4; c++) {
        __m256i q = QN(load256)(b->qs + 32 * c);
        u->q[2 * c] = _mm256_and_si256(q, m4);
        u->q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
    }
    QN(prep_k45)(b->scales, b->d, b->dmin, u);
}

static inline QATTR void QN(unpack_q5_k)(const uint8_t *p, struct QN(uk) * u) {
    const struct block_q5_k *b = (const struct block_q5_k *)(const void *)p;
    __m256i m4 = _mm256_set1_epi8(15), one = _mm256_set1_epi8(1);
    __m256i qh = QN(load256)(b->qh);
    for (int c = 0; c < 4; c++) {
        __m256i q = QN(load256)(b->qs + 32 * c);
        /* bit s of qh[l] is the fifth bit of sub-block s (s = 2c low nibbles, 2c+1 high) */
        __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one);
        __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one);
        u->q[2 * c] = _mm256_or_si256(_mm256_and_si256(q, m4), _mm256_slli_epi16(h0, 4));
        u->q[2 * c + 1] =
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), _mm256_slli_epi16(h1, 4));
    }
    QN(prep_k45)(b->scales, b->d, b->dmin, u);
}

static inline QATTR void QN(unpack_q6_k)(const uint8_t *p, struct QN(uk) * u) {
    const struct block_q6_k *b = (const struct block_q6_k *)(const void *)p;
    __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; h++) {
        __m256i L0 = QN(load256)(b->ql + 64 * h), L1 = QN(load256)(b->ql + 64 * h + 32);
        __m256i H = QN(load256)(b->qh + 32 * h);
        /* quarter j of the half: low nibble source L0/L1/L0>>4/L1>>4, high bits (H >> 2j) & 3 */
        __m256i lo[4] = {_mm256_and_si256(L0, m4), _mm256_and_si256(L1, m4),
                         _mm256_and_si256(_mm256_srli_epi16(L0, 4), m4),
                         _mm256_and_si256(_mm256_srli_epi16(L1, 4), m4)};
        for (int j = 0; j < 4; j++) {
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(H, 2 * j), m2);
            u->q[4 * h + j] = _mm256_or_si256(lo[j], _mm256_slli_epi16(hi, 4));
        }
    }
    for (int s = 0; s < 8; s++) /* maddubs lanes 0..7 cover values 0..15 of the piece */
        u->sc[s] = _mm256_set_m128i(_mm_set1_epi16(b->scales[2 * s + 1]),
                                    _mm_set1_epi16(b->scales[2 * s]));
    u->mn16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)b->scales));
    u->d = _cvtsh_ss(b->d);
    u->dmin = 0.0f;
}

/* sum_s sc_s * (q_s . y_s) as 8 int32 lanes */
static inline QATTR __m256i QN(kdot)(const struct QN(uk) * u, const struct block_q8_k *y) {
    __m256i acc = _mm256_setzero_si256();
    for (int s = 0; s < 8; s++)
        acc = QN(dot_scaled)(acc, u->q[s], QN(load256)(y->qs + 32 * s), u->sc[s]);
    return acc;
}

static inline QATTR __m256 QN(bdot_k45)(const struct QN(uk) * u, const uint8_t *xb, __m256 acc) {
    const struct block_q8_k *y = (const struct block_q8_k *)(const void *)xb;
    __m256i isum = QN(kdot)(u, y);
    __m256i msum = _mm256_madd_epi16(QN(load256)(y->bsums), u->mn16);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(u->d * y->d), acc);
    return _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_set1_ps(u->dmin * y->d), acc);
}

/* Q6_K codes are q + 32 (unsigned): subtract 32 * sum_g sc_g * bsum_g */
static inline QATTR __m256 QN(bdot_q6_k)(const struct QN(uk) * u, const uint8_t *xb, __m256 acc) {
    const struct block_q8_k *y = (const struct block_q8_k *)(const void *)xb;
    __m256i isum = QN(kdot)(u, y);
    __m256i off = _mm256_madd_epi16(QN(load256)(y->bsums), u->mn16);
    isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(off, 5));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(u->d * y->d), acc);
}

/* ---- the driver ------------------------------------------------------------------------- */

// clang-format off
#define QDEF(T, UT, BB, AB, UNPACK, BDOT)                                                          \
    static inline QATTR __attribute__((always_inline)) void QN(T##_row)(                           \
        const uint8_t *row, int64_t nb, const uint8_t *xq, size_t ldxq, float *y, int64_t ldy,     \
        const int g) {                                                                             \
        __m256 acc[QG];                                                                            \
        for (int t = 0; t < g; t++) acc[t] = _mm256_setzero_ps();                                  \
        for (int64_t i = 0; i < nb; i++) {                                                         \
            UT u;                                                                                  \
            UNPACK(row + (size_t)i * (BB), &u);                                                    \
            for (int t = 0; t < g; t++)                                                            \
                acc[t] = BDOT(&u, xq + (size_t)t * ldxq + (size_t)i * (AB), acc[t]);               \
        }                                                                                          \
        for (int t = 0; t < g; t++) y[t * ldy] = QN(hsum)(acc[t]);                                 \
    }                                                                                              \
    static QATTR void QN(matmul_q_##T)(const struct mat *w, const void *restrict xq, size_t ldxq,  \
                                       int64_t n, float *restrict y, int64_t ldy, int64_t r0,      \
                                       int64_t r1) {                                               \
        int64_t nb = w->cols / dtype_traits[w->dt].block;                                          \
        for (int64_t t0 = 0; t0 < n; t0 += QTILE) {                                                \
            int64_t te = n - t0 < QTILE ? n : t0 + QTILE;                                          \
            for (int64_t r = r0; r < r1; r++) {                                                    \
                const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;          \
                for (int64_t t = t0; t < te; t += QG) {                                            \
                    const uint8_t *xt = (const uint8_t *)xq + (size_t)t * ldxq;                    \
                    float *yt = y + t * ldy + r;                                                   \
                    switch (te - t < QG ? (int)(te - t) : QG) {                                    \
                    case 1: QN(T##_row)(row, nb, xt, ldxq, yt, ldy, 1); break;                     \
                    case 2: QN(T##_row)(row, nb, xt, ldxq, yt, ldy, 2); break;                     \
                    case 3: QN(T##_row)(row, nb, xt, ldxq, yt, ldy, 3); break;                     \
                    default: QN(T##_row)(row, nb, xt, ldxq, yt, ldy, 4); break;                    \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

QDEF(q8_0, struct QN(u32), 34,  34,  QN(unpack_q8_0), QN(bdot_q8))
QDEF(q4_0, struct QN(u32), 18,  34,  QN(unpack_q4_0), QN(bdot_q8))
QDEF(q5_0, struct QN(u32), 22,  34,  QN(unpack_q5_0), QN(bdot_q8))
QDEF(q4_k, struct QN(uk),  144, 292, QN(unpack_q4_k), QN(bdot_k45))
QDEF(q5_k, struct QN(uk),  176, 292, QN(unpack_q5_k), QN(bdot_k45))
QDEF(q6_k, struct QN(uk),  210, 292, QN(unpack_q6_k), QN(bdot_q6_k))
// clang-format on

/* Table slots for one suffix: .matmul_q = {QSLOTS(avx2)} */
#define QSLOTS(S)                                                                                  \
    [DT_Q8_0] = matmul_q_q8_0_##S, [DT_Q4_0] = matmul_q_q4_0_##S, [DT_Q5_0] = matmul_q_q5_0_##S,   \
    [DT_Q4_K] = matmul_q_q4_k_##S, [DT_Q5_K] = matmul_q_q5_k_##S, [DT_Q6_K] = matmul_q_q6_k_##S

#undef QDEF
