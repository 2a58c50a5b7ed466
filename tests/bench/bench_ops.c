/* tests/bench/bench_ops.c: single-thread matmul throughput per dtype and ISA on a 4096x4096
 * weight matrix: GB/s of weight bytes at n=1 (the memory-bound decode case) and GFLOP/s at
 * n=8 (a small batch). One line per measurement:
 *   bench_ops: isa=avx512 dtype=q4_k rows=4096 cols=4096 n=1 ms=1.234 gbps=7.65 gflops=27.2
 * Each measurement repeats until BENCH_SECS (default 0.15 s) have passed; the scalar
 * reference is timed with one call (it only gives the baseline). A last line per dtype runs
 * the best ISA at n=1 through pool_matmul on every CPU (threads=N). Types with a
 * quantized-activation kernel (ops.h matmul_q) get `act=q` lines too: the same matrix times
 * activations quantized beforehand, single-threaded, at n=1 (decode), n=8 and n=64 (the
 * batched prefill path: each weight block reused across tokens).
 * BENCH_DTYPES=q8_0,q4_k and BENCH_ISAS=avx2,avx512vnni restrict the run (comma lists);
 * BENCH_QONLY=1 skips the f32-activation lines; BENCH_CPUTIME=1: see cpu_now_s.
 * BENCH_GGML=/path/libggml-cpu.so adds `isa=ggml` act=q lines at n=1: llama.cpp's own
 * ggml_vec_dot_<type>_q8_<0|K> row by row on the same bytes (same block formats), the
 * single-token kernel to compare against. */
#include "common/clock.h"
#include "ops/ops.h"
#include "ops/repack.h"
#include "ops/threadpool.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROWS 4096
#define COLS 4096
#define NMAX 64 /* largest batch timed */

/* name is in the comma-separated list (NULL or empty list: everything) */
static int listed(const char *list, const char *name) {
    if (!list || !*list) return 1;
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, name, n)) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

static double time_matmul(const struct ops_table *T, const struct mat *w, const float *x, int64_t n,
                          float *y, double budget) {
    T->matmul[w->dt](w, x, COLS, n, y, ROWS, 0, ROWS); /* warm the caches and page tables */
    int reps = 0;
    double t0 = bt_now_s(), el;
    do {
        T->matmul[w->dt](w, x, COLS, n, y, ROWS, 0, ROWS);
        reps++;
        el = bt_now_s() - t0;
    } while (el < budget && reps < 200);
    return el / reps;
}

/* Thread CPU seconds: with BENCH_CPUTIME=1 the act=q lines time each call on the calling
 * thread's CPU clock and keep the fastest call, which a shared, oversubscribed machine (time
 * spent descheduled) disturbs much less than the wall-clock mean. */
static double cpu_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Same for matmul_q on activations already quantized (xq: n rows of ldq bytes). */
static double time_matmul_q(matmul_q_fn f, const struct mat *w, const void *xq, size_t ldq,
                            int64_t n, float *y, double budget, int cputime) {
    f(w, xq, ldq, n, y, ROWS, 0, ROWS);
    int reps = 0;
    double t0 = bt_now_s(), el, best = 1e30;
    do {
        double c0 = cputime ? cpu_now_s() : 0.0;
        f(w, xq, ldq, n, y, ROWS, 0, ROWS);
        if (cputime) {
            double c = cpu_now_s() - c0;
            best = c < best ? c : best;
        }
        reps++;
        el = bt_now_s() - t0;
    } while (el < budget && reps < 200);
    return cputime ? best : el / reps;
}

/* llama.cpp's dot product of one weight row with one quantized activation row */
typedef void (*ggml_vec_dot_fn)(int n, float *s, size_t bs, const void *vx, size_t bx,
                                const void *vy, size_t by, int nrc);
static ggml_vec_dot_fn ggml_dot;

static void ggml_matmul_q(const struct mat *w, const void *restrict xq, size_t ldxq, int64_t n,
                          float *restrict y, int64_t ldy, int64_t r0, int64_t r1) {
    for (int64_t t = 0; t < n; t++)
        for (int64_t r = r0; r < r1; r++)
            ggml_dot((int)w->cols, y + t * ldy + r, 0, (const uint8_t *)w->data + r * w->row_bytes,
                     0, (const uint8_t *)xq + t * ldxq, 0, 1);
}

static ggml_vec_dot_fn ggml_find(void *lib, enum dtype dt) {
    const char *name = dt == DT_Q8_0   ? "ggml_vec_dot_q8_0_q8_0"
                       : dt == DT_Q4_0 ? "ggml_vec_dot_q4_0_q8_0"
                       : dt == DT_Q5_0 ? "ggml_vec_dot_q5_0_q8_0"
                       : dt == DT_Q4_K ? "ggml_vec_dot_q4_K_q8_K"
                       : dt == DT_Q5_K ? "ggml_vec_dot_q5_K_q8_K"
                       : dt == DT_Q6_K ? "ggml_vec_dot_q6_K_q8_K"
                                       : NULL;
    ggml_vec_dot_fn f = NULL;
    if (lib && name) *(void **)&f = dlsym(lib, name);
    return f;
}

int main(void) {
    const char *env = getenv("BENCH_SECS");
    double budget = env ? atof(env) : 0.15;
    const char *only_dt = getenv("BENCH_DTYPES"), *only_isa = getenv("BENCH_ISAS");
    int qonly = getenv("BENCH_QONLY") && atoi(getenv("BENCH_QONLY"));
    int cputime = getenv("BENCH_CPUTIME") && atoi(getenv("BENCH_CPUTIME"));
    const enum dtype types[] = {DT_F32,  DT_F16,  DT_BF16, DT_Q8_0, DT_Q6_K,
                                DT_Q5_K, DT_Q5_0, DT_Q4_K, DT_Q4_0};
    void *ggml = NULL;
    if (getenv("BENCH_GGML")) {
        ggml = dlopen(getenv("BENCH_GGML"), RTLD_NOW | RTLD_LOCAL);
        if (!ggml) fprintf(stderr, "bench_ops: %s\n", dlerror());
        void (*init)(void) = NULL;
        if (ggml) *(void **)&init = dlsym(ggml, "ggml_cpu_init");
        if (init) init(); /* its f16 tables, where the build uses them */
    }
    float *wf = malloc(sizeof(float) * ROWS * COLS);
    uint8_t *wq = malloc(sizeof(float) * ROWS * COLS);
    float *x = malloc(sizeof(float) * NMAX * COLS), *y = malloc(sizeof(float) * NMAX * ROWS);
    uint8_t *xq =
        malloc(NMAX * ops_act_row_bytes(DT_Q8_0, COLS) + NMAX * ops_act_row_bytes(DT_Q4_K, COLS));
    if (!wf || !wq || !x || !y || !xq) {
        fprintf(stderr, "bench_ops: out of memory\n");
        return 1;
    }
    unsigned s = 1;
    for (size_t i = 0; i < (size_t)ROWS * COLS; i++) {
        s = s * 1664525u + 1013904223u;
        wf[i] = (float)(s >> 8) / 8388608.0f - 1.0f;
    }
    for (int i = 0; i < NMAX * COLS; i++)
        x[i] = wf[i] * 0.5f;
    const char *const *isas = ops_available_isas();
    pool_t *pool = NULL;
    if (pool_open(&pool, 0, NULL) || pool_size(pool) < 2) {
        pool_close(pool);
        pool = NULL;
    }
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        enum dtype dt = types[k];
        if (!listed(only_dt, dtype_name(dt))) continue;
        size_t rb = dtype_row_bytes(dt, COLS);
        for (int r = 0; r < ROWS; r++)
            ops_ref.quantize_row[dt](wf + (size_t)r * COLS, wq + (size_t)r * rb, COLS);
        struct mat w = {dt, wq, ROWS, COLS, rb};
        if (pool && !qonly) {
            ops_init(NULL, NULL);
            pool_matmul(pool, &w, x, COLS, 1, y, ROWS);
            int reps = 0;
            double t0 = bt_now_s(), el;
            do {
                pool_matmul(pool, &w, x, COLS, 1, y, ROWS);
                reps++;
                el = bt_now_s() - t0;
            } while (el < budget && reps < 200);
            double sec = el / reps;
            printf("bench_ops: isa=%s dtype=%s rows=%d cols=%d n=1 threads=%d ms=%.3f gbps=%.2f\n",
                   ops->isa, dtype_name(dt), ROWS, COLS, pool_size(pool), sec * 1e3,
                   (double)rb * ROWS / sec * 1e-9);
        }
        for (int i = 0; isas[i]; i++) {
            const struct ops_table *T = ops_table_for(isas[i]);
            int is_ref = !strcmp(T->isa, "ref");
            if (!listed(only_isa, T->isa)) continue;
            for (int64_t n = 1; n <= 8 && !qonly; n += 7) {
                double sec = time_matmul(T, &w, x, n, y, is_ref ? 0.0 : budget);
                double gbps = (double)rb * ROWS / sec * 1e-9;
                double gflops = 2.0 * ROWS * COLS * (double)n / sec * 1e-9;
                printf("bench_ops: isa=%s dtype=%s rows=%d cols=%d n=%ld ms=%.3f gbps=%.2f "
                       "gflops=%.2f\n",
                       T->isa, dtype_name(dt), ROWS, COLS, (long)n, sec * 1e3, gbps, gflops);
                fflush(stdout);
            }
            enum dtype a = ops_act_dtype(dt);
            if (a == DT_F32 || !T->matmul_q[dt]) continue;
            size_t ldq = ops_act_row_bytes(dt, COLS);
            for (int64_t t = 0; t < NMAX; t++)
                T->quantize_act[a](x + t * COLS, xq + t * ldq, COLS);
            for (int64_t n = 1; n <= NMAX && !(is_ref && n > 8); n *= 8) {
                double sec = time_matmul_q(T->matmul_q[dt], &w, xq, ldq, n, y,
                                           is_ref ? 0.0 : budget, cputime);
                printf("bench_ops: isa=%s dtype=%s act=q rows=%d cols=%d n=%ld ms=%.3f gbps=%.2f "
                       "gflops=%.2f\n",
                       T->isa, dtype_name(dt), ROWS, COLS, (long)n, sec * 1e3,
                       (double)rb * ROWS / sec * 1e-9, 2.0 * ROWS * COLS * (double)n / sec * 1e-9);
                fflush(stdout);
            }
            /* the same matrix in the x16 layout (ops/repack.h), where T has its own kernel */
            enum dtype xdt = repack_x16_dtype(dt);
            if (xdt == DT_COUNT || T->matmul_q[xdt] == ops_ref.matmul_q[xdt]) continue;
            uint8_t *wx = malloc(rb * ROWS);
            struct mat mx = {dt, wx, ROWS, COLS, rb};
            if (!wx || (memcpy(wx, wq, rb * ROWS), repack_x16(&mx, NULL))) {
                fprintf(stderr, "bench_ops: %s: no memory\n", dtype_name(xdt));
                free(wx);
                continue;
            }
            for (int64_t n = 1; n <= NMAX; n *= 8) {
                double sec = time_matmul_q(T->matmul_q[xdt], &mx, xq, ldq, n, y, budget, cputime);
                printf("bench_ops: isa=%s dtype=%s act=q rows=%d cols=%d n=%ld ms=%.3f "
                       "gbps=%.2f gflops=%.2f\n",
                       T->isa, dtype_name(xdt), ROWS, COLS, (long)n, sec * 1e3,
                       (double)rb * ROWS / sec * 1e-9, 2.0 * ROWS * COLS * (double)n / sec * 1e-9);
                fflush(stdout);
            }
            free(wx);
        }
        enum dtype a = ops_act_dtype(dt);
        if ((ggml_dot = ggml_find(ggml, dt)) && listed(only_isa, "ggml")) {
            size_t ldq = ops_act_row_bytes(dt, COLS);
            ops_ref.quantize_act[a](x, xq, COLS);
            double sec = time_matmul_q(ggml_matmul_q, &w, xq, ldq, 1, y, budget, cputime);
            printf("bench_ops: isa=ggml dtype=%s act=q rows=%d cols=%d n=1 ms=%.3f gbps=%.2f "
                   "gflops=%.2f\n",
                   dtype_name(dt), ROWS, COLS, sec * 1e3, (double)rb * ROWS / sec * 1e-9,
                   2.0 * ROWS * COLS / sec * 1e-9);
            fflush(stdout);
        }
    }
    if (ggml) dlclose(ggml);
    pool_close(pool);
    free(wf);
    free(wq);
    free(x);
    free(xq);
    free(y);
    return 0;
}
