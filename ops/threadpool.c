/* ops/threadpool.c: see threadpool.h.
 *
 * Hand-off: the caller publishes (fn, ctx) and bumps the atomic generation `gen`; a worker that
 * has just finished a job spins on `gen` for up to POOL_SPIN_NS before it sleeps on the `wake`
 * condition variable, and the caller, after its own share, spins on `pending` for as long before
 * it sleeps on `done`. A decode step runs ~200 short jobs back to back with a few microseconds
 * of serial work between them; measured on a loaded 2-vCPU VM, a condvar round trip cost ~40 us
 * per pool_run and a job pair with a short serial gap took longer on 2 threads than on 1,
 * while llama.cpp's workers spin. An idle pool (between requests) still sleeps after the spin.
 *
 * Lost wake-ups are excluded by the mutex: a worker re-checks `gen` under `mu` before waiting,
 * and the caller bumps `gen` and broadcasts under `mu` (the same for `pending` and `done`). */
#include "ops/threadpool.h"

#include "common/assert.h"
#include "common/clock.h"
#include "common/log.h"
#include "ops/fpmode.h"
#include "ops/repack.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

/* Spin budget before sleeping: long enough to cover the serial work between the jobs of one
 * forward pass, short enough that an idle pool costs nothing measurable. */
#define POOL_SPIN_NS 200000

struct worker {
    struct pool *p;
    int ith;
    pthread_t tid;
};

struct pool {
    int n;            /* threads including the caller */
    int n_started;    /* workers actually created (for shutdown) */
    struct worker *w; /* n - 1 workers, ith 1..n-1 */
    pthread_mutex_t mu;
    pthread_cond_t wake; /* new generation or stop */
    pthread_cond_t done; /* pending reached 0 */
    atomic_uint_fast64_t gen;
    atomic_int pending;
    atomic_int stop;
    pool_fn fn; /* written before gen is bumped, read after it is seen (release/acquire) */
    void *ctx;
    int64_t spin_ns;
    int yield_spin;
};

/* One step of a bounded spin (i counts from 1): a pause, and every 64 steps a look at the
 * clock (a vDSO call, ~20 ns) and a sched_yield() when yield_spin is set, so that on an
 * oversubscribed machine the thread being waited for can run on this CPU. 1 = budget spent. */
static int spin_step(struct pool *p, unsigned i, int64_t *t_end) {
    if ((i & 63) == 0) {
        int64_t now = bt_now_ns();
        if (!*t_end)
            *t_end = now + p->spin_ns;
        else if (now >= *t_end)
            return 1;
        if (p->yield_spin) sched_yield();
    }
    cpu_relax();
    return 0;
}

/* Spins until gen differs from `old`, stop is set or the budget ends; returns gen as last
 * read. spin_while_pending: the same for pending reaching 0; returns what is left. */
static uint64_t spin_while_gen(struct pool *p, uint64_t old) {
    int64_t t_end = 0;
    for (unsigned i = 1;; i++) {
        uint64_t g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g != old || atomic_load_explicit(&p->stop, memory_order_relaxed)) return g;
        if (spin_step(p, i, &t_end)) return g;
    }
}

static int spin_while_pending(struct pool *p) {
    int64_t t_end = 0;
    for (unsigned i = 1;; i++) {
        int left = atomic_load_explicit(&p->pending, memory_order_acquire);
        if (!left) return 0;
        if (spin_step(p, i, &t_end)) return left;
    }
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    struct pool *p = w->p;
    uint64_t seen = 0;
    fpmode_flush_denormals(); /* this thread only runs jobs (threadpool.h) */
    for (;;) {
        uint64_t g = spin_while_gen(p, seen);
        if (g == seen && !atomic_load(&p->stop)) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->wake, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) break;
        seen = g;
        p->fn(p->ctx, w->ith, p->n);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu); /* the caller may be about to wait: signal under mu */
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

int pool_open(pool_t **out, int n_threads, bt_err *e) {
    *out = NULL;
    if (n_threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)c : 1;
    }
    struct pool *p = calloc(1, sizeof *p);
    if (!p) return bt_fail(e, -ENOMEM, "pool: out of memory");
    p->n = n_threads;
    p->spin_ns = POOL_SPIN_NS;
    const char *env = getenv("BT_POOL_SPIN_US"); /* experiments: 0 = sleep at once */
    if (env && *env) p->spin_ns = (int64_t)atoi(env) * 1000;
    env = getenv("BT_POOL_YIELD");
    p->yield_spin = env && *env ? atoi(env) : 1;
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->stop, 0);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    if (n_threads > 1) {
        p->w = calloc((size_t)n_threads - 1, sizeof *p->w);
        if (!p->w) {
            pool_close(p);
            return bt_fail(e, -ENOMEM, "pool: out of memory for %d workers", n_threads - 1);
        }
    }
    for (int i = 1; i < n_threads; i++) {
        struct worker *w = &p->w[i - 1];
        w->p = p;
        w->ith = i;
        int rc = pthread_create(&w->tid, NULL, worker_main, w);
        if (rc) {
            pool_close(p);
            return bt_fail(e, -rc, "pool: creating worker %d of %d failed", i, n_threads - 1);
        }
        p->n_started++;
    }
    BT_LOG(DEBUG, "pool", "threads=%d spin_us=%d", n_threads, (int)(p->spin_ns / 1000));
    *out = p;
    return 0;
}

void pool_close(pool_t *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_started; i++)
        pthread_join(p->w[i].tid, NULL);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    free(p->w);
    free(p);
}

int pool_size(const pool_t *p) {
    return p ? p->n : 1;
}

void pool_run(pool_t *p, pool_fn fn, void *ctx) {
    fpmode_t caller_mode = fpmode_flush_denormals();
    if (!p || p->n == 1) {
        fn(ctx, 0, 1);
        fpmode_restore(caller_mode);
        return;
    }
    /* every worker has finished the previous job (pending was 0), so fn/ctx are free */
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake); /* cheap when nobody sleeps */
    pthread_mutex_unlock(&p->mu);

    fn(ctx, 0, p->n);
    fpmode_restore(caller_mode);

    if (spin_while_pending(p)) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->pending) > 0)
            pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}

void pool_slice(int64_t n, int ith, int nth, int64_t align, int64_t *r0, int64_t *r1) {
    if (align < 1) align = 1;
    int64_t units = (n + align - 1) / align; /* slices move in whole aligned units */
    int64_t per = units / nth, rem = units % nth;
    int64_t u0 = ith * per + (ith < rem ? ith : rem);
    int64_t u1 = u0 + per + (ith < rem ? 1 : 0);
    *r0 = u0 * align < n ? u0 * align : n;
    *r1 = u1 * align < n ? u1 * align : n;
}

struct matmul_job {
    const struct ops_table *t;
    const struct mat *w;
    const float *x;
    int64_t ldx, n;
    float *y;
    int64_t ldy;
};

/* Rows move in units of 8 so two threads rarely write the same cache line of y (of 16 for
 * the x16 layout, whose kernels take whole groups). */
static void matmul_worker(void *arg, int ith, int nth) {
    const struct matmul_job *j = arg;
    int64_t r0, r1;
    pool_slice(j->w->rows, ith, nth, repack_is_x16(j->w->dt) ? X16_ROWS : 8, &r0, &r1);
    if (r0 < r1) j->t->matmul[j->w->dt](j->w, j->x, j->ldx, j->n, j->y, j->ldy, r0, r1);
}

void pool_matmul(pool_t *p, const struct mat *w, const float *x, int64_t ldx, int64_t n, float *y,
                 int64_t ldy) {
    struct matmul_job j = {ops ? ops : &ops_ref, w, x, ldx, n, y, ldy};
    pool_run(p, matmul_worker, &j);
}

/* ---- shared-input matmuls with quantized activations ---- */

#define MM_MAX 8

struct multi_job {
    const struct ops_table *t;
    const struct pool_mm *mm;
    int n_mm;
    const float *x;
    int64_t ldx, n, cols, rows, bytes; /* rows and weight bytes of all matrices */
    uint8_t *q[DT_COUNT]; /* quantized activations per activation dtype, NULL if unused */
    size_t ldq[DT_COUNT];
    _Atomic int64_t next_row; /* first global row no thread has claimed */
};

size_t pool_matmul_qbuf_bytes(int64_t n, int64_t cols) {
    /* room for both formats; a K-quant row needs whole 256 blocks, so round up */
    int64_t c256 = (cols + 255) / 256 * 256;
    return (size_t)n *
               (dtype_row_bytes(DT_Q8_0, (cols + 31) / 32 * 32) + dtype_row_bytes(DT_Q8_K, c256)) +
           64;
}

static void quantize_job(void *arg, int ith, int nth) {
    const struct multi_job *j = arg;
    int64_t t0, t1;
    pool_slice(j->n, ith, nth, 1, &t0, &t1);
    for (int a = 0; a < DT_COUNT; a++) {
        if (!j->q[a]) continue;
        for (int64_t t = t0; t < t1; t++)
            j->t->quantize_act[a](j->x + t * j->ldx, j->q[a] + (size_t)t * j->ldq[a], j->cols);
    }
}

/* Global row (over all matrices in order) at which the weight bytes before it reach `pos`,
 * rounded up to a multiple of 16 rows inside its matrix (capped at the matrix's end). */
static int64_t multi_row_at(const struct multi_job *j, int64_t pos) {
    int64_t base = 0, bytes = 0;
    for (int k = 0; k < j->n_mm; k++) {
        const struct mat *w = j->mm[k].w;
        int64_t rb = (int64_t)w->row_bytes, mb = w->rows * rb;
        if (pos < bytes + mb) {
            int64_t r = (pos - bytes + rb - 1) / rb;
            r = (r + 15) / 16 * 16;
            return base + (r < w->rows ? r : w->rows);
        }
        base += w->rows, bytes += mb;
    }
    return base;
}

/* Weight bytes of global rows [0, g) (inverse of multi_row_at up to its rounding). */
static int64_t multi_bytes_at(const struct multi_job *j, int64_t g) {
    int64_t bytes = 0;
    for (int k = 0; k < j->n_mm && g > 0; k++) {
        const struct mat *w = j->mm[k].w;
        int64_t r = g < w->rows ? g : w->rows;
        bytes += r * (int64_t)w->row_bytes;
        g -= r;
    }
    return bytes;
}

/* Runs the global rows [g0, g1) of all matrices. */
static void multi_rows(const struct multi_job *j, int64_t g0, int64_t g1) {
    int64_t base = 0;
    for (int k = 0; k < j->n_mm && base < g1; base += j->mm[k].w->rows, k++) {
        const struct pool_mm *m = &j->mm[k];
        int64_t r0 = g0 > base ? g0 - base : 0, r1 = g1 - base;
        if (r1 > m->w->rows) r1 = m->w->rows;
        if (r0 >= r1) continue;
        enum dtype dt = m->w->dt, a = ops_act_dtype(dt);
        if (a != DT_F32 && j->q[a] && j->t->matmul_q[dt])
            j->t->matmul_q[dt](m->w, j->q[a], j->ldq[a], j->n, m->y, m->ldy, r0, r1);
        else
            j->t->matmul[dt](m->w, j->x, j->ldx, j->n, m->y, m->ldy, r0, r1);
    }
}

/* Rows of all matrices as one range [0, rows), claimed by the threads in pieces, in units of
 * 16 rows of a matrix and sized by weight bytes (the matrices of one call can differ in type:
 * the GDN input projections are Q5_K and Q4_K). The first pieces are 4/5 of the bytes split
 * equally among the threads; the last fifth goes in pieces of half of what is left (at least
 * MULTI_MIN_PIECE), taken by whichever thread is free. A fixed equal split left one thread
 * waiting for the other at the end of every call: on this shared 2-vCPU host one vCPU
 * streamed 3-67% slower than the other, pass by pass, and the faster thread idled
 * 100-590 us of a 1-1.5 ms call (Q4_K 24576 x 4096, n = 1); claimed this way the two finish
 * within 2 us of each other. Few pieces, because each starts a stream the prefetchers must
 * find again. Which thread computes a row does not change its result. */
#define MULTI_MIN_PIECE (128 << 10)

static void multi_worker(void *arg, int ith, int nth) {
    struct multi_job *j = arg;
    (void)ith;
    for (;;) {
        int64_t g0 = atomic_load_explicit(&j->next_row, memory_order_relaxed), g1;
        do {
            if (g0 >= j->rows) return;
            int64_t left = j->bytes - multi_bytes_at(j, g0);
            int64_t piece = left > j->bytes / 5 ? j->bytes * 4 / (5 * nth) : left / nth;
            if (piece < MULTI_MIN_PIECE) piece = MULTI_MIN_PIECE;
            g1 = multi_row_at(j, j->bytes - left + piece);
            if (g1 <= g0) g1 = j->rows; /* not reached: a piece spans at least one row */
        } while (!atomic_compare_exchange_weak_explicit(&j->next_row, &g0, g1, memory_order_relaxed,
                                                        memory_order_relaxed));
        multi_rows(j, g0, g1);
    }
}

void pool_matmul_multi(pool_t *p, const struct pool_mm *mm, int n_mm, const float *x, int64_t ldx,
                       int64_t n, void *qbuf) {
    BT_ASSERT(n_mm >= 1 && n_mm <= MM_MAX);
    struct multi_job j = {.t = ops ? ops : &ops_ref,
                          .mm = mm,
                          .n_mm = n_mm,
                          .x = x,
                          .ldx = ldx,
                          .n = n,
                          .cols = mm[0].w->cols};
    atomic_init(&j.next_row, 0);
    uint8_t *next = qbuf;
    for (int k = 0; k < n_mm; k++) {
        BT_ASSERT(mm[k].w->cols == j.cols);
        j.rows += mm[k].w->rows;
        j.bytes += mm[k].w->rows * (int64_t)mm[k].w->row_bytes;
        enum dtype a = ops_act_dtype(mm[k].w->dt);
        if (!qbuf || ops_exact() || a == DT_F32 || j.q[a] || !j.t->matmul_q[mm[k].w->dt]) continue;
        j.q[a] = next;
        j.ldq[a] = dtype_row_bytes(a, j.cols);
        next += (size_t)n * j.ldq[a];
    }
    /* a token's quantization is the same on any thread: small batches skip a wake-up */
    if (next != (uint8_t *)qbuf) {
        if (n <= 2) {
            fpmode_t caller_mode = fpmode_flush_denormals(); /* as in pool_run */
            quantize_job(&j, 0, 1);
            fpmode_restore(caller_mode);
        } else
            pool_run(p, quantize_job, &j);
    }
    pool_run(p, multi_worker, &j);
}
