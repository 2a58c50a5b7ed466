/* tests/bench/bench_stream.c: the decode kernels against the memory they stream. Decode at
 * batch 1 should run at the speed of reading the weights; this says how close each kernel
 * comes, without a model: for every weight type of a q4_k_m file (Q4_K and Q5_K in the x16
 * layout where the ops table has a kernel for it, Q6_K) and Q8_0, a set of 12288 x 4096
 * matrices of BENCH_STREAM_MB (default 512) MB in all, far beyond the last-level cache, is
 * multiplied by one quantized token on every CPU (rows split as the forward pass splits them),
 * and the same bytes are read by a plain loop on the same threads (bench_read.h). The two
 * alternate BENCH_RUNS (default 5) times, so that both see the same state of a shared host,
 * and one line per type gives the medians:
 *   bench_stream: isa=avx2 dtype=q6_k threads=2 mb=551 kernel_gbps=20.2 read_gbps=21.1
 *     frac=0.934 multi_gbps=20.1 multi_frac=0.938
 * frac is the median of the per-run ratios kernel / read; multi_ is the same kernel called
 * the forward pass's way, one pool_matmul_multi per matrix (activations quantized inside,
 * one wake-up of the pool each). A kernel under about 0.95 loses time the memory would have
 * given it. Settings: BENCH_THREADS (all CPUs), BENCH_DTYPES (e.g. q5_k,q6_k),
 * BENCH_STREAM_ROWS (12288; a small matrix with BENCH_STREAM_MB=1 stays in cache and gives
 * the kernel's own speed), BENCH_STREAM_X16=0 (keep the GGUF layout: the row kernels). */
#include "common/clock.h"
#include "ops/ops.h"
#include "ops/repack.h"
#include "ops/threadpool.h"
#include "tests/bench/bench_read.h"
#include "tests/bench/bench_stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MAXROWS 65536
static int ROWS = 12288; /* BENCH_STREAM_ROWS */
#define COLS    4096
#define MAXMATS 64
#define MAXRUNS 31

struct stream_job {
    struct mat w[MAXMATS];
    uint8_t *owned[MAXMATS]; /* w[m].data, writable (for the repack) and freed at the end */
    int n_mats;
    const void *xq;
    size_t ldq;
    float *y;
    const struct mat *ptrs[MAXMATS]; /* &w[m], for bench_read_s */
};

static void kernel_job(void *ctx, int ith, int nth) {
    struct stream_job *j = ctx;
    for (int m = 0; m < j->n_mats; m++) {
        const struct mat *w = &j->w[m];
        int64_t r0, r1;
        pool_slice(w->rows, ith, nth, repack_is_x16(w->dt) ? X16_ROWS : 8, &r0, &r1);
        if (r1 > r0) ops->matmul_q[w->dt](w, j->xq, j->ldq, 1, j->y, w->rows, r0, r1);
    }
}

static double run_s(pool_t *pool, pool_fn fn, void *ctx) {
    double t0 = bt_now_s();
    pool_run(pool, fn, ctx);
    return bt_now_s() - t0;
}

/* The forward pass's way: one pool_matmul_multi per matrix (activations quantized inside). */
static double multi_s(pool_t *pool, struct stream_job *j, const float *x, void *qbuf) {
    double t0 = bt_now_s();
    for (int m = 0; m < j->n_mats; m++) {
        struct pool_mm mm = {&j->w[m], j->y, j->w[m].rows};
        pool_matmul_multi(pool, &mm, 1, x, COLS, 1, qbuf);
    }
    return bt_now_s() - t0;
}

/* One type: matrices of dt (repacked to x16 when the table wants it), timed against the read. */
static int stream_type(pool_t *pool, enum dtype dt, size_t total, int runs, const float *x) {
    static struct stream_job j; /* large (64 matrices) and reused */
    memset((void *)&j, 0, sizeof j);
    int rc = -1;
    size_t rb = dtype_row_bytes(dt, COLS), mb = rb * ROWS;
    j.n_mats = (int)((total + mb - 1) / mb);
    if (j.n_mats > MAXMATS) j.n_mats = MAXMATS;
    /* 64 quantized rows of random values, tiled: the kernels' speed does not depend on the
     * values, and quantizing 512 MB with the scalar quantizer would take a minute */
    enum { TILE = 64 };
    uint8_t *tile = malloc(rb * TILE);
    enum dtype a = ops_act_dtype(dt);
    j.ldq = ops_act_row_bytes(dt, COLS);
    void *xq = malloc(j.ldq);
    j.y = malloc(sizeof(float) * MAXROWS);
    void *qbuf = malloc(pool_matmul_qbuf_bytes(1, COLS));
    if (!tile || !xq || !j.y || !qbuf) goto oom;
    for (int r = 0; r < TILE; r++)
        ops_ref.quantize_row[dt](x + (size_t)(r % 8) * COLS, tile + (size_t)r * rb, COLS);
    ops->quantize_act[a](x, xq, COLS);
    j.xq = xq;
    const char *xe = getenv("BENCH_STREAM_X16"); /* 0: keep the GGUF layout */
    int x16 = repack_x16_wanted(dt) && !(xe && !atoi(xe));
    for (int m = 0; m < j.n_mats; m++) {
        /* 2 MB aligned and advised like the loader's blob (engine/loader.c), so that the
         * kernels stream from the pages they get in the forward pass */
        uint8_t *d = aligned_alloc(2u << 20, (mb + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1));
        if (!d) goto oom;
        j.owned[m] = d;
        (void)madvise(d, mb, MADV_HUGEPAGE);
        for (int r = 0; r < ROWS; r += TILE)
            memcpy(d + (size_t)r * rb, tile, rb * TILE);
        j.w[m] = (struct mat){dt, d, ROWS, COLS, rb};
        if (x16 && repack_x16(&j.w[m], NULL)) goto oom;
        j.ptrs[m] = &j.w[m];
    }
    run_s(pool, kernel_job, &j), bench_read_s(pool, j.ptrs, j.n_mats); /* page faults, warm code */
    double kg[MAXRUNS], rg[MAXRUNS], fr[MAXRUNS], mg[MAXRUNS], mf[MAXRUNS];
    double bytes = (double)mb * j.n_mats;
    for (int r = 0; r < runs; r++) {
        double tk = run_s(pool, kernel_job, &j), tr = bench_read_s(pool, j.ptrs, j.n_mats);
        double tm = multi_s(pool, &j, x, qbuf);
        kg[r] = bytes / tk * 1e-9, rg[r] = bytes / tr * 1e-9, fr[r] = tr / tk;
        mg[r] = bytes / tm * 1e-9, mf[r] = tr / tm;
    }
    printf("bench_stream: isa=%s dtype=%s threads=%d mb=%.0f kernel_gbps=%.1f read_gbps=%.1f "
           "frac=%.3f multi_gbps=%.1f multi_frac=%.3f\n",
           ops->isa, dtype_name(j.w[0].dt), pool_size(pool), bytes / (1 << 20),
           bench_median(kg, runs), bench_median(rg, runs), bench_median(fr, runs),
           bench_median(mg, runs), bench_median(mf, runs));
    fflush(stdout);
    rc = 0;
out:
    for (int m = 0; m < j.n_mats; m++)
        free(j.owned[m]);
    free(tile), free(xq), free(j.y), free(qbuf);
    return rc;
oom:
    fprintf(stderr, "bench_stream: %s: out of memory\n", dtype_name(dt));
    goto out;
}

int main(void) {
    const char *e = getenv("BENCH_STREAM_MB");
    size_t total = (size_t)(e ? atol(e) : 512) << 20;
    e = getenv("BENCH_RUNS");
    int runs = e ? atoi(e) : 5;
    if (runs < 1) runs = 1;
    if (runs > MAXRUNS) runs = MAXRUNS;
    if (ops_init(NULL, NULL)) return 1;
    pool_t *pool = NULL;
    bt_err err = {0};
    e = getenv("BENCH_STREAM_ROWS");
    if (e) ROWS = atoi(e) < 64 ? 64 : atoi(e) > MAXROWS ? MAXROWS : atoi(e) / 64 * 64;
    e = getenv("BENCH_THREADS");
    if (pool_open(&pool, e ? atoi(e) : 0, &err)) {
        fprintf(stderr, "bench_stream: %s\n", err.msg);
        return 1;
    }
    float *x = malloc(sizeof(float) * 8 * COLS);
    if (!x) {
        pool_close(pool);
        return 1;
    }
    uint32_t s = 12345;
    for (int i = 0; i < 8 * COLS; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)((int32_t)(s >> 8) - (1 << 23)) / (float)(1 << 23);
    }
    const char *only = getenv("BENCH_DTYPES");
    const enum dtype types[] = {DT_Q4_K, DT_Q5_K, DT_Q6_K, DT_Q8_0};
    int rc = 0;
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (!only || strstr(only, dtype_name(types[i])))
            rc |= stream_type(pool, types[i], total, runs, x);
    free(x);
    pool_close(pool);
    return rc ? 1 : 0;
}
