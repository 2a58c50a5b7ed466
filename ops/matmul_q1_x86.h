/* ops/matmul_q1_x86.h: the single-token (n = 1, decode) K-quant kernels on 512-bit vectors,
 * included by matmul_q_x86.h inside its QZ512 part (same QSFX/QATTR/QVNNI, its helpers
 * zdot_scaled, load512, k45_block, q8k_d, hsum). Not a public header.
 *
 * At n = 1 nothing is shared across tokens, so a row's block costs its code unpacking, its
 * integer dot and a float step of its own; one thread then computes less than memory delivers
 * (about 45 instructions per Q4_K block of 144 bytes). Here four rows go through one pass:
 * the activation pieces are loaded once per block for all four, the four rows' d/dmin/scales
 * (16 bytes each) sit in one zmm and are unpacked by one set of vector ops, the row sums are
 * folded two rows per zmm, and the float step runs on two rows per instruction. Rows left
 * over (the range may have any size) take the one-row kernels.
 *
 * Results are bit-identical to the one-row and batched kernels: each row keeps the same 8
 * int32 lanes per block (lane l = products at positions 4l..4l+3 of every 32-value piece,
 * exact whatever the piece order) and the same 8 float lanes with the same operations
 * (acc + fmsub(isum, d*yd, msum * dmin*yd) for Q4_K/Q5_K, fma(isum - 32 off, d*yd, acc) for
 * Q6_K), reduced by the same hsum at the end of the row; only the packing of two rows into
 * one register differs, which does not change any lane's arithmetic. */

/* The 16 bytes at p, p + rb, p + 2 rb, p + 3 rb as the four 128-bit lanes of a zmm */
static inline QATTR __m512i QN(ld4x16)(const uint8_t *p, size_t rb) {
    __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(const void *)p));
    v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(const void *)(p + rb)), 1);
    v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(const void *)(p + 2 * rb)), 2);
    return _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(const void *)(p + 3 * rb)), 3);
}

/* Word-index tables for vpermw on a pair of rows' int16 vectors (row q of the pair at words
 * 16q..16q+15). Q4_K/Q5_K pair vector: [sc 0..7, mn 0..7] per row; a piece's scale vector
 * broadcasts one sub-block scale per 128-bit lane (lanes of piece (h, lo): sub-blocks 4h, 4h,
 * 4h+2, 4h+2; (h, hi): 4h+1, 4h+1, 4h+3, 4h+3; see k45_perm_act). Q6_K pair vector: the 16
 * scales per row; piece (h, p) has scales 8h+4p+k in lane k. Row 8 of each: the per-pair
 * vector of the mins, each twice (min g per 16 values, as madd with bsums wants). */
#define Q1W8(s) (s), (s), (s), (s), (s), (s), (s), (s)
#define Q1K45(q, a, b)                                                                             \
    { Q1W8(16 * (q) + (a)), Q1W8(16 * (q) + (a)), Q1W8(16 * (q) + (b)), Q1W8(16 * (q) + (b)) }
#define Q1K6(q, s)                                                                                 \
    {                                                                                              \
        Q1W8(16 * (q) + (s)), Q1W8(16 * (q) + (s) + 1), Q1W8(16 * (q) + (s) + 2),                  \
            Q1W8(16 * (q) + (s) + 3)                                                               \
    }
#define Q1MN(q)                                                                                    \
    16 * (q) + 8, 16 * (q) + 8, 16 * (q) + 9, 16 * (q) + 9, 16 * (q) + 10, 16 * (q) + 10,          \
        16 * (q) + 11, 16 * (q) + 11, 16 * (q) + 12, 16 * (q) + 12, 16 * (q) + 13, 16 * (q) + 13,  \
        16 * (q) + 14, 16 * (q) + 14, 16 * (q) + 15, 16 * (q) + 15
/* [q][h][lo, hi] for Q4_K/Q5_K, [q][h][p] for Q6_K */
static const uint16_t QN(k1sc45)[2][2][2][32] __attribute__((aligned(64))) = {
    {{Q1K45(0, 0, 2), Q1K45(0, 1, 3)}, {Q1K45(0, 4, 6), Q1K45(0, 5, 7)}},
    {{Q1K45(1, 0, 2), Q1K45(1, 1, 3)}, {Q1K45(1, 4, 6), Q1K45(1, 5, 7)}}};
static const uint16_t QN(k1sc6)[2][2][2][32]
    __attribute__((aligned(64))) = {{{Q1K6(0, 0), Q1K6(0, 4)}, {Q1K6(0, 8), Q1K6(0, 12)}},
                                    {{Q1K6(1, 0), Q1K6(1, 4)}, {Q1K6(1, 8), Q1K6(1, 12)}}};
static const uint16_t QN(k1mn)[32] __attribute__((aligned(64))) = {Q1MN(0), Q1MN(1)};
#undef Q1W8
#undef Q1K45
#undef Q1K6
#undef Q1MN
#define Q1IDX(tab) _mm512_load_si512((const void *)(tab))

/* Q5_K fifth bits: piece (h, lo/hi) takes bit 4h (+1 for hi) of qh[l] in its low 256 bits
 * (chunk 2h) and bit 4h+2 (+1) in its high 256 bits (chunk 2h+1), tested on [qh | qh]. */
#define Q1B(a, b)                                                                                  \
    {                                                                                              \
        (a) * 0x0101010101010101ull, (a)*0x0101010101010101ull, (a)*0x0101010101010101ull,         \
            (a)*0x0101010101010101ull, (b)*0x0101010101010101ull, (b)*0x0101010101010101ull,       \
            (b)*0x0101010101010101ull, (b)*0x0101010101010101ull                                   \
    }
static const uint64_t QN(k1qh)[2][2][8] __attribute__((aligned(64))) = {
    {Q1B(0x01, 0x04), Q1B(0x02, 0x08)}, {Q1B(0x10, 0x40), Q1B(0x20, 0x80)}};
#undef Q1B

/* lanes 0..7 + 8*k of a 16-float pair vector: float k of f broadcast to 8 lanes, for k = a
 * (low 256 bits) and k = b (high) */
static inline QATTR __m512 QN(k1pick)(__m512 f, int a, int b) {
    return _mm512_permutexvar_ps(_mm512_inserti64x4(_mm512_set1_epi32(a), _mm256_set1_epi32(b), 1),
                                 f);
}

/* the two rows' block sums of a pair, folded to [row a | row b] 8-lane halves (zfold) */
static inline QATTR __m512i QN(k1fold)(__m512i a, __m512i b) {
    return _mm512_add_epi32(_mm512_shuffle_i64x2(a, b, 0x44), _mm512_shuffle_i64x2(a, b, 0xee));
}

/* final per-row reduction of a pair's float lanes: y[0] = row a, y[1] = row b */
static inline QATTR void QN(k1store)(__m512 acc, float *y) {
    y[0] = QN(hsum)(_mm512_castps512_ps256(acc));
    y[1] = QN(hsum)(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));
}

/* Q4_K (Q5 = 0) / Q5_K (Q5 = 1): blocks [i0, i1) of rows row, row + rb, row + 2 rb,
 * row + 3 rb, added to the rows' float lanes acc[0] (rows 0, 1) and acc[1] (rows 2, 3); yp
 * as for k45_row1_z (activation codes in the nibble order). */
static inline QATTR __attribute__((always_inline)) void
QN(k45_rows4_span)(const uint8_t *row, size_t rb, int64_t i0, int64_t i1, const uint8_t *xq,
                   const uint8_t *yp, __m512 *acc, const int Q5) {
    const size_t bb = Q5 ? sizeof(struct block_q5_k) : sizeof(struct block_q4_k);
    const size_t qso = Q5 ? offsetof(struct block_q5_k, qs) : offsetof(struct block_q4_k, qs);
    const __m512i m4 = _mm512_set1_epi8(15), b5 = _mm512_set1_epi8(16);
    /* d/dmin of rows 0..3 as f16 pairs: dword 0 of each 128-bit lane */
    const __m512i ddi = _mm512_castsi128_si512(_mm_set_epi32(12, 8, 4, 0));
    __m512 acc01 = acc[0], acc23 = acc[1];
    for (int64_t i = i0; i < i1; i++) {
        const uint8_t *b0 = row + (size_t)i * bb;
        QN(next_rows_prefetch)(b0, rb, bb, 4);
        /* [d dmin | 12 scale bytes] of the 4 rows -> scales_k4 per 128-bit lane */
        __m512i v = QN(ld4x16)(b0, rb);
        __m512i x = _mm512_shuffle_epi32(v, (_MM_PERM_ENUM)0xED);
        __m512i s = _mm512_shuffle_epi32(v, (_MM_PERM_ENUM)0xA5);
        __m512i lo =
            _mm512_and_si512(_mm512_srlv_epi32(x, _mm512_set4_epi32(4, 0, 0, 0)),
                             _mm512_set4_epi32(0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f));
        __m512i hi = _mm512_and_si512(_mm512_srli_epi32(s, 2),
                                      _mm512_set4_epi32(0x30303030, 0, 0x30303030, 0));
        __m512i sm = _mm512_or_si512(lo, hi); /* per row: sc 0..7, mn 0..7 (bytes) */
        __m512i z[2] = {_mm512_cvtepu8_epi16(_mm512_castsi512_si256(sm)),
                        _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(sm, 1))};
        const uint8_t *ya = yp + (size_t)i * QK_K;
        const __m512i Y[4] = {QN(load512)(ya), QN(load512)(ya + 64), QN(load512)(ya + 128),
                              QN(load512)(ya + 192)};
        __m512i k[4];
        QUNROLL
        for (int r = 0; r < 4; r++) {
            const uint8_t *br = b0 + (size_t)r * rb;
            __m512i qh = _mm512_setzero_si512();
            if (Q5) qh = _mm512_broadcast_i64x4(QN(load256)(br + offsetof(struct block_q5_k, qh)));
            k[r] = _mm512_setzero_si512();
            QUNROLL
            for (int h = 0; h < 2; h++) {
                __m512i q = QN(load512)(br + qso + 64 * h);
                __m512i wl = _mm512_and_si512(q, m4);
                __m512i wh = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
                if (Q5) { /* + 16 where the piece's bit of qh is set */
                    wl = _mm512_mask_add_epi8(wl, _mm512_test_epi8_mask(qh, Q1IDX(QN(k1qh)[h][0])),
                                              wl, b5);
                    wh = _mm512_mask_add_epi8(wh, _mm512_test_epi8_mask(qh, Q1IDX(QN(k1qh)[h][1])),
                                              wh, b5);
                }
                __m512i sl = _mm512_permutexvar_epi16(Q1IDX(QN(k1sc45)[r & 1][h][0]), z[r >> 1]);
                __m512i sh = _mm512_permutexvar_epi16(Q1IDX(QN(k1sc45)[r & 1][h][1]), z[r >> 1]);
                k[r] = QN(zdot_scaled)(k[r], wl, Y[2 * h], sl);
                k[r] = QN(zdot_scaled)(k[r], wh, Y[2 * h + 1], sh);
            }
        }
        const struct block_q8_k *xb = QN(q8k_at)(xq, 0, 0, i);
        /* [d0 dm0 d1 dm1 d2 dm2 d3 dm3] * yd, then each broadcast over its row's 8 lanes */
        __m256 f =
            _mm256_mul_ps(_mm256_cvtph_ps(_mm512_castsi512_si128(_mm512_permutexvar_epi32(ddi, v))),
                          _mm256_set1_ps(QN(q8k_d)(xb)));
        __m512 fz = _mm512_castps256_ps512(f);
        __m512i bs = _mm512_broadcast_i64x4(QN(q8k_bsums)(xb));
        __m512i mn = Q1IDX(QN(k1mn));
        __m512i ms01 = _mm512_madd_epi16(bs, _mm512_permutexvar_epi16(mn, z[0]));
        __m512i ms23 = _mm512_madd_epi16(bs, _mm512_permutexvar_epi16(mn, z[1]));
        __m512 m01 = _mm512_mul_ps(_mm512_cvtepi32_ps(ms01), QN(k1pick)(fz, 1, 3));
        __m512 m23 = _mm512_mul_ps(_mm512_cvtepi32_ps(ms23), QN(k1pick)(fz, 5, 7));
        acc01 = _mm512_add_ps(acc01, _mm512_fmsub_ps(_mm512_cvtepi32_ps(QN(k1fold)(k[0], k[1])),
                                                     QN(k1pick)(fz, 0, 2), m01));
        acc23 = _mm512_add_ps(acc23, _mm512_fmsub_ps(_mm512_cvtepi32_ps(QN(k1fold)(k[2], k[3])),
                                                     QN(k1pick)(fz, 4, 6), m23));
    }
    acc[0] = acc01, acc[1] = acc23;
}

/* Q6_K, four rows (q6k_rows_z's pieces: [quarter 0 | 1] and [2 | 3] of each half, against
 * the activation codes in their own order). The high bit pairs of a half come from one
 * broadcast [H | H >> 2] masked to bits 0-1 and 4-5, merged under the nibble mask by one
 * bit-select each. */
static inline QATTR __attribute__((always_inline)) void
QN(q6k_rows4_span)(const uint8_t *row, size_t rb, int64_t i0, int64_t i1, const uint8_t *xq,
                   __m512 *acc) {
    const size_t bb = sizeof(struct block_q6_k);
    const __m512i m4 = _mm512_set1_epi8(15), m33 = _mm512_set1_epi8(0x33);
    /* d of rows 0..3: word 7 of each 128-bit lane of the 16 bytes before the block's end */
    const __m512i dwi = _mm512_castsi128_si512(_mm_set_epi16(0, 0, 0, 0, 31, 23, 15, 7));
    __m512 acc01 = acc[0], acc23 = acc[1];
    for (int64_t i = i0; i < i1; i++) {
        const uint8_t *b0 = row + (size_t)i * bb;
        QN(next_rows_prefetch)(b0, rb, bb, 4);
        __m512i sv = QN(ld4x16)(b0 + offsetof(struct block_q6_k, scales), rb);
        __m512i z[2] = {_mm512_cvtepi8_epi16(_mm512_castsi512_si256(sv)),
                        _mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64(sv, 1))};
        const uint8_t *ya =
            xq + (size_t)i * sizeof(struct block_q8_k) + offsetof(struct block_q8_k, qs);
        const __m512i Y[4] = {QN(load512)(ya), QN(load512)(ya + 64), QN(load512)(ya + 128),
                              QN(load512)(ya + 192)};
        __m512i k[4];
        QUNROLL
        for (int r = 0; r < 4; r++) {
            const struct block_q6_k *b =
                (const struct block_q6_k *)(const void *)(b0 + (size_t)r * rb);
            k[r] = _mm512_setzero_si512();
            QUNROLL
            for (int h = 0; h < 2; h++) {
                __m512i L = QN(load512)(b->ql + 64 * h);
                __m512i H = _mm512_broadcast_i64x4(QN(load256)(b->qh + 32 * h));
                H = _mm512_and_si512(_mm512_mask_srli_epi16(H, 0xFFFF0000u, H, 2), m33);
                /* 0xCA: m4 ? low bits : high bits */
                __m512i q01 = _mm512_ternarylogic_epi32(m4, L, _mm512_slli_epi16(H, 4), 0xCA);
                __m512i q23 = _mm512_ternarylogic_epi32(m4, _mm512_srli_epi16(L, 4), H, 0xCA);
                __m512i s01 = _mm512_permutexvar_epi16(Q1IDX(QN(k1sc6)[r & 1][h][0]), z[r >> 1]);
                __m512i s23 = _mm512_permutexvar_epi16(Q1IDX(QN(k1sc6)[r & 1][h][1]), z[r >> 1]);
                k[r] = QN(zdot_scaled)(k[r], q01, Y[2 * h], s01);
                k[r] = QN(zdot_scaled)(k[r], q23, Y[2 * h + 1], s23);
            }
        }
        const struct block_q8_k *xb = QN(q8k_at)(xq, 0, 0, i);
        __m512i dv = QN(ld4x16)(b0 + bb - 16, rb);
        __m128 d =
            _mm_mul_ps(_mm_cvtph_ps(_mm512_castsi512_si128(_mm512_permutexvar_epi16(dwi, dv))),
                       _mm_set1_ps(QN(q8k_d)(xb)));
        __m512 dz = _mm512_castps128_ps512(d);
        __m512i bs = _mm512_broadcast_i64x4(QN(q8k_bsums)(xb));
        /* 32 * sum_g sc_g * bsum_g per lane: the +32 offset of the codes */
        __m512i i01 = _mm512_sub_epi32(QN(k1fold)(k[0], k[1]),
                                       _mm512_slli_epi32(_mm512_madd_epi16(bs, z[0]), 5));
        __m512i i23 = _mm512_sub_epi32(QN(k1fold)(k[2], k[3]),
                                       _mm512_slli_epi32(_mm512_madd_epi16(bs, z[1]), 5));
        acc01 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i01), QN(k1pick)(dz, 0, 1), acc01);
        acc23 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i23), QN(k1pick)(dz, 2, 3), acc23);
    }
    acc[0] = acc01, acc[1] = acc23;
}
#undef Q1IDX

/* Rows [r0, r1) in fours (a multiple of 4 rows), each row's blocks in order. Rows of up to
 * K1_SPAN blocks go one group at a time. Longer rows (the FFN down projection, 12288 columns)
 * go in spans of K1_SPAN blocks over K1_GROUPS groups at a time, the groups' float lanes kept
 * in acc between spans: a group streams 4 x 144 bytes per block, and four rows of 48 blocks
 * (27 KB) between two uses of the same activation block pushed the activations (18 KB at
 * 12288 columns) out of the 48 KB L1. Every row still adds its blocks in order 0..nb-1 into
 * the same lanes, so the result has the same bits as one pass. Q = 4 (Q4_K), 5 (Q5_K), 6. */
#define K1_SPAN   16
#define K1_GROUPS 16
static inline QATTR __attribute__((always_inline)) void
QN(rows4_span)(const uint8_t *row, size_t rb, int64_t i0, int64_t i1, const uint8_t *xq,
               const uint8_t *yp, __m512 *acc, const int Q) {
    if (Q == 6)
        QN(q6k_rows4_span)(row, rb, i0, i1, xq, acc);
    else
        QN(k45_rows4_span)(row, rb, i0, i1, xq, yp, acc, Q == 5);
}
static inline QATTR __attribute__((always_inline)) void
QN(rows4_driver)(const uint8_t *W, size_t rb, int64_t nb, int64_t r0, int64_t r1, const uint8_t *xq,
                 const uint8_t *yp, float *y, const int Q) {
    if (nb <= K1_SPAN) {
        for (int64_t r = r0; r < r1; r += 4) {
            __m512 a[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
            QN(rows4_span)(W + (size_t)r * rb, rb, 0, nb, xq, yp, a, Q);
            QN(k1store)(a[0], y + r);
            QN(k1store)(a[1], y + r + 2);
        }
        return;
    }
    __m512 acc[2 * K1_GROUPS];
    for (int64_t r = r0; r < r1; r += 4 * K1_GROUPS) {
        int64_t ng = (r1 - r) / 4 < K1_GROUPS ? (r1 - r) / 4 : K1_GROUPS;
        for (int64_t g = 0; g < 2 * ng; g++)
            acc[g] = _mm512_setzero_ps();
        for (int64_t i0 = 0; i0 < nb; i0 += K1_SPAN) {
            int64_t i1 = i0 + K1_SPAN < nb ? i0 + K1_SPAN : nb;
            for (int64_t g = 0; g < ng; g++)
                QN(rows4_span)(W + (size_t)(r + 4 * g) * rb, rb, i0, i1, xq, yp, acc + 2 * g, Q);
        }
        for (int64_t g = 0; g < ng; g++) {
            QN(k1store)(acc[2 * g], y + r + 4 * g);
            QN(k1store)(acc[2 * g + 1], y + r + 4 * g + 2);
        }
    }
}
#undef K1_SPAN
#undef K1_GROUPS
