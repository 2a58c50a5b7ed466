/* ops/matmul_q_neon.h: quantized-activation matmul kernels (ops.h matmul_q_fn) on AArch64
 * Advanced SIMD, included by ops_neon.c twice: once for the armv8-a baseline and once with the
 * dot-product extension. The includer defines QSFX (name suffix), QATTR (function attributes,
 * e.g. a target) and QDOT (0: widening multiplies smull/smlal + pairwise adds, 1: sdot).
 * Not a public header.
 *
 * Per weight block the codes are unpacked once into int8 registers and multiplied with the
 * activation blocks of up to QG tokens. The integer sum of each (sub-)block is exact: without
 * sdot two products share an int16 lane before the pairwise widening add, which cannot overflow
 * because weight codes are in [-128, 127] and activation codes in [-127, 127] (both activation
 * quantizers clamp), so |a*b + c*d| <= 2 * 128 * 127 < 2^15. The float part per block is
 * acc += cvt(int32 lanes) * (d_w * d_x), four lanes per token, reduced at the end of the row:
 * a token's result depends neither on n nor on its group. */
#include "ops/ops.h"
#include "ops/quant.h"

#include <arm_neon.h>
#include <stddef.h>
#include <string.h>

#define QG 4 /* tokens per pass over a weight row */

#define QCAT2(a, b) a##_##b
#define QCAT(a, b)  QCAT2(a, b)
#define QN(name)    QCAT(name, QSFX)

/* acc += the products of 16 signed bytes, summed in groups (exact int32) */
static inline QATTR int32x4_t QN(dot16)(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if QDOT
    return vdotq_s32(acc, a, b);
#else
    int16x8_t p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    p = vmlal_high_s8(p, a, b);
    return vpadalq_s16(acc, p);
#endif
}

/* 32 products, one int32x4 of partial sums */
static inline QATTR int32x4_t QN(dot32)(int8x16_t a0, int8x16_t a1, const int8_t *x) {
    int32x4_t p = QN(dot16)(vdupq_n_s32(0), a0, vld1q_s8(x));
    return QN(dot16)(p, a1, vld1q_s8(x + 16));
}

static inline QATTR float QN(h2f)(const void *p) {
    uint16_t h;
    memcpy(&h, p, 2); /* activation blocks have any alignment */
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}

/* ---- Q8_0-activation types: one block of 32 codes ------------------------------------- */

struct QN(u32) {
    int8x16_t w0, w1; /* elements 0..15, 16..31 */
    float d;
};

static inline QATTR void QN(unpack_q8_0)(const uint8_t *p, struct QN(u32) * u) {
    const struct block_q8_0 *b = (const struct block_q8_0 *)(const void *)p;
    u->w0 = vld1q_s8(b->qs);
    u->w1 = vld1q_s8(b->qs + 16);
    u->d = QN(h2f)(&b->d);
}

static inline QATTR void QN(unpack_q4_0)(const uint8_t *p, struct QN(u32) * u) {
    const struct block_q4_0 *b = (const struct block_q4_0 *)(const void *)p;
    uint8x16_t q = vld1q_u8(b->qs);
    int8x16_t eight = vdupq_n_s8(8);
    u->w0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(15))), eight);
    u->w1 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), eight);
    u->d = QN(h2f)(&b->d);
}

/* bit j of the 32-bit word qh as byte j (0 or 16), for bytes [16h, 16h + 16) */
static inline QATTR uint8x16_t QN(qh_bits16)(uint8x16_t bytes, int h) {
    static const uint8_t idx[2][16] = {{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1},
                                       {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3}};
    static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    uint8x16_t v = vqtbl1q_u8(bytes, vld1q_u8(idx[h]));
    return vandq_u8(vtstq_u8(v, vld1q_u8(bit)), vdupq_n_u8(16));
}

static inline QATTR void QN(unpack_q5_0)(const uint8_t *p, struct QN(u32) * u) {
    const struct block_q5_0 *b = (const struct block_q5_0 *)(const void *)p;
    uint32_t qh;
    memcpy(&qh, b->qh, 4);
    uint8x16_t hb = vreinterpretq_u8_u32(vdupq_n_u32(qh));
    uint8x16_t q = vld1q_u8(b->qs);
    uint8x16_t lo = vorrq_u8(vandq_u8(q, vdupq_n_u8(15)), QN(qh_bits16)(hb, 0));
    uint8x16_t hi = vorrq_u8(vshrq_n_u8(q, 4), QN(qh_bits16)(hb, 1));
    int8x16_t sixteen = vdupq_n_s8(16);
    u->w0 = vsubq_s8(vreinterpretq_s8_u8(lo), sixteen);
    u->w1 = vsubq_s8(vreinterpretq_s8_u8(hi), sixteen);
    u->d = QN(h2f)(&b->d);
}

// clang-format off
/* The matmul_q_fn of type T over rows [r0, r1): each row once per group of up to QG tokens,
 * through QN(T##_rows) with a compile-time group size; QKB = values per block. */
#define DEF_Q_DRIVER(T, QKB)                                                                       \
    static QATTR void QN(matmul_q_##T)(const struct mat *w, const void *restrict xq, size_t ldxq,  \
                                       int64_t n, float *restrict y, int64_t ldy, int64_t r0,      \
                                       int64_t r1) {                                               \
        int64_t nb = w->cols / (QKB);                                                             \
        for (int64_t r = r0; r < r1; r++) {                                                        \
            const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;              \
            for (int64_t t0 = 0; t0 < n; t0 += QG) {                                               \
                const uint8_t *xt = (const uint8_t *)xq + (size_t)t0 * ldxq;                       \
                float *yt = y + t0 * ldy + r;                                                      \
                switch (n - t0 < QG ? (int)(n - t0) : QG) {                                        \
                case 1: QN(T##_rows)(row, nb, xt, ldxq, yt, ldy, 1); break;                        \
                case 2: QN(T##_rows)(row, nb, xt, ldxq, yt, ldy, 2); break;                        \
                case 3: QN(T##_rows)(row, nb, xt, ldxq, yt, ldy, 3); break;                        \
                default: QN(T##_rows)(row, nb, xt, ldxq, yt, ldy, 4); break;                       \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }
// clang-format on

// clang-format off
#define QDEF_MATMUL_Q32(T, BB)                                                                     \
    static inline QATTR __attribute__((always_inline)) void QN(T##_rows)(                          \
        const uint8_t *row, int64_t nb, const uint8_t *xq, size_t ldxq, float *y, int64_t ldy,     \
        const int g) {                                                                             \
        float32x4_t acc[QG];                                                                       \
        for (int t = 0; t < g; t++) acc[t] = vdupq_n_f32(0.0f);                                    \
        for (int64_t i = 0; i < nb; i++) {                                                         \
            struct QN(u32) u;                                                                      \
            QN(unpack_##T)(row + (size_t)i * (BB), &u);                                            \
            for (int t = 0; t < g; t++) {                                                          \
                const uint8_t *xb = xq + (size_t)t * ldxq + (size_t)i * sizeof(struct block_q8_0); \
                int32x4_t p = QN(dot32)(u.w0, u.w1, (const int8_t *)(xb + 2));                    \
                acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(p), u.d * QN(h2f)(xb));                 \
            }                                                                                      \
        }                                                                                          \
        for (int t = 0; t < g; t++) y[t * ldy] = vaddvq_f32(acc[t]);                               \
    }                                                                                              \
    DEF_Q_DRIVER(T, 32)
// clang-format on

QDEF_MATMUL_Q32(q8_0, 34)
QDEF_MATMUL_Q32(q4_0, 18)
QDEF_MATMUL_Q32(q5_0, 22)

/* ---- Q8_K-activation types: blocks of 256 ---------------------------------------------- */

/* A K-quant block is unpacked whole into 16 code registers (the 32 vector registers of
 * AArch64 hold them plus the accumulators of a group), with one int32 scale per 16 values;
 * per token the block's integer sum sum_g scale_g * (codes_g . x_g) is exact. */
struct QN(kblk) {
    int8x16_t q[16]; /* values 16k .. 16k+15 */
    int32_t sc[16];  /* scale of values 16k .. 16k+15 */
    int16x8_t mn;    /* Q4_K/Q5_K: the 8 sub-block mins */
    float d, dmin;
};

/* (scale, min) bytes of a Q4_K/Q5_K block: sc[0..7] then mn[0..7] (quant_scale_min_k4 for all
 * eight sub-blocks at once: low 6 bits of bytes 0..7 for s < 4, nibbles of bytes 8..11 with the
 * top two bits of bytes 0..7 for s >= 4). */
static inline QATTR void QN(scales_k4)(const uint8_t *S, uint8_t out[16]) {
    uint32_t a[3], r[4];
    memcpy(a, S, 12);
    r[0] = a[0] & 0x3f3f3f3fu;
    r[1] = (a[2] & 0x0f0f0f0fu) | (((a[0] >> 6) & 0x03030303u) << 4);
    r[2] = a[1] & 0x3f3f3f3fu;
    r[3] = ((a[2] >> 4) & 0x0f0f0f0fu) | (((a[1] >> 6) & 0x03030303u) << 4);
    memcpy(out, r, 16);
}

static inline QATTR void QN(unpack_k45)(const uint8_t *p, struct QN(kblk) * k, const int Q5) {
    const struct block_q4_k *k4 = (const struct block_q4_k *)(const void *)p;
    const struct block_q5_k *k5 = (const struct block_q5_k *)(const void *)p;
    const uint8_t *scales = Q5 ? k5->scales : k4->scales, *qs = Q5 ? k5->qs : k4->qs;
    k->d = QN(h2f)(Q5 ? &k5->d : &k4->d);
    k->dmin = QN(h2f)(Q5 ? &k5->dmin : &k4->dmin);
    uint8_t sm[16];
    QN(scales_k4)(scales, sm);
    for (int s = 0; s < 8; s++)
        k->sc[2 * s] = k->sc[2 * s + 1] = sm[s];
    k->mn = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(sm + 8)));
    uint8x16_t m15 = vdupq_n_u8(15);
    uint8x16_t h0 = vdupq_n_u8(0), h1 = vdupq_n_u8(0);
    if (Q5) {
        h0 = vld1q_u8(k5->qh);
        h1 = vld1q_u8(k5->qh + 16);
    }
    for (int c = 0; c < 4; c++) { /* chunk of 64: sub-blocks 2c (low nibbles), 2c+1 (high) */
        uint8x16_t a = vld1q_u8(qs + 32 * c), b = vld1q_u8(qs + 32 * c + 16);
        uint8x16_t v[4] = {vandq_u8(a, m15), vandq_u8(b, m15), vshrq_n_u8(a, 4), vshrq_n_u8(b, 4)};
        if (Q5) { /* bit s of qh[l] is the fifth bit of sub-block s, value l */
            int8x16_t sl = vdupq_n_s8((int8_t)(4 - 2 * c)), sh = vdupq_n_s8((int8_t)(3 - 2 * c));
            uint8x16_t b16 = vdupq_n_u8(16);
            v[0] = vorrq_u8(v[0], vandq_u8(vshlq_u8(h0, sl), b16));
            v[1] = vorrq_u8(v[1], vandq_u8(vshlq_u8(h1, sl), b16));
            v[2] = vorrq_u8(v[2], vandq_u8(vshlq_u8(h0, sh), b16));
            v[3] = vorrq_u8(v[3], vandq_u8(vshlq_u8(h1, sh), b16));
        }
        for (int j = 0; j < 4; j++)
            k->q[4 * c + j] = vreinterpretq_s8_u8(v[j]);
    }
}

static inline QATTR void QN(unpack_q6_k)(const uint8_t *p, struct QN(kblk) * k) {
    const struct block_q6_k *b = (const struct block_q6_k *)(const void *)p;
    k->d = QN(h2f)(&b->d);
    k->dmin = 0.0f;
    k->mn = vdupq_n_s16(0);
    for (int g = 0; g < 16; g++)
        k->sc[g] = b->scales[g];
    uint8x16_t m15 = vdupq_n_u8(15), m3 = vdupq_n_u8(3);
    int8x16_t off = vdupq_n_s8(32);
    for (int h = 0; h < 2; h++) /* halves of 128 values, quarters j of 32 (spec §12.2) */
        for (int l = 0; l < 32; l += 16) {
            const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
            uint8x16_t L0 = vld1q_u8(ql + l), L1 = vld1q_u8(ql + 32 + l), H = vld1q_u8(qh + l);
            uint8x16_t v[4] = {
                vorrq_u8(vandq_u8(L0, m15), vshlq_n_u8(vandq_u8(H, m3), 4)),
                vorrq_u8(vandq_u8(L1, m15), vshlq_n_u8(vandq_u8(vshrq_n_u8(H, 2), m3), 4)),
                vorrq_u8(vshrq_n_u8(L0, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(H, 4), m3), 4)),
                vorrq_u8(vshrq_n_u8(L1, 4), vshlq_n_u8(vshrq_n_u8(H, 6), 4)),
            };
            for (int j = 0; j < 4; j++) /* values 128h + 32j + l .. +16 */
                k->q[8 * h + 2 * j + l / 16] = vsubq_s8(vreinterpretq_s8_u8(v[j]), off);
        }
}

/* acc += yd * (d * isum - dmin * msum) for one token's Q8_K block y */
static inline QATTR float32x4_t QN(kdot)(const struct QN(kblk) * k, const uint8_t *y,
                                         float32x4_t acc) {
    const int8_t *yq = q8k_qs(y);
    int32x4_t isum = vdupq_n_s32(0);
    for (int g = 0; g < 16; g++) {
        int32x4_t p = QN(dot16)(vdupq_n_s32(0), k->q[g], vld1q_s8(yq + 16 * g));
        isum = vmlaq_n_s32(isum, p, k->sc[g]);
    }
    float yd = q8k_d(y);
    acc = vfmaq_n_f32(acc, vcvtq_f32_s32(isum), k->d * yd);
    /* msum = sum_s mn_s * (bsum_2s + bsum_2s+1); bsums read as bytes (any alignment) */
    const uint8_t *bs = y + offsetof(struct block_q8_k, bsums);
    int16x8_t b0 = vreinterpretq_s16_u8(vld1q_u8(bs)), b1 = vreinterpretq_s16_u8(vld1q_u8(bs + 16));
    int16x8_t pair = vpaddq_s16(b0, b1); /* |sum of 32 codes| <= 4064 */
    int32x4_t m = vmull_s16(vget_low_s16(pair), vget_low_s16(k->mn));
    m = vmlal_high_s16(m, pair, k->mn);
    return vfmsq_f32(acc, vcvtq_f32_s32(m), vdupq_n_f32(k->dmin * yd));
}

// clang-format off
#define QDEF_MATMUL_QK(T, BB, UNPACK)                                                              \
    static inline QATTR __attribute__((always_inline)) void QN(T##_rows)(                          \
        const uint8_t *row, int64_t nb, const uint8_t *xq, size_t ldxq, float *y, int64_t ldy,     \
        const int g) {                                                                             \
        float32x4_t acc[QG];                                                                       \
        for (int t = 0; t < g; t++) acc[t] = vdupq_n_f32(0.0f);                                    \
        for (int64_t i = 0; i < nb; i++) {                                                         \
            struct QN(kblk) k;                                                                     \
            UNPACK(row + (size_t)i * (BB), &k);                                                    \
            for (int t = 0; t < g; t++)                                                            \
                acc[t] = QN(kdot)(&k, xq + (size_t)t * ldxq +                                      \
                                          (size_t)i * sizeof(struct block_q8_k), acc[t]);          \
        }                                                                                          \
        for (int t = 0; t < g; t++) y[t * ldy] = vaddvq_f32(acc[t]);                               \
    }                                                                                              \
    DEF_Q_DRIVER(T, QK_K)
// clang-format on

static inline QATTR void QN(unpack_q4_k)(const uint8_t *p, struct QN(kblk) * k) {
    QN(unpack_k45)(p, k, 0);
}
static inline QATTR void QN(unpack_q5_k)(const uint8_t *p, struct QN(kblk) * k) {
    QN(unpack_k45)(p, k, 1);
}

QDEF_MATMUL_QK(q4_k, 144, QN(unpack_q4_k))
QDEF_MATMUL_QK(q5_k, 176, QN(unpack_q5_k))
QDEF_MATMUL_QK(q6_k, 210, QN(unpack_q6_k))

/* The table slots of this variant: QSLOTS(suffix) in a designated initializer. */
#define QSLOTS2(s)                                                                                 \
    [DT_Q8_0] = matmul_q_q8_0_##s, [DT_Q4_0] = matmul_q_q4_0_##s, [DT_Q5_0] = matmul_q_q5_0_##s,   \
    [DT_Q4_K] = matmul_q_q4_k_##s, [DT_Q5_K] = matmul_q_q5_k_##s, [DT_Q6_K] = matmul_q_q6_k_##s
#define QSLOTS(s) QSLOTS2(s)

#undef QG
#undef QCAT2
#undef QCAT
#undef QN
#undef QDEF_MATMUL_Q32
#undef QDEF_MATMUL_QK
