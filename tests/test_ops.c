/* tests/test_ops.c: quant formats against the spec formulas (written out independently here),
 * fp16/bf16 edge cases, quantize->dequantize error bounds, every kernel of every ISA this CPU
 * has against ops_ref on odd shapes, and the chunked delta rule against token-by-token steps. */
#include "ops/ops.h"
#include "ops/quant.h"
#include "ops/threadpool.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- tolerances ------------------------------------------------------------------------ */
/* SIMD matmul vs ref: only summation order (and fused multiply-adds) differ, so the error is
 * bounded relative to sum_c |w_c x_c|. */
#define TOL_MATMUL 2e-6
/* Other kernels vs ref, relative to the magnitude of the values involved. */
#define TOL_KERNEL 1e-5
/* Chunked delta rule vs steps: different algorithm, same math; outputs are O(1). */
#define TOL_CHUNK 2e-4f
/* quantize -> dequantize relative RMS error on uniform [-1, 1) data, per dtype. */
static const double tol_roundtrip[DT_COUNT] = {
    [DT_F32] = 0.0,   [DT_F16] = 1e-3,  [DT_BF16] = 5e-3, [DT_Q8_0] = 0.008,
    [DT_Q4_0] = 0.10, [DT_Q4_1] = 0.08, [DT_Q5_0] = 0.05, [DT_Q5_1] = 0.04,
    [DT_Q4_K] = 0.08, [DT_Q5_K] = 0.04, [DT_Q6_K] = 0.02,
};

static const enum dtype all_types[] = {DT_F32,  DT_F16,  DT_BF16, DT_Q4_0, DT_Q4_1, DT_Q5_0,
                                       DT_Q5_1, DT_Q8_0, DT_Q4_K, DT_Q5_K, DT_Q6_K};
#define N_TYPES (sizeof all_types / sizeof all_types[0])

static unsigned rng = 12345;
static float frand(void) { /* uniform [-1, 1) */
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 8388608.0f - 1.0f;
}
static uint8_t brand(void) {
    rng = rng * 1664525u + 1013904223u;
    return (uint8_t)(rng >> 24);
}
static void fill(float *x, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++)
        x[i] = frand() * scale;
}

static float *falloc(int64_t n) {
    float *p = calloc((size_t)n + 16, sizeof(float));
    cr_assert(p);
    return p;
}

/* ---- fp16 / bf16 ----------------------------------------------------------------------- */

Test(quant, fp16_decode_every_value) {
    for (uint32_t h = 0; h < 65536; h++) {
        int sign = h >> 15, e = (h >> 10) & 31, m = h & 1023;
        float got = fp16_to_f32((uint16_t)h);
        if (e == 31) {
            cr_assert(m ? isnan(got) : isinf(got), "h=%04x", h);
            continue;
        }
        double expect = e ? ldexp(1.0 + m / 1024.0, e - 15) : ldexp(m, -24);
        if (sign) expect = -expect;
        cr_assert((double)got == expect, "h=%04x got %g expect %g", h, (double)got, expect);
        cr_assert((signbit(got) != 0) == (sign != 0));
        /* round trip: every finite half encodes back to itself */
        cr_assert_eq(f32_to_fp16(got), h, "h=%04x", h);
    }
}

Test(quant, fp16_encode_edges) {
    cr_assert_eq(f32_to_fp16(0.0f), 0x0000);
    cr_assert_eq(f32_to_fp16(-0.0f), 0x8000);
    cr_assert_eq(f32_to_fp16(1.0f), 0x3c00);
    cr_assert_eq(f32_to_fp16(65504.0f), 0x7bff);
    cr_assert_eq(f32_to_fp16(65519.0f), 0x7bff, "below the halfway point to 2^16");
    cr_assert_eq(f32_to_fp16(65520.0f), 0x7c00, "halfway, odd mantissa: rounds up to inf");
    cr_assert_eq(f32_to_fp16(1e10f), 0x7c00);
    cr_assert_eq(f32_to_fp16(-INFINITY), 0xfc00);
    uint16_t n = f32_to_fp16(NAN);
    cr_assert((n & 0x7c00) == 0x7c00 && (n & 0x3ff), "NaN stays NaN: %04x", n);
    cr_assert_eq(f32_to_fp16(0x1p-24f), 0x0001, "smallest subnormal");
    cr_assert_eq(f32_to_fp16(0x1p-25f), 0x0000, "tie to even (0)");
    cr_assert_eq(f32_to_fp16(0x1.8p-24f), 0x0002, "1.5 ulp: tie to even (2)");
    cr_assert_eq(f32_to_fp16(0x1.4p-24f), 0x0001);
    cr_assert_eq(f32_to_fp16(0x1p-14f), 0x0400, "smallest normal");
    cr_assert_eq(f32_to_fp16(0x1.ffcp-15f), 0x0400, "largest subnormal + half ulp rounds up");
    cr_assert_eq(f32_to_fp16(1.0f + 0x1p-11f), 0x3c00, "tie to even (down)");
    cr_assert_eq(f32_to_fp16(1.0f + 0x3p-11f), 0x3c02, "tie to even (up)");
    cr_assert_eq(f32_to_fp16(1.0f + 0x1.2p-11f), 0x3c01, "above the tie");
    cr_assert_eq(f32_to_fp16(0x1.ffep-1f), 0x3c00, "mantissa carry into exponent");
    cr_assert_eq(f32_to_fp16(1e-30f), 0x0000);
    cr_assert_eq(f32_to_fp16(-1e-30f), 0x8000);
}

Test(quant, bf16_edges) {
    cr_assert_eq(f32_to_bf16(1.0f), 0x3f80);
    cr_assert_eq(bf16_to_f32(0x3f80), 1.0f);
    cr_assert_eq(f32_to_bf16(quant_bits_f32(0x3f808000u)), 0x3f80, "tie to even (down)");
    cr_assert_eq(f32_to_bf16(quant_bits_f32(0x3f818000u)), 0x3f82, "tie to even (up)");
    cr_assert_eq(f32_to_bf16(quant_bits_f32(0x3f808001u)), 0x3f81);
    cr_assert_eq(f32_to_bf16(quant_bits_f32(0x7f7fffffu)), 0x7f80, "FLT_MAX rounds to inf");
    cr_assert_eq(f32_to_bf16(INFINITY), 0x7f80);
    cr_assert_eq(f32_to_bf16(-0.0f), 0x8000);
    cr_assert_eq(f32_to_bf16(quant_bits_f32(0x00010000u)), 0x0001, "subnormal kept");
    uint16_t n = f32_to_bf16(quant_bits_f32(0x7f800001u)); /* NaN with a low payload only */
    cr_assert(isnan(bf16_to_f32(n)), "NaN stays NaN: %04x", n);
    for (uint32_t b = 0; b < 65536; b++) {
        float f = bf16_to_f32((uint16_t)b);
        if (!isnan(f)) cr_assert_eq(f32_to_bf16(f), b);
    }
}

/* ---- dequantize hand-built blocks (formulas of spec §12.2, written per element) ------------ */

static uint16_t h16(float f) {
    return f32_to_fp16(f);
}

Test(quant, dequant_q8_0_q4_0_q5_0_by_hand) {
    struct block_q8_0 b8;
    struct block_q4_0 b4;
    struct block_q5_0 b5;
    b8.d = h16(0.5f);
    b4.d = h16(-0.25f);
    b5.d = h16(2.0f);
    for (int j = 0; j < 32; j++)
        b8.qs[j] = (int8_t)(j * 8 - 128);
    for (int j = 0; j < 16; j++)
        b4.qs[j] = b5.qs[j] = brand();
    for (int j = 0; j < 4; j++)
        b5.qh[j] = brand();
    float y8[32], y4[32], y5[32];
    ops_ref.dequantize_row[DT_Q8_0](&b8, y8, 32);
    ops_ref.dequantize_row[DT_Q4_0](&b4, y4, 32);
    ops_ref.dequantize_row[DT_Q5_0](&b5, y5, 32);
    for (int e = 0; e < 32; e++) {
        cr_assert_eq(y8[e], 0.5f * (float)(e * 8 - 128));
        int nib = e < 16 ? b4.qs[e] & 15 : b4.qs[e - 16] >> 4;
        cr_assert_eq(y4[e], -0.25f * (float)(nib - 8), "q4_0 e=%d", e);
        int nib5 = e < 16 ? b5.qs[e] & 15 : b5.qs[e - 16] >> 4;
        int bit = (b5.qh[e / 8] >> (e % 8)) & 1;
        cr_assert_eq(y5[e], 2.0f * (float)(nib5 + 16 * bit - 16), "q5_0 e=%d", e);
    }
}

Test(quant, dequant_q4_k_by_hand) {
    struct block_q4_k b;
    memset(&b, 0, sizeof b);
    b.d = h16(0.5f);
    b.dmin = h16(0.25f);
    int sc[8], mn[8];
    for (int s = 0; s < 8; s++) {
        sc[s] = 1 + 8 * s; /* up to 57: exercises the two high bits */
        mn[s] = 63 - 7 * s;
    }
    /* 6-bit packing as spec §12.2 describes the unpacking */
    for (int s = 0; s < 4; s++) {
        b.scales[s] = (uint8_t)(sc[s] | (sc[s + 4] >> 4) << 6);
        b.scales[s + 4] = (uint8_t)(mn[s] | (mn[s + 4] >> 4) << 6);
        b.scales[s + 8] = (uint8_t)((sc[s + 4] & 15) | (mn[s + 4] & 15) << 4);
    }
    for (int i = 0; i < 128; i++)
        b.qs[i] = brand();
    float y[256];
    ops_ref.dequantize_row[DT_Q4_K](&b, y, 256);
    for (int e = 0; e < 256; e++) {
        int s = e / 32, c = e / 64, l = e % 32;
        int q = (s % 2 == 0) ? b.qs[32 * c + l] & 15 : b.qs[32 * c + l] >> 4;
        float expect = 0.5f * (float)sc[s] * (float)q - 0.25f * (float)mn[s];
        cr_assert(fabsf(y[e] - expect) <= 1e-6f * fabsf(expect) + 1e-6f, "e=%d %g vs %g", e,
                  (double)y[e], (double)expect);
    }
}

Test(quant, dequant_q6_k_by_hand) {
    struct block_q6_k b;
    for (int i = 0; i < 128; i++)
        b.ql[i] = brand();
    for (int i = 0; i < 64; i++)
        b.qh[i] = brand();
    for (int i = 0; i < 16; i++)
        b.scales[i] = (int8_t)(brand() - 128);
    b.d = h16(0.125f);
    float y[256];
    ops_ref.dequantize_row[DT_Q6_K](&b, y, 256);
    for (int e = 0; e < 256; e++) {
        int h = e / 128, r = e % 128, j = r / 32, l = r % 32;
        uint8_t lb = b.ql[64 * h + l + 32 * (j & 1)];
        int lo = j < 2 ? lb & 15 : lb >> 4;
        int hi = (b.qh[32 * h + l] >> (2 * j)) & 3;
        float expect = 0.125f * (float)b.scales[e / 16] * (float)((lo | hi << 4) - 32);
        cr_assert(fabsf(y[e] - expect) <= 1e-6f * fabsf(expect), "e=%d", e);
    }
}

Test(quant, dequant_q4_1_q5_1_q5_k_by_hand) {
    struct block_q4_1 b1 = {.d = h16(0.5f), .m = h16(-3.0f)};
    struct block_q5_1 b51 = {.d = h16(0.25f), .m = h16(1.0f)};
    for (int j = 0; j < 16; j++)
        b1.qs[j] = b51.qs[j] = brand();
    for (int j = 0; j < 4; j++)
        b51.qh[j] = brand();
    float y1[32], y51[32];
    ops_ref.dequantize_row[DT_Q4_1](&b1, y1, 32);
    ops_ref.dequantize_row[DT_Q5_1](&b51, y51, 32);
    for (int e = 0; e < 32; e++) {
        int nib = e < 16 ? b1.qs[e] & 15 : b1.qs[e - 16] >> 4;
        cr_assert_eq(y1[e], 0.5f * (float)nib - 3.0f);
        int n5 =
            (e < 16 ? b51.qs[e] & 15 : b51.qs[e - 16] >> 4) + 16 * ((b51.qh[e / 8] >> (e % 8)) & 1);
        cr_assert_eq(y51[e], 0.25f * (float)n5 + 1.0f);
    }
    struct block_q5_k k5;
    memset(&k5, 0, sizeof k5);
    k5.d = h16(1.0f);
    k5.dmin = h16(0.5f);
    for (int s = 0; s < 4; s++) { /* sc = s+1, mn = 2s for s < 4; sc = mn = 0 for s >= 4 */
        k5.scales[s] = (uint8_t)(s + 1);
        k5.scales[s + 4] = (uint8_t)(2 * s);
    }
    for (int i = 0; i < 128; i++)
        k5.qs[i] = brand();
    for (int i = 0; i < 32; i++)
        k5.qh[i] = brand();
    float y5[256];
    ops_ref.dequantize_row[DT_Q5_K](&k5, y5, 256);
    for (int e = 0; e < 256; e++) {
        int s = e / 32, c = e / 64, l = e % 32;
        int q = ((s % 2 == 0) ? k5.qs[32 * c + l] & 15 : k5.qs[32 * c + l] >> 4) +
                16 * ((k5.qh[l] >> s) & 1);
        float expect = s < 4 ? (float)(s + 1) * (float)q - 0.5f * (float)(2 * s) : 0.0f;
        cr_assert_eq(y5[e], expect, "e=%d", e);
    }
}

/* ---- quantize -> dequantize ------------------------------------------------------------ */

Test(quant, roundtrip_error_bounds) {
    const int64_t n = 4096;
    float *x = falloc(n), *y = falloc(n);
    uint8_t *buf = malloc(n * 4);
    fill(x, n, 1.0f);
    for (size_t k = 0; k < N_TYPES; k++) {
        enum dtype t = all_types[k];
        cr_assert(ops_ref.quantize_row[t], "%s has a quantizer", dtype_name(t));
        ops_ref.quantize_row[t](x, buf, n);
        ops_ref.dequantize_row[t](buf, y, n);
        double se = 0, sx = 0;
        for (int64_t i = 0; i < n; i++) {
            se += (double)(x[i] - y[i]) * (double)(x[i] - y[i]);
            sx += (double)x[i] * (double)x[i];
        }
        double rel = sqrt(se / sx);
        cr_assert(rel <= tol_roundtrip[t], "%s: relative rms error %g > %g", dtype_name(t), rel,
                  tol_roundtrip[t]);
        /* zeros stay zeros (no NaN from a zero scale); a scaled-up row keeps its error */
        float z[512] = {0}, zy[512];
        ops_ref.quantize_row[t](z, buf, 512);
        ops_ref.dequantize_row[t](buf, zy, 512);
        for (int i = 0; i < 512; i++)
            cr_assert_eq(zy[i], 0.0f, "%s zero row", dtype_name(t));
    }
    free(x);
    free(y);
    free(buf);
}

Test(quant, roundtrip_wide_dynamic_range) {
    /* sub-blocks with very different magnitudes (as in real weights) still round-trip */
    const int64_t n = 1024;
    float *x = falloc(n), *y = falloc(n);
    uint8_t *buf = malloc(n * 4);
    for (int64_t i = 0; i < n; i++)
        x[i] = frand() * (float)(1 << ((i / 32) % 8)) * 0.01f;
    const enum dtype ts[] = {DT_Q8_0, DT_Q4_0, DT_Q5_0, DT_Q4_K, DT_Q5_K, DT_Q6_K};
    for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) {
        ops_ref.quantize_row[ts[k]](x, buf, n);
        ops_ref.dequantize_row[ts[k]](buf, y, n);
        double se = 0, sx = 0;
        for (int64_t i = 0; i < n; i++) {
            se += (double)(x[i] - y[i]) * (double)(x[i] - y[i]);
            sx += (double)x[i] * (double)x[i];
        }
        cr_assert(sqrt(se / sx) <= 2 * tol_roundtrip[ts[k]], "%s: %g", dtype_name(ts[k]),
                  sqrt(se / sx));
    }
    free(x);
    free(y);
    free(buf);
}

/* ---- ops_init -------------------------------------------------------------------------- */

Test(ops, init_and_isa_list) {
    const char *const *isas = ops_available_isas();
    int n = 0;
    while (isas[n])
        n++;
    cr_assert_geq(n, 1);
    cr_assert_str_eq(isas[n - 1], "ref");
    bt_err e = {0};
    cr_assert_eq(ops_init("ref", &e), 0);
    cr_assert_str_eq(ops->isa, "ref");
    cr_assert_eq(ops_init("vax", &e), BT_EUNSUPPORTED);
    cr_assert(strstr(e.msg, "vax"));
    cr_assert_null(ops_table_for("vax"));
    setenv("BT_ISA", "ref", 1);
    cr_assert_eq(ops_init(NULL, &e), 0);
    cr_assert_str_eq(ops->isa, "ref");
    unsetenv("BT_ISA");
    cr_assert_eq(ops_init(NULL, &e), 0);
    cr_assert_str_eq(ops->isa, isas[0], "best ISA first");
    for (int i = 0; i < n; i++) { /* every slot filled */
        const struct ops_table *t = ops_table_for(isas[i]);
        cr_assert(t && t->rmsnorm && t->delta_rule_chunk && t->conv1d_seq && t->softmax);
        for (size_t k = 0; k < N_TYPES; k++)
            cr_assert(t->matmul[all_types[k]] && t->dequantize_row[all_types[k]]);
    }
}

/* ---- matmul: every ISA vs ref ---------------------------------------------------------- */

static void check_matmul(const struct ops_table *T, enum dtype dt, int64_t rows, int64_t cols,
                         int64_t n) {
    size_t rb = dtype_row_bytes(dt, cols);
    cr_assert(rb, "%s cols=%ld", dtype_name(dt), (long)cols);
    float *wf = falloc(rows * cols), *wd = falloc(rows * cols);
    uint8_t *wq = malloc((size_t)rows * rb + 64);
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
    int64_t r0 = rows > 2 ? 1 : 0, r1 = rows;
    ops_ref.matmul[dt](&m, x, ldx, n, yr, ldy, r0, r1);
    T->matmul[dt](&m, x, ldx, n, y, ldy, r0, r1);
    for (int64_t t = 0; t < n; t++)
        for (int64_t r = 0; r < rows; r++) {
            float got = y[t * ldy + r], want = yr[t * ldy + r];
            if (r < r0) {
                cr_assert_eq(got, -7.0f, "row %ld outside the range was written", (long)r);
                continue;
            }
            double mag = 0, exact = 0; /* independent check of ref against the dequantized W */
            for (int64_t c = 0; c < cols; c++) {
                mag += fabs((double)wd[r * cols + c] * (double)x[t * ldx + c]);
                exact += (double)wd[r * cols + c] * (double)x[t * ldx + c];
            }
            cr_assert(fabs((double)want - exact) <= TOL_MATMUL * mag + 1e-30,
                      "ref %s r=%ld t=%ld: %g vs %g", dtype_name(dt), (long)r, (long)t,
                      (double)want, exact);
            cr_assert(fabs((double)got - (double)want) <= TOL_MATMUL * mag + 1e-30,
                      "%s %s rows=%ld cols=%ld n=%ld r=%ld t=%ld: %g vs ref %g", T->isa,
                      dtype_name(dt), (long)rows, (long)cols, (long)n, (long)r, (long)t,
                      (double)got, (double)want);
        }
    free(wf);
    free(wd);
    free(wq);
    free(x);
    free(y);
    free(yr);
}

Test(ops, matmul_every_isa_and_dtype) {
    const char *const *isas = ops_available_isas();
    for (int i = 0; isas[i]; i++) {
        const struct ops_table *T = ops_table_for(isas[i]);
        for (size_t k = 0; k < N_TYPES; k++) {
            enum dtype dt = all_types[k];
            int64_t blk = dtype_traits[dt].block;
            int64_t big = blk == 1 ? 77 : blk * 3; /* float types: a tail of 77 % 32 values */
            const int64_t shapes[][3] = {
                {1, blk == 1 ? 32 : blk, 1}, /* one row, one block */
                {3, blk == 1 ? 32 : blk, 7}, /* rows < threads, 7 tokens */
                {37, big, 1},                /* many blocks */
                {13, big, 7},
                {5, blk == 1 ? 512 : blk * 2, 9}, /* more tokens than a SIMD group */
                {2, blk == 1 ? 5 : blk, 3},       /* float row shorter than a vector */
            };
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
                check_matmul(T, dt, shapes[s][0], shapes[s][1], shapes[s][2]);
        }
    }
}

/* ---- quantized activations (matmul_q): every ISA vs ref, ref vs exact dequantized math -- */

/* SIMD matmul_q vs ref: the integer sums are exact; only the per-block float scaling and its
 * summation order differ. Relative to sum |w x| of the dequantized operands. */
#define TOL_MATMUL_Q 1e-5
/* Quantized-activation result vs the f32-activation result: relative L2 over all outputs, on
 * uniform random data (measured 0.3-0.6% for Q8_0 and Q8_K activations). */
#define TOL_ACT_RL2 0.015

static const enum dtype q_types[] = {DT_Q8_0, DT_Q4_0, DT_Q5_0, DT_Q4_K, DT_Q5_K, DT_Q6_K};
#define N_QTYPES (sizeof q_types / sizeof q_types[0])

static void check_matmul_q(const struct ops_table *T, enum dtype dt, int64_t rows, int64_t cols,
                           int64_t n) {
    enum dtype at = ops_act_dtype(dt);
    size_t rb = dtype_row_bytes(dt, cols), ab = ops_act_row_bytes(dt, cols);
    size_t ldq = ab + 6; /* a stride wider than the row */
    cr_assert(rb && ab && at != DT_F32, "%s cols=%ld", dtype_name(dt), (long)cols);
    float *wf = falloc(rows * cols), *wd = falloc(rows * cols);
    uint8_t *wq = malloc((size_t)rows * rb + 64), *xq = malloc((size_t)n * ldq + 64);
    int64_t ldx = cols + 3, ldy = rows + 5;
    float *x = falloc(n * ldx), *xd = falloc(n * cols), *y = falloc(n * ldy), *yr = falloc(n * ldy);
    float *yf = falloc(n * ldy), *y1 = falloc(ldy);
    cr_assert(wq && xq);
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
            float got = y[t * ldy + r], want = yr[t * ldy + r];
            if (r < r0) {
                cr_assert_eq(got, -7.0f, "row %ld outside the range was written", (long)r);
                continue;
            }
            double mag = 0, exact = 0; /* ref against the dequantized codes of both operands */
            for (int64_t c = 0; c < cols; c++) {
                mag += fabs((double)wd[r * cols + c] * (double)xd[t * cols + c]);
                exact += (double)wd[r * cols + c] * (double)xd[t * cols + c];
            }
            cr_assert(fabs((double)want - exact) <= TOL_MATMUL_Q * mag + 1e-30,
                      "ref q %s r=%ld t=%ld: %g vs %g", dtype_name(dt), (long)r, (long)t,
                      (double)want, exact);
            cr_assert(fabs((double)got - (double)want) <= TOL_MATMUL_Q * mag + 1e-30,
                      "%s q %s rows=%ld cols=%ld n=%ld r=%ld t=%ld: %g vs ref %g", T->isa,
                      dtype_name(dt), (long)rows, (long)cols, (long)n, (long)r, (long)t,
                      (double)got, (double)want);
            double f = yf[t * ldy + r];
            e2 += ((double)got - f) * ((double)got - f);
            f2 += f * f;
        }
    if ((r1 - r0) * n >= 32) /* a statistical bound: only over enough outputs */
        cr_assert(sqrt(e2) <= TOL_ACT_RL2 * sqrt(f2),
                  "%s %s: quantized vs f32 activations rel L2 %g", T->isa, dtype_name(dt),
                  sqrt(e2 / f2));
    /* a token's result does not depend on the batch it is in (bit for bit) */
    for (int64_t t = 0; t < n; t++) {
        T->matmul_q[dt](&m, xq + (size_t)t * ldq, ldq, 1, y1, ldy, r0, r1);
        for (int64_t r = r0; r < r1; r++)
            cr_assert_eq(quant_f32_bits(y1[r]), quant_f32_bits(y[t * ldy + r]),
                         "%s %s t=%ld r=%ld: alone %g, in a batch of %ld %g", T->isa,
                         dtype_name(dt), (long)t, (long)r, (double)y1[r], (long)n,
                         (double)y[t * ldy + r]);
    }
    free(wf), free(wd), free(wq), free(xq), free(x), free(xd);
    free(y), free(yr), free(yf), free(y1);
}

Test(ops, matmul_q_every_isa_and_dtype) {
    const char *const *isas = ops_available_isas();
    for (int i = 0; isas[i]; i++) {
        const struct ops_table *T = ops_table_for(isas[i]);
        for (size_t k = 0; k < N_QTYPES; k++) {
            enum dtype dt = q_types[k];
            cr_assert(T->matmul_q[dt], "%s has matmul_q for %s", T->isa, dtype_name(dt));
            int64_t blk = dtype_traits[dt].block;
            const int64_t shapes[][3] =
                {
                    {1, blk, 1},      {3, blk, 7},
                    {37, blk * 3, 1}, {13, blk * 3, 7},
                    {5, blk * 2, 9},  {9, blk * 2, 70}, /* more tokens than a tile */
                    {2, blk, 10},     {3, blk, 11},
                    {4, blk * 2, 12}, {2, blk, 13}, /* every group size */
                    {7, blk * 130, 9}, /* Q8_0 family: more blocks than a chunk (130 > 128) */
                };
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
                check_matmul_q(T, dt, shapes[s][0], shapes[s][1], shapes[s][2]);
        }
        for (size_t k = 0; k < N_TYPES; k++) /* float types have no quantized path */
            if (ops_act_dtype(all_types[k]) == DT_F32) cr_assert_null(T->matmul_q[all_types[k]]);
    }
}

/* Extreme codes: every weight byte 0xff (largest nibbles, 6-bit scales and mins of 63, Q6_K
 * codes 63) or Q6_K scales of -128, against activations at the code limits (+-127, all one
 * sign so nothing cancels): the largest intermediate sums of the integer kernels, where a
 * saturating maddubs or an int16 overflow would show. Every ISA against ref. */
Test(ops, matmul_q_extreme_codes) {
    const int64_t rows = 3, cols = 512, n = 2;
    for (size_t k = 0; k < N_QTYPES; k++) {
        enum dtype dt = q_types[k], at = ops_act_dtype(dt);
        size_t rb = dtype_row_bytes(dt, cols), ab = ops_act_row_bytes(dt, cols);
        size_t bb = dtype_traits[dt].block_bytes;
        int64_t nblk = cols / dtype_traits[dt].block;
        uint8_t *wq = malloc((size_t)rows * rb), *xq = malloc((size_t)n * ab);
        float *x = falloc(n * cols), *y = falloc(n * rows), *yr = falloc(n * rows);
        cr_assert(wq && xq);
        memset(wq, 0xff, (size_t)rows * rb);
        uint16_t d16 = f32_to_fp16(0.01f);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t b = 0; b < nblk; b++) {
                uint8_t *blk = wq + (size_t)r * rb + (size_t)b * bb;
                if (dt == DT_Q6_K) { /* d last; row 1 gets scales of -128 */
                    memcpy(blk + bb - 2, &d16, 2);
                    if (r == 1) memset(blk + bb - 18, 0x80, 16);
                } else {
                    memcpy(blk, &d16, 2); /* d first; dmin next for Q4_K/Q5_K */
                    if (dt == DT_Q4_K || dt == DT_Q5_K) memcpy(blk + 2, &d16, 2);
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
        const char *const *isas = ops_available_isas();
        for (int i = 0; isas[i]; i++) {
            const struct ops_table *T = ops_table_for(isas[i]);
            T->matmul_q[dt](&m, xq, ab, n, y, rows, 0, rows);
            for (int64_t j = 0; j < n * rows; j++)
                cr_assert(fabsf(y[j] - yr[j]) <= 1e-5f * fabsf(yr[j]) + 1e-30f,
                          "%s %s out %ld: %g vs ref %g", T->isa, dtype_name(dt), (long)j,
                          (double)y[j], (double)yr[j]);
        }
        free(wq), free(xq), free(x), free(y), free(yr);
    }
}

/* The Q8_K activation format: d = absmax / 127, codes within one step, exact 16-value sums. */
Test(quant, q8_k_activations) {
    float x[512];
    struct block_q8_k b[2];
    fill(x, 512, 3.0f);
    x[300] = -5.0f; /* the largest magnitude maps to -127 exactly */
    quantize_row_q8_k(x, b, 512);
    cr_assert_float_eq(b[1].d, 5.0f / 127.0f, 1e-9f);
    cr_assert_eq(b[1].qs[300 - 256], -127);
    for (int i = 0; i < 2; i++)
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++) {
                float v = x[256 * i + 16 * g + j];
                cr_assert(fabsf(b[i].d * (float)b[i].qs[16 * g + j] - v) <= 0.5001f * b[i].d);
                s += b[i].qs[16 * g + j];
            }
            cr_assert_eq(b[i].bsums[g], s);
        }
    memset(x, 0, sizeof x); /* all zero: zero scale and codes, no division by zero */
    quantize_row_q8_k(x, b, 256);
    cr_assert(b[0].d == 0.0f && b[0].qs[7] == 0 && b[0].bsums[3] == 0);
}

/* pool_matmul_multi: several matrices (mixed activation formats) over one input, any thread
 * count, equal bit for bit to each matrix's matmul_q on the quantized input; exact mode and a
 * NULL scratch give the f32 matmul. */
Test(ops, matmul_multi_shared_input) {
    bt_err e = {0};
    cr_assert_eq(ops_init(NULL, &e), 0);
    const enum dtype dts[3] = {DT_Q4_K, DT_Q8_0, DT_F32};
    const int64_t rows[3] = {40, 17, 9}, cols = 512, n = 5;
    struct mat m[3];
    uint8_t *wq[3];
    float *y[3], *want[3];
    float *wf = falloc(40 * cols), *x = falloc(n * cols);
    fill(wf, 40 * cols, 1.0f);
    fill(x, n * cols, 1.0f);
    struct pool_mm mm[3];
    for (int k = 0; k < 3; k++) {
        size_t rb = dtype_row_bytes(dts[k], cols);
        wq[k] = malloc((size_t)rows[k] * rb);
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
        uint8_t *xq = malloc((size_t)n * ab);
        for (int64_t t = 0; t < n; t++)
            ops->quantize_act[at](x + t * cols, xq + (size_t)t * ab, cols);
        ops->matmul_q[dts[k]](&m[k], xq, ab, n, want[k], rows[k], 0, rows[k]);
        free(xq);
    }
    void *qbuf = malloc(pool_matmul_qbuf_bytes(n, cols));
    for (int nth = 1; nth <= 3; nth++) {
        pool_t *p = NULL;
        cr_assert_eq(pool_open(&p, nth, &e), 0);
        for (int k = 0; k < 3; k++)
            memset(y[k], 0xff, (size_t)(n * rows[k]) * sizeof(float));
        pool_matmul_multi(p, mm, 3, x, cols, n, qbuf);
        for (int k = 0; k < 3; k++)
            cr_assert_arr_eq(y[k], want[k], (size_t)(n * rows[k]) * sizeof(float),
                             "matrix %d, %d threads", k, nth);
        /* exact mode: every matrix through the f32 matmul */
        ops_set_exact(1);
        pool_matmul_multi(p, mm, 3, x, cols, n, qbuf);
        ops_set_exact(0);
        for (int k = 0; k < 2; k++) {
            float *f = falloc(n * rows[k]);
            ops->matmul[dts[k]](&m[k], x, cols, n, f, rows[k], 0, rows[k]);
            cr_assert_arr_eq(y[k], f, (size_t)(n * rows[k]) * sizeof(float), "exact %d", k);
            free(f);
        }
        pool_close(p);
    }
    for (int k = 0; k < 3; k++)
        free(wq[k]), free(y[k]), free(want[k]);
    free(qbuf), free(wf), free(x);
}

/* ---- the other kernels: every ISA vs ref ---------------------------------------------- */

static void assert_close(const float *a, const float *b, int64_t n, double tol, const char *what,
                         const char *isa) {
    double mag = 0;
    for (int64_t i = 0; i < n; i++)
        mag = fmax(mag, fabs((double)b[i]));
    for (int64_t i = 0; i < n; i++)
        cr_assert(fabs((double)a[i] - (double)b[i]) <= tol * (mag + 1e-6), "%s %s [%ld]: %g vs %g",
                  isa, what, (long)i, (double)a[i], (double)b[i]);
}

Test(ops, small_kernels_every_isa) {
    const char *const *isas = ops_available_isas();
    const int64_t lens[] = {1, 7, 17, 128, 256, 1000};
    for (int k = 0; isas[k]; k++) {
        const struct ops_table *T = ops_table_for(isas[k]);
        const char *isa = T->isa;
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            int64_t n = lens[li];
            float *x = falloc(n), *w = falloc(n), *z = falloc(n), *a = falloc(n), *b = falloc(n);
            fill(x, n, 2.0f);
            fill(w, n, 1.0f);
            fill(z, n, 3.0f);
            T->rmsnorm(a, x, w, n, 1e-6f);
            ops_ref.rmsnorm(b, x, w, n, 1e-6f);
            assert_close(a, b, n, TOL_KERNEL, "rmsnorm", isa);
            memcpy(a, x, (size_t)n * 4);
            T->rmsnorm(a, a, NULL, n, 1e-6f); /* aliasing, no weight */
            ops_ref.rmsnorm(b, x, NULL, n, 1e-6f);
            assert_close(a, b, n, TOL_KERNEL, "rmsnorm alias", isa);
            T->gated_rmsnorm(a, x, z, w, n, 1e-6f);
            ops_ref.gated_rmsnorm(b, x, z, w, n, 1e-6f);
            assert_close(a, b, n, TOL_KERNEL, "gated_rmsnorm", isa);
            memcpy(a, x, (size_t)n * 4);
            memcpy(b, x, (size_t)n * 4);
            T->l2norm_scale(a, n, 1e-6f, 0.5f);
            ops_ref.l2norm_scale(b, n, 1e-6f, 0.5f);
            assert_close(a, b, n, TOL_KERNEL, "l2norm_scale", isa);
            T->silu_mul(a, x, z, n);
            ops_ref.silu_mul(b, x, z, n);
            assert_close(a, b, n, TOL_KERNEL, "silu_mul", isa);
            memcpy(a, z, (size_t)n * 4);
            memcpy(b, z, (size_t)n * 4);
            T->add(a, x, n);
            ops_ref.add(b, x, n);
            assert_close(a, b, n, TOL_KERNEL, "add", isa);
            memcpy(a, x, (size_t)n * 4);
            memcpy(b, x, (size_t)n * 4);
            T->softmax(a, n);
            ops_ref.softmax(b, n);
            assert_close(a, b, n, TOL_KERNEL, "softmax", isa);
            if (n >= 2 && n % 2 == 0) {
                memcpy(a, x, (size_t)n * 4);
                memcpy(b, x, (size_t)n * 4);
                T->rope_neox(a, n, 12345, 1e7f);
                ops_ref.rope_neox(b, n, 12345, 1e7f);
                assert_close(a, b, n, TOL_KERNEL, "rope", isa);
            }
            free(x);
            free(w);
            free(z);
            free(a);
            free(b);
        }
    }
}

Test(ops, attention_every_isa) {
    const char *const *isas = ops_available_isas();
    const int64_t ctxs[] = {1, 2, 33, 300}, dims[] = {19, 64, 256};
    for (int k = 0; isas[k]; k++) {
        const struct ops_table *T = ops_table_for(isas[k]);
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
                assert_close(a, b, hd, TOL_KERNEL, "attention", T->isa);
                if (nc == 1) /* one position: the output is its value row */
                    assert_close(b, vc, hd, 1e-6, "attention n_ctx=1", "ref");
                free(q);
                free(kc);
                free(vc);
                free(a);
                free(b);
                free(s);
            }
    }
}

Test(ops, conv1d_every_isa) {
    const int64_t C = 37, K = 4, N = 6;
    float *w = falloc(C * K), *x = falloc(N * C), *st_a = falloc(C * (K - 1)),
          *st_b = falloc(C * (K - 1)), *oa = falloc(N * C), *ob = falloc(N * C);
    fill(w, C * K, 1.0f);
    fill(x, N * C, 1.0f);
    /* hand check of ref on the first token from a zero state: silu(w[3] * x) */
    ops_ref.conv1d_step(ob, st_b, x, w, K, 0, C);
    for (int64_t c = 0; c < C; c++) {
        float v = w[c * K + 3] * x[c];
        cr_assert(fabsf(ob[c] - v / (1.0f + expf(-v))) <= 1e-6f);
        cr_assert_eq(st_b[c * 3 + 2], x[c]);
    }
    const char *const *isas = ops_available_isas();
    for (int k = 0; isas[k]; k++) {
        const struct ops_table *T = ops_table_for(isas[k]);
        memset(st_a, 0, sizeof(float) * (size_t)(C * (K - 1)));
        memset(st_b, 0, sizeof(float) * (size_t)(C * (K - 1)));
        for (int64_t t = 0; t < N; t++) {
            T->conv1d_step(oa + t * C, st_a, x + t * C, w, K, 0, 20);
            T->conv1d_step(oa + t * C, st_a, x + t * C, w, K, 20, C); /* split channel range */
        }
        ops_ref.conv1d_seq(ob, C, st_b, x, C, N, w, K, 0, C);
        assert_close(oa, ob, N * C, TOL_KERNEL, "conv1d step vs seq", T->isa);
        assert_close(st_a, st_b, C * (K - 1), 0, "conv1d state", T->isa);
        /* after N >= K-1 tokens the state holds the last K-1 raw inputs, oldest first */
        for (int64_t c = 0; c < C; c++)
            for (int64_t i = 0; i < K - 1; i++)
                cr_assert_eq(st_b[c * (K - 1) + i], x[(N - (K - 1) + i) * C + c]);
    }
    free(w);
    free(x);
    free(st_a);
    free(st_b);
    free(oa);
    free(ob);
}

/* ---- gated delta rule ------------------------------------------------------------------ */

struct gdn_inputs {
    int64_t n, dk, dv;
    float *q, *k, *v, *g, *beta;
};

static struct gdn_inputs gdn_make(int64_t n, int64_t dk, int64_t dv) {
    struct gdn_inputs in = {n,         dk,       dv, falloc(n * dk), falloc(n * dk), falloc(n * dv),
                            falloc(n), falloc(n)};
    fill(in.q, n * dk, 1.0f);
    fill(in.k, n * dk, 1.0f);
    fill(in.v, n * dv, 1.0f);
    for (int64_t t = 0; t < n; t++) {
        ops_ref.l2norm_scale(in.q + t * dk, dk, 1e-6f, 1.0f / sqrtf((float)dk));
        ops_ref.l2norm_scale(in.k + t * dk, dk, 1e-6f, 1.0f);
        in.g[t] = -0.3f * (frand() + 1.0f); /* log decay in (-0.6, 0] */
        in.beta[t] = 0.5f * (frand() + 1.0f);
    }
    return in;
}

static void gdn_free(struct gdn_inputs *in) {
    free(in->q);
    free(in->k);
    free(in->v);
    free(in->g);
    free(in->beta);
}

Test(ops, delta_rule_step_by_hand) {
    /* zero state: S = beta k v^T after one token, so o = beta (q.k) v */
    const int64_t dk = 5, dv = 3;
    float S[15] = {0}, q[5] = {1, 2, 0, 0, 1}, k[5] = {0.5f, 0.5f, 0.5f, 0.5f, 0},
          v[3] = {1, -2, 3}, o[3];
    ops_ref.delta_rule_step(S, q, k, v, 0.9f, 0.5f, o, dk, dv);
    for (int c = 0; c < 3; c++) {
        cr_assert(fabsf(o[c] - 0.5f * 1.5f * v[c]) < 1e-6f);
        for (int i = 0; i < 5; i++) /* transposed layout: S[c*dk + i] = beta k_i v_c */
            cr_assert(fabsf(S[c * dk + i] - 0.5f * k[i] * v[c]) < 1e-6f);
    }
    /* second token with k orthogonal to the first: the decay shows on the old part */
    float k2[5] = {0, 0, 0, 0, 1}, o2[3];
    ops_ref.delta_rule_step(S, q, k2, v, 0.5f, 1.0f, o2, dk, dv);
    for (int c = 0; c < 3; c++) /* 0.5 * old read (0.75 v) + new (q.k2 = 1) * v */
        cr_assert(fabsf(o2[c] - (0.5f * 0.75f * v[c] + v[c])) < 1e-5f, "c=%d %g", c, (double)o2[c]);
}

Test(ops, delta_rule_step_every_isa) {
    const int64_t shapes[][2] = {{128, 128}, {17, 5}, {64, 96}};
    const char *const *isas = ops_available_isas();
    for (int k = 0; isas[k]; k++) {
        const struct ops_table *T = ops_table_for(isas[k]);
        for (int s = 0; s < 3; s++) {
            int64_t dk = shapes[s][0], dv = shapes[s][1], n = 9;
            struct gdn_inputs in = gdn_make(n, dk, dv);
            float *Sa = falloc(dk * dv), *Sb = falloc(dk * dv), *oa = falloc(dv), *ob = falloc(dv);
            for (int64_t t = 0; t < n; t++) {
                T->delta_rule_step(Sa, in.q + t * dk, in.k + t * dk, in.v + t * dv, expf(in.g[t]),
                                   in.beta[t], oa, dk, dv);
                ops_ref.delta_rule_step(Sb, in.q + t * dk, in.k + t * dk, in.v + t * dv,
                                        expf(in.g[t]), in.beta[t], ob, dk, dv);
                assert_close(oa, ob, dv, TOL_KERNEL, "delta_rule_step o", T->isa);
            }
            assert_close(Sa, Sb, dk * dv, TOL_KERNEL, "delta_rule_step S", T->isa);
            gdn_free(&in);
            free(Sa);
            free(Sb);
            free(oa);
            free(ob);
        }
    }
}

Test(ops, delta_rule_chunk_equals_steps) {
    const int64_t ns[] = {1, 5, 64, 130};
    const int64_t dk = 128, dv = 128;
    const char *const *isas = ops_available_isas();
    for (size_t ni = 0; ni < 4; ni++) {
        int64_t n = ns[ni];
        struct gdn_inputs in = gdn_make(n, dk, dv);
        float *S0 = falloc(dk * dv);
        fill(S0, dk * dv, 0.3f); /* nonzero incoming state */
        float *Sb = falloc(dk * dv), *ob = falloc(n * dv);
        memcpy(Sb, S0, sizeof(float) * (size_t)(dk * dv));
        for (int64_t t = 0; t < n; t++)
            ops_ref.delta_rule_step(Sb, in.q + t * dk, in.k + t * dk, in.v + t * dv, expf(in.g[t]),
                                    in.beta[t], ob + t * dv, dk, dv);
        float *scratch = falloc((int64_t)delta_rule_chunk_scratch(dk, dv));
        for (int k = 0; isas[k]; k++) {
            const struct ops_table *T = ops_table_for(isas[k]);
            float *Sa = falloc(dk * dv), *oa = falloc(n * dv);
            memcpy(Sa, S0, sizeof(float) * (size_t)(dk * dv));
            T->delta_rule_chunk(Sa, in.q, dk, in.k, dk, in.v, dv, in.g, in.beta, oa, dv, n, dk, dv,
                                scratch);
            for (int64_t i = 0; i < n * dv; i++)
                cr_assert(fabsf(oa[i] - ob[i]) <= TOL_CHUNK, "%s n=%ld o[%ld]: %g vs %g", T->isa,
                          (long)n, (long)i, (double)oa[i], (double)ob[i]);
            for (int64_t i = 0; i < dk * dv; i++)
                cr_assert(fabsf(Sa[i] - Sb[i]) <= TOL_CHUNK, "%s n=%ld S[%ld]: %g vs %g", T->isa,
                          (long)n, (long)i, (double)Sa[i], (double)Sb[i]);
            free(Sa);
            free(oa);
        }
        free(scratch);
        free(S0);
        free(Sb);
        free(ob);
        gdn_free(&in);
    }
}

Test(ops, rope_by_hand) {
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[8];
    memcpy(y, x, sizeof x);
    ops_ref.rope_neox(y, 8, 0, 1e7f);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(y[i], x[i], "position 0 is the identity");
    memcpy(y, x, sizeof x);
    ops_ref.rope_neox(y, 4, 3, 100.0f); /* pairs (0,2) angle 3, (1,3) angle 3/10; dims 4.. kept */
    double a0 = 3.0, a1 = 3.0 * pow(100.0, -0.5);
    cr_assert(fabs((double)y[0] - (1 * cos(a0) - 3 * sin(a0))) < 1e-6);
    cr_assert(fabs((double)y[2] - (1 * sin(a0) + 3 * cos(a0))) < 1e-6);
    cr_assert(fabs((double)y[1] - (2 * cos(a1) - 4 * sin(a1))) < 1e-6);
    cr_assert(fabs((double)y[3] - (2 * sin(a1) + 4 * cos(a1))) < 1e-6);
    for (int i = 4; i < 8; i++)
        cr_assert_eq(y[i], x[i]);
}
