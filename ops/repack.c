/* ops/repack.c: see repack.h. */
#include "ops/repack.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum dtype repack_x16_dtype(enum dtype dt) {
    switch (dt) {
    case DT_Q4_K:
        return DT_Q4_K_X16;
    case DT_Q5_K:
        return DT_Q5_K_X16;
    case DT_Q6_K:
        return DT_Q6_K_X16;
    default:
        return DT_COUNT;
    }
}

int repack_is_x16(enum dtype dt) {
    return dt == DT_Q4_K_X16 || dt == DT_Q5_K_X16 || dt == DT_Q6_K_X16;
}

int repack_x16_fits(const struct mat *w) {
    return repack_x16_dtype(w->dt) != DT_COUNT && w->rows > 0 && w->rows % X16_ROWS == 0 &&
           w->cols % QK_K == 0 && w->row_bytes == dtype_row_bytes(w->dt, w->cols);
}

/* The Q4_K x16 part of one block from a row's d, dmin, scales and 128 code bytes. */
static void k4_to_x16(struct block_q4_k_x16 *X, int r, uint16_t d, uint16_t dmin,
                      const uint8_t *scales, const uint8_t *qs) {
    X->d[r] = d;
    X->dmin[r] = dmin;
    for (int k = 0; k < 12; k++)
        X->scales[k][r] = scales[k];
    for (int j = 0; j < 4; j++)
        for (int b = 0; b < 8; b++)
            memcpy(X->qs[j][b][r], qs + 32 * j + 4 * b, 4);
}

static void k4_from_x16(const struct block_q4_k_x16 *X, int r, uint16_t *d, uint16_t *dmin,
                        uint8_t *scales, uint8_t *qs) {
    *d = X->d[r];
    *dmin = X->dmin[r];
    for (int k = 0; k < 12; k++)
        scales[k] = X->scales[k][r];
    for (int j = 0; j < 4; j++)
        for (int b = 0; b < 8; b++)
            memcpy(qs + 32 * j + 4 * b, X->qs[j][b][r], 4);
}

/* The 16 rows at `rows` (rb bytes apart, nb blocks each) into x16 blocks at dst. */
static void group_to_x16(enum dtype dt, const uint8_t *rows, size_t rb, int64_t nb, uint8_t *dst) {
    for (int64_t i = 0; i < nb; i++)
        for (int r = 0; r < X16_ROWS; r++) {
            const uint8_t *src = rows + (size_t)r * rb;
            if (dt == DT_Q4_K) {
                const struct block_q4_k *b = (const struct block_q4_k *)(const void *)src + i;
                struct block_q4_k_x16 *X = (struct block_q4_k_x16 *)(void *)dst + i;
                k4_to_x16(X, r, b->d, b->dmin, b->scales, b->qs);
            } else if (dt == DT_Q6_K) {
                const struct block_q6_k *b = (const struct block_q6_k *)(const void *)src + i;
                struct block_q6_k_x16 *X = (struct block_q6_k_x16 *)(void *)dst + i;
                X->d[r] = b->d;
                for (int k = 0; k < 16; k++)
                    X->scales[k][r] = b->scales[k];
                for (int b4 = 0; b4 < 8; b4++) {
                    for (int j = 0; j < 4; j++)
                        memcpy(X->ql[j][b4][r], b->ql + 32 * j + 4 * b4, 4);
                    for (int h = 0; h < 2; h++)
                        memcpy(X->qh[h][b4][r], b->qh + 32 * h + 4 * b4, 4);
                }
            } else {
                const struct block_q5_k *b = (const struct block_q5_k *)(const void *)src + i;
                struct block_q5_k_x16 *X = (struct block_q5_k_x16 *)(void *)dst + i;
                k4_to_x16(&X->k4, r, b->d, b->dmin, b->scales, b->qs);
                for (int k = 0; k < 8; k++)
                    memcpy(X->qh[k][r], b->qh + 4 * k, 4);
            }
        }
}

int repack_x16(struct mat *w, bt_err *e) {
    if (!repack_x16_fits(w))
        return bt_fail(e, BT_EINVAL, "repack: %s matrix %lldx%lld has no x16 layout",
                       dtype_name(w->dt), (long long)w->rows, (long long)w->cols);
    size_t group = X16_ROWS * w->row_bytes;
    uint8_t *scratch = malloc(group);
    if (!scratch) return bt_fail(e, -ENOMEM, "repack: %zu bytes of scratch", group);
    uint8_t *data = (uint8_t *)(uintptr_t)w->data; /* the caller owns writable bytes */
    int64_t nb = w->cols / QK_K;
    for (int64_t g = 0; g < w->rows / X16_ROWS; g++) {
        memcpy(scratch, data + (size_t)g * group, group);
        group_to_x16(w->dt, scratch, w->row_bytes, nb, data + (size_t)g * group);
    }
    free(scratch);
    w->dt = repack_x16_dtype(w->dt);
    return 0;
}

int repack_x16_wanted(enum dtype dt) {
    enum dtype x = repack_x16_dtype(dt);
    return x != DT_COUNT && ops && ops->matmul_q[x] != ops_ref.matmul_q[x] && !ops_exact();
}

/* Block i of the group holding row r, of `size` bytes */
static const void *x16_block(const struct mat *w, int64_t r, int64_t i, size_t size) {
    return (const uint8_t *)w->data + (size_t)(r / X16_ROWS) * X16_ROWS * w->row_bytes +
           (size_t)i * size;
}

void repack_q4_k_x16_block(const struct mat *w, int64_t r, int64_t i, struct block_q4_k *out) {
    const struct block_q4_k_x16 *X = x16_block(w, r, i, sizeof *X);
    k4_from_x16(X, (int)(r % X16_ROWS), &out->d, &out->dmin, out->scales, out->qs);
}

void repack_q5_k_x16_block(const struct mat *w, int64_t r, int64_t i, struct block_q5_k *out) {
    const struct block_q5_k_x16 *X = x16_block(w, r, i, sizeof *X);
    int l = (int)(r % X16_ROWS);
    k4_from_x16(&X->k4, l, &out->d, &out->dmin, out->scales, out->qs);
    for (int k = 0; k < 8; k++)
        memcpy(out->qh + 4 * k, X->qh[k][l], 4);
}

void repack_q6_k_x16_block(const struct mat *w, int64_t r, int64_t i, struct block_q6_k *out) {
    const struct block_q6_k_x16 *X = x16_block(w, r, i, sizeof *X);
    int l = (int)(r % X16_ROWS);
    out->d = X->d[l];
    for (int k = 0; k < 16; k++)
        out->scales[k] = X->scales[k][l];
    for (int b = 0; b < 8; b++) {
        for (int j = 0; j < 4; j++)
            memcpy(out->ql + 32 * j + 4 * b, X->ql[j][b][l], 4);
        for (int h = 0; h < 2; h++)
            memcpy(out->qh + 32 * h + 4 * b, X->qh[h][b][l], 4);
    }
}
