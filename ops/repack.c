/* ops/repack.c: see repack.h. */
#include "ops/repack.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int repack_q4_k_x16_fits(const struct mat *w) {
    return w->dt == DT_Q4_K && w->rows > 0 && w->rows % X16_ROWS == 0 && w->cols % QK_K == 0 &&
           w->row_bytes == dtype_row_bytes(DT_Q4_K, w->cols);
}

static void group_to_x16(const uint8_t *rows, size_t rb, int64_t nb, uint8_t *dst) {
    for (int64_t i = 0; i < nb; i++) {
        struct block_q4_k_x16 *X = (struct block_q4_k_x16 *)(void *)(dst + (size_t)i * sizeof *X);
        for (int r = 0; r < X16_ROWS; r++) {
            const struct block_q4_k *b =
                (const struct block_q4_k *)(const void *)(rows + (size_t)r * rb +
                                                          (size_t)i * sizeof *b);
            X->d[r] = b->d;
            X->dmin[r] = b->dmin;
            for (int k = 0; k < 12; k++)
                X->scales[k][r] = b->scales[k];
            for (int j = 0; j < 4; j++)
                for (int s = 0; s < 8; s++)
                    memcpy(X->qs[j][s][r], b->qs + 32 * j + 4 * s, 4);
        }
    }
}

int repack_q4_k_x16(struct mat *w, bt_err *e) {
    if (!repack_q4_k_x16_fits(w))
        return bt_fail(e, BT_EINVAL, "repack: %s matrix %lldx%lld has no x16 layout",
                       dtype_name(w->dt), (long long)w->rows, (long long)w->cols);
    size_t group = X16_ROWS * w->row_bytes;
    uint8_t *scratch = malloc(group);
    if (!scratch) return bt_fail(e, -ENOMEM, "repack: %zu bytes of scratch", group);
    uint8_t *data = (uint8_t *)(uintptr_t)w->data; /* the caller owns writable bytes */
    int64_t nb = w->cols / QK_K;
    for (int64_t g = 0; g < w->rows / X16_ROWS; g++) {
        memcpy(scratch, data + (size_t)g * group, group);
        group_to_x16(scratch, w->row_bytes, nb, data + (size_t)g * group);
    }
    free(scratch);
    w->dt = DT_Q4_K_X16;
    return 0;
}

int repack_q4_k_x16_wanted(void) {
    return ops && ops->matmul_q[DT_Q4_K_X16] != ops_ref.matmul_q[DT_Q4_K_X16] && !ops_exact();
}

void repack_q4_k_x16_block(const struct mat *w, int64_t r, int64_t i, struct block_q4_k *out) {
    const struct block_q4_k_x16 *X =
        (const struct block_q4_k_x16 *)(const void *)((const uint8_t *)w->data +
                                                      (size_t)(r / X16_ROWS) * X16_ROWS *
                                                          w->row_bytes) +
        i;
    int l = (int)(r % X16_ROWS);
    out->d = X->d[l];
    out->dmin = X->dmin[l];
    for (int k = 0; k < 12; k++)
        out->scales[k] = X->scales[k][l];
    for (int j = 0; j < 4; j++)
        for (int s = 0; s < 8; s++)
            memcpy(out->qs + 32 * j + 4 * s, X->qs[j][s][l], 4);
}
