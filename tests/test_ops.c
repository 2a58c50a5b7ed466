/* tests/test_ops.c: quant formats against the spec formulas (written out independently here),
 * fp16/bf16 edge cases, quantize->dequantize error bounds, and every kernel of every ISA this
 * CPU has against ops_ref (the checks of tests/ops_checks.c, shared with the AArch64 cross
 * test), including the chunked delta rule against token-by-token steps. */
#include "ops/ops.h"
#include "ops/quant.h"
#include "ops/repack.h"
#include "tests/ops_checks.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* quantize -> dequantize relative RMS error on uniform [-1, 1) data, per dtype. */
static const double tol_roundtrip[DT_COUNT] = {
    [DT_F32] = 0.0,   [DT_F16] = 1e-3,  [DT_BF16] = 5e-3, [DT_Q8_0] = 0.008,
    [DT_Q4_0] = 0.10, [DT_Q4_1] = 0.08, [DT_Q5_0] = 0.05, [DT_Q5_1] = 0.04,
    [DT_Q4_K] = 0.08, [DT_Q5_K] = 0.04, [DT_Q6_K] = 0.02,
};

#define all_types ops_check_types
#define N_TYPES   ops_check_n_types
#define frand     ops_check_frand
#define fill      ops_check_fill
#define falloc    ops_check_falloc
static uint8_t brand(void) {
    return (uint8_t)(ops_check_rand() >> 24);
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

/* ---- every kernel of every ISA vs ref (tests/ops_checks.c) ------------------------------ */

static void expect_pass(const struct ops_check *c) {
    cr_expect(c->n_failed == 0, "%s: %d failed: %s", c->name, c->n_failed, c->msg);
}

/* Runs check on every table this CPU has (ref included: it must agree with itself and with
 * the exact sums the checks compute independently). */
#define EVERY_ISA(T)                                                                               \
    for (const char *const *isa_ = ops_available_isas(); *isa_; isa_++)                            \
        for (const struct ops_table *T = ops_table_for(*isa_); T; T = NULL)

Test(ops, matmul_every_isa_and_dtype) {
    struct ops_check c;
    EVERY_ISA(T) {
        for (size_t k = 0; k < ops_check_n_types; k++) {
            ops_check_matmul(T, ops_check_types[k], &c);
            expect_pass(&c);
        }
    }
}

Test(ops, matmul_q_every_isa_and_dtype) {
    struct ops_check c;
    EVERY_ISA(T) {
        for (size_t k = 0; k < ops_check_n_q_types; k++) {
            ops_check_matmul_q(T, ops_check_q_types[k], &c);
            expect_pass(&c);
        }
        for (size_t k = 0; k < N_TYPES; k++) /* float types have no quantized path */
            if (ops_act_dtype(all_types[k]) == DT_F32) cr_expect_null(T->matmul_q[all_types[k]]);
    }
}

Test(ops, matmul_q_extreme_codes) {
    struct ops_check c;
    EVERY_ISA(T) {
        ops_check_matmul_q_extreme(T, &c);
        expect_pass(&c);
    }
}

Test(ops, matmul_x16_every_isa) {
    struct ops_check c;
    EVERY_ISA(T) {
        ops_check_matmul_x16(T, &c);
        expect_pass(&c);
    }
    cr_expect(!dtype_supported(DT_Q4_K_X16), "an in-memory layout is no file type");
    cr_expect(!dtype_supported(DT_Q5_K_X16), "an in-memory layout is no file type");
    cr_expect_eq(dtype_from_name("q4_k_x16"), -1);
    cr_expect_eq(dtype_from_name("q5_k_x16"), -1);
    cr_expect(!dtype_supported(DT_Q6_K_X16), "an in-memory layout is no file type");
    cr_expect_eq(dtype_from_name("q6_k_x16"), -1);
}

/* The integer kernels of the x16 layouts (AVX2: int16 sums scaled by vpmaddwd; AVX-512: dot
 * products scaled by vpmulld) keep exact integer sums per sub-block and the same float step per
 * block, so every table that has one gives the same bits. */
Test(ops, matmul_x16_same_bits_on_every_kernel_isa) {
    const enum dtype srcs[] = {DT_Q4_K, DT_Q5_K, DT_Q6_K};
    const int64_t rows = 48, cols = 3 * QK_K, n = 11, ldq = 2 * 3 * 300;
    int kernels = 0;
    EVERY_ISA(T) kernels += T->matmul_q[DT_Q4_K_X16] != ops_ref.matmul_q[DT_Q4_K_X16];
    if (kernels < 2)
        cr_skip_test("this CPU has %d table with x16 kernels: nothing to compare", kernels);
    srand(17);
    for (int k = 0; k < 3; k++) {
        enum dtype xdt = repack_x16_dtype(srcs[k]);
        size_t rb = dtype_row_bytes(srcs[k], cols);
        float *wf = malloc(sizeof(float) * rows * cols), *x = malloc(sizeof(float) * n * cols);
        float *y0 = malloc(sizeof(float) * n * rows), *y = malloc(sizeof(float) * n * rows);
        uint8_t *wq = malloc(rows * rb), *xq = malloc(n * ldq);
        for (int64_t i = 0; i < rows * cols; i++)
            wf[i] = (float)(rand() % 2001 - 1000) / 1000.0f;
        for (int64_t i = 0; i < n * cols; i++)
            x[i] = (float)(rand() % 2001 - 1000) / 100.0f;
        for (int64_t r = 0; r < rows; r++)
            ops_ref.quantize_row[srcs[k]](wf + r * cols, wq + r * rb, cols);
        for (int64_t t = 0; t < n; t++)
            ops_ref.quantize_act[DT_Q8_K](x + t * cols, xq + t * ldq, cols);
        struct mat m = {srcs[k], wq, rows, cols, rb};
        cr_assert_eq(repack_x16(&m, NULL), 0);
        const char *first = NULL;
        EVERY_ISA(T) {
            if (T->matmul_q[xdt] == ops_ref.matmul_q[xdt]) continue; /* restores GGUF blocks */
            float *out = first ? y : y0;
            T->matmul_q[xdt](&m, xq, ldq, n, out, rows, 0, rows);
            if (!first) {
                first = T->isa;
                continue;
            }
            cr_expect_eq(memcmp(y0, y, sizeof(float) * n * rows), 0, "%s: %s and %s differ",
                         dtype_name(xdt), first, T->isa);
        }
        free(wf), free(x), free(y0), free(y), free(wq), free(xq);
    }
}

Test(ops, quantize_act_bit_exact_every_isa) {
    struct ops_check c;
    EVERY_ISA(T) {
        ops_check_quantize_act(T, DT_Q8_0, &c);
        expect_pass(&c);
        ops_check_quantize_act(T, DT_Q8_K, &c);
        expect_pass(&c);
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

/* pool_matmul_multi with the best table of this CPU. */
Test(ops, matmul_multi_shared_input) {
    bt_err e = {0};
    cr_assert_eq(ops_init(NULL, &e), 0);
    struct ops_check c;
    ops_check_matmul_multi(&c);
    expect_pass(&c);
}

Test(ops, small_kernels_every_isa) {
    struct ops_check c;
    EVERY_ISA(T) {
        ops_check_small_kernels(T, &c);
        expect_pass(&c);
    }
}

Test(ops, attention_every_isa) {
    struct ops_check c;
    EVERY_ISA(T) {
        ops_check_attention(T, &c);
        expect_pass(&c);
    }
}

Test(ops, conv1d_every_isa) {
    struct ops_check c;
    EVERY_ISA(T) {
        ops_check_conv1d(T, &c);
        expect_pass(&c);
    }
}

/* ---- gated delta rule ------------------------------------------------------------------ */

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
    struct ops_check c;
    EVERY_ISA(T) {
        ops_check_delta_rule_step(T, &c);
        expect_pass(&c);
    }
}

Test(ops, delta_rule_chunk_equals_steps) {
    struct ops_check c;
    EVERY_ISA(T) {
        ops_check_delta_rule_chunk(T, &c);
        expect_pass(&c);
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
