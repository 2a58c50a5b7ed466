/* ops/quant.c: see quant.h. Dequantizers are the formulas of spec §12.2 written out; the
 * quantizers are their inverses with min/max scale choices. */
#include "ops/quant.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

/* round(v) clamped to [lo, hi]; NaN maps to lo so garbage input cannot produce UB. */
static int qround(float v, int lo, int hi) {
    if (!(v >= (float)lo)) return lo;
    if (v >= (float)hi) return hi;
    return (int)lrintf(v);
}

/* The element of largest magnitude, with its sign (0 for an all-zero span). */
static float signed_absmax(const float *x, int n) {
    float best = 0.0f, amax = 0.0f;
    for (int j = 0; j < n; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            best = x[j];
        }
    return best;
}

/* ---- dequantize ------------------------------------------------------------------------ */

void dequantize_row_f32(const void *restrict src, float *restrict dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void dequantize_row_f16(const void *restrict src, float *restrict dst, int64_t n) {
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = fp16_to_f32(h[i]);
}

void dequantize_row_bf16(const void *restrict src, float *restrict dst, int64_t n) {
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = bf16_to_f32(h[i]);
}

void dequantize_row_q4_0(const void *restrict src, float *restrict dst, int64_t n) {
    const struct block_q4_0 *b = src;
    for (int64_t i = 0; i < n / 32; i++, b++, dst += 32) {
        float d = fp16_to_f32(b->d);
        for (int j = 0; j < 16; j++) {
            dst[j] = d * (float)((b->qs[j] & 15) - 8);
            dst[j + 16] = d * (float)((b->qs[j] >> 4) - 8);
        }
    }
}

void dequantize_row_q4_1(const void *restrict src, float *restrict dst, int64_t n) {
    const struct block_q4_1 *b = src;
    for (int64_t i = 0; i < n / 32; i++, b++, dst += 32) {
        float d = fp16_to_f32(b->d), m = fp16_to_f32(b->m);
        for (int j = 0; j < 16; j++) {
            dst[j] = d * (float)(b->qs[j] & 15) + m;
            dst[j + 16] = d * (float)(b->qs[j] >> 4) + m;
        }
    }
}

static uint32_t load_u32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void dequantize_row_q5_0(const void *restrict src, float *restrict dst, int64_t n) {
    const struct block_q5_0 *b = src;
    for (int64_t i = 0; i < n / 32; i++, b++, dst += 32) {
        float d = fp16_to_f32(b->d);
        uint32_t qh = load_u32le(b->qh);
        for (int j = 0; j < 16; j++) {
            int lo = (b->qs[j] & 15) | (int)((qh >> j) & 1u) << 4;
            int hi = (b->qs[j] >> 4) | (int)((qh >> (j + 16)) & 1u) << 4;
            dst[j] = d * (float)(lo - 16);
            dst[j + 16] = d * (float)(hi - 16);
        }
    }
}

void dequantize_row_q5_1(const void *restrict src, float *restrict dst, int64_t n) {
    const struct block_q5_1 *b = src;
    for (int64_t i = 0; i < n / 32; i++, b++, dst += 32) {
        float d = fp16_to_f32(b->d), m = fp16_to_f32(b->m);
        uint32_t qh = load_u32le(b->qh);
        for (int j = 0; j < 16; j++) {
            int lo = (b->qs[j] & 15) | (int)((qh >> j) & 1u) << 4;
            int hi = (b->qs[j] >> 4) | (int)((qh >> (j + 16)) & 1u) << 4;
            dst[j] = d * (float)lo + m;
            dst[j + 16] = d * (float)hi + m;
        }
    }
}

void dequantize_row_q8_0(const void *restrict src, float *restrict dst, int64_t n) {
    const struct block_q8_0 *b = src;
    for (int64_t i = 0; i < n / 32; i++, b++, dst += 32) {
        float d = fp16_to_f32(b->d);
        for (int j = 0; j < 32; j++)
            dst[j] = d * (float)b->qs[j];
    }
}

void dequantize_row_q4_k(const void *restrict src, float *restrict dst, int64_t n) {
    const struct block_q4_k *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b++, dst += QK_K) {
        float d = fp16_to_f32(b->d), dmin = fp16_to_f32(b->dmin);
        for (int c = 0; c < 4; c++) {
            const uint8_t *Q = b->qs + 32 * c;
            uint8_t sc0, mn0, sc1, mn1;
            quant_scale_min_k4(2 * c, b->scales, &sc0, &mn0);
            quant_scale_min_k4(2 * c + 1, b->scales, &sc1, &mn1);
            float d0 = d * (float)sc0, m0 = dmin * (float)mn0;
            float d1 = d * (float)sc1, m1 = dmin * (float)mn1;
            for (int l = 0; l < 32; l++) {
                dst[64 * c + l] = d0 * (float)(Q[l] & 15) - m0;
                dst[64 * c + 32 + l] = d1 * (float)(Q[l] >> 4) - m1;
            }
        }
    }
}

void dequantize_row_q5_k(const void *restrict src, float *restrict dst, int64_t n) {
    const struct block_q5_k *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b++, dst += QK_K) {
        float d = fp16_to_f32(b->d), dmin = fp16_to_f32(b->dmin);
        for (int c = 0; c < 4; c++) {
            const uint8_t *Q = b->qs + 32 * c;
            uint8_t sc0, mn0, sc1, mn1;
            quant_scale_min_k4(2 * c, b->scales, &sc0, &mn0);
            quant_scale_min_k4(2 * c + 1, b->scales, &sc1, &mn1);
            float d0 = d * (float)sc0, m0 = dmin * (float)mn0;
            float d1 = d * (float)sc1, m1 = dmin * (float)mn1;
            for (int l = 0; l < 32; l++) {
                int q0 = (Q[l] & 15) + 16 * ((b->qh[l] >> (2 * c)) & 1);
                int q1 = (Q[l] >> 4) + 16 * ((b->qh[l] >> (2 * c + 1)) & 1);
                dst[64 * c + l] = d0 * (float)q0 - m0;
                dst[64 * c + 32 + l] = d1 * (float)q1 - m1;
            }
        }
    }
}

void dequantize_row_q6_k(const void *restrict src, float *restrict dst, int64_t n) {
    const struct block_q6_k *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b++, dst += QK_K) {
        float d = fp16_to_f32(b->d);
        for (int h = 0; h < 2; h++) {
            const uint8_t *L = b->ql + 64 * h, *H = b->qh + 32 * h;
            const int8_t *Sc = b->scales + 8 * h;
            float *y = dst + 128 * h;
            for (int l = 0; l < 32; l++) {
                int t = l / 16;
                int q1 = ((L[l] & 15) | ((H[l] >> 0) & 3) << 4) - 32;
                int q2 = ((L[l + 32] & 15) | ((H[l] >> 2) & 3) << 4) - 32;
                int q3 = ((L[l] >> 4) | ((H[l] >> 4) & 3) << 4) - 32;
                int q4 = ((L[l + 32] >> 4) | ((H[l] >> 6) & 3) << 4) - 32;
                y[l] = d * (float)Sc[t] * (float)q1;
                y[l + 32] = d * (float)Sc[t + 2] * (float)q2;
                y[l + 64] = d * (float)Sc[t + 4] * (float)q3;
                y[l + 96] = d * (float)Sc[t + 6] * (float)q4;
            }
        }
    }
}

/* ---- quantize -------------------------------------------------------------------------- */

void quantize_row_f32(const float *restrict src, void *restrict dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void quantize_row_f16(const float *restrict src, void *restrict dst, int64_t n) {
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i++)
        h[i] = f32_to_fp16(src[i]);
}

void quantize_row_bf16(const float *restrict src, void *restrict dst, int64_t n) {
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i++)
        h[i] = f32_to_bf16(src[i]);
}

/* The stored (f16-rounded) value of a scale: quantizing against it, not the exact scale, keeps
 * the rounding error of d out of the codes. */
static float f16_round(float v, uint16_t *bits) {
    *bits = f32_to_fp16(v);
    return fp16_to_f32(*bits);
}

void quantize_row_q8_0(const float *restrict src, void *restrict dst, int64_t n) {
    struct block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / 32; i++, b++, src += 32) {
        float amax = fabsf(signed_absmax(src, 32));
        float d = f16_round(amax / 127.0f, &b->d);
        float id = d > 0.0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < 32; j++)
            b->qs[j] = (int8_t)qround(src[j] * id, -127, 127);
    }
}

/* Symmetric 4/5-bit blocks: the largest-magnitude value maps to -2^(bits-1) exactly. */
static void quantize_sym(const float *x, int bits, uint16_t *dbits, int *q) {
    int half = 1 << (bits - 1);
    float d = f16_round(signed_absmax(x, 32) / -(float)half, dbits);
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; j++)
        q[j] = qround(x[j] * id + (float)half, 0, 2 * half - 1);
}

/* Asymmetric 4/5-bit blocks: x = d * q + m with m = min, d = (max - min) / (2^bits - 1). */
static void quantize_asym(const float *x, int bits, uint16_t *dbits, uint16_t *mbits, int *q) {
    float mn = x[0], mx = x[0];
    for (int j = 1; j < 32; j++) {
        mn = fminf(mn, x[j]);
        mx = fmaxf(mx, x[j]);
    }
    int top = (1 << bits) - 1;
    float d = f16_round((mx - mn) / (float)top, dbits);
    float m = f16_round(mn, mbits);
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; j++)
        q[j] = qround((x[j] - m) * id, 0, top);
}

static void pack_nibbles(const int *q, uint8_t *qs) {
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)((q[j] & 15) | (q[j + 16] & 15) << 4);
}

static void pack_high_bits(const int *q, uint8_t *qh) {
    uint32_t h = 0;
    for (int j = 0; j < 32; j++)
        h |= (uint32_t)((q[j] >> 4) & 1) << j;
    for (int k = 0; k < 4; k++)
        qh[k] = (uint8_t)(h >> (8 * k));
}

void quantize_row_q4_0(const float *restrict src, void *restrict dst, int64_t n) {
    struct block_q4_0 *b = dst;
    int q[32];
    for (int64_t i = 0; i < n / 32; i++, b++, src += 32) {
        quantize_sym(src, 4, &b->d, q);
        pack_nibbles(q, b->qs);
    }
}

void quantize_row_q5_0(const float *restrict src, void *restrict dst, int64_t n) {
    struct block_q5_0 *b = dst;
    int q[32];
    for (int64_t i = 0; i < n / 32; i++, b++, src += 32) {
        quantize_sym(src, 5, &b->d, q);
        pack_nibbles(q, b->qs);
        pack_high_bits(q, b->qh);
    }
}

void quantize_row_q4_1(const float *restrict src, void *restrict dst, int64_t n) {
    struct block_q4_1 *b = dst;
    int q[32];
    for (int64_t i = 0; i < n / 32; i++, b++, src += 32) {
        quantize_asym(src, 4, &b->d, &b->m, q);
        pack_nibbles(q, b->qs);
    }
}

void quantize_row_q5_1(const float *restrict src, void *restrict dst, int64_t n) {
    struct block_q5_1 *b = dst;
    int q[32];
    for (int64_t i = 0; i < n / 32; i++, b++, src += 32) {
        quantize_asym(src, 5, &b->d, &b->m, q);
        pack_nibbles(q, b->qs);
        pack_high_bits(q, b->qh);
    }
}

/* Inverse of quant_scale_min_k4: packs eight 6-bit (scale, min) pairs into 12 bytes. */
static void pack_scale_min_k4(const int *sc, const int *mn, uint8_t *S) {
    for (int s = 0; s < 4; s++) {
        S[s] = (uint8_t)((sc[s] & 63) | (sc[s + 4] >> 4) << 6);
        S[s + 4] = (uint8_t)((mn[s] & 63) | (mn[s + 4] >> 4) << 6);
        S[s + 8] = (uint8_t)((sc[s + 4] & 15) | (mn[s + 4] & 15) << 4);
    }
}

/* One q4_k / q5_k super-block: per 32-value sub-block x ~ scale * q - min with min >= 0
 * (the offset may only lower values, as in the format), then the 8 scales and 8 mins are
 * themselves quantized to 6 bits against the f16 super-scales d and dmin. */
static void quantize_k4(const float *x, int bits, uint16_t *dbits, uint16_t *dminbits, uint8_t *S,
                        int *q) {
    int top = (1 << bits) - 1;
    float scale[8], minv[8], max_scale = 0.0f, max_min = 0.0f;
    for (int s = 0; s < 8; s++) {
        const float *xs = x + 32 * s;
        float mn = 0.0f, mx = xs[0];
        for (int j = 0; j < 32; j++) {
            mn = fminf(mn, xs[j]);
            mx = fmaxf(mx, xs[j]);
        }
        scale[s] = (mx - mn) / (float)top;
        minv[s] = -mn;
        max_scale = fmaxf(max_scale, scale[s]);
        max_min = fmaxf(max_min, minv[s]);
    }
    float d = f16_round(max_scale / 63.0f, dbits);
    float dmin = f16_round(max_min / 63.0f, dminbits);
    int sc[8], mn6[8];
    for (int s = 0; s < 8; s++) {
        sc[s] = d > 0.0f ? qround(scale[s] / d, 0, 63) : 0;
        mn6[s] = dmin > 0.0f ? qround(minv[s] / dmin, 0, 63) : 0;
        float es = d * (float)sc[s], em = dmin * (float)mn6[s];
        float ie = es > 0.0f ? 1.0f / es : 0.0f;
        for (int j = 0; j < 32; j++)
            q[32 * s + j] = qround((x[32 * s + j] + em) * ie, 0, top);
    }
    pack_scale_min_k4(sc, mn6, S);
}

void quantize_row_q4_k(const float *restrict src, void *restrict dst, int64_t n) {
    struct block_q4_k *b = dst;
    int q[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, b++, src += QK_K) {
        quantize_k4(src, 4, &b->d, &b->dmin, b->scales, q);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                b->qs[32 * c + l] = (uint8_t)(q[64 * c + l] | q[64 * c + 32 + l] << 4);
    }
}

void quantize_row_q5_k(const float *restrict src, void *restrict dst, int64_t n) {
    struct block_q5_k *b = dst;
    int q[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, b++, src += QK_K) {
        quantize_k4(src, 5, &b->d, &b->dmin, b->scales, q);
        memset(b->qh, 0, sizeof b->qh);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                int q0 = q[64 * c + l], q1 = q[64 * c + 32 + l];
                b->qs[32 * c + l] = (uint8_t)((q0 & 15) | (q1 & 15) << 4);
                b->qh[l] |= (uint8_t)(((q0 >> 4) & 1) << (2 * c) | ((q1 >> 4) & 1) << (2 * c + 1));
            }
    }
}

/* Q6_K: 16 sub-blocks of 16 values, each x ~ d * sc[i] * q with q in [-32, 31] and a signed
 * 8-bit sc[i]; the largest-magnitude value of a sub-block maps to q = -32. */
void quantize_row_q6_k(const float *restrict src, void *restrict dst, int64_t n) {
    struct block_q6_k *b = dst;
    int q[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, b++, src += QK_K) {
        float scale[16], max_abs = 0.0f;
        for (int s = 0; s < 16; s++) {
            scale[s] = signed_absmax(src + 16 * s, 16) / -32.0f;
            max_abs = fmaxf(max_abs, fabsf(scale[s]));
        }
        float d = f16_round(max_abs / 127.0f, &b->d);
        for (int s = 0; s < 16; s++) {
            int sc = d > 0.0f ? qround(scale[s] / d, -127, 127) : 0;
            b->scales[s] = (int8_t)sc;
            float es = d * (float)sc, ie = es != 0.0f ? 1.0f / es : 0.0f;
            for (int j = 0; j < 16; j++)
                q[16 * s + j] = qround(src[16 * s + j] * ie, -32, 31) + 32;
        }
        for (int h = 0; h < 2; h++) {
            const int *Q = q + 128 * h;
            uint8_t *L = b->ql + 64 * h, *H = b->qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                L[l] = (uint8_t)((Q[l] & 15) | (Q[l + 64] & 15) << 4);
                L[l + 32] = (uint8_t)((Q[l + 32] & 15) | (Q[l + 96] & 15) << 4);
                H[l] = (uint8_t)((Q[l] >> 4) | (Q[l + 32] >> 4) << 2 | (Q[l + 64] >> 4) << 4 |
                                 (Q[l + 96] >> 4) << 6);
            }
        }
    }
}

/* Activation rows live at any byte stride, so Q8_K blocks may be misaligned for their float and
 * int16 fields: each block is built in an aligned local and copied out as bytes. */
void quantize_row_q8_k(const float *restrict src, void *restrict dst, int64_t n) {
    unsigned char *out = dst;
    for (int64_t i = 0; i < n / QK_K; i++, out += sizeof(struct block_q8_k), src += QK_K) {
        struct block_q8_k blk, *b = &blk;
        float amax = fabsf(signed_absmax(src, QK_K));
        b->d = amax / 127.0f;
        float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        for (int j = 0; j < QK_K; j++)
            b->qs[j] = (int8_t)qround(src[j] * id, -127, 127);
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++)
                s += b->qs[16 * g + j];
            b->bsums[g] = (int16_t)s;
        }
        memcpy(out, b, sizeof blk);
    }
}

void dequantize_row_q8_k(const void *restrict src, float *restrict dst, int64_t n) {
    const unsigned char *in = src;
    for (int64_t i = 0; i < n / QK_K; i++, in += sizeof(struct block_q8_k), dst += QK_K) {
        float d;
        memcpy(&d, in + offsetof(struct block_q8_k, d), sizeof d); /* may be misaligned */
        const int8_t *qs = (const int8_t *)(in + offsetof(struct block_q8_k, qs));
        for (int j = 0; j < QK_K; j++)
            dst[j] = d * (float)qs[j];
    }
}

/* Activations, not weights: the codes are taken against the unrounded scale (as llama.cpp's
 * activation quantizer does) and only the stored d is rounded to f16. */
void quantize_act_q8_0(const float *restrict src, void *restrict dst, int64_t n) {
    unsigned char *out = dst; /* any address (ops.h): blocks are built here, then copied */
    for (int64_t i = 0; i < n / 32; i++, out += sizeof(struct block_q8_0), src += 32) {
        struct block_q8_0 b;
        float amax = fabsf(signed_absmax(src, 32));
        float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        b.d = f32_to_fp16(d);
        for (int j = 0; j < 32; j++)
            b.qs[j] = (int8_t)qround(roundf(src[j] * id), -127, 127);
        memcpy(out, &b, sizeof b);
    }
}
