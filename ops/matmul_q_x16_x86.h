/* ops/matmul_q_x16_x86.h: matmul_q for DT_Q4_K_X16, DT_Q5_K_X16 and DT_Q6_K_X16 (ops/repack.h)
 * on AVX-512, included by ops_avx512.c after matmul_q_x86.h (whose QN, QATTR, QVNNI and QSFX
 * it uses) once per table.
 *
 * A zmm holds 4 code bytes of each of 16 rows (lane r = row r), so a dot product against 4
 * activation bytes broadcast to every lane adds 4 products to each row's sub-block sum, and
 * eight of them complete sub-block s of all 16 rows: P[r] = sum of its 32 code x activation
 * products, exact in int32. The sub-block's 6-bit scale is then one vpmulld, the mins one
 * vpdpwssd per sub-block against the activation's 16-value sums, and the float step
 *   acc[r] += isum[r] * (d[r] * yd) - msum[r] * (dmin[r] * yd)
 * runs once per block for 16 rows, where the GGUF-layout kernels spend a permute and a
 * multiply on every two dot products (measured on this 2-vCPU Zen 5 host, 2 threads, Q4_K
 * 12288 x 4096 cycled from memory, 8 tokens: 1000 GOP/s against 520).
 *
 * Tokens go in groups of g = 8, 4, 2 or 1 per pass over a block; each token keeps 8 / g
 * partial sums of a sub-block (the dot products have a 4-cycle latency and two issue per
 * cycle) that are added before the scale, so the integer sums, and with them every result
 * bit, do not depend on g, n or the row split. Without VNNI the byte dot product is maddubs
 * (at most 2 * 31 * 127, no saturation) plus madd, the same exact sums.
 *
 * Q5_K x16 runs the same loop: its fifth bits complete each code vector before the dot
 * products (a byte test against bit s and a masked add of 16), once per 8 tokens.
 *
 * Q6_K x16 has its own loop (x16q6_group): a code is a ql nibble with two qh bits rotated
 * above it (0..63, unsigned for the dot product), a sub-block is 16 values (four dot
 * products) scaled by its signed byte, and the -32 of every code comes off once per block
 * as 32 * sum_s scale_s * bsum_s (vpdpwssd on scale pairs against the activation's 16-value
 * sums). */

static inline QATTR __m512i QN(x16_dpbusd)(__m512i acc, __m512i u, __m512i s) {
#if QVNNI
    return _mm512_dpbusd_epi32(acc, u, s);
#else
    return _mm512_add_epi32(acc,
                            _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)));
#endif
}

static inline QATTR __m512i QN(x16_dpwssd)(__m512i acc, __m512i a, __m512i b) {
#if QVNNI
    return _mm512_dpwssd_epi32(acc, a, b);
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(a, b));
#endif
}

/* 16 bytes (one per row) widened to the int32 lanes */
static inline QATTR __m512i QN(x16_bytes)(const uint8_t *p) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)p));
}

/* the 4 activation bytes at p in every lane */
static inline QATTR __m512i QN(x16_bcast4)(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm512_set1_epi32(v);
}

/* 6-bit scale and min of sub-block s for 16 rows (quant_scale_min_k4, lane by lane) */
static inline QATTR __m512i QN(x16_scale)(const struct block_q4_k_x16 *B, int s) {
    const __m512i m63 = _mm512_set1_epi32(63), m15 = _mm512_set1_epi32(15);
    if (s < 4) return _mm512_and_si512(QN(x16_bytes)(B->scales[s]), m63);
    __m512i lo = _mm512_and_si512(QN(x16_bytes)(B->scales[s + 4]), m15);
    __m512i hi = _mm512_slli_epi32(_mm512_srli_epi32(QN(x16_bytes)(B->scales[s - 4]), 6), 4);
    return _mm512_or_si512(lo, hi);
}
static inline QATTR __m512i QN(x16_min)(const struct block_q4_k_x16 *B, int s) {
    if (s < 4) return _mm512_and_si512(QN(x16_bytes)(B->scales[s + 4]), _mm512_set1_epi32(63));
    __m512i lo = _mm512_srli_epi32(QN(x16_bytes)(B->scales[s + 4]), 4);
    __m512i hi = _mm512_slli_epi32(_mm512_srli_epi32(QN(x16_bytes)(B->scales[s]), 6), 4);
    return _mm512_or_si512(lo, hi);
}

/* A finished sub-block: isum[t] += (token t's C partial sums, added) * S, for each t < g. */
#define X16_SCALE_ADD(isum, P, S, g, C)                                                            \
    do {                                                                                           \
        X16_UNROLL                                                                                 \
        for (int t_ = 0; t_ < (g); t_++) {                                                         \
            __m512i p_ = (P)[t_ * (C)];                                                            \
            X16_UNROLL                                                                             \
            for (int c_ = 1; c_ < (C); c_++)                                                       \
                p_ = _mm512_add_epi32(p_, (P)[t_ * (C) + c_]);                                     \
            (isum)[t_] = _mm512_add_epi32((isum)[t_], _mm512_mullo_epi32(p_, (S)));                \
        }                                                                                          \
    } while (0)

/* sum over k < 8 of pairs[k] (two int16 per row) . the activation's 16-value sums 2k, 2k + 1 */
static inline QATTR __attribute__((always_inline)) __m512i QN(x16_bsum_dot)(const __m512i *pairs,
                                                                            const uint8_t *yb) {
    __m512i acc = _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++)
        acc = QN(x16_dpwssd)(
            acc, pairs[k], QN(x16_bcast4)(yb + offsetof(struct block_q8_k, bsums) + 4 * (size_t)k));
    return acc;
}

/* Blocks two ahead are fetched while this one computes, a quarter per 64 values: the
 * hardware prefetcher alone left the kernel at half its rate from memory (520 -> 1000
 * GOP/s with it, 2 threads, 8 tokens). */
#define X16_PF_AHEAD 2
#define X16_UNROLL   _Pragma("GCC unroll 8")

/* y[t * ldy + r] for the 16 rows of a group and g tokens of xq (rows ldxq bytes apart) */
static inline QATTR __attribute__((always_inline)) void
QN(x16_group)(const uint8_t *grp, size_t bsz, int64_t nb, const uint8_t *xq, size_t ldxq, float *y,
              int64_t ldy, const int g, const int five) {
    const int C = 8 / g; /* partial sums per token */
    __m512 acc[8];
    X16_UNROLL
    for (int t = 0; t < g; t++)
        acc[t] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(15), b16 = _mm512_set1_epi8(16);
    for (int64_t i = 0; i < nb; i++) {
        const struct block_q4_k_x16 *B =
            (const struct block_q4_k_x16 *)(const void *)(grp + (size_t)i * bsz);
        const struct block_q5_k_x16 *B5 = (const struct block_q5_k_x16 *)(const void *)B;
        const uint8_t *xb = xq + (size_t)i * sizeof(struct block_q8_k);
        __m512i isum[8];
        X16_UNROLL
        for (int t = 0; t < g; t++)
            isum[t] = _mm512_setzero_si512();
#pragma GCC unroll 1
        for (int j = 0; j < 4; j++) {
            const char *pf = (const char *)B + X16_PF_AHEAD * bsz + j * (bsz / 4);
            X16_UNROLL
            for (int l = 0; l < (int)((bsz / 4 + 63) / 64); l++)
                _mm_prefetch(pf + 64 * l, _MM_HINT_T0);
            X16_UNROLL
            for (int h = 0; h < 2; h++) { /* sub-block 2j + h: low (h = 0) or high nibbles */
                __m512i P[8];
                X16_UNROLL
                for (int k = 0; k < 8; k++)
                    P[k] = _mm512_setzero_si512();
                X16_UNROLL
                for (int b = 0; b < 8; b++) {
                    __m512i w = _mm512_loadu_si512(B->qs[j][b]);
                    __m512i q =
                        h ? _mm512_and_si512(_mm512_srli_epi16(w, 4), m4) : _mm512_and_si512(w, m4);
                    if (five) { /* bit 2j + h of the fifth-bit bytes is worth 16 */
                        __mmask64 k =
                            _mm512_test_epi8_mask(_mm512_loadu_si512(B5->qh[b]),
                                                  _mm512_set1_epi8((char)(1 << (2 * j + h))));
                        q = _mm512_mask_add_epi8(q, k, q, b16);
                    }
                    X16_UNROLL
                    for (int t = 0; t < g; t++) {
                        const uint8_t *x = xb + (size_t)t * ldxq + offsetof(struct block_q8_k, qs) +
                                           64 * j + 32 * h + 4 * b;
                        int k = t * C + b % C;
                        P[k] = QN(x16_dpbusd)(P[k], q, QN(x16_bcast4)(x));
                    }
                }
                __m512i S = QN(x16_scale)(B, 2 * j + h);
                X16_SCALE_ADD(isum, P, S, g, C);
            }
        }
        /* mins: (m_s, m_s) int16 pairs against the two 16-value sums of sub-block s */
        __m512i MM[8];
        X16_UNROLL
        for (int s = 0; s < 8; s++) {
            __m512i m = QN(x16_min)(B, s);
            MM[s] = _mm512_or_si512(m, _mm512_slli_epi32(m, 16));
        }
        __m512 D = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)B->d));
        __m512 DM = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)B->dmin));
        X16_UNROLL
        for (int t = 0; t < g; t++) {
            const uint8_t *yb = xb + (size_t)t * ldxq;
            __m512i ms = QN(x16_bsum_dot)(MM, yb);
            __m512 yd = _mm512_set1_ps(q8k_d(yb));
            __m512 m = _mm512_mul_ps(_mm512_cvtepi32_ps(ms), _mm512_mul_ps(DM, yd));
            acc[t] = _mm512_add_ps(
                acc[t], _mm512_fmsub_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(D, yd), m));
        }
    }
    X16_UNROLL
    for (int t = 0; t < g; t++)
        _mm512_storeu_ps(y + t * ldy, acc[t]);
}

/* y[t * ldy + r] for the 16 rows of a Q6_K x16 group and g tokens. Each 16-value sub-block
 * keeps K = min(4, 8 / g) partial sums per token (at least 8 dot-product chains in flight),
 * added before its scale, so the sums do not depend on g, n or the row split. */
static inline QATTR __attribute__((always_inline)) void
QN(x16q6_group)(const uint8_t *grp, int64_t nb, const uint8_t *xq, size_t ldxq, float *y,
                int64_t ldy, const int g) {
    const int K = 8 / g < 4 ? 8 / g : 4;
    __m512 acc[8];
    X16_UNROLL
    for (int t = 0; t < g; t++)
        acc[t] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(15), m30 = _mm512_set1_epi8(0x30);
    for (int64_t i = 0; i < nb; i++) {
        const struct block_q6_k_x16 *B =
            (const struct block_q6_k_x16 *)(const void *)(grp + (size_t)i * sizeof *B);
        const uint8_t *xb = xq + (size_t)i * sizeof(struct block_q8_k);
        __m512i isum[8];
        X16_UNROLL
        for (int t = 0; t < g; t++)
            isum[t] = _mm512_setzero_si512();
#pragma GCC unroll 1
        for (int j = 0; j < 4; j++) { /* ql bytes 32j.. : values 128(j/2) + 32(j%2) + 64h + l */
            const char *pf = (const char *)(B + X16_PF_AHEAD) + j * (sizeof *B / 4);
            X16_UNROLL
            for (int l = 0; l < (int)((sizeof *B / 4 + 63) / 64); l++)
                _mm_prefetch(pf + 64 * l, _MM_HINT_T0);
            X16_UNROLL
            for (int h = 0; h < 2; h++) {
                /* qh bits 2p, 2p + 1 with p = j % 2 + 2h go to bits 4, 5 of each byte */
                const __m512i rot = _mm512_set1_epi32((4 - 2 * ((j & 1) + 2 * h)) & 31);
                X16_UNROLL
                for (int half = 0; half < 2; half++) { /* sub-block of l in 16 half .. +15 */
                    __m512i P[8];
                    X16_UNROLL
                    for (int k = 0; k < 8; k++)
                        P[k] = _mm512_setzero_si512();
                    X16_UNROLL
                    for (int b = 4 * half; b < 4 * half + 4; b++) {
                        __m512i w = _mm512_loadu_si512(B->ql[j][b]);
                        __m512i nib = h ? _mm512_and_si512(_mm512_srli_epi16(w, 4), m4)
                                        : _mm512_and_si512(w, m4);
                        __m512i hi = _mm512_rolv_epi32(_mm512_loadu_si512(B->qh[j >> 1][b]), rot);
                        __m512i q = _mm512_ternarylogic_epi32(nib, hi, m30, 0xF8); /* a|(b&c) */
                        X16_UNROLL
                        for (int t = 0; t < g; t++) {
                            const uint8_t *x = xb + (size_t)t * ldxq +
                                               offsetof(struct block_q8_k, qs) + 128 * (j >> 1) +
                                               32 * (j & 1) + 64 * h + 4 * b;
                            int k = t * K + b % K;
                            P[k] = QN(x16_dpbusd)(P[k], q, QN(x16_bcast4)(x));
                        }
                    }
                    int s = 8 * (j >> 1) + 2 * (j & 1) + 4 * h + half;
                    __m512i S = _mm512_cvtepi8_epi32(
                        _mm_loadu_si128((const __m128i *)(const void *)B->scales[s]));
                    X16_SCALE_ADD(isum, P, S, g, K);
                }
            }
        }
        /* the codes' -32: 32 * sum_s scale_s * bsum_s, on (scale_2k, scale_2k+1) int16 pairs */
        __m512i SP[8];
        X16_UNROLL
        for (int k = 0; k < 8; k++) {
            __m512i lo = _mm512_cvtepi8_epi32(
                _mm_loadu_si128((const __m128i *)(const void *)B->scales[2 * k]));
            __m512i hi = _mm512_cvtepi8_epi32(
                _mm_loadu_si128((const __m128i *)(const void *)B->scales[2 * k + 1]));
            SP[k] = _mm512_or_si512(_mm512_and_si512(lo, _mm512_set1_epi32(0xffff)),
                                    _mm512_slli_epi32(hi, 16));
        }
        __m512 D = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)B->d));
        X16_UNROLL
        for (int t = 0; t < g; t++) {
            const uint8_t *yb = xb + (size_t)t * ldxq;
            __m512i ms = QN(x16_bsum_dot)(SP, yb);
            __m512i sum = _mm512_sub_epi32(isum[t], _mm512_slli_epi32(ms, 5));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum),
                                     _mm512_mul_ps(D, _mm512_set1_ps(q8k_d(yb))), acc[t]);
        }
    }
    X16_UNROLL
    for (int t = 0; t < g; t++)
        _mm512_storeu_ps(y + t * ldy, acc[t]);
}

/* rows [r0, r1) (whole groups) of a Q4_K x16 (kind 4), Q5_K x16 (5) or Q6_K x16 (6) matrix */
#define X16_GROUP(kind, g)                                                                         \
    ((kind) == 6 ? QN(x16q6_group)(grp, nb, x + (size_t)t * ldxq, ldxq, y + t * ldy + r, ldy, g)   \
                 : QN(x16_group)(grp, bsz, nb, x + (size_t)t * ldxq, ldxq, y + t * ldy + r, ldy,   \
                                 g, (kind) == 5))
static inline QATTR __attribute__((always_inline)) void
QN(x16_rows)(const struct mat *w, const uint8_t *x, size_t ldxq, int64_t n, float *y, int64_t ldy,
             int64_t r0, int64_t r1, const int kind) {
    BT_ASSERT(r0 % X16_ROWS == 0 && r1 % X16_ROWS == 0); /* whole groups (repack.h) */
    int64_t nb = w->cols / QK_K;
    size_t bsz = kind == 5 ? sizeof(struct block_q5_k_x16) : sizeof(struct block_q4_k_x16);
    for (int64_t r = r0; r < r1; r += X16_ROWS) {
        const uint8_t *grp = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
        int64_t t = 0;
        for (; t + 8 <= n; t += 8)
            X16_GROUP(kind, 8);
        if (n - t >= 4) {
            X16_GROUP(kind, 4);
            t += 4;
        }
        if (n - t >= 2) {
            X16_GROUP(kind, 2);
            t += 2;
        }
        if (n - t >= 1) X16_GROUP(kind, 1);
    }
}
#undef X16_GROUP

static QATTR void QN(matmul_q_q4_k_x16)(const struct mat *w, const void *restrict xq, size_t ldxq,
                                        int64_t n, float *restrict y, int64_t ldy, int64_t r0,
                                        int64_t r1) {
    QN(x16_rows)(w, xq, ldxq, n, y, ldy, r0, r1, 4);
}

static QATTR void QN(matmul_q_q5_k_x16)(const struct mat *w, const void *restrict xq, size_t ldxq,
                                        int64_t n, float *restrict y, int64_t ldy, int64_t r0,
                                        int64_t r1) {
    QN(x16_rows)(w, xq, ldxq, n, y, ldy, r0, r1, 5);
}

static QATTR void QN(matmul_q_q6_k_x16)(const struct mat *w, const void *restrict xq, size_t ldxq,
                                        int64_t n, float *restrict y, int64_t ldy, int64_t r0,
                                        int64_t r1) {
    QN(x16_rows)(w, xq, ldxq, n, y, ldy, r0, r1, 6);
}

#undef X16_SCALE_ADD
#undef X16_PF_AHEAD
#undef X16_UNROLL
