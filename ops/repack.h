/* ops/repack.h: the x16 layouts (DT_Q4_K_X16, DT_Q5_K_X16, DT_Q6_K_X16), K-quant rows
 * regrouped in memory for the batched integer kernels (AVX-512: ops/matmul_q_x16_x86.h; AVX2,
 * 8 rows per vector: ops/matmul_q_x8_avx2.h).
 *
 * Why: in the GGUF layout a row's 32 values of a sub-block sit together, so a 512-bit dot
 * product ends a sub-block every one or two instructions and must apply the sub-block's
 * scale right away (a permute and a multiply per two dot products): the AVX-512 batched
 * kernels spent two of every four instructions on scales. Here lane r of a vector is row r
 * of a group of 16, and 4 bytes of every row sit side by side, so eight dot products (each
 * against 4 broadcast activation bytes) finish one sub-block of 16 rows and one multiply
 * scales it: about twice the arithmetic per instruction.
 *
 * The layout: a matrix of R rows (R a multiple of 16) and C columns is R/16 groups, each
 * the C/256 blocks of its 16 rows; block i of a group is a struct block_q4_k_x16 made of the
 * same bytes as block i of the 16 rows: d and dmin of every row, the 12 packed scale bytes
 * transposed (scales[k][r] = byte k of row r), and the code bytes qs[j][b][r][0..3] = bytes
 * 32j + 4b .. 32j + 4b + 3 of row r. So the matrix keeps its size (row_bytes, the bytes of
 * R rows) and is repacked in place.
 *
 * Q5_K x16 is the same Q4_K x16 block of the 16 rows (Q5_K has Q4_K's d, dmin, scales and low
 * four bits of each code) followed by the fifth bits: qh[b][r][c] = qh byte 4b + c of row r,
 * whose bit s is the fifth bit of value 4b + c of sub-block s, next to the 4-bit codes it
 * completes (a kernel shifts bit s to bit 4 and ORs it in).
 *
 * Q6_K x16 keeps Q6_K's bytes by the same rule: d of every row, the 16 signed scales
 * transposed (scales[k][r]), ql[j][b][r][c] = ql byte 32j + 4b + c of row r and
 * qh[h][b][r][c] = qh byte 32h + 4b + c of row r, so a code vector of 4 values per row is a
 * nibble of ql with two bits of qh moved above it.
 *
 * A row's values are no longer contiguous: only matmul and matmul_q read these dtypes (every
 * table has both; the scalar ones restore a row's blocks), and rows are split between threads
 * in whole groups (r0 and r1 multiples of 16, or r1 = rows). */
#ifndef BT_OPS_REPACK_H
#define BT_OPS_REPACK_H
#include "common/err.h"
#include "ops/ops.h"
#include "ops/quant.h"

#define X16_ROWS 16

struct block_q4_k_x16 {
    uint16_t d[X16_ROWS], dmin[X16_ROWS];
    uint8_t scales[12][X16_ROWS];
    uint8_t qs[4][8][X16_ROWS][4];
};
_Static_assert(sizeof(struct block_q4_k_x16) == X16_ROWS * sizeof(struct block_q4_k), "q4_k_x16");

struct block_q5_k_x16 {
    struct block_q4_k_x16 k4;
    uint8_t qh[8][X16_ROWS][4];
};
_Static_assert(sizeof(struct block_q5_k_x16) == X16_ROWS * sizeof(struct block_q5_k), "q5_k_x16");

struct block_q6_k_x16 {
    uint16_t d[X16_ROWS];
    int8_t scales[16][X16_ROWS];
    uint8_t ql[4][8][X16_ROWS][4];
    uint8_t qh[2][8][X16_ROWS][4];
};
_Static_assert(sizeof(struct block_q6_k_x16) == X16_ROWS * sizeof(struct block_q6_k), "q6_k_x16");

/* The x16 dtype of a GGUF dtype (DT_Q4_K, DT_Q5_K, DT_Q6_K), else DT_COUNT. */
enum dtype repack_x16_dtype(enum dtype dt);
/* 1 for the x16 dtypes. */
int repack_is_x16(enum dtype dt);
/* 1 if w (Q4_K, Q5_K or Q6_K, rows a multiple of 16) can take its x16 layout. */
int repack_x16_fits(const struct mat *w);
/* Regroups w's bytes in place (w->data must be writable) and sets w->dt to the x16 dtype.
 * Fails with BT_EINVAL, changing nothing, when !repack_x16_fits(w); -ENOMEM if a group's
 * scratch (16 rows) cannot be allocated. */
int repack_x16(struct mat *w, bt_err *e);
/* Whether the active ops table has a kernel for dt's x16 layout, i.e. multiplies it faster
 * than dt (the AVX-512 tables: all three; AVX2: Q4_K and Q5_K); elsewhere repacking would only
 * slow the scalar fallback down. 0 for other dtypes and in exact mode. */
int repack_x16_wanted(enum dtype dt);
/* Block i of row r (r in [0, rows)) of an x16 matrix of that type, restored to its GGUF
 * bytes. */
void repack_q4_k_x16_block(const struct mat *w, int64_t r, int64_t i, struct block_q4_k *out);
void repack_q5_k_x16_block(const struct mat *w, int64_t r, int64_t i, struct block_q5_k *out);
void repack_q6_k_x16_block(const struct mat *w, int64_t r, int64_t i, struct block_q6_k *out);

#endif
