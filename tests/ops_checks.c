/* tests/ops_checks.c: see ops_checks.h. */
#include "tests/ops_checks.h"

#include "ops/quant.h"
#include "ops/repack.h"
#include "ops/threadpool.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* SIMD matmul vs ref: only summation order (and fused multiply-adds) differ, so the error is
 * bounded relative to sum_c |w_c x_c|. */
#define TOL_MATMUL 2e-6
/* matmul_q vs ref: the integer sums are exact; only the per-block float scaling and its
 * summation order differ. Relative to sum |w x| of the dequantized operands. */
#define TOL_MATMUL_Q 1e-5
/* Quantized-activation result vs the f32-activation result: relative L2 over all outputs, on
 * uniform random data (measured 0.3-0.6% for Q8_0 and Q8_K activations). */
#define TOL_ACT_RL2 0.015
/* Other kernels vs ref, relative to the magnitude of the values involved. */
#define TOL_KERNEL 1e-5
/* Chunked delta rule vs steps: different algorithm, same math; outputs are O(1). */
#define TOL_CHUNK 2e-4f

const enum dtype ops_check_types[] = {DT_F32,  DT_F16,  DT_BF16, DT_Q4_0, DT_Q4_1, DT_Q5_0,
                                      DT_Q5_1, DT_Q8_0, DT_Q4_K, DT_Q5_K, DT_Q6_K};
const size_t ops_check_n_types = sizeof ops_check_types / sizeof ops_check_types[0];
const enum dtype ops_check_q_types[] = {DT_Q8_0, DT_Q4_0, DT_Q5_0, DT_Q4_K, DT_Q5_K, DT_Q6_K};
const size_t ops_check_n_q_types = sizeof ops_check_q_types / sizeof ops_check_q_types[0];

void ops_check_begin(struct ops_check *c, const char *fmt, ...) {
    memset(c, 0, sizeof *c);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->name, sizeof c->name, fmt, ap);
    va_end(ap);
}

void ops_check_fail(struct ops_check *c, const char *fmt, ...) {
    if (c->n_failed++ >= 3) return;
    size_t at = strlen(c->msg);
    if (at && at + 2 < sizeof c->msg) {
        memcpy(c->msg + at, "; ", 3);
        at += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg + at, sizeof c->msg - at, fmt, ap);
    va_end(ap);
}

static uint32_t rng = 12345;
uint32_t ops_check_rand(void) {
    rng = rng * 1664525u + 1013904223u;
    return rng;
}
float ops_check_frand(void) {
    return (float)(ops_check_rand() >> 8) / 8388608.0f - 1.0f;
}
void ops_check_fill(float *x, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++)
        x[i] = ops_check_frand() * scale;
}

static void *xalloc(size_t n) {
    void *p = calloc(n + 64, 1);
    if (!p) {
        fprintf(stderr, "ops_checks: out of memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}
float *ops_check_falloc(int64_t n) {
    return xalloc(((size_t)n + 16) * sizeof(float));
}
#define falloc ops_check_falloc
#define fill   ops_check_fill

/* ---- matmul (float activations) ---------------------------------------------------------- */

/* One output element (row r, token t) of a matmul check, at = {rows, cols, n, r, t}. A row
 * below r0 must still hold the -7 sentinel (outside [r0, r1): untouched); otherwise ref's value
 * `want` must be the exact dot product of w and x (in doubles) and the kernel's `got` ref's,
 * both within tol of the sum of |w*x|. Returns 1 when the element is in range (checked). */
static int check_element(struct ops_check *c, int64_t r0, const float *w, const float *x,
                         int64_t cols, float got, float want, double tol, const long at[5]) {
    if (at[3] < r0) {
        if (got != -7.0f) ops_check_fail(c, "row %ld outside [r0, r1) written", at[3]);
        return 0;
    }
    double mag = 0, exact = 0;
    for (int64_t k = 0; k < cols; k++) {
        mag += fabs((double)w[k] * (double)x[k]);
        exact += (double)w[k] * (double)x[k];
    }
    if (!(fabs((double)want - exact) <= tol * mag + 1e-30))
        ops_check_fail(c, "ref r=%ld t=%ld: %g vs exact %g", at[3], at[4], (double)want, exact);
    if (!(fabs((double)got - (double)want) <= tol * mag + 1e-30))
        ops_check_fail(c, "rows=%ld cols=%ld n=%ld r=%ld t=%ld: %g vs ref %g", at[0], at[1], at[2],
                       at[3], at[4], (double)got, (double)want);
    return 1;
}

static void matmul_shape(const struct ops_table *T, enum dtype dt, int64_t rows, int64_t cols,
                         int64_t n, struct ops_check *c) {
    size_t rb = dtype_row_bytes(dt, cols);
    if (!rb) {
        ops_check_fail(c, "%s cols=%ld: no row size", dtype_name(dt), (long)cols);
        return;
    }
    float *wf = falloc(rows * cols), *wd = falloc(rows * cols);
    uint8_t *wq = xalloc((size_t)rows * rb);
    int64_t ldx = cols + 3, ldy = rows + 5; /* strides wider than the data */
    float *x = falloc(n * ldx), *y = falloc(n * ldy), *yr = falloc(n * ldy);
    fill(wf, rows * cols, 1.0f);
    fill(x, n * ldx, 1.0f);
    for (int64_t r = 0; r < rows; r++) {
        ops_ref.quantize_row[dt](wf + r * cols, wq + (size_t)r * rb, cols);
        ops_ref.dequantize_row[dt](wq + (size_t)r * rb, wd + r * cols, cols);
    }
    struct mat m = {dt, wq, rows, cols, rb};
    for (int64_t i = 0; i < n * ldy; i++)
        y[i] = yr[i] = -7.0f; /* sentinel: rows outside [r0, r1) must stay untouched */
    int64_t r0 = rows > 2 ? 1 : 0;
    ops_ref.matmul[dt](&m, x, ldx, n, yr, ldy, r0, rows);
    T->matmul[dt](&m, x, ldx, n, y, ldy, r0, rows);
    for (int64_t t = 0; t < n; t++)
        for (int64_t r = 0; r < rows; r++) /* ref against the dequantized W, in doubles */
            check_element(c, r0, wd + r * cols, x + t * ldx, cols, y[t * ldy + r], yr[t * ldy + r],
                          TOL_MATMUL, (long[]){rows, cols, n, r, t});
    free(wf), free(wd), free(wq), free(x), free(y), free(yr);
}

void ops_check_matmul(const struct ops_table *T, enum dtype dt, struct ops_check *c) {
    ops_check_begin(c, "%s matmul %s", T->isa, dtype_name(dt));
    if (!T->matmul[dt]) {
        ops_check_fail(c, "no kernel");
        return;
    }
    int64_t blk = dtype_traits[dt].block;
    int64_t big = blk == 1 ? 77 : blk * 3; /* float types: a tail of 77 % 32 values */
    const int64_t shapes[][3] = {
        {1, blk == 1 ? 32 : blk, 1},      /* one row, one block */
        {3, blk == 1 ? 32 : blk, 7},      /* rows < threads, 7 tokens */
        {37, big, 1},                     /* many blocks */
        {13, big, 7},                     /* */
        {5, blk == 1 ? 512 : blk * 2, 9}, /* more tokens than a SIMD group */
        {2, blk == 1 ? 5 : blk, 3},       /* float row shorter than a vector */
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        matmul_shape(T, dt, shapes[s][0], shapes[s][1], shapes[s][2], c);
}

/* ---- matmul_q (quantized activations) ---------------------------------------------------- */

static void matmul_q_shape(const struct ops_table *T, enum dtype dt, int64_t rows, int64_t cols,
                           int64_t n, struct ops_check *c) {
    enum dtype at = ops_act_dtype(dt);
    size_t rb = dtype_row_bytes(dt, cols), ab = ops_act_row_bytes(dt, cols);
    size_t ldq = ab + 6; /* a stride wider than the row */
    if (!rb || !ab || at == DT_F32) {
        ops_check_fail(c, "%s cols=%ld: no quantized path", dtype_name(dt), (long)cols);
        return;
    }
    float *wf = falloc(rows * cols), *wd = falloc(rows * cols);
    uint8_t *wq = xalloc((size_t)rows * rb), *xq = xalloc((size_t)n * ldq);
    int64_t ldx = cols + 3, ldy = rows + 5;
    float *x = falloc(n * ldx), *xd = falloc(n * cols), *y = falloc(n * ldy), *yr = falloc(n * ldy);
    float *yf = falloc(n * ldy), *y1 = falloc(ldy);
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
    int64_t r0 = rows > 2 ? 1 : 0, r1 = rows;
    ops_ref.matmul_q[dt](&m, xq, ldq, n, yr, ldy, r0, r1);
    T->matmul_q[dt](&m, xq, ldq, n, y, ldy, r0, r1);
    ops_ref.matmul[dt](&m, x, ldx, n, yf, ldy, r0, r1);
    double e2 = 0, f2 = 0;
    for (int64_t t = 0; t < n; t++)
        for (int64_t r = 0; r < rows; r++) {
            float got = y[t * ldy + r];
            /* ref against the dequantized codes of both operands */
            if (!check_element(c, r0, wd + r * cols, xd + t * cols, cols, got, yr[t * ldy + r],
                               TOL_MATMUL_Q, (long[]){rows, cols, n, r, t}))
                continue;
            double f = yf[t * ldy + r];
            e2 += ((double)got - f) * ((double)got - f);
            f2 += f * f;
        }
    if ((r1 - r0) * n >= 32 && !(sqrt(e2) <= TOL_ACT_RL2 * sqrt(f2))) /* statistical: enough */
        ops_check_fail(c, "rows=%ld cols=%ld n=%ld: quantized vs f32 activations rel L2 %g",
                       (long)rows, (long)cols, (long)n, sqrt(e2 / f2));
    for (int64_t t = 0; t < n; t++) { /* a token's result does not depend on its batch */
        T->matmul_q[dt](&m, xq + (size_t)t * ldq, ldq, 1, y1, ldy, r0, r1);
        for (int64_t r = r0; r < r1; r++)
            if (quant_f32_bits(y1[r]) != quant_f32_bits(y[t * ldy + r]))
                ops_check_fail(c, "t=%ld r=%ld alone %g, in a batch of %ld %g", (long)t, (long)r,
                               (double)y1[r], (long)n, (double)y[t * ldy + r]);
    }
    free(wf), free(wd), free(wq), free(xq), free(x), free(xd);
    free(y), free(yr), free(yf), free(y1);
}

void ops_check_matmul_q(const struct ops_table *T, enum dtype dt, struct ops_check *c) {
    ops_check_begin(c, "%s matmul_q %s", T->isa, dtype_name(dt));
    if (!T->matmul_q[dt]) {
        ops_check_fail(c, "no kernel");
        return;
    }
    int64_t blk = dtype_traits[dt].block;
    const int64_t shapes[][3] = {
        {1, blk, 1},       {3, blk, 7},      {37, blk * 3, 1},
        {13, blk * 3, 7},  {5, blk * 2, 9},  {9, blk * 2, 70}, /* more tokens than a tile */
        {2, blk, 10},      {3, blk, 11},     {4, blk * 2, 12},
        {2, blk, 13},      {9, blk * 2, 33}, /* every group size, several groups */
        {7, blk * 130, 9},                   /* Q8_0 family: more blocks than a chunk (130 > 128) */
        {71, blk * 37, 3}, /* K-quant decode: rows of more blocks than a span (37 > 16), 70
                              rows from r0 = 1: a batch of 16 groups, one of 1, 2 rows left */
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        matmul_q_shape(T, dt, shapes[s][0], shapes[s][1], shapes[s][2], c);
}

/* Every weight byte 0xff (largest nibbles, 6-bit scales and mins of 63, Q6_K codes 63), Q6_K
 * scales of -128 (row 1) or Q8_0 codes of -128 (row 2), against activations at the code limits
 * (+-127, all one sign so nothing cancels): the largest intermediate sums of the integer
 * kernels, where a saturating maddubs or an int16 overflow would show. */
void ops_check_matmul_q_extreme(const struct ops_table *T, struct ops_check *c) {
    const int64_t rows = 3, cols = 512, n = 2;
    ops_check_begin(c, "%s matmul_q extreme codes (all types)", T->isa);
    for (size_t k = 0; k < ops_check_n_q_types; k++) {
        enum dtype dt = ops_check_q_types[k], at = ops_act_dtype(dt);
        if (!T->matmul_q[dt]) {
            ops_check_fail(c, "%s: no kernel", dtype_name(dt));
            continue;
        }
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
                if (dt == DT_Q6_K) { /* d last */
                    memcpy(blk + bb - 2, &d16, 2);
                    if (r == 1) memset(blk + bb - 18, 0x80, 16);
                } else { /* d first; dmin next for Q4_K/Q5_K */
                    memcpy(blk, &d16, 2);
                    if (dt == DT_Q4_K || dt == DT_Q5_K) memcpy(blk + 2, &d16, 2);
                    if (dt == DT_Q8_0 && r == 2) memset(blk + 2, 0x80, 32);
                }
            }
        for (int64_t i = 0; i < cols; i++) {
            x[i] = -1.0f;       /* codes -127 */
            x[cols + i] = 1.0f; /* codes +127 */
        }
        for (int64_t t = 0; t < n; t++)
            ops_ref.quantize_act[at](x + t * cols, xq + (size_t)t * ab, cols);
        struct mat m = {dt, wq, rows, cols, rb};
        ops_ref.matmul_q[dt](&m, xq, ab, n, yr, rows, 0, rows);
        T->matmul_q[dt](&m, xq, ab, n, y, rows, 0, rows);
        for (int64_t j = 0; j < n * rows; j++)
            if (!(fabsf(y[j] - yr[j]) <= 1e-5f * fabsf(yr[j]) + 1e-30f))
                ops_check_fail(c, "%s out %ld: %g vs ref %g", dtype_name(dt), (long)j, (double)y[j],
                               (double)yr[j]);
        free(wq), free(xq), free(x), free(y), free(yr);
    }
}

/* ---- activation quantizers: bit-exact with ref ------------------------------------------- */

void ops_check_quantize_act(const struct ops_table *T, enum dtype at, struct ops_check *c) {
    ops_check_begin(c, "%s quantize_act %s (bit-exact)", T->isa, dtype_name(at));
    if (!T->quantize_act[at]) {
        ops_check_fail(c, "no kernel");
        return;
    }
    const int64_t n = 1024;
    size_t rb = dtype_row_bytes(at, n);
    float *x = falloc(n);
    uint8_t *a = xalloc(rb), *b = xalloc(rb + 1);
    for (int k = 0; k < 6; k++) {
        fill(x, n, k == 0 ? 1.0f : 37.0f);
        if (k == 1) /* ties: amax 127 gives d = 1 (id = 1), codes at k + 0.5 */
            for (int64_t i = 0; i < n; i++)
                x[i] = i % 32 == 0 || i % 256 == 0 ? 127.0f : (float)(i % 9) - 4.5f;
        if (k == 2) memset(x, 0, (size_t)n * sizeof(float)); /* zero blocks */
        if (k == 3) /* NaN is ignored / -127; last in its block too, after every other value */
            x[5] = NAN, x[300] = NAN, x[255] = NAN;
        if (k == 4) x[40] = INFINITY, x[700] = -INFINITY;
        if (k == 5)
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
            ops_check_fail(c, "case %d: byte %zu differs (%02x vs ref %02x)", k, i, b[i], a[i]);
        }
        /* An odd output address: ops.h promises no alignment, so every kernel, ref's too,
         * stores through bytes */
        T->quantize_act[at](x, b + 1, n);
        if (memcmp(a, b + 1, rb)) ops_check_fail(c, "case %d: misaligned output differs", k);
    }
    free(x), free(a), free(b);
}

/* ---- vector kernels ---------------------------------------------------------------------- */

/* |a - b| <= tol * (floor + max |b|) elementwise: floor is the size of the terms the values
 * were summed from, where that can exceed the result (cancellation); 0 where it cannot. */
static void close_to_floor(struct ops_check *c, const float *a, const float *b, int64_t n,
                           double tol, double floor, const char *what) {
    double mag = floor;
    for (int64_t i = 0; i < n; i++)
        mag = fmax(mag, fabs((double)b[i]));
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)a[i] - (double)b[i]) <= tol * (mag + 1e-6))) {
            ops_check_fail(c, "%s n=%ld [%ld]: %g vs %g", what, (long)n, (long)i, (double)a[i],
                           (double)b[i]);
            return;
        }
}

static void close_to(struct ops_check *c, const float *a, const float *b, int64_t n, double tol,
                     const char *what) {
    close_to_floor(c, a, b, n, tol, 0, what);
}

/* max |x| over n floats */
static double max_abs(const float *x, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)x[i]));
    return m;
}

void ops_check_small_kernels(const struct ops_table *T, struct ops_check *c) {
    const int64_t lens[] = {1, 7, 17, 128, 256, 1000};
    ops_check_begin(c, "%s rmsnorm gated_rmsnorm l2norm_scale silu_mul add softmax rope", T->isa);
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        int64_t n = lens[li];
        size_t nb = (size_t)n * sizeof(float);
        float *x = falloc(n), *w = falloc(n), *z = falloc(n), *a = falloc(n), *b = falloc(n);
        fill(x, n, 2.0f);
        fill(w, n, 1.0f);
        fill(z, n, 3.0f);
        if (n > 7) z[3] = 100.0f, z[5] = -100.0f; /* silu far out on both sides */
        T->rmsnorm(a, x, w, n, 1e-6f);
        ops_ref.rmsnorm(b, x, w, n, 1e-6f);
        close_to(c, a, b, n, TOL_KERNEL, "rmsnorm");
        memcpy(a, x, nb);
        T->rmsnorm(a, a, NULL, n, 1e-6f); /* aliasing, no weight */
        ops_ref.rmsnorm(b, x, NULL, n, 1e-6f);
        close_to(c, a, b, n, TOL_KERNEL, "rmsnorm alias");
        T->gated_rmsnorm(a, x, z, w, n, 1e-6f);
        ops_ref.gated_rmsnorm(b, x, z, w, n, 1e-6f);
        close_to(c, a, b, n, TOL_KERNEL, "gated_rmsnorm");
        memcpy(a, x, nb);
        T->gated_rmsnorm(a, a, z, NULL, n, 1e-6f);
        ops_ref.gated_rmsnorm(b, x, z, NULL, n, 1e-6f);
        close_to(c, a, b, n, TOL_KERNEL, "gated_rmsnorm alias");
        memcpy(a, x, nb);
        memcpy(b, x, nb);
        T->l2norm_scale(a, n, 1e-6f, 0.5f);
        ops_ref.l2norm_scale(b, n, 1e-6f, 0.5f);
        close_to(c, a, b, n, TOL_KERNEL, "l2norm_scale");
        T->silu_mul(a, z, x, n); /* gate with far-out values */
        ops_ref.silu_mul(b, z, x, n);
        close_to(c, a, b, n, TOL_KERNEL, "silu_mul");
        T->silu_mul(a, x, z, n);
        ops_ref.silu_mul(b, x, z, n);
        close_to(c, a, b, n, TOL_KERNEL, "silu_mul (x gate)");
        memcpy(a, z, nb);
        memcpy(b, z, nb);
        T->add(a, x, n);
        ops_ref.add(b, x, n);
        close_to(c, a, b, n, TOL_KERNEL, "add");
        for (int sc = 0; sc < 2; sc++) { /* softmax of O(1) and of widely spread values */
            for (int64_t i = 0; i < n; i++)
                a[i] = b[i] = x[i] * (sc ? 60.0f : 1.0f);
            T->softmax(a, n);
            ops_ref.softmax(b, n);
            close_to(c, a, b, n, TOL_KERNEL, "softmax");
        }
        if (n >= 2 && n % 2 == 0) {
            memcpy(a, x, nb);
            memcpy(b, x, nb);
            T->rope_neox(a, n, 12345, 1e7f);
            ops_ref.rope_neox(b, n, 12345, 1e7f);
            close_to(c, a, b, n, TOL_KERNEL, "rope");
        }
        free(x), free(w), free(z), free(a), free(b);
    }
    /* silu where e^-x leaves float range: each value against ref on its own scale (the SIMD
     * exp clamps its argument; below about -87 both give 0 to within 1e-30) */
    const float far[] = {-1e4f, -200.0f, -104.0f, -89.0f, -88.0f, -87.0f, -30.0f, -1e-3f, 0.0f,
                         1e-3f, 30.0f,   87.0f,   88.0f,  89.0f,  200.0f, 1e4f,   3e38f};
    const int64_t nf = (int64_t)(sizeof far / sizeof far[0]);
    float one[sizeof far / sizeof far[0]], a[sizeof far / sizeof far[0]], b[sizeof a / sizeof a[0]];
    for (int64_t i = 0; i < nf; i++)
        one[i] = 1.0f;
    T->silu_mul(a, far, one, nf);
    ops_ref.silu_mul(b, far, one, nf);
    for (int64_t i = 0; i < nf; i++)
        if (!(fabs((double)a[i] - (double)b[i]) <= TOL_KERNEL * fabs((double)b[i]) + 1e-30))
            ops_check_fail(c, "silu(%g) = %g, ref %g", (double)far[i], (double)a[i], (double)b[i]);
}

void ops_check_attention(const struct ops_table *T, struct ops_check *c) {
    const int64_t ctxs[] = {1, 2, 33, 300}, dims[] = {19, 64, 256};
    ops_check_begin(c, "%s attention", T->isa);
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
            close_to(c, a, b, hd, TOL_KERNEL, "attention");
            if (nc == 1) /* one position: the output is its value row */
                close_to(c, b, vc, hd, 1e-6, "ref attention n_ctx=1");
            free(q), free(kc), free(vc), free(a), free(b), free(s);
        }
}

void ops_check_conv1d(const struct ops_table *T, struct ops_check *c) {
    const int64_t C = 37, K = 4, N = 6;
    size_t sb_bytes = sizeof(float) * (size_t)(C * (K - 1));
    ops_check_begin(c, "%s conv1d_step conv1d_seq", T->isa);
    float *w = falloc(C * K), *x = falloc(N * C), *sa = falloc(C * (K - 1)),
          *sb = falloc(C * (K - 1)), *oa = falloc(N * C), *ob = falloc(N * C);
    fill(w, C * K, 1.0f);
    fill(x, N * C, 1.0f);
    /* ref by hand on the first token from a zero state: silu(w[3] * x) */
    ops_ref.conv1d_step(ob, sb, x, w, K, 0, C);
    for (int64_t ch = 0; ch < C; ch++) {
        float v = w[ch * K + 3] * x[ch];
        if (!(fabsf(ob[ch] - v / (1.0f + expf(-v))) <= 1e-6f) || sb[ch * 3 + 2] != x[ch])
            ops_check_fail(c, "ref conv1d_step by hand, channel %ld", (long)ch);
    }
    memset(sb, 0, sb_bytes);
    for (int64_t t = 0; t < N; t++) { /* split channel range */
        T->conv1d_step(oa + t * C, sa, x + t * C, w, K, 0, 20);
        T->conv1d_step(oa + t * C, sa, x + t * C, w, K, 20, C);
    }
    ops_ref.conv1d_seq(ob, C, sb, x, C, N, w, K, 0, C);
    close_to(c, oa, ob, N * C, TOL_KERNEL, "conv1d step vs ref seq");
    close_to(c, sa, sb, C * (K - 1), 0, "conv1d state");
    /* after N >= K-1 tokens the state holds the last K-1 raw inputs, oldest first */
    for (int64_t ch = 0; ch < C; ch++)
        for (int64_t i = 0; i < K - 1; i++)
            if (sb[ch * (K - 1) + i] != x[(N - (K - 1) + i) * C + ch])
                ops_check_fail(c, "ref conv1d state channel %ld [%ld]", (long)ch, (long)i);
    memset(sa, 0, sb_bytes);
    T->conv1d_seq(oa, C, sa, x, C, N, w, K, 0, C);
    close_to(c, oa, ob, N * C, TOL_KERNEL, "conv1d seq");
    close_to(c, sa, sb, C * (K - 1), 0, "conv1d seq state");
    free(w), free(x), free(sa), free(sb), free(oa), free(ob);
}

/* ---- gated delta rule -------------------------------------------------------------------- */

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
        in.g[t] = -0.3f * (ops_check_frand() + 1.0f); /* log decay in (-0.6, 0] */
        in.beta[t] = 0.5f * (ops_check_frand() + 1.0f);
    }
    return in;
}

static void gdn_free(struct gdn *in) {
    free(in->q), free(in->k), free(in->v), free(in->g), free(in->beta);
}

void ops_check_delta_rule_step(const struct ops_table *T, struct ops_check *c) {
    const int64_t shapes[][2] = {{128, 128}, {17, 5}, {64, 96}};
    ops_check_begin(c, "%s delta_rule_step", T->isa);
    for (int s = 0; s < 3; s++) {
        int64_t dk = shapes[s][0], dv = shapes[s][1], n = 9;
        struct gdn in = gdn_make(n, dk, dv);
        float *Sa = falloc(dk * dv), *Sb = falloc(dk * dv), *oa = falloc(dv), *ob = falloc(dv);
        for (int64_t t = 0; t < n; t++) {
            T->delta_rule_step(Sa, in.q + t * dk, in.k + t * dk, in.v + t * dv, expf(in.g[t]),
                               in.beta[t], oa, dk, dv);
            ops_ref.delta_rule_step(Sb, in.q + t * dk, in.k + t * dk, in.v + t * dv, expf(in.g[t]),
                                    in.beta[t], ob, dk, dv);
            /* o_j = sum_i S_ij q_i: its terms can be far larger than o_j itself, so the bound
             * scales with max |S| * sum |q_i| (a bound relative to max |o| failed NEON's
             * other summation order at 2.68455e-05 vs ref 2.68458e-05) */
            double qsum = 0;
            for (int64_t i = 0; i < dk; i++)
                qsum += fabs((double)in.q[t * dk + i]);
            close_to_floor(c, oa, ob, dv, TOL_KERNEL, max_abs(Sb, dk * dv) * qsum, "o");
        }
        close_to(c, Sa, Sb, dk * dv, TOL_KERNEL, "S");
        gdn_free(&in);
        free(Sa), free(Sb), free(oa), free(ob);
    }
}

/* The chunked rule of T equals token steps of ref, from a nonzero incoming state. */
void ops_check_delta_rule_chunk(const struct ops_table *T, struct ops_check *c) {
    const int64_t ns[] = {1, 5, 64, 70, 130}, dk = 128, dv = 128;
    ops_check_begin(c, "%s delta_rule_chunk", T->isa);
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
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
            if (!(fabsf(oa[i] - ob[i]) <= TOL_CHUNK)) {
                ops_check_fail(c, "n=%ld o[%ld]: %g vs %g", (long)n, (long)i, (double)oa[i],
                               (double)ob[i]);
                break;
            }
        for (int64_t i = 0; i < dk * dv; i++)
            if (!(fabsf(Sa[i] - Sb[i]) <= TOL_CHUNK)) {
                ops_check_fail(c, "n=%ld S[%ld]: %g vs %g", (long)n, (long)i, (double)Sa[i],
                               (double)Sb[i]);
                break;
            }
        gdn_free(&in);
        free(S0), free(Sa), free(Sb), free(oa), free(ob), free(scratch);
    }
}

/* ---- pool_matmul_multi ------------------------------------------------------------------- */

void ops_check_matmul_multi(struct ops_check *c) {
    enum { NM = 7 };
    /* the last three take the x16 layouts: thread slices in whole groups of 16 rows */
    const enum dtype dts[NM] = {DT_Q4_K, DT_Q8_0, DT_F16, DT_F32, DT_Q4_K, DT_Q5_K, DT_Q6_K};
    const int64_t rows[NM] = {40, 17, 9, 6, 48, 32, 16}, cols = 512, n = 5;
    ops_check_begin(c, "%s pool_matmul_multi (1-3 threads, exact mode)", ops->isa);
    struct mat m[NM];
    struct pool_mm mm[NM];
    uint8_t *wq[NM];
    float *y[NM], *want[NM], *wf = falloc(48 * cols), *x = falloc(n * cols);
    fill(wf, 48 * cols, 1.0f);
    fill(x, n * cols, 1.0f);
    for (int k = 0; k < NM; k++) {
        size_t rb = dtype_row_bytes(dts[k], cols);
        wq[k] = xalloc((size_t)rows[k] * rb);
        for (int64_t r = 0; r < rows[k]; r++)
            ops_ref.quantize_row[dts[k]](wf + r * cols, wq[k] + (size_t)r * rb, cols);
        m[k] = (struct mat){dts[k], wq[k], rows[k], cols, rb};
        if (k >= NM - 3 && repack_x16(&m[k], NULL)) ops_check_fail(c, "repack failed");
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
        ops->matmul_q[m[k].dt](&m[k], xq, ab, n, want[k], rows[k], 0, rows[k]);
        free(xq);
    }
    void *qbuf = xalloc(pool_matmul_qbuf_bytes(n, cols));
    float *f = falloc(n * 48);
    for (int nth = 1; nth <= 3; nth++) {
        bt_err e = {0};
        pool_t *p = NULL;
        if (pool_open(&p, nth, &e)) {
            ops_check_fail(c, "pool_open: %s", e.msg);
            break;
        }
        for (int k = 0; k < NM; k++)
            memset(y[k], 0xff, (size_t)(n * rows[k]) * sizeof(float));
        pool_matmul_multi(p, mm, NM, x, cols, n, qbuf);
        for (int k = 0; k < NM; k++)
            if (memcmp(y[k], want[k], (size_t)(n * rows[k]) * sizeof(float)))
                ops_check_fail(c, "matrix %d (%s), %d threads", k, dtype_name(dts[k]), nth);
        ops_set_exact(1); /* every matrix through the f32 matmul */
        pool_matmul_multi(p, mm, NM, x, cols, n, qbuf);
        ops_set_exact(0);
        for (int k = 0; k < NM; k++) {
            ops->matmul[m[k].dt](&m[k], x, cols, n, f, rows[k], 0, rows[k]);
            if (memcmp(y[k], f, (size_t)(n * rows[k]) * sizeof(float)))
                ops_check_fail(c, "exact mode: matrix %d (%s), %d threads", k, dtype_name(dts[k]),
                               nth);
        }
        pool_close(p);
    }
    for (int k = 0; k < NM; k++)
        free(wq[k]), free(y[k]), free(want[k]);
    free(qbuf), free(wf), free(x), free(f);
}

/* ---- the x16 layouts (ops/repack.h) ------------------------------------------------------ */

/* W is quantized once as src (Q4_K, Q5_K or Q6_K) and taken to its x16 layout. ref's x16 kernels
 * (matmul_q and the f32 matmul) must give src's bits; T's matmul_q must be within TOL_MATMUL_Q
 * of the exact sums of the dequantized operands, write only its rows [r0, r1) (whole groups),
 * and give a token the same bits alone, in any batch and in any group of rows. */
static void x16_shape(const struct ops_table *T, enum dtype src, int64_t rows, int64_t cols,
                      int64_t n, int extreme, struct ops_check *c) {
    enum dtype xdt = repack_x16_dtype(src);
    size_t rb = dtype_row_bytes(src, cols), ab = ops_act_row_bytes(src, cols);
    size_t bb = dtype_traits[src].block_bytes;
    size_t ldq = ab + 6;
    int64_t ldx = cols + 3, ldy = rows + 5;
    float *wf = falloc(rows * cols), *wd = falloc(rows * cols), *x = falloc(n * ldx);
    float *xd = falloc(n * cols), *y = falloc(n * ldy), *yr = falloc(n * ldy);
    float *yx = falloc(n * ldy), *y1 = falloc(ldy);
    uint8_t *wq = xalloc((size_t)rows * rb), *wx = xalloc((size_t)rows * rb);
    uint8_t *xq = xalloc((size_t)n * ldq);
    fill(wf, rows * cols, 1.0f);
    fill(x, n * ldx, 1.0f);
    for (int64_t r = 0; r < rows; r++)
        ops_ref.quantize_row[src](wf + r * cols, wq + (size_t)r * rb, cols);
    if (extreme) { /* largest codes, scales (Q6_K: -1) and mins against activations of one sign */
        memset(wq, 0xff, (size_t)rows * rb);
        uint16_t d16 = f32_to_fp16(0.01f);
        for (int64_t b = 0; b < rows * cols / QK_K; b++)
            if (src == DT_Q6_K) /* d last */
                memcpy(wq + (size_t)b * bb + bb - 2, &d16, 2);
            else /* d, dmin first */
                memcpy(wq + (size_t)b * bb, &d16, 2), memcpy(wq + (size_t)b * bb + 2, &d16, 2);
        for (int64_t i = 0; i < n * ldx; i++)
            x[i] = i / ldx % 2 ? 1.0f : -1.0f;
    }
    for (int64_t r = 0; r < rows; r++)
        ops_ref.dequantize_row[src](wq + (size_t)r * rb, wd + r * cols, cols);
    for (int64_t t = 0; t < n; t++) {
        ops_ref.quantize_act[DT_Q8_K](x + t * ldx, xq + (size_t)t * ldq, cols);
        ops_ref.dequantize_row[DT_Q8_K](xq + (size_t)t * ldq, xd + t * cols, cols);
    }
    memcpy(wx, wq, (size_t)rows * rb);
    struct mat m = {src, wq, rows, cols, rb}, mx = {src, wx, rows, cols, rb};
    bt_err e = {0};
    if (repack_x16(&mx, &e) || mx.dt != xdt) {
        ops_check_fail(c, "rows=%ld: repack: %s", (long)rows, e.msg);
        goto out;
    }
    int64_t r0 = rows > X16_ROWS ? X16_ROWS : 0;
    for (int64_t i = 0; i < n * ldy; i++)
        y[i] = yr[i] = yx[i] = -7.0f;
    ops_ref.matmul_q[src](&m, xq, ldq, n, yr, ldy, r0, rows);
    ops_ref.matmul_q[xdt](&mx, xq, ldq, n, yx, ldy, r0, rows);
    if (memcmp(yr, yx, (size_t)(n * ldy) * sizeof(float)))
        ops_check_fail(c, "%s rows=%ld n=%ld: ref x16 is not ref's bit for bit", dtype_name(src),
                       (long)rows, (long)n);
    ops_ref.matmul[src](&m, x, ldx, n, y, ldy, r0, rows);
    ops_ref.matmul[xdt](&mx, x, ldx, n, yx, ldy, r0, rows);
    if (memcmp(y, yx, (size_t)(n * ldy) * sizeof(float)))
        ops_check_fail(c, "%s rows=%ld n=%ld: ref x16 f32 matmul is not ref's", dtype_name(src),
                       (long)rows, (long)n);
    for (int64_t i = 0; i < n * ldy; i++)
        y[i] = -7.0f;
    T->matmul_q[xdt](&mx, xq, ldq, n, y, ldy, r0, rows);
    for (int64_t t = 0; t < n; t++)
        for (int64_t r = 0; r < rows; r++)
            check_element(c, r0, wd + r * cols, xd + t * cols, cols, y[t * ldy + r],
                          yr[t * ldy + r], TOL_MATMUL_Q, (long[]){rows, cols, n, r, t});
    for (int64_t t = 0; t < n; t++) { /* alone, and one group of rows at a time */
        for (int64_t g = r0; g < rows; g += X16_ROWS)
            T->matmul_q[xdt](&mx, xq + (size_t)t * ldq, ldq, 1, y1, ldy, g, g + X16_ROWS);
        for (int64_t r = r0; r < rows; r++)
            if (quant_f32_bits(y1[r]) != quant_f32_bits(y[t * ldy + r])) {
                ops_check_fail(c, "%s rows=%ld t=%ld r=%ld alone %g, in a batch of %ld %g",
                               dtype_name(src), (long)rows, (long)t, (long)r, (double)y1[r],
                               (long)n, (double)y[t * ldy + r]);
                break;
            }
    }
out:
    free(wf), free(wd), free(x), free(xd), free(y), free(yr), free(yx), free(y1);
    free(wq), free(wx), free(xq);
}

void ops_check_matmul_x16(const struct ops_table *T, struct ops_check *c) {
    ops_check_begin(c, "%s matmul_q q4_k_x16 q5_k_x16 q6_k_x16", T->isa);
    const enum dtype srcs[] = {DT_Q4_K, DT_Q5_K, DT_Q6_K};
    for (int k = 0; k < 3; k++) {
        enum dtype x = repack_x16_dtype(srcs[k]);
        if (!T->matmul_q[x] || !T->matmul[x]) {
            ops_check_fail(c, "%s: no kernel", dtype_name(x));
            return;
        }
    }
    const int64_t shapes[][3] = {
        {16, QK_K, 1},        {32, QK_K * 2, 2},  {48, QK_K * 3, 3}, {32, QK_K, 4},
        {48, QK_K * 2, 5},    {32, QK_K * 2, 8},  {64, QK_K, 9},     {48, QK_K * 2, 15},
        {32, QK_K * 5, 17},   {16, QK_K * 2, 70}, /* every token group: 8, 4, 2, 1 */
        {128, QK_K * 12, 11}, /* AVX2, 8 tokens or more: 4 groups of 16 rows per chunk */
    };
    for (int k = 0; k < 3; k++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            x16_shape(T, srcs[k], shapes[s][0], shapes[s][1], shapes[s][2], 0, c);
        x16_shape(T, srcs[k], 32, QK_K * 2, 9, 1, c);
    }
    /* a matrix without the layout is refused and left as it was */
    size_t rb = dtype_row_bytes(DT_Q4_K, QK_K);
    uint8_t *w = xalloc(24 * rb), *copy = xalloc(24 * rb);
    for (size_t i = 0; i < 24 * rb; i++)
        w[i] = copy[i] = (uint8_t)ops_check_rand();
    struct mat m = {DT_Q4_K, w, 24, QK_K, rb};
    bt_err e = {0};
    if (repack_x16(&m, &e) != BT_EINVAL || m.dt != DT_Q4_K || memcmp(w, copy, 24 * rb))
        ops_check_fail(c, "24 rows: not refused untouched (%s)", e.msg);
    m.dt = DT_Q8_0, m.rows = 32;
    if (repack_x16(&m, &e) != BT_EINVAL) ops_check_fail(c, "q8_0 accepted");
    m.dt = DT_Q5_0;
    if (repack_x16(&m, &e) != BT_EINVAL) ops_check_fail(c, "q5_0 accepted");
    free(w), free(copy);
}

/* ---- all of one table -------------------------------------------------------------------- */

int ops_check_table(const struct ops_table *T, void (*report)(const struct ops_check *c, void *ctx),
                    void *ctx) {
    static const enum dtype acts[] = {DT_Q8_0, DT_Q8_K};
    struct ops_check c;
    int failed = 0;
#define RUN(call)                                                                                  \
    do {                                                                                           \
        call;                                                                                      \
        failed += c.n_failed > 0;                                                                  \
        report(&c, ctx);                                                                           \
    } while (0)
    for (size_t k = 0; k < sizeof acts / sizeof acts[0]; k++)
        RUN(ops_check_quantize_act(T, acts[k], &c));
    for (size_t k = 0; k < ops_check_n_q_types; k++)
        RUN(ops_check_matmul_q(T, ops_check_q_types[k], &c));
    RUN(ops_check_matmul_q_extreme(T, &c));
    RUN(ops_check_matmul_x16(T, &c));
    for (size_t k = 0; k < ops_check_n_types; k++)
        RUN(ops_check_matmul(T, ops_check_types[k], &c));
    RUN(ops_check_small_kernels(T, &c));
    RUN(ops_check_attention(T, &c));
    RUN(ops_check_conv1d(T, &c));
    RUN(ops_check_delta_rule_step(T, &c));
    RUN(ops_check_delta_rule_chunk(T, &c));
#undef RUN
    return failed;
}
