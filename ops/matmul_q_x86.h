/* ops/matmul_q_x86.h: quantized-activation matmul kernels (ops.h matmul_q_fn) on 256-bit
 * integer vectors, included by ops_avx2.c and ops_avx512.c (twice: with and without VNNI).
 * The includer defines QSFX (name suffix), QATTR (function attributes, e.g. a target),
 * QVNNI (0: maddubs+madd, 1: vpdpbusd/vpdpwssd) and QZ512 (1: 512-bit K-quant rows and Q8_0
 * tiles, for files built with AVX-512BW). Not a public header.
 *
 * K-quants (Q8_K activations): per weight block the codes are unpacked once into registers
 * and multiplied with the activation blocks of up to QG tokens (u8 x s8 byte products, exact
 * int32 sums). The float part per 256-value block is acc += cvt(int32 partial sums) * d...,
 * kept in 8 lanes per token and reduced once at the end of the row. The 512-bit tables take
 * rows in pairs for batches (k45_pairs_z/q6k_pairs_z: both rows' lanes in one vector, so the
 * float step and each activation load serve two pairs), with the same lane sums and steps.
 * Q8_0/Q4_0/Q5_0 (Q8_0 activations, 32-value blocks): tiles of (row, token) pairs whose exact
 * block sums are reduced to one lane per pair before a single convert + FMA (see "tiles of
 * (row, token) pairs" below), since per 32 values a per-pair float step would cost more than
 * the integer work.
 * Either way a token's result does not depend on n, on its group or on the row split. Large
 * batches are walked in tiles of QTILE tokens so a tile of activations stays in L2 while the
 * thread's rows stream past it. */
#include "ops/ops.h"
#include "ops/quant.h"

#include <immintrin.h>
#include <stddef.h>
#include <string.h>

/* tokens per pass over a weight row: 8 where 32 vector registers hold their accumulators */
#if QZ512
#define QG 8
#else
#define QG 4
#endif
#define QTILE   32 /* tokens per tile */
#define QUNROLL _Pragma("GCC unroll 8")

#define QCAT2(a, b) a##_##b
#define QCAT(a, b)  QCAT2(a, b)
#define QN(name)    QCAT(name, QSFX)

/* sum of 32 u8 x s8 products in groups of 4 -> 8 int32 lanes, added to acc */
static inline QATTR __m256i QN(dot_u8s8)(__m256i acc, __m256i u, __m256i s) {
#if QVNNI
    return _mm256_dpbusd_epi32(acc, u, s);
#else
    return _mm256_add_epi32(acc,
                            _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
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

/* Prefetch block i of the next m rows (rows r + m .. r + 2m - 1) while this group computes.
 * Four rows read block by block are four interleaved streams, which the hardware prefetcher
 * followed worse than one row at a time. Single token (matmul_q1_x86.h), from memory, one
 * thread on 128 MB of Q4_K (Q6_K): base 27-30 (23-36) GB/s, four rows without this 14-24
 * (17), with it 31-38 (36-43); tried and slower: the same rows 512-2048 bytes ahead, two
 * groups ahead, and the L2 hint. Batched pairs (two pairs = four rows), 2 threads, 512 MB
 * cycled: Q4_K 12288 x 4096 at n = 8 went from 380 to 520 GOP/s, Q6_K 4096 x 12288 from 340
 * to 500, n = 2 +50-90%, n = 64 +10-20%. When a chunk of rows is revisited by a later token
 * group (QPAIRS), its lines are in L2 already and the hint costs little. Lines every 64
 * bytes from the block's start cover it, since consecutive blocks are contiguous.
 * b is block i of this group's first row; past the end of the matrix the prefetch is a hint
 * to nowhere (prefetches do not fault), so the address is computed as an integer: pointer
 * arithmetic beyond the object would be undefined. */
static inline QATTR __attribute__((always_inline)) void
QN(next_rows_prefetch)(const uint8_t *b, size_t rb, size_t bb, const int m) {
    const uintptr_t next = (uintptr_t)b + (size_t)m * rb;
    QUNROLL
    for (int r = 0; r < m; r++)
        for (size_t o = 0; o < bb; o += 64)
            _mm_prefetch((const char *)(next + (size_t)r * rb + o), _MM_HINT_T0);
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
    __m256i h = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int)qh),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
    __m256i bit = _mm256_set1_epi64x((int64_t)0x8040201008040201);
    h = _mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit); /* 0xff where the 5th bit is set */
    __m256i q = _mm256_or_si256(QN(nibbles32)(b->qs), _mm256_and_si256(h, _mm256_set1_epi8(16)));
    u->w = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
    u->a = _mm256_sign_epi8(u->w, u->w);
    u->d = _cvtsh_ss(b->d);
}

/* ---- Q8_K-activation types: blocks of 256, walked in pieces of 32 values --------------- */

/* A K-quant block is never unpacked whole (8 code vectors + 8 scale vectors spill on AVX2):
 * each piece of 32 codes is unpacked, multiplied with the same piece of every token of the
 * group (maddubs, then the piece's int16 scale), and dropped. Scales come from one register
 * per block by byte shuffles, not scalar broadcasts. Per token the integer sum of a block is
 * exact, so only the float step differs from ops_ref (and not with the group size). */

/* shuffle control that broadcasts int16 lane s of each 128-bit lane */
#define QK_BC16(s) _mm_set1_epi16((short)(0x0100 + 0x0202 * (s)))
/* The same controls as a table in memory, so they are instruction operands: built in
 * registers (_mm_set1), 16 ymm registers are too few to keep them and the compiler rebuilt
 * them in every block (three instructions each). Row (a, b): int16 lane a of the low 128
 * bits and lane b of the high. */
#define QKB(s)  (uint8_t)(2 * (s)), (uint8_t)(2 * (s) + 1)
#define QKB8(s) QKB(s), QKB(s), QKB(s), QKB(s), QKB(s), QKB(s), QKB(s), QKB(s)
#define QKROW(a, b)                                                                                \
    { QKB8(a), QKB8(b) }
static const uint8_t QN(ksel)[12][32] __attribute__((aligned(32))) = {
    QKROW(0, 0), QKROW(1, 1), QKROW(2, 2), QKROW(3, 3), QKROW(4, 4), QKROW(5, 5),
    QKROW(6, 6), QKROW(7, 7), QKROW(0, 1), QKROW(2, 3), QKROW(4, 5), QKROW(6, 7)};
#undef QKB
#undef QKB8
#undef QKROW
/* row k of the table */
#define QK_TAB(k) _mm256_load_si256((const __m256i *)(const void *)QN(ksel)[k])
/* int16 lane s of 128-bit lane 0 and lane s2 of lane 1 (for a 256-bit vector) */
#define QK_SEL(s, s2) _mm256_set_m128i(QK_BC16(s2), QK_BC16(s))

#ifndef BT_OPS_K45_PARTS
#define BT_OPS_K45_PARTS
/* The parts of block i of a Q4_K (Q5 = 0) or Q5_K (Q5 = 1) row; qh is NULL for Q4_K. Plain C
 * (no vector type), so one definition serves every width this header is included for. */
struct k45_parts {
    const uint8_t *scales, *qs, *qh;
    uint16_t d, dmin;
};
/* scales_k4() loads d, dmin and the scales as one 16 bytes */
_Static_assert(offsetof(struct block_q4_k, scales) == 4 && offsetof(struct block_q5_k, scales) == 4,
               "k-quant scales follow d, dmin");
static inline __attribute__((always_inline)) struct k45_parts k45_block(const uint8_t *row,
                                                                        int64_t i, int Q5) {
    struct k45_parts p = {0};
    if (Q5) {
        const struct block_q5_k *b = (const struct block_q5_k *)(const void *)row + i;
        p = (struct k45_parts){b->scales, b->qs, b->qh, b->d, b->dmin};
    } else {
        const struct block_q4_k *b = (const struct block_q4_k *)(const void *)row + i;
        p = (struct k45_parts){b->scales, b->qs, NULL, b->d, b->dmin};
    }
    return p;
}
#endif

/* (scale, min) bytes of a Q4_K/Q5_K block: sc[0..7] then mn[0..7] (quant_scale_min_k4 for
 * all eight sub-blocks at once: low 6 bits of bytes 0..7 for s < 4, nibbles of bytes 8..11 with
 * the top two bits of bytes 0..7 for s >= 4). S points at the 12 scale bytes, which follow
 * d and dmin at the start of the block: one 16-byte load from S - 4 holds the block's
 * [d dmin | a0 | a1 | a2] as 32-bit lanes, and the four output words are
 *   a0 & 3f, (a2 & 0f) | (a0 >> 2 & 30), a1 & 3f, (a2 >> 4 & 0f) | (a1 >> 2 & 30)
 * per byte: two lane shuffles, two shifts and three masks in vector registers (the scalar form
 * moved three words out and four back, which cost as much as a piece of codes at n = 1). */
static inline QATTR __m128i QN(scales_k4)(const uint8_t *S) {
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(S - 4));
    __m128i x = _mm_shuffle_epi32(v, 0xED); /* a0 a2 a1 a2 */
    __m128i y = _mm_shuffle_epi32(v, 0xA5); /* a0 a0 a1 a1 */
    __m128i lo = _mm_and_si128(_mm_srlv_epi32(x, _mm_set_epi32(4, 0, 0, 0)),
                               _mm_set_epi32(0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f));
    __m128i hi = _mm_and_si128(_mm_srli_epi32(y, 2), _mm_set_epi32(0x30303030, 0, 0x30303030, 0));
    return _mm_or_si128(lo, hi);
}

/* Per-token integer accumulators of one block. With VNNI the scaled dot is one dependent
 * vpdpwssd, so low and high pieces go to separate chains. */
struct QN(kacc) {
    __m256i a;
#if QVNNI
    __m256i b;
#endif
};

static inline QATTR void QN(kacc_zero)(struct QN(kacc) * k) {
    k->a = _mm256_setzero_si256();
#if QVNNI
    k->b = _mm256_setzero_si256();
#endif
}
static inline QATTR __m256i QN(kacc_sum)(const struct QN(kacc) * k) {
#if QVNNI
    return _mm256_add_epi32(k->a, k->b);
#else
    return k->a;
#endif
}
/* An empty asm that "changes" v. GCC otherwise reassociates a chain of integer adds into a
 * tree: every product of a block is computed first and kept live, and with more tokens than
 * registers they go to the stack and back (the AVX2 Q6_K kernel spent a fifth of its
 * instructions on stack moves; the Q4_K x16 kernel of matmul_q_x8_avx2.h half, at half the
 * speed). */
#define QIN_ORDER(v) __asm__("" : "+v"(v))

static inline QATTR void QN(kacc_add2)(struct QN(kacc) * k, __m256i u0, __m256i s0, __m256i c0,
                                       __m256i u1, __m256i s1, __m256i c1) {
    k->a = QN(dot_scaled)(k->a, u0, s0, c0);
    QIN_ORDER(k->a);
#if QVNNI
    k->b = QN(dot_scaled)(k->b, u1, s1, c1);
    QIN_ORDER(k->b);
#else
    k->a = QN(dot_scaled)(k->a, u1, s1, c1);
    QIN_ORDER(k->a);
#endif
}

/* Block i of token t's Q8_K activation row (rows ldxq bytes apart) */
static inline QATTR const struct block_q8_k *QN(q8k_at)(const uint8_t *xq, size_t ldxq, int64_t t,
                                                        int64_t i) {
    return (const struct block_q8_k *)(const void *)(xq + (size_t)t * ldxq +
                                                     (size_t)i * sizeof(struct block_q8_k));
}
/* d and the 16-value sums of a Q8_K activation block, read through bytes: activation rows
 * may sit at any stride (ops.h ldxq), so the block need not be 4-byte aligned. */
static inline QATTR float QN(q8k_d)(const struct block_q8_k *y) {
    float d;
    memcpy(&d, (const uint8_t *)y + offsetof(struct block_q8_k, d), sizeof d);
    return d;
}
static inline QATTR __m256i QN(q8k_bsums)(const struct block_q8_k *y) {
    return QN(load256)((const uint8_t *)y + offsetof(struct block_q8_k, bsums));
}

/* acc += isum * d*yd - msum * dmin*yd (Q4_K/Q5_K: msum = sum_g min_g * bsum_g) */
static inline QATTR __m256 QN(kfin_k45)(__m256 acc, __m256i isum, const struct block_q8_k *y,
                                        __m256i mn16, float d, float dmin) {
    __m256i msum = _mm256_madd_epi16(QN(q8k_bsums)(y), mn16);
    __m256 m = _mm256_mul_ps(_mm256_cvtepi32_ps(msum), _mm256_set1_ps(dmin * QN(q8k_d)(y)));
    return _mm256_add_ps(
        acc, _mm256_fmsub_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(d * QN(q8k_d)(y)), m));
}

/* Q4_K (Q5 = 0) and Q5_K (Q5 = 1): piece j of 64 values is 32 bytes of nibbles, low nibbles
 * sub-block 2j, high nibbles 2j+1; Q5_K adds bit 2j / 2j+1 of qh[l] as the fifth bit. */
static inline QATTR __attribute__((always_inline)) void QN(k45_rows)(const uint8_t *row, int64_t nb,
                                                                     const uint8_t *xq, size_t ldxq,
                                                                     float *y, int64_t ldy,
                                                                     const int g, const int Q5) {
    __m256 acc[QG];
    QUNROLL
    for (int t = 0; t < g; t++)
        acc[t] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(15), b5 = _mm256_set1_epi8(16);
    for (int64_t i = 0; i < nb; i++) {
        const struct k45_parts p = k45_block(row, i, Q5);
        const uint8_t *scales = p.scales, *qs = p.qs, *qhp = p.qh;
        const uint16_t dh = p.d, dmh = p.dmin;
        __m128i sm = QN(scales_k4)(scales);
        __m256i sc = _mm256_cvtepu8_epi16(sm); /* int16 sc 0..7 | mn 0..7 */
        __m256i scl = _mm256_permute2x128_si256(sc, sc, 0x00);
        __m256i mn16 = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm)); /* min per 16 values */
        __m256i qh = Q5 ? QN(load256)(qhp) : _mm256_setzero_si256();
        struct QN(kacc) k[QG];
        QUNROLL
        for (int t = 0; t < g; t++)
            QN(kacc_zero)(&k[t]);
        const uint8_t *yq =
            xq + (size_t)i * sizeof(struct block_q8_k) + offsetof(struct block_q8_k, qs);
        QUNROLL
        for (int j = 0; j < 4; j++) {
            __m256i q = QN(load256)(qs + 32 * j);
            __m256i lo = _mm256_and_si256(q, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if (Q5) { /* bits 2j, 2j+1 of qh are at bits 0, 1 here (shifted per piece) */
                lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(qh, 4), b5));
                hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(qh, 3), b5));
                qh = _mm256_srli_epi16(qh, 2);
            }
            __m256i s0 = _mm256_shuffle_epi8(scl, QK_TAB(2 * j));
            __m256i s1 = _mm256_shuffle_epi8(scl, QK_TAB(2 * j + 1));
            QUNROLL
            for (int t = 0; t < g; t++) {
                const uint8_t *yt = yq + (size_t)t * ldxq + 64 * j;
                QN(kacc_add2)(&k[t], lo, QN(load256)(yt), s0, hi, QN(load256)(yt + 32), s1);
            }
        }
        float d = _cvtsh_ss(dh), dmin = _cvtsh_ss(dmh);
        QUNROLL
        for (int t = 0; t < g; t++) {
            const struct block_q8_k *yb = QN(q8k_at)(xq, ldxq, t, i);
            acc[t] = QN(kfin_k45)(acc[t], QN(kacc_sum)(&k[t]), yb, mn16, d, dmin);
        }
    }
    QUNROLL
    for (int t = 0; t < g; t++)
        y[t * ldy] = QN(hsum)(acc[t]);
}
/* Single token (g = 1): the block Q6_FAR blocks ahead (13 KB; rows are contiguous, so past
 * the row's end it is the next row's; past the matrix, a hint to nowhere, computed as an
 * integer) is prefetched into L2. The hardware prefetcher alone kept one row's stream below
 * the memory's pace: 512 MB of 12288 x 4096 Q6_K on 2 threads of the AVX2 host of round 12
 * went from 0.89-0.98 of a plain read of the same bytes (no prefetch) to 1.12-1.17
 * (tests/bench/bench_stream.c). Batches reuse each block for g tokens and keep the plain
 * loop; the 512-bit q6k_rows_z is left alone (its host could not be measured). */
#define Q6_FAR 64
/* Q6_K: half h (128 values) has 64 bytes of low nibbles L0|L1 and 32 of high bit pairs H;
 * quarter j of the half takes low nibbles from L0, L1, L0>>4, L1>>4 and bits (H >> 2j) & 3.
 * maddubs lanes 0..7 of a quarter are values 0..15 (scale 8h+2j), lanes 8..15 the next 16.
 * Codes are q + 32 (unsigned): 32 * sum_g sc_g * bsum_g is subtracted per block. */
static inline QATTR __attribute__((always_inline)) void QN(q6k_rows)(const uint8_t *row, int64_t nb,
                                                                     const uint8_t *xq, size_t ldxq,
                                                                     float *y, int64_t ldy,
                                                                     const int g) {
    __m256 acc[QG];
    QUNROLL
    for (int t = 0; t < g; t++)
        acc[t] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3);
    for (int64_t i = 0; i < nb; i++) {
        const struct block_q6_k *b =
            (const struct block_q6_k *)(const void *)(row + (size_t)i * sizeof(struct block_q6_k));
        if (g == 1) /* decode: the block Q6_FAR ahead into L2 (see Q6_FAR) */
            for (int o = 0; o < (int)sizeof *b; o += 64)
                _mm_prefetch((const char *)((uintptr_t)b + Q6_FAR * sizeof *b + (size_t)o),
                             _MM_HINT_T1);
        __m256i sc16 =
            _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)b->scales));
        struct QN(kacc) k[QG];
        QUNROLL
        for (int t = 0; t < g; t++)
            QN(kacc_zero)(&k[t]);
        const uint8_t *yq =
            xq + (size_t)i * sizeof(struct block_q8_k) + offsetof(struct block_q8_k, qs);
        QUNROLL
        for (int h = 0; h < 2; h++) {
            __m256i L0 = QN(load256)(b->ql + 64 * h), L1 = QN(load256)(b->ql + 64 * h + 32);
            __m256i H = QN(load256)(b->qh + 32 * h);
            __m256i sch =
                h ? _mm256_permute4x64_epi64(sc16, 0xee) : _mm256_permute4x64_epi64(sc16, 0x44);
            __m256i q0 = _mm256_or_si256(_mm256_and_si256(L0, m4),
                                         _mm256_slli_epi16(_mm256_and_si256(H, m2), 4));
            __m256i q1 = _mm256_or_si256(
                _mm256_and_si256(L1, m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 2), m2), 4));
            __m256i q2 = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(L0, 4), m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 4), m2), 4));
            __m256i q3 = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(L1, 4), m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 6), m2), 4));
            __m256i s0 = _mm256_shuffle_epi8(sch, QK_TAB(8)),
                    s1 = _mm256_shuffle_epi8(sch, QK_TAB(9));
            __m256i s2 = _mm256_shuffle_epi8(sch, QK_TAB(10)),
                    s3 = _mm256_shuffle_epi8(sch, QK_TAB(11));
            QUNROLL
            for (int t = 0; t < g; t++) {
                const uint8_t *yt = yq + (size_t)t * ldxq + 128 * h;
                QN(kacc_add2)(&k[t], q0, QN(load256)(yt), s0, q1, QN(load256)(yt + 32), s1);
                QN(kacc_add2)(&k[t], q2, QN(load256)(yt + 64), s2, q3, QN(load256)(yt + 96), s3);
            }
        }
        float d = _cvtsh_ss(b->d);
        QUNROLL
        for (int t = 0; t < g; t++) {
            const struct block_q8_k *yb = QN(q8k_at)(xq, ldxq, t, i);
            __m256i off = _mm256_madd_epi16(QN(q8k_bsums)(yb), sc16);
            __m256i isum = _mm256_sub_epi32(QN(kacc_sum)(&k[t]), _mm256_slli_epi32(off, 5));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(d * QN(q8k_d)(yb)),
                                     acc[t]);
        }
    }
    QUNROLL
    for (int t = 0; t < g; t++)
        y[t * ldy] = QN(hsum)(acc[t]);
}

/* ---- the driver ------------------------------------------------------------------------- */

#if QZ512
/* ---- 512-bit forms of the K-quant rows (AVX-512BW tables) ------------------------------- *
 * Same pieces and the same exact integer sums per block as above, two 32-value pieces per
 * instruction: a zmm holds the low- and high-nibble pieces of 64 values (Q4_K/Q5_K) or two
 * quarters of a Q6_K half, which are 64 consecutive activation bytes. The block sum is folded
 * to 256 bits before the float step, which is the 256-bit one. */

/* shuffle control: 128-bit lane k broadcasts int16 lane s_k */
static inline QATTR __m512i QN(zsel)(int s0, int s1, int s2, int s3) {
#define QZB(s) ((int)((0x0100u + 0x0202u * (unsigned)(s)) * 0x00010001u))
    return _mm512_set_epi32(QZB(s3), QZB(s3), QZB(s3), QZB(s3), QZB(s2), QZB(s2), QZB(s2), QZB(s2),
                            QZB(s1), QZB(s1), QZB(s1), QZB(s1), QZB(s0), QZB(s0), QZB(s0), QZB(s0));
#undef QZB
}

static inline QATTR __m512i QN(zdot_scaled)(__m512i acc, __m512i u, __m512i s, __m512i sc16) {
    __m512i p = _mm512_maddubs_epi16(u, s);
#if QVNNI
    return _mm512_dpwssd_epi32(acc, p, sc16);
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(p, sc16));
#endif
}

static inline QATTR __m512i QN(load512)(const void *p) {
    return _mm512_loadu_si512(p);
}

static inline QATTR __m256i QN(zfold)(__m512i a, __m512i b) {
    __m512i s = _mm512_add_epi32(a, b);
    return _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
}

static inline QATTR __attribute__((always_inline)) void
QN(k45_rows_z)(const uint8_t *row, int64_t nb, const uint8_t *xq, size_t ldxq, float *y,
               int64_t ldy, const int g, const int Q5) {
    __m256 acc[QG];
    QUNROLL
    for (int t = 0; t < g; t++)
        acc[t] = _mm256_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(15), b5 = _mm512_set1_epi8(16);
    for (int64_t i = 0; i < nb; i++) {
        const struct k45_parts p = k45_block(row, i, Q5);
        const uint8_t *scales = p.scales, *qs = p.qs, *qhp = p.qh;
        const uint16_t dh = p.d, dmh = p.dmin;
        __m128i sm = QN(scales_k4)(scales);
        __m512i scz = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(sm)); /* int16 sc 0..7 per lane */
        __m256i mn16 = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm));
        __m256i qh = Q5 ? QN(load256)(qhp) : _mm256_setzero_si256();
        __m512i ka[QG], kb[QG]; /* even and odd pieces: two dependency chains */
        QUNROLL
        for (int t = 0; t < g; t++)
            ka[t] = kb[t] = _mm512_setzero_si512();
        const uint8_t *yq =
            xq + (size_t)i * sizeof(struct block_q8_k) + offsetof(struct block_q8_k, qs);
        QUNROLL
        for (int j = 0; j < 4; j++) {
            __m256i q = QN(load256)(qs + 32 * j);
            __m512i qz = _mm512_and_si512(
                _mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 4), 1), m4);
            if (Q5) { /* bits 2j, 2j+1 of qh are at bits 0, 1 here (shifted per piece) */
                __m512i hz = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_slli_epi16(qh, 4)),
                                                _mm256_slli_epi16(qh, 3), 1);
                qz = _mm512_or_si512(qz, _mm512_and_si512(hz, b5));
                qh = _mm256_srli_epi16(qh, 2);
            }
            __m512i s = _mm512_shuffle_epi8(scz, QN(zsel)(2 * j, 2 * j, 2 * j + 1, 2 * j + 1));
            QUNROLL
            for (int t = 0; t < g; t++) {
                __m512i yv = QN(load512)(yq + (size_t)t * ldxq + 64 * j);
                if ((j & 1) && g == 1) /* one token: a second chain; more: they interleave */
                    kb[t] = QN(zdot_scaled)(kb[t], qz, yv, s);
                else
                    ka[t] = QN(zdot_scaled)(ka[t], qz, yv, s);
            }
        }
        float d = _cvtsh_ss(dh), dmin = _cvtsh_ss(dmh);
        QUNROLL
        for (int t = 0; t < g; t++) {
            const struct block_q8_k *yb = QN(q8k_at)(xq, ldxq, t, i);
            acc[t] = QN(kfin_k45)(acc[t], QN(zfold)(ka[t], kb[t]), yb, mn16, d, dmin);
        }
    }
    QUNROLL
    for (int t = 0; t < g; t++)
        y[t * ldy] = QN(hsum)(acc[t]);
}

/* One token (decode): each 64 code bytes of a Q4_K/Q5_K block are one 512-bit load whose
 * low nibbles are sub-blocks 4h and 4h+2 and whose high nibbles are 4h+1 and 4h+3 (h = 0, 1),
 * so the activation bytes are needed in the sub-block order 0 2 1 3 4 6 5 7. The driver
 * writes that order once per matmul call into yp (256 bytes per block, QK_K = 256), which
 * every row then reads: per block two code loads, one shift and two masks per half instead of
 * a load, a shift, an insert and a mask per 64 values. d and the 16-value sums still come
 * from the Q8_K blocks in xq. The integer sums are the same, so results equal the g = 1 path. */
static inline QATTR void QN(k45_perm_act)(const uint8_t *xq, int64_t nb, uint8_t *yp) {
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *q =
            xq + (size_t)i * sizeof(struct block_q8_k) + offsetof(struct block_q8_k, qs);
        static const int src[8] = {0, 2, 1, 3, 4, 6, 5, 7};
        for (int p = 0; p < 8; p++)
            _mm256_storeu_si256((__m256i *)(void *)(yp + (size_t)i * QK_K + 32 * p),
                                QN(load256)(q + 32 * src[p]));
    }
}

static inline QATTR __attribute__((always_inline)) void
QN(k45_row1_z)(const uint8_t *row, int64_t nb, const uint8_t *xq, const uint8_t *yp, float *y,
               const int Q5) {
    __m256 acc = _mm256_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(15), b5 = _mm512_set1_epi8(16);
    for (int64_t i = 0; i < nb; i++) {
        const struct k45_parts p = k45_block(row, i, Q5);
        __m128i sm = QN(scales_k4)(p.scales);
        __m512i scz = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(sm)); /* int16 sc 0..7 per lane */
        __m256i mn16 = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm));
        __m512i hz = _mm512_setzero_si512();
        if (Q5) { /* [qh | qh >> 2]: bits 4h and 4h+1 of a half's lanes at bits 4h, 4h+1 */
            __m256i qh = QN(load256)(p.qh);
            hz = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
        }
        __m512i ka = _mm512_setzero_si512(), kb = _mm512_setzero_si512();
        const uint8_t *yb = yp + (size_t)i * QK_K;
        QUNROLL
        for (int h = 0; h < 2; h++) {
            __m512i q = QN(load512)(p.qs + 64 * h);
            __m512i lo = _mm512_and_si512(q, m4);
            __m512i hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
            if (Q5) {
                lo = _mm512_or_si512(lo, _mm512_and_si512(_mm512_slli_epi16(hz, 4), b5));
                hi = _mm512_or_si512(hi, _mm512_and_si512(_mm512_slli_epi16(hz, 3), b5));
                hz = _mm512_srli_epi16(hz, 4);
            }
            __m512i slo = _mm512_shuffle_epi8(scz, QN(zsel)(4 * h, 4 * h, 4 * h + 2, 4 * h + 2));
            __m512i shi =
                _mm512_shuffle_epi8(scz, QN(zsel)(4 * h + 1, 4 * h + 1, 4 * h + 3, 4 * h + 3));
            ka = QN(zdot_scaled)(ka, lo, QN(load512)(yb + 128 * h), slo);
            kb = QN(zdot_scaled)(kb, hi, QN(load512)(yb + 128 * h + 64), shi);
        }
        const struct block_q8_k *xb = QN(q8k_at)(xq, 0, 0, i);
        acc = QN(kfin_k45)(acc, QN(zfold)(ka, kb), xb, mn16, _cvtsh_ss(p.d), _cvtsh_ss(p.dmin));
    }
    *y = QN(hsum)(acc);
}

static inline QATTR __attribute__((always_inline)) void
QN(q6k_rows_z)(const uint8_t *row, int64_t nb, const uint8_t *xq, size_t ldxq, float *y,
               int64_t ldy, const int g) {
    __m256 acc[QG];
    QUNROLL
    for (int t = 0; t < g; t++)
        acc[t] = _mm256_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(15), m30 = _mm512_set1_epi8(0x30);
    for (int64_t i = 0; i < nb; i++) {
        const struct block_q6_k *b =
            (const struct block_q6_k *)(const void *)(row + (size_t)i * sizeof(struct block_q6_k));
        __m256i sc16 =
            _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)b->scales));
        __m512i ka[QG], kb[QG];
        QUNROLL
        for (int t = 0; t < g; t++)
            ka[t] = kb[t] = _mm512_setzero_si512();
        const uint8_t *yq =
            xq + (size_t)i * sizeof(struct block_q8_k) + offsetof(struct block_q8_k, qs);
        QUNROLL
        for (int h = 0; h < 2; h++) {
            /* [L0 | L1] and [H | H >> 2]: quarters 0|1 (Hz << 4), 2|3 (Lz >> 4, Hz as is) */
            __m512i Lz = QN(load512)(b->ql + 64 * h);
            __m256i H = QN(load256)(b->qh + 32 * h);
            __m512i Hz = _mm512_inserti64x4(_mm512_castsi256_si512(H), _mm256_srli_epi16(H, 2), 1);
            __m512i q01 = _mm512_or_si512(_mm512_and_si512(Lz, m4),
                                          _mm512_and_si512(_mm512_slli_epi16(Hz, 4), m30));
            __m512i q23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(Lz, 4), m4),
                                          _mm512_and_si512(Hz, m30));
            __m128i sch = h ? _mm256_extracti128_si256(sc16, 1) : _mm256_castsi256_si128(sc16);
            __m512i scz = _mm512_broadcast_i32x4(sch); /* int16 scales 8h..8h+7 per lane */
            __m512i s01 = _mm512_shuffle_epi8(scz, QN(zsel)(0, 1, 2, 3));
            __m512i s23 = _mm512_shuffle_epi8(scz, QN(zsel)(4, 5, 6, 7));
            QUNROLL
            for (int t = 0; t < g; t++) {
                const uint8_t *yt = yq + (size_t)t * ldxq + 128 * h;
                ka[t] = QN(zdot_scaled)(ka[t], q01, QN(load512)(yt), s01);
                if (g == 1)
                    kb[t] = QN(zdot_scaled)(kb[t], q23, QN(load512)(yt + 64), s23);
                else
                    ka[t] = QN(zdot_scaled)(ka[t], q23, QN(load512)(yt + 64), s23);
            }
        }
        float d = _cvtsh_ss(b->d);
        QUNROLL
        for (int t = 0; t < g; t++) {
            const struct block_q8_k *yb = QN(q8k_at)(xq, ldxq, t, i);
            __m256i off = _mm256_madd_epi16(QN(q8k_bsums)(yb), sc16);
            __m256i isum = _mm256_sub_epi32(QN(zfold)(ka[t], kb[t]), _mm256_slli_epi32(off, 5));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(d * QN(q8k_d)(yb)),
                                     acc[t]);
        }
    }
    QUNROLL
    for (int t = 0; t < g; t++)
        y[t * ldy] = QN(hsum)(acc[t]);
}
/* ---- pairs of rows (batched K-quant rows, AVX-512) ------------------------------------- *
 * With many tokens per row the per-block float step of k45_rows_z (fold, two converts, the
 * d * yd and dmin * yd products, the mins, fmsub, add) cost more than the 8 integer
 * instructions of a (row, token) pair. Here a zmm holds rows r and r+1 side by side: 32 code
 * bytes of row r in the low half and the same 32 positions of row r+1 in the high half,
 * against one token's 32 activation bytes in both halves (a 256-bit broadcast). So a token's
 * accumulator is [row r | row r+1] and needs no fold, the unpack of a piece serves two rows
 * with one shift, and every float instruction serves both pairs. Lane l of a half sums the
 * scaled products of bytes 4l..4l+3 of every 32-value piece, which is the lane of the folded
 * k45_rows_z/q6k_rows_z sums, and the float steps are theirs lane by lane (same d * yd
 * products, same fmsub/fmadd, same add, same final hsum per half): each pair keeps its bits
 * whatever the grouping. P pairs of rows (P = 1, 2) share each activation load. With VNNI
 * the integer part is vpdpbusd per 32 values and one vpdpwssd per two of them (zpair16). */

/* int16 scales of two rows: [sa | sa | sb | sb] by 128-bit lane */
static inline QATTR __m512i QN(sc2)(__m128i sa, __m128i sb) {
    return _mm512_inserti64x4(_mm512_broadcast_i32x4(sa), _mm256_broadcastsi128_si256(sb), 1);
}

/* [a | b] of two 256-bit loads */
static inline QATTR __m512i QN(load2x256)(const uint8_t *a, const uint8_t *b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(QN(load256)(a)), QN(load256)(b), 1);
}

#if QVNNI
/* VNNI: vpdpbusd sums 4 byte products per lane in one instruction, where maddubs + vpdpwssd
 * take two; the sums of two 32-value sub-blocks a, b (|sum| <= 4 * 31 * 127, an int16) are
 * then interleaved as the int16 pairs (a_l, b_l) of lane l and one vpdpwssd applies both
 * scales: sc_a * a_l + sc_b * b_l, the same exact lane sum with 3 multiplies per 64 values
 * instead of 4. */
static inline QATTR __m512i QN(zpair16)(__m512i a, __m512i b) {
    /* word 2l of the result: word 2l of a (low half of lane l); word 2l+1: that of b */
    const __m512i idx =
        _mm512_set_epi32(0x003e001e, 0x003c001c, 0x003a001a, 0x00380018, 0x00360016, 0x00340014,
                         0x00320012, 0x00300010, 0x002e000e, 0x002c000c, 0x002a000a, 0x00280008,
                         0x00260006, 0x00240004, 0x00220002, 0x00200000);
    return _mm512_permutex2var_epi16(a, idx, b);
}
/* shuffle control: in every 32-bit lane the int16 lanes sa, sb of its 128-bit lane */
static inline QATTR __m512i QN(zsel2)(int sa, int sb) {
    return _mm512_set1_epi32(
        (int)((0x0100u + 0x0202u * (unsigned)sa) | (0x0100u + 0x0202u * (unsigned)sb) << 16));
}
/* the same, int16 lanes (a0, b0) in 128-bit lanes 0 and 2, (a1, b1) in lanes 1 and 3 */
static inline QATTR __m512i QN(zsel2x)(int a0, int b0, int a1, int b1) {
    __m512i lo = QN(zsel2)(a0, b0), hi = QN(zsel2)(a1, b1);
    return _mm512_mask_blend_epi32(0xf0f0, lo, hi);
}
#endif

/* the first zdot_scaled of a block: acc = 0 + ... */
static inline QATTR __m512i QN(zdot_first)(__m512i u, __m512i s, __m512i sc16) {
    return _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), sc16);
}

/* y[0] and y[1]: the two halves of acc, each reduced as hsum does */
static inline QATTR void QN(store2)(__m512 acc, float *y) {
    y[0] = QN(hsum)(_mm512_castps512_ps256(acc));
    y[1] = QN(hsum)(_mm512_extractf32x8_ps(acc, 1));
}

static inline QATTR __attribute__((always_inline)) void
QN(k45_pairs_z)(const uint8_t *row, size_t rb, int64_t nb, const uint8_t *xq, size_t ldxq, float *y,
                int64_t ldy, const int P, const int g, const int Q5) {
    __m512 acc[2][QG];
    QUNROLL
    for (int r = 0; r < P; r++) {
        QUNROLL
        for (int t = 0; t < g; t++)
            acc[r][t] = _mm512_setzero_ps();
    }
    const __m512i m4 = _mm512_set1_epi8(15), b5 = _mm512_set1_epi8(16);
    const size_t bb = Q5 ? sizeof(struct block_q5_k) : sizeof(struct block_q4_k);
    for (int64_t i = 0; i < nb; i++) {
        if (P == 2) QN(next_rows_prefetch)(row + (size_t)i * bb, rb, bb, 4);
        struct k45_parts p[4];
        __m512i scz[2], qh[2], mnz[2];
        __m512 dz[2], dmz[2];
        QUNROLL
        for (int r = 0; r < P; r++) {
            p[2 * r] = k45_block(row + (size_t)(2 * r) * rb, i, Q5);
            p[2 * r + 1] = k45_block(row + (size_t)(2 * r + 1) * rb, i, Q5);
            __m128i sa = QN(scales_k4)(p[2 * r].scales), sb = QN(scales_k4)(p[2 * r + 1].scales);
            scz[r] = QN(sc2)(_mm_cvtepu8_epi16(sa), _mm_cvtepu8_epi16(sb));
            mnz[r] = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sa, sa))),
                _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sb, sb)), 1);
            qh[r] = Q5 ? QN(load2x256)(p[2 * r].qh, p[2 * r + 1].qh) : _mm512_setzero_si512();
            dz[r] = _mm512_insertf32x8(_mm512_set1_ps(_cvtsh_ss(p[2 * r].d)),
                                       _mm256_set1_ps(_cvtsh_ss(p[2 * r + 1].d)), 1);
            dmz[r] = _mm512_insertf32x8(_mm512_set1_ps(_cvtsh_ss(p[2 * r].dmin)),
                                        _mm256_set1_ps(_cvtsh_ss(p[2 * r + 1].dmin)), 1);
        }
        __m512i k[2][QG];
        const uint8_t *yq =
            xq + (size_t)i * sizeof(struct block_q8_k) + offsetof(struct block_q8_k, qs);
        QUNROLL
        for (int j = 0; j < 4; j++) {
            __m512i lo[2], hi[2], slo[2];
#if !QVNNI
            __m512i shi[2];
#endif
            QUNROLL
            for (int r = 0; r < P; r++) { /* sub-blocks 2j (low nibbles) and 2j+1 (high) */
                __m512i q = QN(load2x256)(p[2 * r].qs + 32 * j, p[2 * r + 1].qs + 32 * j);
                lo[r] = _mm512_and_si512(q, m4);
                hi[r] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
                if (Q5) { /* bits 2j, 2j+1 of qh are at bits 0, 1 here (shifted per piece) */
                    lo[r] =
                        _mm512_or_si512(lo[r], _mm512_and_si512(_mm512_slli_epi16(qh[r], 4), b5));
                    hi[r] =
                        _mm512_or_si512(hi[r], _mm512_and_si512(_mm512_slli_epi16(qh[r], 3), b5));
                    qh[r] = _mm512_srli_epi16(qh[r], 2);
                }
#if QVNNI
                slo[r] = _mm512_shuffle_epi8(scz[r], QN(zsel2)(2 * j, 2 * j + 1)); /* both */
#else
                slo[r] = _mm512_shuffle_epi8(scz[r], QN(zsel)(2 * j, 2 * j, 2 * j, 2 * j));
                shi[r] = _mm512_shuffle_epi8(scz[r],
                                             QN(zsel)(2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1));
#endif
            }
            QUNROLL
            for (int t = 0; t < g; t++) {
                const uint8_t *yt = yq + (size_t)t * ldxq + 64 * j;
                __m512i ylo = _mm512_broadcast_i64x4(QN(load256)(yt));
                __m512i yhi = _mm512_broadcast_i64x4(QN(load256)(yt + 32));
                QUNROLL
                for (int r = 0; r < P; r++) {
#if QVNNI
                    __m512i c =
                        QN(zpair16)(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo[r], ylo),
                                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi[r], yhi));
                    k[r][t] =
                        j ? _mm512_dpwssd_epi32(k[r][t], c, slo[r]) : _mm512_madd_epi16(c, slo[r]);
#else
                    k[r][t] = j ? QN(zdot_scaled)(k[r][t], lo[r], ylo, slo[r])
                                : QN(zdot_first)(lo[r], ylo, slo[r]);
                    k[r][t] = QN(zdot_scaled)(k[r][t], hi[r], yhi, shi[r]);
#endif
                }
            }
        }
        QUNROLL
        for (int t = 0; t < g; t++) {
            const struct block_q8_k *yb = QN(q8k_at)(xq, ldxq, t, i);
            __m512 yd = _mm512_set1_ps(QN(q8k_d)(yb));
            __m512i bs = _mm512_broadcast_i64x4(QN(q8k_bsums)(yb));
            QUNROLL
            for (int r = 0; r < P; r++) {
                __m512i msum = _mm512_madd_epi16(bs, mnz[r]);
                __m512 m = _mm512_mul_ps(_mm512_cvtepi32_ps(msum), _mm512_mul_ps(dmz[r], yd));
                acc[r][t] = _mm512_add_ps(acc[r][t], _mm512_fmsub_ps(_mm512_cvtepi32_ps(k[r][t]),
                                                                     _mm512_mul_ps(dz[r], yd), m));
            }
        }
    }
    QUNROLL
    for (int r = 0; r < P; r++) {
        QUNROLL
        for (int t = 0; t < g; t++)
            QN(store2)(acc[r][t], y + t * ldy + 2 * r);
    }
}

/* Q6_K: quarter j of half h is 32 values (scales 8h+2j, 8h+2j+1 for its two 16s) from the
 * low or high nibbles of L0/L1 and bits 2j, 2j+1 of H, as in q6k_rows. */
static inline QATTR __attribute__((always_inline)) void
QN(q6k_pairs_z)(const uint8_t *row, size_t rb, int64_t nb, const uint8_t *xq, size_t ldxq, float *y,
                int64_t ldy, const int P, const int g) {
    __m512 acc[2][QG];
    QUNROLL
    for (int r = 0; r < P; r++) {
        QUNROLL
        for (int t = 0; t < g; t++)
            acc[r][t] = _mm512_setzero_ps();
    }
    const __m512i m4 = _mm512_set1_epi8(15), m30 = _mm512_set1_epi8(0x30);
    const size_t bb = sizeof(struct block_q6_k);
    for (int64_t i = 0; i < nb; i++) {
        if (P == 2) QN(next_rows_prefetch)(row + (size_t)i * bb, rb, bb, 4);
        const struct block_q6_k *b[4];
        __m512i sc[2];
        __m512 dz[2];
        QUNROLL
        for (int r = 0; r < 2 * P; r++)
            b[r] = (const struct block_q6_k *)(const void *)(row + (size_t)r * rb +
                                                             (size_t)i * sizeof(struct block_q6_k));
        QUNROLL
        for (int r = 0; r < P; r++) {
            sc[r] = _mm512_cvtepi8_epi16(_mm256_inserti128_si256(
                _mm256_castsi128_si256(
                    _mm_loadu_si128((const __m128i *)(const void *)b[2 * r]->scales)),
                _mm_loadu_si128((const __m128i *)(const void *)b[2 * r + 1]->scales),
                1)); /* [sc16 of row r | of row r+1] */
            dz[r] = _mm512_insertf32x8(_mm512_set1_ps(_cvtsh_ss(b[2 * r]->d)),
                                       _mm256_set1_ps(_cvtsh_ss(b[2 * r + 1]->d)), 1);
        }
        __m512i k[2][QG];
        const uint8_t *yq =
            xq + (size_t)i * sizeof(struct block_q8_k) + offsetof(struct block_q8_k, qs);
        QUNROLL
        for (int h = 0; h < 2; h++) {
            __m512i L0[2], L1[2], H[2], sch[2];
            QUNROLL
            for (int r = 0; r < P; r++) {
                L0[r] = QN(load2x256)(b[2 * r]->ql + 64 * h, b[2 * r + 1]->ql + 64 * h);
                L1[r] = QN(load2x256)(b[2 * r]->ql + 64 * h + 32, b[2 * r + 1]->ql + 64 * h + 32);
                H[r] = QN(load2x256)(b[2 * r]->qh + 32 * h, b[2 * r + 1]->qh + 32 * h);
                /* int16 scales 8h..8h+7 of each row in both 128-bit lanes of its half */
                sch[r] = h ? _mm512_shuffle_i64x2(sc[r], sc[r], 0xf5)
                           : _mm512_shuffle_i64x2(sc[r], sc[r], 0xa0);
            }
#if QVNNI
            __m512i qp[2];
#endif
            QUNROLL
            for (int j = 0; j < 4; j++) {
                __m512i q[2], s[2];
                QUNROLL
                for (int r = 0; r < P; r++) {
                    __m512i L = j & 1 ? L1[r] : L0[r];
                    if (j >= 2) L = _mm512_srli_epi16(L, 4);
                    /* bits 2j, 2j+1 of each H byte to bits 4, 5 */
                    __m512i hb = j == 0   ? _mm512_slli_epi16(H[r], 4)
                                 : j == 1 ? _mm512_slli_epi16(H[r], 2)
                                 : j == 2 ? H[r]
                                          : _mm512_srli_epi16(H[r], 2);
                    q[r] = _mm512_or_si512(_mm512_and_si512(L, m4), _mm512_and_si512(hb, m30));
#if QVNNI /* quarters j-1, j in one vpdpwssd (zpair16; |lane sum| <= 4 * 63 * 127) */
                    s[r] = _mm512_shuffle_epi8(sch[r],
                                               QN(zsel2x)(2 * j - 2, 2 * j, 2 * j - 1, 2 * j + 1));
#else
                    s[r] =
                        _mm512_shuffle_epi8(sch[r], QN(zsel)(2 * j, 2 * j + 1, 2 * j, 2 * j + 1));
#endif
                }
#if QVNNI
                if (!(j & 1)) {
                    QUNROLL
                    for (int r = 0; r < P; r++)
                        qp[r] = q[r];
                    continue;
                }
                QUNROLL
                for (int t = 0; t < g; t++) {
                    const uint8_t *yt = yq + (size_t)t * ldxq + 128 * h + 32 * j;
                    __m512i ya = _mm512_broadcast_i64x4(QN(load256)(yt - 32));
                    __m512i yb = _mm512_broadcast_i64x4(QN(load256)(yt));
                    QUNROLL
                    for (int r = 0; r < P; r++) {
                        __m512i c =
                            QN(zpair16)(_mm512_dpbusd_epi32(_mm512_setzero_si512(), qp[r], ya),
                                        _mm512_dpbusd_epi32(_mm512_setzero_si512(), q[r], yb));
                        k[r][t] = h || j > 1 ? _mm512_dpwssd_epi32(k[r][t], c, s[r])
                                             : _mm512_madd_epi16(c, s[r]);
                    }
                }
#else
                QUNROLL
                for (int t = 0; t < g; t++) {
                    __m512i yv = _mm512_broadcast_i64x4(
                        QN(load256)(yq + (size_t)t * ldxq + 128 * h + 32 * j));
                    QUNROLL
                    for (int r = 0; r < P; r++)
                        k[r][t] = h || j ? QN(zdot_scaled)(k[r][t], q[r], yv, s[r])
                                         : QN(zdot_first)(q[r], yv, s[r]);
                }
#endif
            }
        }
        QUNROLL
        for (int t = 0; t < g; t++) {
            const struct block_q8_k *yb = QN(q8k_at)(xq, ldxq, t, i);
            __m512 yd = _mm512_set1_ps(QN(q8k_d)(yb));
            __m512i bs = _mm512_broadcast_i64x4(QN(q8k_bsums)(yb));
            QUNROLL
            for (int r = 0; r < P; r++) {
                __m512i off = _mm512_madd_epi16(bs, sc[r]);
                __m512i isum = _mm512_sub_epi32(k[r][t], _mm512_slli_epi32(off, 5));
                acc[r][t] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dz[r], yd), acc[r][t]);
            }
        }
    }
    QUNROLL
    for (int r = 0; r < P; r++) {
        QUNROLL
        for (int t = 0; t < g; t++)
            QN(store2)(acc[r][t], y + t * ldy + 2 * r);
    }
}
#define QK45_ROWS QN(k45_rows_z)
#define QK6_ROWS  QN(q6k_rows_z)
#include "ops/matmul_q1_x86.h"
#else
#define QK45_ROWS QN(k45_rows)
#define QK6_ROWS  QN(q6k_rows)
#endif

/* ---- Q8_0-activation types: tiles of (row, token) pairs -------------------------------- *
 * A 32-value block's integer dot is one or two instructions, so a per-pair float step
 * (convert, f16 scale of the token, scale product, broadcast, FMA) would cost several times
 * the integer work, and it did for prefill. Here 8 (row, token) pairs form one tile: each
 * pair's 32 products land in 8 int32 lanes, the 8 vectors are reduced to one vector of the 8
 * exact block sums (lane k = pair k), and one convert + one FMA with the 8 scales d_w * d_x
 * (f16 read by gathers) do the float step of all 8. Every pair, in any tile shape or in the
 * one-pair path, computes acc = fma((float)isum, d_w * d_x, acc) block by block, single
 * rounded, so its result has the same bits whatever n, the tile or the row split. */

/* lane k = exact total of v[k] (hadd pairs within 128-bit halves, then across halves) */
static inline QATTR __m256i QN(rsum8)(const __m256i *v) {
    __m256i h0 = _mm256_hadd_epi32(v[0], v[1]), h1 = _mm256_hadd_epi32(v[2], v[3]);
    __m256i h2 = _mm256_hadd_epi32(v[4], v[5]), h3 = _mm256_hadd_epi32(v[6], v[7]);
    __m256i q0 = _mm256_hadd_epi32(h0, h1), q1 = _mm256_hadd_epi32(h2, h3);
    return _mm256_add_epi32(_mm256_permute2x128_si256(q0, q1, 0x20),
                            _mm256_permute2x128_si256(q0, q1, 0x31));
}

static inline QATTR uint64_t QN(ld16)(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return h;
}
/* The f16 at p + k * stride for k < m, widened to 8 floats in tile-lane order: m = 8 (rows
 * of an 8x1 tile), m = 4 (tokens of a 2x4 tile: k = lane % 4), m = 2 (rows of a 2x4 tile:
 * k = lane / 4), m = 1 (broadcast). Scalar loads packed into one f16 vector: cheaper than a
 * gather on the CPUs measured. */
static inline QATTR __m256 QN(f16s)(const uint8_t *p, size_t stride, const int m) {
    uint64_t lo, hi;
    if (m == 8 || m == 4) {
        lo = QN(ld16)(p) | QN(ld16)(p + stride) << 16 | QN(ld16)(p + 2 * stride) << 32 |
             QN(ld16)(p + 3 * stride) << 48;
        hi = m == 4 ? lo
                    : QN(ld16)(p + 4 * stride) | QN(ld16)(p + 5 * stride) << 16 |
                          QN(ld16)(p + 6 * stride) << 32 | QN(ld16)(p + 7 * stride) << 48;
    } else if (m == 2) {
        lo = QN(ld16)(p) * 0x0001000100010001u;
        hi = QN(ld16)(p + stride) * 0x0001000100010001u;
    } else {
        lo = hi = QN(ld16)(p) * 0x0001000100010001u;
    }
    return _mm256_cvtph_ps(_mm_set_epi64x((long long)hi, (long long)lo));
}

static inline QATTR int QN(hsum_i32)(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* exact dot of a weight block with one activation block's codes, in 8 int32 lanes */
static inline QATTR __m256i QN(bdot32)(const struct QN(u32) * u, const uint8_t *xb) {
    __m256i s = _mm256_sign_epi8(QN(load256)(xb + 2), u->w);
    return QN(dot_u8s8)(_mm256_setzero_si256(), u->a, s);
}

#if QZ512
/* 512-bit tiles of 4 rows x 4 tokens: a zmm holds one weight block twice and the blocks of
 * two tokens side by side, so one integer instruction serves two pairs. vector 4*tp + r is
 * row r with tokens 2tp (low half) and 2tp+1 (high half); qz_rsum16 leaves pair (r, t) in
 * lane 4*t + r. With VNNI the weights are made unsigned (w ^ 0x80 = w + 128) and the block
 * sum gives sum(w x) + 128 * sum(x): 128 * sum(x) per token and block is computed once per
 * chunk and subtracted from the reduced sums; without VNNI, |w| times x negated where w < 0
 * (maddubs; there is no 512-bit vpsignb). */
static inline QATTR __m512i QN(qz_rsum16)(const __m512i *v) {
    __m512i t[4];
    QUNROLL
    for (int j = 0; j < 4; j++)
        t[j] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * j], v[2 * j + 1]),
                                _mm512_unpackhi_epi32(v[2 * j], v[2 * j + 1]));
    __m512i u0 =
        _mm512_add_epi32(_mm512_unpacklo_epi64(t[0], t[1]), _mm512_unpackhi_epi64(t[0], t[1]));
    __m512i u1 =
        _mm512_add_epi32(_mm512_unpacklo_epi64(t[2], t[3]), _mm512_unpackhi_epi64(t[2], t[3]));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(u0, u1, 0x88), _mm512_shuffle_i32x4(u0, u1, 0xdd));
}

/* a weight block in both halves, prepared for qz_dot */
struct QN(qzw) {
    __m512i w; /* VNNI: w + 128 as u8; else |w| as u8 */
#if !QVNNI
    __mmask64 neg; /* w < 0 */
#endif
};
static inline QATTR struct QN(qzw) QN(qz_prep)(const struct QN(u32) * u) {
    struct QN(qzw) q;
#if QVNNI
    q.w = _mm512_broadcast_i64x4(_mm256_xor_si256(u->w, _mm256_set1_epi8((char)0x80)));
#else
    q.w = _mm512_broadcast_i64x4(u->a);
    q.neg = _mm512_movepi8_mask(_mm512_broadcast_i64x4(u->w));
#endif
    return q;
}
/* exact dots of the block with two tokens' blocks, 8 lanes each (VNNI: + 128 * sum(x)) */
static inline QATTR __m512i QN(qz_dot)(const struct QN(qzw) * q, __m512i X) {
#if QVNNI
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), q->w, X);
#else
    __m512i s = _mm512_mask_sub_epi8(X, q->neg, _mm512_setzero_si512(), X);
    return _mm512_madd_epi16(_mm512_maddubs_epi16(q->w, s), _mm512_set1_epi16(1));
#endif
}

static inline QATTR __m512i QN(qz_pair)(const uint8_t *x0, const uint8_t *x1) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(QN(load256)(x0 + 2)), QN(load256)(x1 + 2), 1);
}
#endif

/* ---- the Q8_0-activation drivers ----------------------------------------------------- */

/* kind: 0 Q8_0, 1 Q4_0, 2 Q5_0 */
#define QBB(kind) ((kind) == 0 ? 34 : (kind) == 1 ? 18 : 22)
static inline QATTR __attribute__((always_inline)) void
QN(unpack32)(const uint8_t *p, struct QN(u32) * u, const int kind) {
    if (kind == 0)
        QN(unpack_q8_0)(p, u);
    else if (kind == 1)
        QN(unpack_q4_0)(p, u);
    else
        QN(unpack_q5_0)(p, u);
}

/* one (row, token) pair over all blocks: the lane formula of the tiles, one lane */
static inline QATTR __attribute__((always_inline)) float
QN(one32)(const uint8_t *row, int64_t nb, const uint8_t *x, const int kind) {
    __m128 acc = _mm_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        struct QN(u32) u;
        QN(unpack32)(row + (size_t)i * QBB(kind), &u, kind);
        const uint8_t *xb = x + (size_t)i * 34;
        float isum = (float)QN(hsum_i32)(QN(bdot32)(&u, xb));
        acc = _mm_fmadd_ss(_mm_set_ss(isum), _mm_set_ss(u.d * _cvtsh_ss((uint16_t)QN(ld16)(xb))),
                           acc);
    }
    return _mm_cvtss_f32(acc);
}

/* 8 rows x 1 token (lane = row), all blocks: the single-token path. Eight rows read block by
 * block are eight interleaved streams, which the hardware prefetcher follows badly from memory
 * (0.8B q8_0, rows of 1088 bytes: 9.7 GB/s per thread): the next group's 8 rows, one
 * contiguous span, are prefetched line by line spread over this group's block steps. The
 * address is an integer: past the matrix it is a hint to nowhere (prefetches do not fault). */
static inline QATTR __attribute__((always_inline)) void QN(tile8x1)(const uint8_t *row,
                                                                    size_t rbytes, int64_t nb,
                                                                    const uint8_t *x, float *y,
                                                                    const int kind) {
    __m256 acc = _mm256_setzero_ps();
    const uintptr_t next = (uintptr_t)row + 8 * rbytes;
    const size_t step = ((8 * rbytes + (size_t)nb - 1) / (size_t)nb + 63) & ~(size_t)63;
    for (int64_t i = 0; i < nb; i++) {
        for (size_t o = (size_t)i * step; o < (size_t)(i + 1) * step && o < 8 * rbytes; o += 64)
            _mm_prefetch((const char *)(next + o), _MM_HINT_T0);
        const uint8_t *wb = row + (size_t)i * QBB(kind), *xb = x + (size_t)i * 34;
        __m256 sc = _mm256_mul_ps(QN(f16s)(wb, rbytes, 8), QN(f16s)(xb, 0, 1));
        __m256i v[8];
        __m256i xv = QN(load256)(xb + 2);
        QUNROLL
        for (int r = 0; r < 8; r++) {
            struct QN(u32) u;
            QN(unpack32)(wb + (size_t)r * rbytes, &u, kind);
            v[r] = QN(dot_u8s8)(_mm256_setzero_si256(), u.a, _mm256_sign_epi8(xv, u.w));
        }
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(QN(rsum8)(v)), sc, acc);
    }
    _mm256_storeu_ps(y, acc);
}

/* Batched tiles walk a chunk of QCH blocks with the f16 scales already widened (dw: the
 * row group's, dx: the token quad's, 4 floats per block); the running sums live in y between
 * chunks (stored and reloaded as floats: the same bits as one pass). */
#define QCH 128

/* 2 rows x 4 tokens (lane = 4 * row + token); dw holds [d0 x4, d1 x4] per block. pf: as in
 * tile4x4, for the next two rows; AVX2, 2 threads from memory, Q8_0 12288 x 4096: n = 8 from
 * 145 to 205 GOP/s, n = 64 +10%. */
static inline QATTR __attribute__((always_inline)) void
QN(tile2x4)(const uint8_t *row, size_t rbytes, int64_t nb, const uint8_t *xq, size_t ldxq,
            const float *dw, const float *dx, float *y, int64_t ldy, int first, int pf,
            const int kind) {
    __m256 acc;
    if (first) {
        acc = _mm256_setzero_ps();
    } else {
        acc = _mm256_setr_ps(y[0], y[ldy], y[2 * ldy], y[3 * ldy], y[1], y[ldy + 1], y[2 * ldy + 1],
                             y[3 * ldy + 1]);
    }
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *wb = row + (size_t)i * QBB(kind), *xb = xq + (size_t)i * 34;
        if (pf) QN(next_rows_prefetch)(wb, rbytes, QBB(kind), 2);
        __m256 sc = _mm256_mul_ps(_mm256_loadu_ps(dw + 8 * i),
                                  _mm256_broadcast_ps((const __m128 *)(const void *)(dx + 4 * i)));
        struct QN(u32) u0, u1;
        QN(unpack32)(wb, &u0, kind);
        QN(unpack32)(wb + rbytes, &u1, kind);
        __m256i v[8];
        QUNROLL
        for (int t = 0; t < 4; t++) {
            __m256i xv = QN(load256)(xb + (size_t)t * ldxq + 2);
            v[t] = QN(dot_u8s8)(_mm256_setzero_si256(), u0.a, _mm256_sign_epi8(xv, u0.w));
            v[4 + t] = QN(dot_u8s8)(_mm256_setzero_si256(), u1.a, _mm256_sign_epi8(xv, u1.w));
        }
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(QN(rsum8)(v)), sc, acc);
    }
    float out[8];
    _mm256_storeu_ps(out, acc);
    QUNROLL
    for (int k = 0; k < 8; k++)
        y[(k & 3) * ldy + (k >> 2)] = out[k];
}

#if QZ512
/* 4 rows x 4 tokens (lane = 4 * token + row); dw holds d0..d3 per block. pf: the first token
 * quad of a row group prefetches the next group's blocks (next_rows_prefetch); 2 threads, weights
 * from memory, Q8_0 12288 x 4096: n = 8 from 190-230 to 250-320 GOP/s, n = 64 even in one
 * alternating round, +25% in another. */
static inline QATTR __attribute__((always_inline)) void
QN(tile4x4)(const uint8_t *row, size_t rbytes, int64_t nb, const uint8_t *xq, size_t ldxq,
            const float *dw, const float *dx, const int32_t *sx, float *y, int64_t ldy, int first,
            int pf, const int kind) {
    __m512 acc = _mm512_setzero_ps();
    if (!first) {
        acc = _mm512_insertf32x4(acc, _mm_loadu_ps(y), 0);
        acc = _mm512_insertf32x4(acc, _mm_loadu_ps(y + ldy), 1);
        acc = _mm512_insertf32x4(acc, _mm_loadu_ps(y + 2 * ldy), 2);
        acc = _mm512_insertf32x4(acc, _mm_loadu_ps(y + 3 * ldy), 3);
    }
    const __m512i perm = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *wb = row + (size_t)i * QBB(kind), *xb = xq + (size_t)i * 34;
        if (pf) QN(next_rows_prefetch)(wb, rbytes, QBB(kind), 4);
        __m512 sc = _mm512_mul_ps(
            _mm512_broadcast_f32x4(_mm_loadu_ps(dw + 4 * i)),
            _mm512_permutexvar_ps(perm, _mm512_castps128_ps512(_mm_loadu_ps(dx + 4 * i))));
        __m512i X[2], v[8];
        QUNROLL
        for (int tp = 0; tp < 2; tp++) {
            X[tp] = QN(qz_pair)(xb + (size_t)(2 * tp) * ldxq, xb + (size_t)(2 * tp + 1) * ldxq);
        }
        QUNROLL
        for (int r = 0; r < 4; r++) {
            struct QN(u32) u;
            QN(unpack32)(wb + (size_t)r * rbytes, &u, kind);
            struct QN(qzw) qw = QN(qz_prep)(&u);
            v[r] = QN(qz_dot)(&qw, X[0]);
            v[4 + r] = QN(qz_dot)(&qw, X[1]);
        }
        __m512i isum = QN(qz_rsum16)(v);
#if QVNNI
        isum = _mm512_sub_epi32(
            isum, _mm512_permutexvar_epi32(perm, _mm512_castsi128_si512(_mm_loadu_si128((
                                                     const __m128i *)(const void *)(sx + 4 * i)))));
#else
        (void)sx;
#endif
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), sc, acc);
    }
    _mm_storeu_ps(y, _mm512_castps512_ps128(acc));
    _mm_storeu_ps(y + ldy, _mm512_extractf32x4_ps(acc, 1));
    _mm_storeu_ps(y + 2 * ldy, _mm512_extractf32x4_ps(acc, 2));
    _mm_storeu_ps(y + 3 * ldy, _mm512_extractf32x4_ps(acc, 3));
}
#define QRG 4 /* rows per batched tile */
#else
#define QRG 2
#endif

/* Tokens in fours (tiles of QTILE tokens, whose activations stay in L2) over row groups of
 * QRG, chunk by chunk of blocks; the rows left over and the tokens left over (n % 4, and all
 * of a single-token call) one pair or eight rows at a time. */
static inline QATTR __attribute__((always_inline)) void
QN(matmul32)(const struct mat *w, const uint8_t *xq, size_t ldxq, int64_t n, float *y, int64_t ldy,
             int64_t r0, int64_t r1, const int kind) {
    const uint8_t *W = w->data;
    const int64_t nb = w->cols / 32, n4 = n / 4 * 4, rg_end = r0 + (r1 - r0) / QRG * QRG;
    const size_t rb = w->row_bytes, BB = QBB(kind);
    float dxs[QTILE / 4][QCH * 4], dws[QCH * 8];
    int32_t sxs[QTILE / 4][QZ512 && QVNNI ? QCH * 4 : 1]; /* 128 * sum of a block's x codes */
    (void)sxs;
    for (int64_t t0 = 0; t0 < n4; t0 += QTILE) {
        const int64_t te = n4 - t0 < QTILE ? n4 : t0 + QTILE;
        for (int64_t c0 = 0; c0 < nb; c0 += QCH) {
            const int64_t nc = nb - c0 < QCH ? nb - c0 : QCH;
            for (int64_t t = t0; t < te; t++)
                for (int64_t i = 0; i < nc; i++)
                    dxs[(t - t0) / 4][4 * i + (t & 3)] = _cvtsh_ss(
                        (uint16_t)QN(ld16)(xq + (size_t)t * ldxq + (size_t)(c0 + i) * 34));
#if QZ512 && QVNNI
            for (int64_t t = t0; t < te; t++)
                for (int64_t i = 0; i < nc; i++) {
                    __m256i xv = QN(load256)(xq + (size_t)t * ldxq + (size_t)(c0 + i) * 34 + 2);
                    sxs[(t - t0) / 4][4 * i + (t & 3)] =
                        128 * QN(hsum_i32)(_mm256_dpbusd_epi32(_mm256_setzero_si256(),
                                                               _mm256_set1_epi8(1), xv));
                }
#endif
            for (int64_t r = r0; r < rg_end; r += QRG) {
                const uint8_t *wr = W + (size_t)r * rb + (size_t)c0 * BB;
                for (int64_t i = 0; i < nc; i++)
                    for (int k = 0; k < QRG; k++) {
                        float d =
                            _cvtsh_ss((uint16_t)QN(ld16)(wr + (size_t)k * rb + (size_t)i * BB));
                        if (QRG == 4)
                            dws[4 * i + k] = d;
                        else
                            for (int j = 0; j < 4; j++)
                                dws[8 * i + 4 * k + j] = d;
                    }
                for (int64_t t = t0; t < te; t += 4) {
                    const uint8_t *xt = xq + (size_t)t * ldxq + (size_t)c0 * 34;
#if QZ512
                    QN(tile4x4)
                    (wr, rb, nc, xt, ldxq, dws, dxs[(t - t0) / 4], sxs[(t - t0) / 4],
                     y + t * ldy + r, ldy, c0 == 0, t == t0, kind);
#else
                    QN(tile2x4)
                    (wr, rb, nc, xt, ldxq, dws, dxs[(t - t0) / 4], y + t * ldy + r, ldy, c0 == 0,
                     t == t0, kind);
#endif
                }
            }
        }
        for (int64_t r = rg_end; r < r1; r++)
            for (int64_t t = t0; t < te; t++)
                y[t * ldy + r] = QN(one32)(W + (size_t)r * rb, nb, xq + (size_t)t * ldxq, kind);
    }
    for (int64_t t = n4; t < n; t++) {
        int64_t r = r0;
        float out[8];
        for (; r + 8 <= r1; r += 8) {
            QN(tile8x1)(W + (size_t)r * rb, rb, nb, xq + (size_t)t * ldxq, out, kind);
            for (int k = 0; k < 8; k++)
                y[t * ldy + r + k] = out[k];
        }
        for (; r < r1; r++)
            y[t * ldy + r] = QN(one32)(W + (size_t)r * rb, nb, xq + (size_t)t * ldxq, kind);
    }
}

#define QDEF32(T, kind)                                                                            \
    static QATTR void QN(matmul_q_##T)(const struct mat *w, const void *restrict xq, size_t ldxq,  \
                                       int64_t n, float *restrict y, int64_t ldy, int64_t r0,      \
                                       int64_t r1) {                                               \
        QN(matmul32)(w, xq, ldxq, n, y, ldy, r0, r1, kind);                                        \
    }
QDEF32(q8_0, 0)
QDEF32(q4_0, 1)
QDEF32(q5_0, 2)

// clang-format off
static inline QATTR __attribute__((always_inline)) void QN(q4_k_rows)(
    const uint8_t *row, int64_t nb, const uint8_t *xq, size_t ldxq, float *y, int64_t ldy,
    const int g) {
    QK45_ROWS(row, nb, xq, ldxq, y, ldy, g, 0);
}
static inline QATTR __attribute__((always_inline)) void QN(q5_k_rows)(
    const uint8_t *row, int64_t nb, const uint8_t *xq, size_t ldxq, float *y, int64_t ldy,
    const int g) {
    QK45_ROWS(row, nb, xq, ldxq, y, ldy, g, 1);
}
static inline QATTR __attribute__((always_inline)) void QN(q6_k_rows)(
    const uint8_t *row, int64_t nb, const uint8_t *xq, size_t ldxq, float *y, int64_t ldy,
    const int g) {
    QK6_ROWS(row, nb, xq, ldxq, y, ldy, g);
}

/* Single-token fast path of the driver (1 = done), 512-bit forms only: rows in fours
 * (matmul_q1_x86.h), the rows left over one at a time (k45_row1_z, q6k_rows_z with g = 1);
 * Q4_K/Q5_K read the activations reordered once (k45_perm_act). Other widths return 0. */
#define QK1_MAX_NB 64 /* activation copy on the stack: up to 16384 columns */
static inline QATTR __attribute__((always_inline)) int
QN(k45_one)(const struct mat *w, const void *xq, int64_t n, float *y, int64_t r0, int64_t r1,
            const int Q5) {
#if QZ512
    int64_t nb = w->cols / QK_K;
    if (n != 1 || nb > QK1_MAX_NB) return 0;
    uint8_t yp[QK1_MAX_NB * QK_K] __attribute__((aligned(64)));
    QN(k45_perm_act)(xq, nb, yp);
    const uint8_t *W = w->data;
    const size_t rb = w->row_bytes;
    int64_t r = r0 + (r1 - r0) / 4 * 4;
    QN(rows4_driver)(W, rb, nb, r0, r, xq, yp, y, Q5 ? 5 : 4);
    for (; r < r1; r++)
        QN(k45_row1_z)(W + (size_t)r * rb, nb, xq, yp, y + r, Q5);
    return 1;
#else
    (void)w, (void)xq, (void)n, (void)y, (void)r0, (void)r1, (void)Q5;
    return 0;
#endif
}
static inline QATTR int QN(q4_k_one)(const struct mat *w, const void *xq, int64_t n, float *y,
                                     int64_t r0, int64_t r1) {
    return QN(k45_one)(w, xq, n, y, r0, r1, 0);
}
static inline QATTR int QN(q5_k_one)(const struct mat *w, const void *xq, int64_t n, float *y,
                                     int64_t r0, int64_t r1) {
    return QN(k45_one)(w, xq, n, y, r0, r1, 1);
}
static inline QATTR int QN(q6_k_one)(const struct mat *w, const void *xq, int64_t n, float *y,
                                     int64_t r0, int64_t r1) {
#if QZ512
    if (n != 1) return 0;
    int64_t nb = w->cols / QK_K;
    const uint8_t *W = w->data;
    const size_t rb = w->row_bytes;
    int64_t r = r0 + (r1 - r0) / 4 * 4;
    QN(rows4_driver)(W, rb, nb, r0, r, xq, NULL, y, 6);
    for (; r < r1; r++)
        QN(q6k_rows_z)(W + (size_t)r * rb, nb, xq, 0, y + r, 1, 1);
    return 1;
#else
    (void)w, (void)xq, (void)n, (void)y, (void)r0, (void)r1;
    return 0;
#endif
}

#if QZ512
/* rows r .. r + 2P - 1 (QZ512: pairs of rows in one vector, see k45_pairs_z) */
static inline QATTR __attribute__((always_inline)) void QN(q4_k_pairs)(
    const uint8_t *row, size_t rb, int64_t nb, const uint8_t *xq, size_t ldxq, float *y,
    int64_t ldy, const int P, const int g) {
    QN(k45_pairs_z)(row, rb, nb, xq, ldxq, y, ldy, P, g, 0);
}
static inline QATTR __attribute__((always_inline)) void QN(q5_k_pairs)(
    const uint8_t *row, size_t rb, int64_t nb, const uint8_t *xq, size_t ldxq, float *y,
    int64_t ldy, const int P, const int g) {
    QN(k45_pairs_z)(row, rb, nb, xq, ldxq, y, ldy, P, g, 1);
}
static inline QATTR __attribute__((always_inline)) void QN(q6_k_pairs)(
    const uint8_t *row, size_t rb, int64_t nb, const uint8_t *xq, size_t ldxq, float *y,
    int64_t ldy, const int P, const int g) {
    QN(q6k_pairs_z)(row, rb, nb, xq, ldxq, y, ldy, P, g);
}
#ifndef QRC
#define QRC 32 /* rows per chunk: a chunk's weights stay in L2 while token groups pass */
#endif
#ifndef QPMAX
#define QPMAX 2 /* pairs of rows per pass */
#endif
#define QCASE2(T, P, k) case k: QN(T##_pairs)(row, rb, nb, xt, ldxq, yt, ldy, P, k); break;
#define QCASES2(T, P)                                                                              \
    QCASE2(T, P, 1) QCASE2(T, P, 2) QCASE2(T, P, 3) QCASE2(T, P, 4) QCASE2(T, P, 5)                \
    QCASE2(T, P, 6) QCASE2(T, P, 7)                                                                \
    default: QN(T##_pairs)(row, rb, nb, xt, ldxq, yt, ldy, P, QG); break;
/* Rows in chunks of QRC, each chunk against the token groups of the tile in turn (a group's
 * activations stay in L1 across the chunk's rows), 2 * QPMAX rows at a time, then a pair. */
#define QPAIRS(T)                                                                                  \
    for (int64_t rc = r0; rc + 2 <= r1; rc += QRC) {                                               \
        const int64_t re = rc + (r1 - rc < QRC ? (r1 - rc) / 2 * 2 : QRC);                         \
        for (int64_t t = t0; t < te; t += QG) {                                                    \
            const uint8_t *xt = (const uint8_t *)xq + (size_t)t * ldxq;                            \
            const int gn = te - t < QG ? (int)(te - t) : QG;                                       \
            for (r = rc; r < re;) {                                                                \
                const uint8_t *row = (const uint8_t *)w->data + (size_t)r * rb;                    \
                float *yt = y + t * ldy + r;                                                       \
                if (QPMAX == 2 && r + 4 <= re) {                                                   \
                    switch (gn) { QCASES2(T, QPMAX) }                                              \
                    r += 2 * QPMAX;                                                                \
                } else {                                                                           \
                    switch (gn) { QCASES2(T, 1) }                                                  \
                    r += 2;                                                                        \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        r = re;                                                                                    \
    }
#else
#define QPAIRS(T)
#endif
#if QG == 8
#define QCASES_58(T)                                                                               \
    case 4: QN(T##_rows)(row, nb, xt, ldxq, yt, ldy, 4); break;                                    \
    case 5: QN(T##_rows)(row, nb, xt, ldxq, yt, ldy, 5); break;                                    \
    case 6: QN(T##_rows)(row, nb, xt, ldxq, yt, ldy, 6); break;                                    \
    case 7: QN(T##_rows)(row, nb, xt, ldxq, yt, ldy, 7); break;
#else
#define QCASES_58(T)
#endif
/* The driver: tiles of QTILE tokens, each row (QZ512: pair of rows, then the odd row left)
 * against groups of up to QG tokens. */
#define QDEF(T)                                                                                    \
    static QATTR void QN(matmul_q_##T)(const struct mat *w, const void *restrict xq, size_t ldxq,  \
                                       int64_t n, float *restrict y, int64_t ldy, int64_t r0,      \
                                       int64_t r1) {                                               \
        int64_t nb = w->cols / dtype_traits[w->dt].block;                                          \
        size_t rb = w->row_bytes;                                                                  \
        if (QN(T##_one)(w, xq, n, y, r0, r1)) return;                                              \
        for (int64_t t0 = 0; t0 < n; t0 += QTILE) {                                                \
            int64_t te = n - t0 < QTILE ? n : t0 + QTILE, r = r0;                                  \
            (void)rb;                                                                              \
            QPAIRS(T)                                                                              \
            for (; r < r1; r++) {                                                                  \
                const uint8_t *row = (const uint8_t *)w->data + (size_t)r * rb;                    \
                for (int64_t t = t0; t < te; t += QG) {                                            \
                    const uint8_t *xt = (const uint8_t *)xq + (size_t)t * ldxq;                    \
                    float *yt = y + t * ldy + r;                                                   \
                    switch (te - t < QG ? (int)(te - t) : QG) {                                    \
                    case 1: QN(T##_rows)(row, nb, xt, ldxq, yt, ldy, 1); break;                    \
                    case 2: QN(T##_rows)(row, nb, xt, ldxq, yt, ldy, 2); break;                    \
                    case 3: QN(T##_rows)(row, nb, xt, ldxq, yt, ldy, 3); break;                    \
                    QCASES_58(T)                                                                   \
                    default: QN(T##_rows)(row, nb, xt, ldxq, yt, ldy, QG); break;                  \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

QDEF(q4_k)
QDEF(q5_k)
QDEF(q6_k)
// clang-format on

/* Table slots for one suffix: .matmul_q = {QSLOTS(avx2)} */
#define QSLOTS(S)                                                                                  \
    [DT_Q8_0] = matmul_q_q8_0_##S, [DT_Q4_0] = matmul_q_q4_0_##S, [DT_Q5_0] = matmul_q_q5_0_##S,   \
    [DT_Q4_K] = matmul_q_q4_k_##S, [DT_Q5_K] = matmul_q_q5_k_##S, [DT_Q6_K] = matmul_q_q6_k_##S

#undef QDEF
#undef QDEF32
#undef QBB
#undef QCH
#undef QRG
#undef QCASES_58
#undef QCASE2
#undef QCASES2
#undef QPAIRS
#undef QRC
#undef QPMAX
#undef QG
#undef QTILE
#undef Q6_FAR
#undef QK_SEL
#undef QK_BC16
#undef QK_TAB
#undef QUNROLL
#undef QK45_ROWS
#undef QK6_ROWS
#undef QK1_MAX_NB
