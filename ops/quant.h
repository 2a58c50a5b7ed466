/* ops/quant.h: GGUF weight block layouts (spec §12.2, ggml-common.h), exact scalar fp16/bf16
 * conversions, and row quantize/dequantize for every dtype baton reads or writes.
 *
 * Blocks are little-endian byte layouts read straight from mapped files; the structs only name
 * the fields (all members are bytes or u16, so alignment is 2 and sizes match ggml exactly).
 * A row of n elements is n / block consecutive blocks. The functions are pure and thread-safe;
 * ops_ref exposes them as dequantize_row[] / quantize_row[]. Quantizers use simple min/max
 * scale choices (not llama.cpp's search): round-trippable, decent error, not bit-identical to
 * llama-quantize. */
#ifndef BT_OPS_QUANT_H
#define BT_OPS_QUANT_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define QK4_0 32
#define QK8_0 32
#define QK_K  256

struct block_q4_0 {
    uint16_t d;     /* f16 scale */
    uint8_t qs[16]; /* x[j] = d * ((qs[j] & 15) - 8), x[j+16] = d * ((qs[j] >> 4) - 8) */
};
struct block_q4_1 {
    uint16_t d, m;  /* f16 scale, f16 minimum: x = d * q + m */
    uint8_t qs[16]; /* nibbles as in q4_0 */
};
struct block_q5_0 {
    uint16_t d;     /* x = d * (q - 16), q 5 bits */
    uint8_t qh[4];  /* bit j of the little-endian u32 = fifth bit of element j */
    uint8_t qs[16]; /* low nibbles as in q4_0 */
};
struct block_q5_1 {
    uint16_t d, m; /* x = d * q + m */
    uint8_t qh[4];
    uint8_t qs[16];
};
struct block_q8_0 {
    uint16_t d; /* x = d * qs[j] */
    int8_t qs[32];
};
struct block_q4_k {
    uint16_t d, dmin;   /* f16 super-scales of the 6-bit sub-block scales and mins */
    uint8_t scales[12]; /* 8 (scale, min) pairs of 6 bits, packed (quant_scale_min_k4) */
    uint8_t qs[128];    /* chunk c of 64: qs[32c+l] low nibble = x[64c+l], high = x[64c+32+l] */
};
struct block_q5_k {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[32]; /* bit 2c of qh[l] -> x[64c+l], bit 2c+1 -> x[64c+32+l] */
    uint8_t qs[128];
};
struct block_q6_k {
    uint8_t ql[128];   /* low 4 bits */
    uint8_t qh[64];    /* high 2 bits */
    int8_t scales[16]; /* one signed scale per 16 values */
    uint16_t d;        /* f16, last */
};

/* Activations for the K-quant dot products (spec §12.3): never stored in files. */
struct block_q8_k {
    float d;           /* x = d * qs[j] */
    int8_t qs[256];    /* d = max|x| / 127 (sign kept so the largest maps to -127 or 127) */
    int16_t bsums[16]; /* sum of qs over each 16 values: the K-quant min terms use them */
};

_Static_assert(sizeof(struct block_q4_0) == 18, "q4_0");
_Static_assert(sizeof(struct block_q4_1) == 20, "q4_1");
_Static_assert(sizeof(struct block_q5_0) == 22, "q5_0");
_Static_assert(sizeof(struct block_q5_1) == 24, "q5_1");
_Static_assert(sizeof(struct block_q8_0) == 34, "q8_0");
_Static_assert(sizeof(struct block_q4_k) == 144, "q4_k");
_Static_assert(sizeof(struct block_q5_k) == 176, "q5_k");
_Static_assert(sizeof(struct block_q6_k) == 210, "q6_k");
_Static_assert(sizeof(struct block_q8_k) == 292, "q8_k");
/* Fields of a Q8_K block read through bytes: activation rows have any byte stride, so a block
 * need not be aligned for its float and int16 members (nor may it be accessed as a struct). */
static inline float q8k_d(const void *blk) {
    float d;
    memcpy(&d, (const unsigned char *)blk + offsetof(struct block_q8_k, d), sizeof d);
    return d;
}
static inline const int8_t *q8k_qs(const void *blk) {
    return (const int8_t *)((const unsigned char *)blk + offsetof(struct block_q8_k, qs));
}
static inline int q8k_bsum(const void *blk, int g) {
    int16_t v;
    memcpy(&v, (const unsigned char *)blk + offsetof(struct block_q8_k, bsums) + 2 * (size_t)g,
           sizeof v);
    return v;
}

static inline uint32_t quant_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float quant_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* IEEE binary16 -> binary32, exact for every input (subnormals, inf, NaN payloads kept). */
static inline float fp16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 31u, man = h & 0x3ffu;
    if (exp == 0) /* zero or subnormal: man * 2^-24, exact in binary32 */
        return sign ? -((float)man * 0x1p-24f) : (float)man * 0x1p-24f;
    if (exp == 31) return quant_bits_f32(sign | 0x7f800000u | (man << 13));
    return quant_bits_f32(sign | ((exp + 112u) << 23) | (man << 13)); /* rebias 15 -> 127 */
}

/* binary32 -> binary16, round to nearest even; overflow -> inf, NaN stays NaN (quiet). */
static inline uint16_t f32_to_fp16(float f) {
    uint32_t x = quant_f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) /* inf or NaN; force the quiet bit so a NaN never becomes inf */
        return (uint16_t)(sign | 0x7c00u | (x > 0x7f800000u ? 0x200u | ((x >> 13) & 0x3ffu) : 0u));
    if (x >= 0x477ff000u) /* >= 65520 = halfway between 65504 and 2^16: rounds to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (x >= 0x38800000u) { /* normal half (>= 2^-14): round the 13 dropped bits, carry ok */
        x += 0xfffu + ((x >> 13) & 1u);
        return (uint16_t)(sign | ((x - 0x38000000u) >> 13));
    }
    /* subnormal half: value * 2^24 is exact, rint rounds half to even (default mode) */
    float a = quant_bits_f32(x) * 0x1p24f;
    return (uint16_t)(sign | (uint16_t)rintf(a));
}

static inline float bf16_to_f32(uint16_t b) {
    return quant_bits_f32((uint32_t)b << 16);
}

/* binary32 -> bfloat16, round to nearest even; NaN stays NaN (quiet). */
static inline uint16_t f32_to_bf16(float f) {
    uint32_t x = quant_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* The 6-bit (scale, min) of sub-block s in [0, 8) of a q4_k / q5_k block (spec §12.2). */
static inline void quant_scale_min_k4(int s, const uint8_t *S, uint8_t *sc, uint8_t *mn) {
    if (s < 4) {
        *sc = S[s] & 63;
        *mn = S[s + 4] & 63;
    } else {
        *sc = (uint8_t)((S[s + 4] & 15) | ((S[s - 4] >> 6) << 4));
        *mn = (uint8_t)((S[s + 4] >> 4) | ((S[s] >> 6) << 4));
    }
}

/* Rows of n elements (n a multiple of the type's block). */
void dequantize_row_f32(const void *restrict src, float *restrict dst, int64_t n);
void dequantize_row_f16(const void *restrict src, float *restrict dst, int64_t n);
void dequantize_row_bf16(const void *restrict src, float *restrict dst, int64_t n);
void dequantize_row_q4_0(const void *restrict src, float *restrict dst, int64_t n);
void dequantize_row_q4_1(const void *restrict src, float *restrict dst, int64_t n);
void dequantize_row_q5_0(const void *restrict src, float *restrict dst, int64_t n);
void dequantize_row_q5_1(const void *restrict src, float *restrict dst, int64_t n);
void dequantize_row_q8_0(const void *restrict src, float *restrict dst, int64_t n);
void dequantize_row_q4_k(const void *restrict src, float *restrict dst, int64_t n);
void dequantize_row_q5_k(const void *restrict src, float *restrict dst, int64_t n);
void dequantize_row_q6_k(const void *restrict src, float *restrict dst, int64_t n);
void dequantize_row_q8_k(const void *restrict src, float *restrict dst, int64_t n);

void quantize_row_f32(const float *restrict src, void *restrict dst, int64_t n);
void quantize_row_f16(const float *restrict src, void *restrict dst, int64_t n);
void quantize_row_bf16(const float *restrict src, void *restrict dst, int64_t n);
void quantize_row_q4_0(const float *restrict src, void *restrict dst, int64_t n);
void quantize_row_q4_1(const float *restrict src, void *restrict dst, int64_t n);
void quantize_row_q5_0(const float *restrict src, void *restrict dst, int64_t n);
void quantize_row_q5_1(const float *restrict src, void *restrict dst, int64_t n);
void quantize_row_q8_0(const float *restrict src, void *restrict dst, int64_t n);
void quantize_row_q4_k(const float *restrict src, void *restrict dst, int64_t n);
void quantize_row_q5_k(const float *restrict src, void *restrict dst, int64_t n);
void quantize_row_q6_k(const float *restrict src, void *restrict dst, int64_t n);
/* Activation quantizer of the K-quant dot products: per 256 values, d = absmax / 127 as a
 * float, codes round(x / d) in [-127, 127], and the 16 partial sums. */
void quantize_row_q8_k(const float *restrict src, void *restrict dst, int64_t n);
/* Q8_0 activation quantizer: like quantize_row_q8_0, but the codes are round(x * 127 / amax)
 * (half away from zero) against the unrounded scale; d stored as f16. */
void quantize_act_q8_0(const float *restrict src, void *restrict dst, int64_t n);

#endif
