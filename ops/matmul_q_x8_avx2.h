/* ops/matmul_q_x8_avx2.h: matmul_q for DT_Q4_K_X16 and DT_Q5_K_X16 (ops/repack.h) on AVX2,
 * included by ops_avx2.c after matmul_q_x86.h (whose QN, QATTR and QSFX it uses).
 *
 * A ymm holds the 32 bytes of one half of an x16 code row: 4 code bytes of each of 8 rows
 * (lane r = row 8 * rh + r). Without VNNI a byte dot product is vpmaddubsw (u8 x s8 pairs to
 * int16) then vpmaddwd (int16 pairs to int32), and the GGUF-layout kernels pay both for every
 * 32 products. Here the int16 pair sums of a row stay in its lane, so they are added as int16
 * (vpaddw, no multiply), and one vpmaddwd against the row's scale (in both int16 halves of the
 * lane) finishes and scales them. The int16 sums are exact for activations in [-128, 127]: a
 * vpmaddubsw result is at most 2 * c * 128 for codes <= c, so a whole Q4_K sub-block (8
 * results, c = 15: 30720) and half a Q5_K one (4 results, c = 31: 31744) fit before their
 * vpmaddwd. The integer sums are those of the AVX-512 x16 kernels, with the same float step
 * per block, so a token's result does not depend on the token group, n or the row split.
 *
 * Tokens go in groups of g = 4, 2 or 1, and a pass over a block covers both row halves: the
 * two code vectors of a column group are built, then each token's broadcast serves both. The
 * int16 sums (2g registers) stay in registers and the int32 sub-block sums in memory, one load
 * and store per flush. The float step
 *   acc[r] += isum[r] * (d[r] * yd) - msum[r] * (dmin[r] * yd)
 * runs once per block, half and token.
 *
 * The Zen 3 these were tuned on issues two vpmaddubsw per cycle but about four vector
 * instructions in all, and a broadcast from memory is dearer than a load: the loops are bound
 * by instruction count, not by the multiplies. GCC's register allocation is the other limit:
 * it reassociates add chains into trees and keeps values it can reuse (broadcasts, the
 * fifth-bit bytes) live across the unrolled loop, and both spill to the stack. The empty asm
 * barriers below stop both; the stack references per kernel are worth a look after any change
 * (objdump -d build/ops/ops_avx2.o).
 *
 * Prefetch: on a chunk's first pass (the one that streams the weights from memory) quarter j
 * of the block X8_PF_FAR ahead goes into L2 as quarter j of this block starts; on the later
 * passes (token groups that find the chunk in L2) a quarter of the block two ahead goes into
 * L1 per quarter. What was measured (single token, bench_stream: 512 MB, 2 threads, kernel
 * over a plain read of the same bytes; docs/performance.md rounds 12 and 13):
 *  - the near prefetch alone: Q5_K x16 0.64-0.68 (read without prefetch), though from cache
 *    it computes faster than the GGUF row kernel, which streamed at 0.92: short of lines in
 *    flight, not of arithmetic (moving its fifth bits before the codes gave 0.76-0.83 but
 *    slowed batches);
 *  - the whole block X8_PF_FAR ahead in one burst at the block's start, on the first pass
 *    only (on every pass it cost batches from L3 15%): against a read that itself prefetches,
 *    Q4_K x16 0.90-0.95 and Q5_K x16 0.72-0.77 (round 13's builds; 0.87-0.97 in round 12);
 *  - spread a quarter per quarter, as now: 0.99-1.05 and 1.01-1.04, and the 9B decode step
 *    went from 5.28-5.57 to 5.98-6.27 tok/s (bench_forward, 3 alternated pairs).
 *
 * Batches of Q5_K (8 tokens or more) unpack each chunk once: the first token group also
 * stores its code vectors, a byte per value, and the later groups load them (with a quarter
 * two blocks ahead prefetched into L1) instead of merging the fifth bits again. bench_ops,
 * one thread, 4096 x 4096 from L3, alternated with the build before: n = 64 16.4-16.5 ->
 * 11.3-11.9 ms, n = 8 2.37 -> 2.00-2.07. The same for Q4_K (only a nibble split saved, twice
 * the bytes from L2) was 0-45% slower, so Q4_K builds its codes on every pass.
 *
 * Q6_K keeps its GGUF layout on AVX2. Its two extra code bits cost more instructions per code
 * vector without vpternlogd, and a 16-value sub-block flushes every 2 code vectors. A Q6_K
 * x16 loop of this shape with the unpacked copy (round 13) was 1.29x faster than the row
 * kernel at n = 64 but no faster at n = 8, and single tokens streamed at 0.93-0.94 of the read
 * against the row kernel's 0.97-1.04: it would have cost decode more than it gave. */

#define X8_UNROLL   _Pragma("GCC unroll 8")
#define X8_PF_AHEAD 2 /* blocks fetched ahead, a quarter per 64 values, on passes over L2 */
#define X8_PF_FAR   8 /* blocks fetched ahead into L2 on a pass that streams from memory */

/* How a pass gets its code vectors: X8_BUILD from the weights; X8_SAVE from the weights, and
 * stores them (with the block's d, dmin and scale table) to the chunk's unpacked copy;
 * X8_LOAD from that copy. A batch's later token groups then skip the nibble split and the
 * fifth-bit merge (see x8_matmul). */
enum { X8_BUILD, X8_SAVE, X8_LOAD };
/* one block of 16 rows unpacked: d and dmin (f16), the scales and mins (sm), and the 128
 * code vectors in the order a pass reads them */
struct x8_unpacked {
    uint16_t d[X16_ROWS], dmin[X16_ROWS];
    uint8_t sm[16][16];
    uint8_t codes[4][2][8][2][32]; /* [j][h][b][row half]: the code bytes, one per value */
};

/* the 4 activation bytes at p in every lane */
static inline QATTR __m256i QN(x8_bcast4)(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm256_set1_epi32(v);
}

/* The 6-bit scales (sm[s]) and mins (sm[8 + s]) of the 8 sub-blocks of a Q4_K x16 block, one
 * byte per row (16 rows), unpacked once per block for both row halves (quant_scale_min_k4 on
 * 32 bytes at a time: scales[k] holds byte k of every row). */
static inline QATTR void QN(x8_scales_mins)(const struct block_q4_k_x16 *B, uint8_t sm[16][16]) {
    const __m256i m63 = _mm256_set1_epi8(63), m15 = _mm256_set1_epi8(15),
                  m30 = _mm256_set1_epi8(0x30);
    X8_UNROLL
    for (int k = 0; k < 4; k += 2) { /* sub-blocks k, k + 1 and k + 4, k + 5 */
        __m256i a = QN(load256)(B->scales[k]), b = QN(load256)(B->scales[k + 4]);
        __m256i c = QN(load256)(B->scales[k + 8]);
        _mm256_storeu_si256((__m256i *)(void *)sm[k], _mm256_and_si256(a, m63));
        _mm256_storeu_si256((__m256i *)(void *)sm[8 + k], _mm256_and_si256(b, m63));
        /* (x >> 6) << 4 of each byte is (x >> 2) & 0x30 of its 16-bit lane */
        _mm256_storeu_si256((__m256i *)(void *)sm[k + 4],
                            _mm256_or_si256(_mm256_and_si256(c, m15),
                                            _mm256_and_si256(_mm256_srli_epi16(a, 2), m30)));
        _mm256_storeu_si256((__m256i *)(void *)sm[12 + k],
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(c, 4), m15),
                                            _mm256_and_si256(_mm256_srli_epi16(b, 2), m30)));
    }
}

/* pshufb controls: byte r of 16 (r in half rh) to both int16 halves of lane r - 8 rh,
 * zero-extended */
#define X8_Z     0x80
#define X8_LO(r) (r), X8_Z, (r), X8_Z
static const uint8_t QN(x8_pair_ctl)[2][32] __attribute__((aligned(32))) = {
    {X8_LO(0), X8_LO(1), X8_LO(2), X8_LO(3), X8_LO(4), X8_LO(5), X8_LO(6), X8_LO(7)},
    {X8_LO(8), X8_LO(9), X8_LO(10), X8_LO(11), X8_LO(12), X8_LO(13), X8_LO(14), X8_LO(15)}};
#undef X8_Z
#undef X8_LO

/* (v, v) int16 pairs, lane r = row 8 rh + r, from 16 bytes (one per row) */
static inline QATTR __m256i QN(x8_pairs_u8)(const uint8_t *bytes16, int rh) {
    __m256i v =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)bytes16));
    return _mm256_shuffle_epi8(
        v, _mm256_load_si256((const __m256i *)(const void *)QN(x8_pair_ctl)[rh]));
}

/* isum[t] += P[t] (int16 pairs) . S for t < g, then P restarts */
#define X8_FLUSH(isum, P, S, g)                                                                    \
    do {                                                                                           \
        X8_UNROLL                                                                                  \
        for (int t_ = 0; t_ < (g); t_++) {                                                         \
            (isum)[t_] = _mm256_add_epi32((isum)[t_], _mm256_madd_epi16((P)[t_], (S)));            \
            QIN_ORDER((isum)[t_]);                                                                 \
        }                                                                                          \
    } while (0)

/* With far, quarter j of the block X8_PF_FAR blocks ahead into L2; without, quarter j of the
 * block X8_PF_AHEAD blocks ahead into L1 (see the top). Addresses past the matrix are
 * hints to nowhere (prefetches do not fault), computed as integers. */
static inline QATTR void QN(x8_prefetch)(const void *blk, size_t bsz, int j, int far) {
    const uintptr_t pf = (uintptr_t)blk + X8_PF_AHEAD * bsz + (size_t)j * (bsz / 4);
    if (!far) {
        X8_UNROLL
        for (int l = 0; l < (int)((bsz / 4 + 63) / 64); l++)
            _mm_prefetch((const char *)(pf + 64 * (size_t)l), _MM_HINT_T0);
    }
    if (far) /* quarter j of the block X8_PF_FAR ahead */
        for (size_t o = (size_t)j * (bsz / 4); o < (size_t)(j + 1) * (bsz / 4); o += 64)
            _mm_prefetch((const char *)((uintptr_t)blk + X8_PF_FAR * bsz + o), _MM_HINT_T1);
}

/* bit s of each byte of v at bit 4 (the other bits are masked off after) */
static inline QATTR __m256i QN(x8_bit_to_4)(__m256i v, int s) {
    return s <= 4 ? _mm256_slli_epi16(v, 4 - s) : _mm256_srli_epi16(v, s - 4);
}

/* y[t * ldy + r] for the 16 rows of a Q4_K (five = 0) or Q5_K (five = 1) x16 group and g
 * tokens of xq (rows ldxq bytes apart) */
static inline QATTR __attribute__((always_inline)) void
QN(x8_group)(const uint8_t *grp, size_t bsz, int64_t nb, const uint8_t *xq, size_t ldxq, float *y,
             int64_t ldy, const int g, const int five, int far, const int mode,
             struct x8_unpacked *un) {
    const int run = five ? 4 : 8; /* int16 products added before a flush (see above) */
    const __m256i m4 = _mm256_set1_epi8(15), b16 = _mm256_set1_epi8(16);
    __m256 acc[2][4];
    X8_UNROLL
    for (int hh = 0; hh < 2; hh++)
        X8_UNROLL
    for (int t = 0; t < g; t++)
        acc[hh][t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const struct block_q4_k_x16 *B =
            (const struct block_q4_k_x16 *)(const void *)(grp + (size_t)i * bsz);
        const struct block_q5_k_x16 *B5 = (const struct block_q5_k_x16 *)(const void *)B;
        const uint8_t *xb = xq + (size_t)i * sizeof(struct block_q8_k);
        const uint8_t *xqs = xb + offsetof(struct block_q8_k, qs);
        struct x8_unpacked *U = un + i; /* X8_SAVE, X8_LOAD */
        uint8_t sm_own[16][16] __attribute__((aligned(32)));
        uint8_t(*sm)[16] = mode == X8_BUILD ? sm_own : U->sm;
        if (mode != X8_LOAD) QN(x8_scales_mins)(B, sm);
        if (mode == X8_SAVE) {
            memcpy(U->d, B->d, sizeof U->d);
            memcpy(U->dmin, B->dmin, sizeof U->dmin);
        }
        const uint16_t *dd = mode == X8_LOAD ? U->d : B->d;
        const uint16_t *dmin = mode == X8_LOAD ? U->dmin : B->dmin;
        __m256i isum_mem[2][4] __attribute__((aligned(32))), P[2][4];
        __m256i(*isum)[4] = isum_mem;
        __asm__("" : "+r"(isum)); /* keep the sums in memory: registers go to P */
        X8_UNROLL
        for (int hh = 0; hh < 2; hh++)
            X8_UNROLL
        for (int t = 0; t < g; t++)
            isum[hh][t] = _mm256_setzero_si256();
        X8_UNROLL
        for (int j = 0; j < 4; j++) {
            if (mode != X8_LOAD)
                QN(x8_prefetch)(B, bsz, j, far);
            else /* the copy is in L2: a quarter two blocks ahead into L1 (an integer: it
                  * may point past the copy) */
                X8_UNROLL
            for (int l = 0; l < (int)sizeof U->codes[j] / 64; l++)
                _mm_prefetch(
                    (const char *)((uintptr_t)U->codes[j] + 2 * sizeof *U + 64 * (size_t)l),
                    _MM_HINT_T0);
            X8_UNROLL
            for (int h = 0; h < 2; h++) { /* sub-block s = 2j + h: low or high nibbles */
                const int s = 2 * j + h;
                /* the fifth-bit bytes serve all 8 sub-blocks: a fresh pointer per sub-block
                 * stops GCC keeping all 16 vectors from the first (on the stack) */
                const uint8_t(*qh)[X16_ROWS][4] = B5->qh;
                __asm__("" : "+r"(qh));
                X8_UNROLL
                for (int b = 0; b < 8; b++) {
                    __m256i q[2];
                    X8_UNROLL
                    for (int hh = 0; hh < 2; hh++) {
                        if (mode == X8_LOAD) {
                            q[hh] = QN(load256)(U->codes[j][h][b][hh]);
                            continue;
                        }
                        __m256i w = QN(load256)(B->qs[j][b][8 * hh]);
                        q[hh] = h ? _mm256_and_si256(_mm256_srli_epi16(w, 4), m4)
                                  : _mm256_and_si256(w, m4);
                        if (five) /* bit s of the fifth-bit bytes is bit 4 of the code */
                            q[hh] = _mm256_or_si256(
                                q[hh], _mm256_and_si256(
                                           QN(x8_bit_to_4)(QN(load256)(qh[b][8 * hh]), s), b16));
                        if (mode == X8_SAVE)
                            _mm256_store_si256((__m256i *)(void *)U->codes[j][h][b][hh], q[hh]);
                    }
                    /* one broadcast per token serves both halves: the codes of both
                     * are live (2 registers), not the 4 broadcasts */
                    X8_UNROLL
                    for (int t = 0; t < g; t++) {
                        __m256i x = QN(x8_bcast4)(xqs + (size_t)t * ldxq + 32 * s + 4 * b);
                        X8_UNROLL
                        for (int hh = 0; hh < 2; hh++) {
                            __m256i p = _mm256_maddubs_epi16(q[hh], x);
                            P[hh][t] = b % run == 0 ? p : _mm256_add_epi16(P[hh][t], p);
                            QIN_ORDER(P[hh][t]);
                        }
                    }
                    if (b % run == run - 1) {
                        X8_UNROLL
                        for (int hh = 0; hh < 2; hh++)
                            X8_FLUSH(isum[hh], P[hh], QN(x8_pairs_u8)(sm[s], hh), g);
                    }
                }
            }
        }
        /* mins: (m_s, m_s) int16 pairs against the two 16-value sums of sub-block s, both
         * halves per broadcast (GCC otherwise keeps the broadcasts of one half for the
         * other, on the stack) */
        __m256i ms[2][4];
        X8_UNROLL
        for (int hh = 0; hh < 2; hh++)
            X8_UNROLL
        for (int t = 0; t < g; t++)
            ms[hh][t] = _mm256_setzero_si256();
        X8_UNROLL
        for (int sb = 0; sb < 8; sb++) {
            __m256i mm[2];
            X8_UNROLL
            for (int hh = 0; hh < 2; hh++)
                mm[hh] = QN(x8_pairs_u8)(sm[8 + sb], hh);
            X8_UNROLL
            for (int t = 0; t < g; t++) {
                __m256i bs = QN(x8_bcast4)(xb + (size_t)t * ldxq +
                                           offsetof(struct block_q8_k, bsums) + 4 * (size_t)sb);
                X8_UNROLL
                for (int hh = 0; hh < 2; hh++) {
                    ms[hh][t] = _mm256_add_epi32(ms[hh][t], _mm256_madd_epi16(mm[hh], bs));
                    QIN_ORDER(ms[hh][t]);
                }
            }
        }
        X8_UNROLL
        for (int hh = 0; hh < 2; hh++) {
            __m256 D = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)&dd[8 * hh]));
            __m256 DM =
                _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)&dmin[8 * hh]));
            X8_UNROLL
            for (int t = 0; t < g; t++) {
                __m256 yd = _mm256_set1_ps(q8k_d(xb + (size_t)t * ldxq));
                __m256 m = _mm256_mul_ps(_mm256_cvtepi32_ps(ms[hh][t]), _mm256_mul_ps(DM, yd));
                acc[hh][t] =
                    _mm256_add_ps(acc[hh][t], _mm256_fmsub_ps(_mm256_cvtepi32_ps(isum[hh][t]),
                                                              _mm256_mul_ps(D, yd), m));
            }
        }
    }
    X8_UNROLL
    for (int hh = 0; hh < 2; hh++)
        X8_UNROLL
    for (int t = 0; t < g; t++)
        _mm256_storeu_ps(y + t * ldy + 8 * hh, acc[hh][t]);
}

/* row groups [rc, re) of w against tokens [t, t + g); un: the chunk's unpacked blocks (nb per
 * group) when mode is X8_SAVE or X8_LOAD */
static inline QATTR __attribute__((always_inline)) void
QN(x8_pass)(const struct mat *w, size_t bsz, int64_t nb, const uint8_t *x, size_t ldxq, float *y,
            int64_t ldy, int64_t rc, int64_t re, int64_t t, const int g, const int five,
            const int mode, struct x8_unpacked *un) {
    const int far = t == 0; /* the chunk's first pass reads it from memory; later ones from L2 */
    for (int64_t r = rc; r < re; r += X16_ROWS) {
        const uint8_t *grp = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
        QN(x8_group)
        (grp, bsz, nb, x + (size_t)t * ldxq, ldxq, y + t * ldy + r, ldy, g, five, far, mode,
         un + (r - rc) / X16_ROWS * nb);
    }
}

/* rows [r0, r1) (whole groups of 16) of a Q4_K (five = 0) or Q5_K (five = 1) x16 matrix.
 * Row groups go in chunks of about X8_CHUNK_BYTES of weights, which stay in L2 while every
 * token group passes over them. One group at a time, each group re-read all n tokens'
 * activations, from L3 once they outgrow L2 (n = 256 at 4096 columns: 1.2 MB per 16 rows).
 * With X8_UNPACK_MIN_N tokens or more, the first token group also stores its code vectors
 * (a byte per value) to a copy on the stack that the later groups read instead of the weights:
 * a chunk then holds X8_UN_BLOCKS blocks. The order does not change any result. */
#define X8_CHUNK_BYTES  (192 << 10)
#define X8_UNPACK_MIN_N 8
#define X8_UN_BLOCKS    56 /* 247 KB of unpacked blocks (with the activations, in L2) */
static inline QATTR __attribute__((always_inline)) void
QN(x8_matmul)(const struct mat *w, const uint8_t *x, size_t ldxq, int64_t n, float *y, int64_t ldy,
              int64_t r0, int64_t r1, const int five) {
    BT_ASSERT(r0 % X16_ROWS == 0 && r1 % X16_ROWS == 0); /* whole groups (repack.h) */
    const size_t bsz = five ? sizeof(struct block_q5_k_x16) : sizeof(struct block_q4_k_x16);
    const size_t gbytes = X16_ROWS * w->row_bytes;
    int64_t nb = w->cols / QK_K;
    const int unpack = five && n >= X8_UNPACK_MIN_N && nb <= X8_UN_BLOCKS;
    struct x8_unpacked un[X8_UN_BLOCKS] __attribute__((aligned(32))); /* touched only if unpack */
    const int64_t chunk =
        X16_ROWS * (unpack ? X8_UN_BLOCKS / nb
                           : (gbytes < X8_CHUNK_BYTES ? (int64_t)(X8_CHUNK_BYTES / gbytes) : 1));
    for (int64_t rc = r0; rc < r1; rc += chunk) {
        const int64_t re = r1 - rc < chunk ? r1 : rc + chunk;
        int64_t t = 0;
        /* written out twice on purpose: one pass function choosing the mode per token group
         * (the same instructions) measured 4-7% slower for Q5_K at n = 1 and 8 */
        if (unpack) {
            QN(x8_pass)(w, bsz, nb, x, ldxq, y, ldy, rc, re, 0, 4, five, X8_SAVE, un);
            for (t = 4; t + 4 <= n; t += 4)
                QN(x8_pass)(w, bsz, nb, x, ldxq, y, ldy, rc, re, t, 4, five, X8_LOAD, un);
            if (n - t >= 2) {
                QN(x8_pass)(w, bsz, nb, x, ldxq, y, ldy, rc, re, t, 2, five, X8_LOAD, un);
                t += 2;
            }
            if (n - t >= 1)
                QN(x8_pass)(w, bsz, nb, x, ldxq, y, ldy, rc, re, t, 1, five, X8_LOAD, un);
            continue;
        }
        for (; t + 4 <= n; t += 4)
            QN(x8_pass)(w, bsz, nb, x, ldxq, y, ldy, rc, re, t, 4, five, X8_BUILD, un);
        if (n - t >= 2) {
            QN(x8_pass)(w, bsz, nb, x, ldxq, y, ldy, rc, re, t, 2, five, X8_BUILD, un);
            t += 2;
        }
        if (n - t >= 1) QN(x8_pass)(w, bsz, nb, x, ldxq, y, ldy, rc, re, t, 1, five, X8_BUILD, un);
    }
}
#undef X8_CHUNK_BYTES
#undef X8_UNPACK_MIN_N
#undef X8_UN_BLOCKS

static QATTR void QN(matmul_q_q4_k_x16)(const struct mat *w, const void *restrict xq, size_t ldxq,
                                        int64_t n, float *restrict y, int64_t ldy, int64_t r0,
                                        int64_t r1) {
    QN(x8_matmul)(w, xq, ldxq, n, y, ldy, r0, r1, 0);
}

static QATTR void QN(matmul_q_q5_k_x16)(const struct mat *w, const void *restrict xq, size_t ldxq,
                                        int64_t n, float *restrict y, int64_t ldy, int64_t r0,
                                        int64_t r1) {
    QN(x8_matmul)(w, xq, ldxq, n, y, ldy, r0, r1, 1);
}

#undef X8_FLUSH
#undef X8_PF_AHEAD
#undef X8_PF_FAR
#undef X8_UNROLL
