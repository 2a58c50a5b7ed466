/* tests/test_threadpool.c: pool_run coverage of (ith, nth), slices, repeated jobs, shutdown,
 * the floating-point mode of jobs, and pool_matmul bit-exactness across thread counts. Run
 * under TSan too (make tsan). */
#include "ops/fpmode.h"
#include "ops/ops.h"
#include "ops/quant.h"
#include "ops/threadpool.h"

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct count_ctx {
    atomic_int calls;
    int seen[16];
    int nth_seen[16];
};

static void count_fn(void *arg, int ith, int nth) {
    struct count_ctx *c = arg;
    atomic_fetch_add(&c->calls, 1);
    c->seen[ith]++; /* each ith is owned by exactly one thread per run */
    c->nth_seen[ith] = nth;
}

Test(threadpool, run_calls_every_ith_once) {
    for (int n = 1; n <= 4; n++) {
        pool_t *p = NULL;
        bt_err e = {0};
        cr_assert_eq(pool_open(&p, n, &e), 0, "%s", e.msg);
        cr_assert_eq(pool_size(p), n);
        struct count_ctx c;
        memset(&c, 0, sizeof c);
        for (int rep = 0; rep < 200; rep++)
            pool_run(p, count_fn, &c);
        cr_assert_eq(atomic_load(&c.calls), 200 * n);
        for (int i = 0; i < n; i++) {
            cr_assert_eq(c.seen[i], 200, "ith %d ran %d times", i, c.seen[i]);
            cr_assert_eq(c.nth_seen[i], n);
        }
        pool_close(p);
    }
    pool_close(NULL);
}

/* A subnormal result and a subnormal input, each zero when the thread flushes (ops/fpmode.h). */
static int thread_flushes_subnormals(void) {
    volatile float tiny = 1e-30f, small = 1e-10f, sub = 1e-40f, one = 1.0f;
    float product = tiny * small, passed = sub * one;
    return product == 0.0f && passed == 0.0f;
}

struct fpmode_ctx {
    int flushed[16];
};

static void fpmode_fn(void *arg, int ith, int nth) {
    (void)nth;
    ((struct fpmode_ctx *)arg)->flushed[ith] = thread_flushes_subnormals();
}

#if defined(__x86_64__) || defined(__aarch64__)
Test(threadpool, jobs_flush_subnormals_and_caller_mode_is_restored) {
    cr_assert_not(thread_flushes_subnormals(), "the test thread starts in the default mode");
    for (int n = 0; n <= 3; n++) { /* n = 0: no pool, the caller runs the job alone */
        pool_t *p = NULL;
        bt_err e = {0};
        if (n) cr_assert_eq(pool_open(&p, n, &e), 0, "%s", e.msg);
        for (int rep = 0; rep < 3; rep++) {
            struct fpmode_ctx c;
            memset(&c, 0, sizeof c);
            pool_run(p, fpmode_fn, &c);
            for (int i = 0; i < pool_size(p); i++)
                cr_assert(c.flushed[i], "threads=%d ith=%d ran a job with subnormals kept", n, i);
            cr_assert_not(thread_flushes_subnormals(), "threads=%d: caller's mode not restored", n);
        }
        pool_close(p);
    }
    /* a caller that already flushes keeps flushing */
    fpmode_t saved = fpmode_flush_denormals();
    struct fpmode_ctx c = {{0}};
    pool_run(NULL, fpmode_fn, &c);
    cr_assert(c.flushed[0]);
    cr_assert(thread_flushes_subnormals());
    fpmode_restore(saved);
    cr_assert_not(thread_flushes_subnormals());
}
#endif

Test(threadpool, default_size_is_cpu_count) {
    pool_t *p = NULL;
    cr_assert_eq(pool_open(&p, 0, NULL), 0);
    cr_assert_geq(pool_size(p), 1);
    pool_close(p);
    cr_assert_eq(pool_size(NULL), 1);
}

Test(threadpool, slices_cover_range_aligned) {
    for (int64_t n = 0; n < 100; n++)
        for (int nth = 1; nth <= 5; nth++)
            for (int64_t align = 1; align <= 8; align *= 2) {
                int64_t expect = 0;
                for (int ith = 0; ith < nth; ith++) {
                    int64_t r0, r1;
                    pool_slice(n, ith, nth, align, &r0, &r1);
                    cr_assert_eq(r0, expect, "n=%ld nth=%d ith=%d", (long)n, nth, ith);
                    cr_assert_leq(r0, r1);
                    cr_assert(r0 == n || r0 % align == 0);
                    cr_assert(r1 == n || r1 % align == 0);
                    expect = r1;
                }
                cr_assert_eq(expect, n);
            }
}

static float frand(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

Test(threadpool, matmul_bit_exact_for_1_2_3_threads) {
    const int64_t rows = 45, cols = 512, n = 3;
    size_t rb = dtype_row_bytes(DT_Q4_K, cols);
    uint8_t *wq = malloc((size_t)rows * rb);
    float *wf = malloc(sizeof(float) * (size_t)(rows * cols));
    float *x = malloc(sizeof(float) * (size_t)(n * cols));
    unsigned s = 7;
    for (int64_t i = 0; i < rows * cols; i++)
        wf[i] = frand(&s);
    for (int64_t i = 0; i < n * cols; i++)
        x[i] = frand(&s);
    for (int64_t r = 0; r < rows; r++)
        quantize_row_q4_k(wf + r * cols, wq + (size_t)r * rb, cols);
    struct mat m = {DT_Q4_K, wq, rows, cols, rb};
    cr_assert_eq(ops_init(NULL, NULL), 0);
    float ref[45 * 3], y[45 * 3];
    pool_matmul(NULL, &m, x, cols, n, ref, rows);
    for (int th = 1; th <= 3; th++) {
        pool_t *p = NULL;
        cr_assert_eq(pool_open(&p, th, NULL), 0);
        memset(y, 0xff, sizeof y);
        pool_matmul(p, &m, x, cols, n, y, rows);
        cr_assert(memcmp(y, ref, sizeof y) == 0, "threads=%d differ", th);
        pool_close(p);
    }
    free(wq);
    free(wf);
    free(x);
}
