/* tests/bench/bench_read.h: the memory's pace for a set of weight matrices, for the benches
 * that compare a kernel (or a whole decode step) with it. bench_read_s() reads every byte of
 * the matrices once with plain 64-bit loads (eight in flight; no SIMD assumed) and a software
 * prefetch 16 KB ahead, rows split across the pool as the forward pass splits them (16-row
 * units), and returns the wall time.
 * A read of the very bytes a decode step streams, taken next to it, is a fairer yardstick on
 * a shared host than a triad measured at another moment on other arrays. */
#ifndef BT_TESTS_BENCH_READ_H
#define BT_TESTS_BENCH_READ_H
#include "common/clock.h"
#include "ops/ops.h"
#include "ops/threadpool.h"

#include <stdint.h>

#define BENCH_READ_AHEAD (16 << 10)

struct bench_read {
    const struct mat *const *mats;
    int n_mats;
    volatile uint64_t sink[64]; /* keeps the loads */
};

static void bench_read_job(void *ctx, int ith, int nth) {
    struct bench_read *j = ctx;
    uint64_t acc[8] = {0};
    for (int m = 0; m < j->n_mats; m++) {
        const struct mat *w = j->mats[m];
        int64_t r0, r1;
        pool_slice(w->rows, ith, nth, 16, &r0, &r1);
        const uint64_t *p =
            (const uint64_t *)(const void *)((const uint8_t *)w->data + (size_t)r0 * w->row_bytes);
        size_t words = (size_t)(r1 > r0 ? r1 - r0 : 0) * w->row_bytes / 8;
        for (size_t i = 0; i + 8 <= words; i += 8) {
            /* a line 16 KB ahead into L2 (locality 2): on the AVX2 host of round 12 this read
             * ran at 22-24 GB/s on 2 threads, the hardware prefetcher alone at 20-21 */
            __builtin_prefetch((const char *)(uintptr_t)((uintptr_t)(p + i) + BENCH_READ_AHEAD), 0,
                               2);
            for (int k = 0; k < 8; k++)
                acc[k] ^= p[i + k];
        }
    }
    j->sink[ith % 64] = acc[0] ^ acc[1] ^ acc[2] ^ acc[3] ^ acc[4] ^ acc[5] ^ acc[6] ^ acc[7];
}

static inline double bench_read_s(pool_t *pool, const struct mat *const *mats, int n_mats) {
    static struct bench_read j; /* the sink is written by every thread: not on a stack */
    j.mats = mats, j.n_mats = n_mats;
    double t0 = bt_now_s();
    pool_run(pool, bench_read_job, &j);
    return bt_now_s() - t0;
}

#endif
