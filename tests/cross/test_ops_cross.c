/* tests/cross/test_ops_cross.c: the AArch64 kernel tables ("neon", "neon-dotprod") against
 * ops_ref, cross-compiled and run under qemu-user by `make test-cross` (Criterion has no arm64
 * build here, so this is a plain driver: one line per check, exit status 1 if any failed).
 * The checks and tolerances follow tests/test_ops.c: odd shapes, strides wider than the data,
 * rows outside [r0, r1) untouched, batch-independent matmul_q results (bit for bit), extreme
 * quantized codes, bit-exact activation quantizers, and the vector kernels of decode.
 *
 * Usage: test_ops_cross [--expect ISA] — ISA is the table ops_init must choose on this CPU
 * (qemu -cpu max: neon-dotprod; -cpu cortex-a53: neon, and neon-dotprod must be absent). */
#include "ops/ops.h"
#include "ops/quant.h"
#include "ops/threadpool.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL_MATMUL   2e-6 /* float matmul vs ref, relative to sum |w x| */
#define TOL_MATMUL_Q 1e-5 /* matmul_q vs ref: exact integer sums, float scaling order differs */
#define TOL_KERNEL   1e-5 /* other kernels, relative to the largest magnitude */

static int n_checks, n_failed;
static int cur_failed; /* failures inside the current check */
static char cur_name[160];

static void check_begin(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void check_begin(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cur_name, sizeof cur_name, fmt, ap);
    va_end(ap);
    cur_failed = 0;
}

/* Records a failure of the current check; prints the first three. */
static void fail(const char *fmt, ...) {
    if (cur_failed++ >= 3) return;
    va_list ap;
    va_start(ap, fmt);
    printf("  FAIL %s: ", cur_name);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

static void check_end(void) {
    n_checks++;
    if (cur_failed) n_failed++;
    printf("%s %s\n", cur_failed ? "FAIL" : "ok  ", cur_name);
    fflush(stdout);
}

static unsigned rng = 12345;
static float frand(void) { /* uniform [-1, 1) */
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 8388608.0f - 1.0f;
}
static void fill(float *x, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++)
        x[i] = frand() * scale;
}

static void *xalloc(size_t n) {
    void *p = calloc(n + 64, 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}
static float *falloc(int64_t n) {
    return xalloc(((size_t)n + 16) * sizeof(float));
}

/* ---- matmul (float weights) ------------------------------------------------------------- */

static void check_matmul(const struct ops_table *T, enum dtype dt, int64_t rows, int64_t cols,
                         int64_t n) {
    size_t rb = dtype_row_bytes(dt, cols);
    float *wf = falloc(rows * cols), *wd = falloc(rows * cols);
    uint8_t *wq = xalloc((size_t)rows * rb);
    int64_t ldx = cols + 3, ldy = rows + 5;
    float *x = falloc(n * ldx), *y = falloc(n * ldy), *yr = falloc(n * ldy);
    fill(wf, rows * cols, 1.0f);
    fill(x, n * ldx, 1.0f);
    for (int64_t r = 0; r < rows; r++) {
        ops_ref.quantize_row[dt](wf + r * cols, wq + (size_t)r * rb, cols);
        ops_ref.dequantize_row[dt](wq + (size_t)r * rb, wd + r * cols, cols);
    }
    struct mat m = {dt, wq, rows, cols, rb};
    for (int64_t i = 0; i < n * ldy; i++)
        y[i] = yr[i] = -7.0f;
    int64_t r0 = rows > 2 ? 1 : 0;
    ops_ref.matmul[dt](&m, x, ldx, n, yr, ldy, r0, rows);
    T->matmul[dt](&m, x, ldx, n, y, ldy, r0, rows);
    for (int64_t t = 0; t < n; t++)
        for (int64_t r = 0; r < rows; r++) {
            float got = y[t * ldy + r], want = yr[t * ldy + r];
            if (r < r0) {
                if (got != -7.0f) fail("row %ld outside [r0, r1) written", (long)r);
                continue;
            }
            double mag = 0;
            for (int64_t c = 0; c < cols; c++)
                mag += fabs((double)wd[r * cols + c] * (double)x[t * ldx + c]);
            if (!(fabs((double)got - (double)want) <= TOL_MATMUL * mag + 1e-30))
                fail("rows=%ld cols=%ld n=%ld r=%ld t=%ld: %g vs ref %g", (long)rows, (long)cols,
                     (long)n, (long)r, (long)t, (double)got, (double)want);
        }
    free(wf), free(wd), free(wq), free(x), free(y), free(yr);
}

static void test_matmul(const struct ops_table *T) {
    const enum dtype ts[] = {DT_F32,  DT_F16,  DT_BF16, DT_Q8_0, DT_Q4_0,
                             DT_Q5_0, DT_Q4_K, DT_Q5_K, DT_Q6_K};
    for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) {
        int64_t blk = dtype_traits[ts[k]].block;
        int64_t big = blk == 1 ? 77 : blk * 3; /* float types: a tail of 77 % 8 values */
        const int64_t shapes[][3] = {{1, blk == 1 ? 32 : blk, 1},
                                     {3, blk == 1 ? 32 : blk, 7},
                                     {37, big, 1},
                                     {13, big, 7},
                                     {5, blk == 1 ? 512 : blk * 2, 9},
                                     {2, blk == 1 ? 5 : blk, 3}};
        check_begin("%s matmul %s", T->isa, dtype_name(ts[k]));
        for (size_t s = 0; s < 6; s++)
            check_matmul(T, ts[k], shapes[s][0], shapes[s][1], shapes[s][2]);
        check_end();
    }
}

/* ---- matmul_q ---------------------------------------------------------------------------- */

static const enum dtype q_types[] = {DT_Q8_0, DT_Q4_0, DT_Q5_0, DT_Q4_K, DT_Q5_K, DT_Q6_K};
#define N_QTYPES (sizeof q_types / sizeof q_types[0])

static void check_matmul_q(const struct ops_table *T, enum dtype dt, int64_t rows, int64_t cols,
                           int64_t n) {
    enum dtype at = ops_act_dtype(dt);
    size_t rb = dtype_row_bytes(dt, cols), ab = ops_act_row_bytes(dt, cols), ldq = ab + 6;
    float *wf = falloc(rows * cols), *wd = falloc(rows * cols);
    uint8_t *wq = xalloc((size_t)rows * rb), *xq = xalloc((size_t)n * ldq);
    int64_t ldx = cols + 3, ldy = rows + 5;
    float *x = falloc(n * ldx), *xd = falloc(n * cols), *y = falloc(n * ldy), *yr = falloc(n * ldy);
    float *y1 = falloc(ldy);
    fill(wf, rows * cols, 1.0f);
    fill(x, n * ldx, 1.0f);
    for (int64_t r = 0; r < rows; r++) {
        ops_ref.quantize_row[dt](wf + r * cols, wq + (size_t)r * rb, cols);
        ops_ref.dequantize_row[dt](wq + (size_t)r * rb, wd + r * cols, cols);
    }
    for (int64_t t = 0; t < n; t++) {
        ops_ref.quantize_act[at](x + t * ldx, xq + (size_t)t * ldq, cols);
        ops_ref.dequantize_row[at](xq + (size_t)t * ldq, xd + t * cols, cols);
    }
    struct mat m = {dt, wq, rows, cols, rb};
    for (int64_t i = 0; i < n * ldy; i++)
        y[i] = yr[i] = -7.0f;
    int64_t r0 = rows > 2 ? 1 : 0;
    ops_ref.matmul_q[dt](&m, xq, ldq, n, yr, ldy, r0, rows);
    T->matmul_q[dt](&m, xq, ldq, n, y, ldy, r0, rows);
    for (int64_t t = 0; t < n; t++)
        for (int64_t r = 0; r < rows; r++) {
            float got = y[t * ldy + r], want = yr[t * ldy + r];
            if (r < r0) {
                if (got != -7.0f) fail("row %ld outside [r0, r1) written", (long)r);
                continue;
            }
            double mag = 0, exact = 0;
            for (int64_t c = 0; c < cols; c++) {
                mag += fabs((double)wd[r * cols + c] * (double)xd[t * cols + c]);
                exact += (double)wd[r * cols + c] * (double)xd[t * cols + c];
            }
            if (!(fabs((double)want - exact) <= TOL_MATMUL_Q * mag + 1e-30))
                fail("ref vs exact r=%ld t=%ld: %g vs %g", (long)r, (long)t, (double)want, exact);
            if (!(fabs((double)got - (double)want) <= TOL_MATMUL_Q * mag + 1e-30))
                fail("rows=%ld cols=%ld n=%ld r=%ld t=%ld: %g vs ref %g", (long)rows, (long)cols,
                     (long)n, (long)r, (long)t, (double)got, (double)want);
        }
    for (int64_t t = 0; t < n; t++) { /* a token's result does not depend on its batch */
        T->matmul_q[dt](&m, xq + (size_t)t * ldq, ldq, 1, y1, ldy, r0, rows);
        for (int64_t r = r0; r < rows; r++)
            if (quant_f32_bits(y1[r]) != quant_f32_bits(y[t * ldy + r]))
                fail("t=%ld r=%ld alone %g, in a batch of %ld %g", (long)t, (long)r, (double)y1[r],
                     (long)n, (double)y[t * ldy + r]);
    }
    free(wf), free(wd), free(wq), free(xq), free(x), free(xd), free(y), free(yr), free(y1);
}

static void test_matmul_q(const struct ops_table *T) {
    for (size_t k = 0; k < N_QTYPES; k++) {
        enum dtype dt = q_types[k];
        int64_t blk = dtype_traits[dt].block;
        const int64_t shapes[][3] = {
            {1, blk, 1},     {3, blk, 7},      {37, blk * 3, 1}, {13, blk * 3, 7},
            {5, blk * 2, 9}, {2, blk, 10},     {3, blk, 11},     {4, blk * 2, 12},
            {2, blk, 13},    {9, blk * 2, 33}, /* every group size, several groups */
        };
        check_begin("%s matmul_q %s", T->isa, dtype_name(dt));
        if (!T->matmul_q[dt])
            fail("no kernel");
        else
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
                check_matmul_q(T, dt, shapes[s][0], shapes[s][1], shapes[s][2]);
        check_end();
    }
}

/* Every weight byte 0xff (largest codes, scales, mins) or Q6_K scales of -128, against
 * activation codes of +-127: the largest intermediate sums, where an int16 overflow shows. */
static void test_matmul_q_extreme(const struct ops_table *T) {
    const int64_t rows = 3, cols = 512, n = 2;
    check_begin("%s matmul_q extreme codes (all types)", T->isa);
    for (size_t k = 0; k < N_QTYPES; k++) {
        enum dtype dt = q_types[k], at = ops_act_dtype(dt);
        size_t rb = dtype_row_bytes(dt, cols), ab = ops_act_row_bytes(dt, cols);
        size_t bb = dtype_traits[dt].block_bytes;
        int64_t nblk = cols / dtype_traits[dt].block;
        uint8_t *wq = xalloc((size_t)rows * rb), *xq = xalloc((size_t)n * ab);
        float *x = falloc(n * cols), *y = falloc(n * rows), *yr = falloc(n * rows);
        memset(wq, 0xff, (size_t)rows * rb);
        uint16_t d16 = f32_to_fp16(0.01f);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t b = 0; b < nblk; b++) {
                uint8_t *blk = wq + (size_t)r * rb + (size_t)b * bb;
                if (dt == DT_Q6_K) {
                    memcpy(blk + bb - 2, &d16, 2);
                    if (r == 1) memset(blk + bb - 18, 0x80, 16);
                } else {
                    memcpy(blk, &d16, 2);
                    if (dt == DT_Q4_K || dt == DT_Q5_K) memcpy(blk + 2, &d16, 2);
                    if (dt == DT_Q8_0 && r == 2) memset(blk + 2, 0x80, 32); /* codes -128 */
                }
            }
        for (int64_t i = 0; i < cols; i++) {
            x[i] = -1.0f;
            x[cols + i] = 1.0f;
        }
        for (int64_t t = 0; t < n; t++)
            ops_ref.quantize_act[at](x + t * cols, xq + (size_t)t * ab, cols);
        struct mat m = {dt, wq, rows, cols, rb};
        ops_ref.matmul_q[dt](&m, xq, ab, n, yr, rows, 0, rows);
        T->matmul_q[dt](&m, xq, ab, n, y, rows, 0, rows);
        for (int64_t j = 0; j < n * rows; j++)
            if (!(fabsf(y[j] - yr[j]) <= 1e-5f * fabsf(yr[j]) + 1e-30f))
                fail("%s out %ld: %g vs ref %g", dtype_name(dt), (long)j, (double)y[j],
                     (double)yr[j]);
        free(wq), free(xq), free(x), free(y), free(yr);
    }
    check_end();
}

/* ---- activation quantizers: bit-exact with ref ----------------------------------------- */

static void test_quantize_act(const struct ops_table *T) {
    const enum dtype ats[] = {DT_Q8_0, DT_Q8_K};
    for (size_t k = 0; k < 2; k++) {
        enum dtype at = ats[k];
        check_begin("%s quantize_act %s (bit-exact)", T->isa, dtype_name(at));
        const int64_t n = 1024;
        size_t rb = dtype_row_bytes(at, n);
        float *x = falloc(n);
        uint8_t *a = xalloc(rb), *b = xalloc(rb);
        for (int c = 0; c < 6; c++) {
            fill(x, n, c == 0 ? 1.0f : 37.0f);
            if (c == 1) /* ties: amax 127 gives d = 1 (id = 1), codes at k + 0.5 */
                for (int64_t i = 0; i < n; i++)
                    x[i] = i % 32 == 0 || i % 256 == 0 ? 127.0f : (float)(i % 9) - 4.5f;
            if (c == 2) memset(x, 0, (size_t)n * sizeof(float)); /* zero blocks */
            if (c == 3) x[5] = NAN, x[300] = NAN;                /* NaN is ignored / -127 */
            if (c == 4) x[40] = INFINITY, x[700] = -INFINITY;
            if (c == 5)
                for (int64_t i = 0; i < n; i++) /* tiny and huge magnitudes */
                    x[i] *= i < 512 ? 1e-30f : 1e30f;
            memset(a, 0x5a, rb);
            memset(b, 0x5a, rb);
            ops_ref.quantize_act[at](x, a, n);
            T->quantize_act[at](x, b, n);
            if (memcmp(a, b, rb)) {
                size_t i = 0;
                while (a[i] == b[i])
                    i++;
                fail("case %d: byte %zu differs (%02x vs ref %02x)", c, i, b[i], a[i]);
            }
            /* an odd stride: the kernel writes through bytes at any alignment */
            T->quantize_act[at](x, b + 1, n);
            if (memcmp(a, b + 1, rb)) fail("case %d: misaligned output differs", c);
        }
        free(x), free(a), free(b);
        check_end();
    }
}

/* ---- vector kernels -------------------------------------------------------------------- */

static void close_to(const float *a, const float *b, int64_t n, double tol, const char *what) {
    double mag = 0;
    for (int64_t i = 0; i < n; i++)
        mag = fmax(mag, fabs((double)b[i]));
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)a[i] - (double)b[i]) <= tol * (mag + 1e-6))) {
            fail("%s n=%ld [%ld]: %g vs ref %g", what, (long)n, (long)i, (double)a[i],
                 (double)b[i]);
            return;
        }
}

static void test_small_kernels(const struct ops_table *T) {
    const int64_t lens[] = {1, 7, 17, 128, 256, 1000};
    check_begin("%s rmsnorm gated_rmsnorm l2norm_scale silu_mul add softmax rope", T->isa);
    for (size_t li = 0; li < 6; li++) {
        int64_t n = lens[li];
        float *x = falloc(n), *w = falloc(n), *z = falloc(n), *a = falloc(n), *b = falloc(n);
        fill(x, n, 2.0f);
        fill(w, n, 1.0f);
        fill(z, n, 3.0f);
        if (n > 7) z[3] = 100.0f, z[5] = -100.0f; /* silu far out on both sides */
        T->rmsnorm(a, x, w, n, 1e-6f);
        ops_ref.rmsnorm(b, x, w, n, 1e-6f);
        close_to(a, b, n, TOL_KERNEL, "rmsnorm");
        memcpy(a, x, (size_t)n * 4);
        T->rmsnorm(a, a, NULL, n, 1e-6f);
        ops_ref.rmsnorm(b, x, NULL, n, 1e-6f);
        close_to(a, b, n, TOL_KERNEL, "rmsnorm alias");
        T->gated_rmsnorm(a, x, z, w, n, 1e-6f);
        ops_ref.gated_rmsnorm(b, x, z, w, n, 1e-6f);
        close_to(a, b, n, TOL_KERNEL, "gated_rmsnorm");
        memcpy(a, x, (size_t)n * 4);
        T->gated_rmsnorm(a, a, z, NULL, n, 1e-6f);
        ops_ref.gated_rmsnorm(b, x, z, NULL, n, 1e-6f);
        close_to(a, b, n, TOL_KERNEL, "gated_rmsnorm alias");
        memcpy(a, x, (size_t)n * 4);
        memcpy(b, x, (size_t)n * 4);
        T->l2norm_scale(a, n, 1e-6f, 0.5f);
        ops_ref.l2norm_scale(b, n, 1e-6f, 0.5f);
        close_to(a, b, n, TOL_KERNEL, "l2norm_scale");
        T->silu_mul(a, z, x, n);
        ops_ref.silu_mul(b, z, x, n);
        close_to(a, b, n, TOL_KERNEL, "silu_mul");
        memcpy(a, z, (size_t)n * 4);
        memcpy(b, z, (size_t)n * 4);
        T->add(a, x, n);
        ops_ref.add(b, x, n);
        close_to(a, b, n, TOL_KERNEL, "add");
        for (int sc = 0; sc < 2; sc++) { /* softmax of O(1) and of widely spread values */
            for (int64_t i = 0; i < n; i++)
                a[i] = b[i] = x[i] * (sc ? 60.0f : 1.0f);
            T->softmax(a, n);
            ops_ref.softmax(b, n);
            close_to(a, b, n, TOL_KERNEL, "softmax");
        }
        if (n >= 2 && n % 2 == 0) {
            memcpy(a, x, (size_t)n * 4);
            memcpy(b, x, (size_t)n * 4);
            T->rope_neox(a, n, 12345, 1e7f);
            ops_ref.rope_neox(b, n, 12345, 1e7f);
            close_to(a, b, n, TOL_KERNEL, "rope");
        }
        free(x), free(w), free(z), free(a), free(b);
    }
    check_end();
}

static void test_attention(const struct ops_table *T) {
    const int64_t ctxs[] = {1, 2, 33, 300}, dims[] = {19, 64, 256};
    check_begin("%s attention", T->isa);
    for (size_t ci = 0; ci < 4; ci++)
        for (size_t di = 0; di < 3; di++) {
            int64_t nc = ctxs[ci], hd = dims[di], stride = hd * 3;
            float *q = falloc(hd), *kc = falloc(nc * stride), *vc = falloc(nc * stride);
            float *a = falloc(hd), *b = falloc(hd), *s = falloc(nc);
            fill(q, hd, 1.0f);
            fill(kc, nc * stride, 1.0f);
            fill(vc, nc * stride, 1.0f);
            float scale = 1.0f / sqrtf((float)hd);
            T->attention(a, q, kc, vc, stride, nc, hd, scale, s);
            ops_ref.attention(b, q, kc, vc, stride, nc, hd, scale, s);
            close_to(a, b, hd, TOL_KERNEL, "attention");
            free(q), free(kc), free(vc), free(a), free(b), free(s);
        }
    check_end();
}

static void test_conv1d(const struct ops_table *T) {
    const int64_t C = 37, K = 4, N = 6;
    check_begin("%s conv1d_step conv1d_seq", T->isa);
    float *w = falloc(C * K), *x = falloc(N * C), *sa = falloc(C * (K - 1)),
          *sb = falloc(C * (K - 1)), *oa = falloc(N * C), *ob = falloc(N * C);
    fill(w, C * K, 1.0f);
    fill(x, N * C, 1.0f);
    for (int64_t t = 0; t < N; t++) {
        T->conv1d_step(oa + t * C, sa, x + t * C, w, K, 0, 20);
        T->conv1d_step(oa + t * C, sa, x + t * C, w, K, 20, C);
    }
    ops_ref.conv1d_seq(ob, C, sb, x, C, N, w, K, 0, C);
    close_to(oa, ob, N * C, TOL_KERNEL, "conv1d step vs ref seq");
    close_to(sa, sb, C * (K - 1), 0, "conv1d state");
    memset(sa, 0, sizeof(float) * (size_t)(C * (K - 1)));
    T->conv1d_seq(oa, C, sa, x, C, N, w, K, 0, C);
    close_to(oa, ob, N * C, TOL_KERNEL, "conv1d seq");
    free(w), free(x), free(sa), free(sb), free(oa), free(ob);
    check_end();
}

struct gdn {
    float *q, *k, *v, *g, *beta;
};

static struct gdn gdn_make(int64_t n, int64_t dk, int64_t dv) {
    struct gdn in = {falloc(n * dk), falloc(n * dk), falloc(n * dv), falloc(n), falloc(n)};
    fill(in.q, n * dk, 1.0f);
    fill(in.k, n * dk, 1.0f);
    fill(in.v, n * dv, 1.0f);
    for (int64_t t = 0; t < n; t++) {
        ops_ref.l2norm_scale(in.q + t * dk, dk, 1e-6f, 1.0f / sqrtf((float)dk));
        ops_ref.l2norm_scale(in.k + t * dk, dk, 1e-6f, 1.0f);
        in.g[t] = -0.3f * (frand() + 1.0f);
        in.beta[t] = 0.5f * (frand() + 1.0f);
    }
    return in;
}

static void gdn_free(struct gdn *in) {
    free(in->q), free(in->k), free(in->v), free(in->g), free(in->beta);
}

static void test_delta_rule(const struct ops_table *T) {
    const int64_t shapes[][2] = {{128, 128}, {17, 5}, {64, 96}};
    check_begin("%s delta_rule_step", T->isa);
    for (int s = 0; s < 3; s++) {
        int64_t dk = shapes[s][0], dv = shapes[s][1], n = 9;
        struct gdn in = gdn_make(n, dk, dv);
        float *Sa = falloc(dk * dv), *Sb = falloc(dk * dv), *oa = falloc(dv), *ob = falloc(dv);
        for (int64_t t = 0; t < n; t++) {
            T->delta_rule_step(Sa, in.q + t * dk, in.k + t * dk, in.v + t * dv, expf(in.g[t]),
                               in.beta[t], oa, dk, dv);
            ops_ref.delta_rule_step(Sb, in.q + t * dk, in.k + t * dk, in.v + t * dv, expf(in.g[t]),
                                    in.beta[t], ob, dk, dv);
            close_to(oa, ob, dv, TOL_KERNEL, "o");
        }
        close_to(Sa, Sb, dk * dv, TOL_KERNEL, "S");
        gdn_free(&in);
        free(Sa), free(Sb), free(oa), free(ob);
    }
    check_end();

    /* the chunked rule equals token steps of ref (tests/test_ops.c TOL_CHUNK) */
    check_begin("%s delta_rule_chunk", T->isa);
    const int64_t ns[] = {1, 5, 70}, dk = 128, dv = 128;
    for (size_t ni = 0; ni < 3; ni++) {
        int64_t n = ns[ni];
        struct gdn in = gdn_make(n, dk, dv);
        float *S0 = falloc(dk * dv), *Sa = falloc(dk * dv), *Sb = falloc(dk * dv);
        float *oa = falloc(n * dv), *ob = falloc(n * dv);
        float *scratch = falloc((int64_t)delta_rule_chunk_scratch(dk, dv));
        fill(S0, dk * dv, 0.3f);
        memcpy(Sa, S0, sizeof(float) * (size_t)(dk * dv));
        memcpy(Sb, S0, sizeof(float) * (size_t)(dk * dv));
        for (int64_t t = 0; t < n; t++)
            ops_ref.delta_rule_step(Sb, in.q + t * dk, in.k + t * dk, in.v + t * dv, expf(in.g[t]),
                                    in.beta[t], ob + t * dv, dk, dv);
        T->delta_rule_chunk(Sa, in.q, dk, in.k, dk, in.v, dv, in.g, in.beta, oa, dv, n, dk, dv,
                            scratch);
        for (int64_t i = 0; i < n * dv; i++)
            if (!(fabsf(oa[i] - ob[i]) <= 2e-4f)) {
                fail("n=%ld o[%ld]: %g vs %g", (long)n, (long)i, (double)oa[i], (double)ob[i]);
                break;
            }
        for (int64_t i = 0; i < dk * dv; i++)
            if (!(fabsf(Sa[i] - Sb[i]) <= 2e-4f)) {
                fail("n=%ld S[%ld]: %g vs %g", (long)n, (long)i, (double)Sa[i], (double)Sb[i]);
                break;
            }
        gdn_free(&in);
        free(S0), free(Sa), free(Sb), free(oa), free(ob), free(scratch);
    }
    check_end();
}

/* pool_matmul_multi with the chosen table: mixed activation formats, 1-3 threads, equal bit
 * for bit to each matrix's matmul_q on its quantized input. */
static void test_matmul_multi(void) {
    bt_err e = {0};
    check_begin("%s pool_matmul_multi (1-3 threads)", ops->isa);
    const enum dtype dts[3] = {DT_Q4_K, DT_Q8_0, DT_F16};
    const int64_t rows[3] = {40, 17, 9}, cols = 512, n = 5;
    struct mat m[3];
    struct pool_mm mm[3];
    uint8_t *wq[3];
    float *y[3], *want[3], *wf = falloc(40 * cols), *x = falloc(n * cols);
    fill(wf, 40 * cols, 1.0f);
    fill(x, n * cols, 1.0f);
    for (int k = 0; k < 3; k++) {
        size_t rb = dtype_row_bytes(dts[k], cols);
        wq[k] = xalloc((size_t)rows[k] * rb);
        for (int64_t r = 0; r < rows[k]; r++)
            ops_ref.quantize_row[dts[k]](wf + r * cols, wq[k] + (size_t)r * rb, cols);
        m[k] = (struct mat){dts[k], wq[k], rows[k], cols, rb};
        y[k] = falloc(n * rows[k]);
        want[k] = falloc(n * rows[k]);
        mm[k] = (struct pool_mm){&m[k], y[k], rows[k]};
        enum dtype at = ops_act_dtype(dts[k]);
        if (at == DT_F32) {
            ops->matmul[dts[k]](&m[k], x, cols, n, want[k], rows[k], 0, rows[k]);
            continue;
        }
        size_t ab = ops_act_row_bytes(dts[k], cols);
        uint8_t *xq = xalloc((size_t)n * ab);
        for (int64_t t = 0; t < n; t++)
            ops->quantize_act[at](x + t * cols, xq + (size_t)t * ab, cols);
        ops->matmul_q[dts[k]](&m[k], xq, ab, n, want[k], rows[k], 0, rows[k]);
        free(xq);
    }
    void *qbuf = xalloc(pool_matmul_qbuf_bytes(n, cols));
    for (int nth = 1; nth <= 3; nth++) {
        pool_t *p = NULL;
        if (pool_open(&p, nth, &e)) {
            fail("pool_open: %s", e.msg);
            break;
        }
        for (int k = 0; k < 3; k++)
            memset(y[k], 0xff, (size_t)(n * rows[k]) * sizeof(float));
        pool_matmul_multi(p, mm, 3, x, cols, n, qbuf);
        for (int k = 0; k < 3; k++)
            if (memcmp(y[k], want[k], (size_t)(n * rows[k]) * sizeof(float)))
                fail("matrix %d (%s), %d threads", k, dtype_name(dts[k]), nth);
        pool_close(p);
    }
    for (int k = 0; k < 3; k++)
        free(wq[k]), free(y[k]), free(want[k]);
    free(qbuf), free(wf), free(x);
    check_end();
}

int main(int argc, char **argv) {
    const char *expect = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--expect") && i + 1 < argc)
            expect = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--expect ISA]\n", argv[0]);
            return 2;
        }
    }
    const char *const *isas = ops_available_isas();
    char list[128] = "";
    for (int i = 0; isas[i]; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? " " : "", isas[i]);
    bt_err e = {0};
    check_begin("ops_init picks %s (available: %s)", expect ? expect : "the best", list);
    if (ops_init(NULL, &e))
        fail("ops_init: %s", e.msg);
    else if (strcmp(ops->isa, isas[0]))
        fail("chose %s, best is %s", ops->isa, isas[0]);
    if (expect && strcmp(isas[0], expect)) fail("best is %s, expected %s", isas[0], expect);
    if (expect && !strcmp(expect, "neon") && ops_table_for("neon-dotprod"))
        fail("neon-dotprod offered on a CPU without dot products");
    if (!ops_table_for("neon")) fail("no neon table");
    check_end();
    for (int i = 0; isas[i]; i++) {
        if (!strcmp(isas[i], "ref")) continue;
        const struct ops_table *T = ops_table_for(isas[i]);
        test_quantize_act(T);
        test_matmul_q(T);
        test_matmul_q_extreme(T);
        test_matmul(T);
        test_small_kernels(T);
        test_attention(T);
        test_conv1d(T);
        test_delta_rule(T);
    }
    test_matmul_multi();
    printf("cross: %s: %d checks, %d failed\n", isas[0], n_checks, n_failed);
    return n_failed ? 1 : 0;
}
