/* ops/threadpool.h: a fixed pool of worker threads that sleep (condition variable) between
 * jobs. pool_run(p, fn, ctx) calls fn(ctx, ith, nth) once for every ith in [0, nth) where
 * nth = pool_size(p), on the caller plus nth-1 workers, and returns when all are done.
 * Work is split by the callee from (ith, nth): rows, heads or sequences, never a reduction,
 * so results do not depend on nth. One thread calls pool_run at a time.
 * Every job runs with subnormal floats flushed to zero (ops/fpmode.h), on the workers and on
 * the caller's share alike, also with p NULL or one thread; the caller's own mode is restored
 * before pool_run returns. */
#ifndef BT_OPS_THREADPOOL_H
#define BT_OPS_THREADPOOL_H
#include "common/err.h"
#include "ops/ops.h"

#include <stdint.h>

typedef struct pool pool_t;
typedef void (*pool_fn)(void *ctx, int ith, int nth);

int pool_open(pool_t **out, int n_threads, bt_err *e); /* n_threads <= 0: number of CPUs */
void pool_close(pool_t *p);                            /* NULL ok */
int pool_size(const pool_t *p);
void pool_run(pool_t *p, pool_fn fn, void *ctx);

/* [*r0, *r1) = the ith of nth near-equal slices of [0, n), aligned to `align` rows. */
void pool_slice(int64_t n, int ith, int nth, int64_t align, int64_t *r0, int64_t *r1);

/* y[t][r] = W x[t] for n tokens, rows split across the pool (p may be NULL: single thread). */
void pool_matmul(pool_t *p, const struct mat *w, const float *x, int64_t ldx, int64_t n, float *y,
                 int64_t ldy);

/* Several matrices that share one input (same cols), e.g. gate and up, or the four GDN input
 * projections: y_k[t][r] = W_k x[t] for each k, rows of all matrices split across the pool in
 * one pass. The activations are quantized once per token for each format the matrices need
 * (ops.h matmul_q_fn) into qbuf, which must hold pool_matmul_qbuf_bytes(n, cols) bytes; with
 * qbuf NULL, in exact mode (ops_exact()) or for types without matmul_q, f32 matmul is used. */
struct pool_mm {
    const struct mat *w;
    float *y;
    int64_t ldy;
};
size_t pool_matmul_qbuf_bytes(int64_t n, int64_t cols);
void pool_matmul_multi(pool_t *p, const struct pool_mm *mm, int n_mm, const float *x, int64_t ldx,
                       int64_t n, void *qbuf);

#endif
