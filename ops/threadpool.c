/* ops/threadpool.c: see threadpool.h. One mutex guards the job (fn, ctx), a generation counter
 * and the count of workers still running; workers wait on `wake` for a new generation and the
 * caller waits on `done` for the count to reach zero. Nothing spins. */
#include "ops/threadpool.h"

#include "common/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

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
    uint64_t gen;
    int pending;
    int stop;
    pool_fn fn;
    void *ctx;
};

static void *worker_main(void *arg) {
    struct worker *w = arg;
    struct pool *p = w->p;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->gen == seen && !p->stop)
            pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop) break;
        seen = p->gen;
        pool_fn fn = p->fn;
        void *ctx = p->ctx;
        pthread_mutex_unlock(&p->mu);
        fn(ctx, w->ith, p->n);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
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
    BT_LOG(DEBUG, "pool", "threads=%d", n_threads);
    *out = p;
    return 0;
}

void pool_close(pool_t *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
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
    if (!p || p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->pending = p->n - 1;
    p->gen++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);

    fn(ctx, 0, p->n);

    pthread_mutex_lock(&p->mu);
    while (p->pending > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
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

/* Rows move in units of 8 so two threads rarely write the same cache line of y. */
static void matmul_worker(void *arg, int ith, int nth) {
    const struct matmul_job *j = arg;
    int64_t r0, r1;
    pool_slice(j->w->rows, ith, nth, 8, &r0, &r1);
    if (r0 < r1) j->t->matmul[j->w->dt](j->w, j->x, j->ldx, j->n, j->y, j->ldy, r0, r1);
}

void pool_matmul(pool_t *p, const struct mat *w, const float *x, int64_t ldx, int64_t n, float *y,
                 int64_t ldy) {
    struct matmul_job j = {ops ? ops : &ops_ref, w, x, ldx, n, y, ldy};
    pool_run(p, matmul_worker, &j);
}
