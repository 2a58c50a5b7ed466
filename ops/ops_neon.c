/* ops/ops_neon.c: AArch64 Advanced SIMD kernels (armv8-a baseline, no compiler flags needed),
 * the table "neon", plus the matmul_q slots of "neon-dotprod" (the same kernels with sdot, built
 * with a per-function target attribute; ops.c overlays them when the CPU reports ASIMDDP).
 * On any other architecture this file compiles to nothing. Slots left NULL come from ops_ref.
 *
 * Float kernels keep four-lane accumulators in a fixed order per token, so a token's result does
 * not depend on n, its token group, or the row split. Activation quantizers are bit-exact with
 * ops_ref's (same rounding, same clamping, NaN codes -127 as ref's qround gives). */
#if defined(__aarch64__)
#include "ops/ops.h"
#include "ops/quant.h"

#include <arm_neon.h>
#include <math.h>
#include <string.h>

#define QSFX neon
#define QATTR
#define QDOT 0
#include "ops/matmul_q_neon.h"
#undef QSFX
#undef QATTR
#undef QDOT

/* The sdot variant. GCC enables the extension per function; clang 14's arm_neon.h declares
 * vdotq_s32 only when the whole file targets it (-march=...+dotprod), so a clang build without
 * that has no "neon-dotprod" (its slots stay NULL and ops.c does not offer it). */
#if defined(__clang__) && !defined(__ARM_FEATURE_DOTPROD)
#define NEON_DOTPROD 0
#else
#define NEON_DOTPROD 1
#define QSFX         neon_dotprod
#if defined(__clang__)
#define QATTR
#else
#define QATTR __attribute__((target("arch=armv8.2-a+dotprod")))
#endif
#define QDOT 1
#include "ops/matmul_q_neon.h"
#undef QSFX
#undef QATTR
#undef QDOT
#endif

/* ---- float matmul (f32 / f16 / bf16 weights, f32 activations) ------------------------------ */

#define G 4 /* tokens per pass over a weight row */

static inline void ld8_f32(const uint8_t *row, int64_t c, float32x4_t *a, float32x4_t *b) {
    const float *f = (const float *)(const void *)row + c;
    *a = vld1q_f32(f);
    *b = vld1q_f32(f + 4);
}
static inline void ld8_f16(const uint8_t *row, int64_t c, float32x4_t *a, float32x4_t *b) {
    float16x8_t h = vreinterpretq_f16_u8(vld1q_u8(row + 2 * c));
    *a = vcvt_f32_f16(vget_low_f16(h));
    *b = vcvt_high_f32_f16(h);
}
static inline void ld8_bf16(const uint8_t *row, int64_t c, float32x4_t *a, float32x4_t *b) {
    uint16x8_t h = vreinterpretq_u16_u8(vld1q_u8(row + 2 * c));
    *a = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16));
    *b = vreinterpretq_f32_u32(vshll_high_n_u16(h, 16));
}
static inline float tail_f32(const uint8_t *row, int64_t c) {
    float f;
    memcpy(&f, row + 4 * c, 4);
    return f;
}
static inline float tail_f16(const uint8_t *row, int64_t c) {
    uint16_t h;
    memcpy(&h, row + 2 * c, 2);
    return fp16_to_f32(h);
}
static inline float tail_bf16(const uint8_t *row, int64_t c) {
    uint16_t h;
    memcpy(&h, row + 2 * c, 2);
    return bf16_to_f32(h);
}

// clang-format off
/* The matmul_fn over rows [r0, r1): each row once per group of up to G tokens, through
 * NAME##_row with a compile-time group size (the matmul macros below define NAME##_row). */
#define DEF_ROW_DRIVER(NAME)                                                                       \
    static void NAME(const struct mat *w, const float *restrict x, int64_t ldx, int64_t n,         \
                     float *restrict y, int64_t ldy, int64_t r0, int64_t r1) {                     \
        for (int64_t r = r0; r < r1; r++) {                                                        \
            const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;              \
            for (int64_t t0 = 0; t0 < n; t0 += G) {                                                \
                const float *xt = x + t0 * ldx;                                                    \
                float *yt = y + t0 * ldy + r;                                                      \
                switch (n - t0 < G ? (int)(n - t0) : G) {                                          \
                case 1: NAME##_row(row, w->cols, xt, ldx, yt, ldy, 1); break;                      \
                case 2: NAME##_row(row, w->cols, xt, ldx, yt, ldy, 2); break;                      \
                case 3: NAME##_row(row, w->cols, xt, ldx, yt, ldy, 3); break;                      \
                default: NAME##_row(row, w->cols, xt, ldx, yt, ldy, 4); break;                     \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }
// clang-format on

// clang-format off
#define DEF_MATMUL_F(NAME, LD8, TAILF)                                                             \
    static inline __attribute__((always_inline)) void NAME##_row(                                 \
        const uint8_t *row, int64_t cols, const float *restrict x, int64_t ldx, float *restrict y, \
        int64_t ldy, const int g) {                                                                \
        float32x4_t a[G], b[G];                                                                    \
        for (int t = 0; t < g; t++) a[t] = b[t] = vdupq_n_f32(0.0f);                               \
        int64_t c = 0;                                                                             \
        for (; c + 8 <= cols; c += 8) {                                                            \
            float32x4_t w0, w1;                                                                    \
            LD8(row, c, &w0, &w1);                                                                 \
            for (int t = 0; t < g; t++) {                                                          \
                a[t] = vfmaq_f32(a[t], w0, vld1q_f32(x + t * ldx + c));                            \
                b[t] = vfmaq_f32(b[t], w1, vld1q_f32(x + t * ldx + c + 4));                        \
            }                                                                                      \
        }                                                                                          \
        for (int t = 0; t < g; t++) {                                                              \
            float sum = vaddvq_f32(vaddq_f32(a[t], b[t]));                                         \
            for (int64_t k = c; k < cols; k++) sum += TAILF(row, k) * x[t * ldx + k];              \
            y[t * ldy] = sum;                                                                      \
        }                                                                                          \
    }                                                                                              \
    DEF_ROW_DRIVER(NAME)
// clang-format on

DEF_MATMUL_F(matmul_f32_neon, ld8_f32, tail_f32)
DEF_MATMUL_F(matmul_f16_neon, ld8_f16, tail_f16)
DEF_MATMUL_F(matmul_bf16_neon, ld8_bf16, tail_bf16)

/* ---- f32-activation matmul of the quantized types (exact mode, ops_set_exact) -------------
 * A block is unpacked by the matmul_q code (its int8 codes), dequantized into a buffer with the
 * arithmetic of quant.c ((d * scale) * q - dmin * min: the same floats as ops_ref's
 * dequantize_row), and multiplied with up to G tokens. */

/* dst[0..16) = q * s - m */
static inline void deq16(int8x16_t q, float s, float m, float *dst) {
    int16x8_t lo = vmovl_s8(vget_low_s8(q)), hi = vmovl_high_s8(q);
    int32x4_t v[4] = {vmovl_s16(vget_low_s16(lo)), vmovl_high_s16(lo), vmovl_s16(vget_low_s16(hi)),
                      vmovl_high_s16(hi)};
    for (int j = 0; j < 4; j++)
        vst1q_f32(dst + 4 * j, vsubq_f32(vmulq_n_f32(vcvtq_f32_s32(v[j]), s), vdupq_n_f32(m)));
}

#define DEF_DEQ32(T)                                                                               \
    static inline void deqb_##T(const uint8_t *p, float *buf) {                                    \
        struct u32_neon u;                                                                         \
        unpack_##T##_neon(p, &u);                                                                  \
        deq16(u.w0, u.d, 0.0f, buf);                                                               \
        deq16(u.w1, u.d, 0.0f, buf + 16);                                                          \
    }
DEF_DEQ32(q8_0)
DEF_DEQ32(q4_0)
DEF_DEQ32(q5_0)

static inline void deqb_kblk(const struct kblk_neon *k, float *buf) {
    int16_t mn[8];
    vst1q_s16(mn, k->mn);
    for (int g = 0; g < 16; g++)
        deq16(k->q[g], k->d * (float)k->sc[g], k->dmin * (float)mn[g / 2], buf + 16 * g);
}
#define DEF_DEQK(T)                                                                                \
    static inline void deqb_##T(const uint8_t *p, float *buf) {                                    \
        struct kblk_neon k;                                                                        \
        unpack_##T##_neon(p, &k);                                                                  \
        deqb_kblk(&k, buf);                                                                        \
    }
DEF_DEQK(q4_k)
DEF_DEQK(q5_k)
DEF_DEQK(q6_k)

// clang-format off
#define DEF_MATMUL_DQ(NAME, QK, BB, DEQB)                                                          \
    static inline __attribute__((always_inline)) void NAME##_row(                                 \
        const uint8_t *row, int64_t cols, const float *restrict x, int64_t ldx, float *restrict y, \
        int64_t ldy, const int g) {                                                                \
        float32x4_t a[G], b[G];                                                                    \
        for (int t = 0; t < g; t++) a[t] = b[t] = vdupq_n_f32(0.0f);                               \
        float buf[QK];                                                                             \
        for (int64_t i = 0; i < cols / (QK); i++) {                                                \
            DEQB(row + (size_t)i * (BB), buf);                                                     \
            const float *xs = x + i * (QK);                                                        \
            for (int j = 0; j < (QK); j += 8) {                                                    \
                float32x4_t w0 = vld1q_f32(buf + j), w1 = vld1q_f32(buf + j + 4);                  \
                for (int t = 0; t < g; t++) {                                                      \
                    a[t] = vfmaq_f32(a[t], w0, vld1q_f32(xs + t * ldx + j));                       \
                    b[t] = vfmaq_f32(b[t], w1, vld1q_f32(xs + t * ldx + j + 4));                   \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        for (int t = 0; t < g; t++) y[t * ldy] = vaddvq_f32(vaddq_f32(a[t], b[t]));                \
    }                                                                                              \
    DEF_ROW_DRIVER(NAME)
// clang-format on

DEF_MATMUL_DQ(matmul_q8_0_neon, 32, 34, deqb_q8_0)
DEF_MATMUL_DQ(matmul_q4_0_neon, 32, 18, deqb_q4_0)
DEF_MATMUL_DQ(matmul_q5_0_neon, 32, 22, deqb_q5_0)
DEF_MATMUL_DQ(matmul_q4_k_neon, 256, 144, deqb_q4_k)
DEF_MATMUL_DQ(matmul_q5_k_neon, 256, 176, deqb_q5_k)
DEF_MATMUL_DQ(matmul_q6_k_neon, 256, 210, deqb_q6_k)

/* ---- activation quantizers (bit-exact with quant.c) ---------------------------------------- */

/* max |x| over 4k values, NaN ignored (as signed_absmax's comparison ignores it) */
static inline float absmax(const float *x, int k) {
    float32x4_t m = vdupq_n_f32(0.0f);
    for (int j = 0; j < k; j++)
        m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(x + 4 * j)));
    return vmaxnmvq_f32(m);
}

/* 16 codes from 16 floats times id: ties away from zero (Q8_0: roundf) or to even (Q8_K:
 * lrintf), clamped to [-127, 127], NaN -> -127 like quant.c's qround. */
static inline int8x16_t codes16(const float *x, float id, const int even) {
    int32x4_t c[4];
    for (int j = 0; j < 4; j++) {
        float32x4_t v = vmulq_n_f32(vld1q_f32(x + 4 * j), id);
        int32x4_t q = even ? vcvtnq_s32_f32(v) : vcvtaq_s32_f32(v);
        q = vminq_s32(vmaxq_s32(q, vdupq_n_s32(-127)), vdupq_n_s32(127));
        c[j] = vbslq_s32(vceqq_f32(v, v), q, vdupq_n_s32(-127));
    }
    int16x8_t lo = vcombine_s16(vmovn_s32(c[0]), vmovn_s32(c[1]));
    int16x8_t hi = vcombine_s16(vmovn_s32(c[2]), vmovn_s32(c[3]));
    return vcombine_s8(vmovn_s16(lo), vmovn_s16(hi));
}

static void quantize_act_q8_0_neon(const float *restrict src, void *restrict dst, int64_t n) {
    uint8_t *out = dst;
    for (int64_t i = 0; i < n / 32; i++, out += sizeof(struct block_q8_0), src += 32) {
        float amax = absmax(src, 8);
        float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        uint16_t dh = f32_to_fp16(d);
        memcpy(out, &dh, 2);
        vst1q_s8((int8_t *)(out + 2), codes16(src, id, 0));
        vst1q_s8((int8_t *)(out + 18), codes16(src + 16, id, 0));
    }
}

static void quantize_act_q8_k_neon(const float *restrict src, void *restrict dst, int64_t n) {
    uint8_t *out = dst;
    for (int64_t i = 0; i < n / QK_K; i++, out += sizeof(struct block_q8_k), src += QK_K) {
        float amax = absmax(src, QK_K / 4);
        float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
        memcpy(out + offsetof(struct block_q8_k, d), &d, sizeof d);
        int16_t bs[16];
        for (int g = 0; g < 16; g++) {
            int8x16_t q = codes16(src + 16 * g, id, 1);
            vst1q_s8((int8_t *)(out + offsetof(struct block_q8_k, qs) + 16 * g), q);
            bs[g] = vaddlvq_s8(q);
        }
        memcpy(out + offsetof(struct block_q8_k, bsums), bs, sizeof bs);
    }
}

/* ---- vector math ----------------------------------------------------------------------- */

/* exp(x) to within ~2 ulp: 2^k * p(r), k = round(x / ln 2), r = x - k ln 2 in two parts,
 * p the degree-7 Taylor polynomial of e^r on |r| <= ln2/2 (error < 1e-8 relative). Inputs
 * are clamped to [-87.3, 88.7]: the ends give ~1e-38 (not 0) and ~3e38 (not inf), which is
 * what the callers (silu, softmax) need to stay finite. */
static inline float32x4_t vexp(float32x4_t x) {
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.3f)), vdupq_n_f32(88.7f));
    float32x4_t k = vrndnq_f32(vmulq_n_f32(x, 1.44269504088896341f));
    float32x4_t r = vfmsq_f32(x, k, vdupq_n_f32(0.693145751953125f));
    r = vfmsq_f32(r, k, vdupq_n_f32(1.428606765330187045e-06f));
    float32x4_t p = vdupq_n_f32(1.0f / 5040.0f);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 720.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 120.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 24.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 6.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    /* 2^k by the exponent field; k in [-126, 128] after the clamp: split as 2^(k/2) twice so
     * k = 128 does not overflow the field */
    int32x4_t ki = vcvtq_s32_f32(k);
    int32x4_t k1 = vshrq_n_s32(ki, 1), k2 = vsubq_s32(ki, k1);
    float32x4_t s1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(k1, vdupq_n_s32(127)), 23));
    float32x4_t s2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(k2, vdupq_n_s32(127)), 23));
    return vmulq_f32(vmulq_f32(p, s1), s2);
}

static inline float32x4_t vsilu(float32x4_t x) {
    return vdivq_f32(x, vaddq_f32(vdupq_n_f32(1.0f), vexp(vnegq_f32(x))));
}

static float silu1(float x) {
    return x / (1.0f + expf(-x));
}

static float dot(const float *a, const float *b, int64_t n) {
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = vdupq_n_f32(0.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
    }
    float s = vaddvq_f32(vaddq_f32(s0, s1));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static void rmsnorm_neon(float *y, const float *x, const float *w, int64_t n, float eps) {
    float inv = 1.0f / sqrtf(dot(x, x, n) / (float)n + eps);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t v = vmulq_n_f32(vld1q_f32(x + i), inv);
        if (w) v = vmulq_f32(v, vld1q_f32(w + i));
        vst1q_f32(y + i, v);
    }
    for (; i < n; i++)
        y[i] = x[i] * inv * (w ? w[i] : 1.0f);
}

static void gated_rmsnorm_neon(float *y, const float *x, const float *z, const float *w, int64_t n,
                               float eps) {
    float inv = 1.0f / sqrtf(dot(x, x, n) / (float)n + eps);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t v = vmulq_n_f32(vld1q_f32(x + i), inv);
        if (w) v = vmulq_f32(v, vld1q_f32(w + i));
        vst1q_f32(y + i, vmulq_f32(v, vsilu(vld1q_f32(z + i))));
    }
    for (; i < n; i++)
        y[i] = x[i] * inv * (w ? w[i] : 1.0f) * silu1(z[i]);
}

static void l2norm_scale_neon(float *x, int64_t n, float eps, float scale) {
    float inv = scale / sqrtf(dot(x, x, n) + eps);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(x + i, vmulq_n_f32(vld1q_f32(x + i), inv));
    for (; i < n; i++)
        x[i] *= inv;
}

static void silu_mul_neon(float *out, const float *g, const float *u, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(out + i, vmulq_f32(vsilu(vld1q_f32(g + i)), vld1q_f32(u + i)));
    for (; i < n; i++)
        out[i] = silu1(g[i]) * u[i];
}

static void add_neon(float *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(y + i, vaddq_f32(vld1q_f32(y + i), vld1q_f32(x + i)));
    for (; i < n; i++)
        y[i] += x[i];
}

/* x[i] = exp(x[i] - mx) for i < n; returns their sum */
static float exp_sub_sum(float *x, int64_t n, float mx) {
    float32x4_t s = vdupq_n_f32(0.0f), vm = vdupq_n_f32(mx);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t e = vexp(vsubq_f32(vld1q_f32(x + i), vm));
        vst1q_f32(x + i, e);
        s = vaddq_f32(s, e);
    }
    float sum = vaddvq_f32(s);
    for (; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    return sum;
}

static float vmax_of(const float *x, int64_t n) {
    float mx = x[0];
    int64_t i = 0;
    if (n >= 4) {
        float32x4_t m = vld1q_f32(x);
        for (i = 4; i + 4 <= n; i += 4)
            m = vmaxq_f32(m, vld1q_f32(x + i));
        mx = vmaxvq_f32(m);
    }
    for (; i < n; i++)
        mx = fmaxf(mx, x[i]);
    return mx;
}

static void softmax_neon(float *x, int64_t n) {
    if (n <= 0) return;
    float inv = 1.0f / exp_sub_sum(x, n, vmax_of(x, n));
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(x + i, vmulq_n_f32(vld1q_f32(x + i), inv));
    for (; i < n; i++)
        x[i] *= inv;
}

static void attention_neon(float *o, const float *q, const float *k_cache, const float *v_cache,
                           int64_t kv_stride, int64_t n_ctx, int64_t head_dim, float scale,
                           float *scratch) {
    for (int64_t t = 0; t < n_ctx; t++)
        scratch[t] = dot(q, k_cache + t * kv_stride, head_dim) * scale;
    float inv = 1.0f / exp_sub_sum(scratch, n_ctx, vmax_of(scratch, n_ctx));
    for (int64_t i = 0; i < head_dim; i++)
        o[i] = 0.0f;
    for (int64_t t = 0; t < n_ctx; t++) {
        const float *vt = v_cache + t * kv_stride;
        float a = scratch[t] * inv;
        int64_t i = 0;
        for (; i + 4 <= head_dim; i += 4)
            vst1q_f32(o + i, vfmaq_n_f32(vld1q_f32(o + i), vld1q_f32(vt + i), a));
        for (; i < head_dim; i++)
            o[i] += a * vt[i];
    }
}

static void delta_rule_step_neon(float *S, const float *q, const float *k, const float *v,
                                 float decay, float beta, float *o, int64_t dk, int64_t dv) {
    for (int64_t c = 0; c < dv; c++) {
        float *Sc = S + c * dk;
        float32x4_t u = vdupq_n_f32(0.0f);
        int64_t i = 0;
        for (; i + 4 <= dk; i += 4) {
            float32x4_t s = vmulq_n_f32(vld1q_f32(Sc + i), decay);
            vst1q_f32(Sc + i, s);
            u = vfmaq_f32(u, s, vld1q_f32(k + i));
        }
        float us = vaddvq_f32(u);
        for (; i < dk; i++) {
            Sc[i] *= decay;
            us += Sc[i] * k[i];
        }
        float delta = beta * (v[c] - us);
        float32x4_t acc = vdupq_n_f32(0.0f);
        for (i = 0; i + 4 <= dk; i += 4) {
            float32x4_t s = vfmaq_n_f32(vld1q_f32(Sc + i), vld1q_f32(k + i), delta);
            vst1q_f32(Sc + i, s);
            acc = vfmaq_f32(acc, s, vld1q_f32(q + i));
        }
        float os = vaddvq_f32(acc);
        for (; i < dk; i++) {
            Sc[i] += k[i] * delta;
            os += Sc[i] * q[i];
        }
        o[c] = os;
    }
}

/* The depthwise conv of one token. For the kernel size of Qwen3.5 (4) four channels at a time:
 * the taps [c][4] and the state [c][3] are de-interleaved by vld4/vld3, so each register holds
 * one tap (or one past input) of four channels; the state shift is an interleaving store.
 * Other sizes, and the channels left over, take the scalar loop of ops_ref. */
static void conv1d_step_neon(float *out, float *state, const float *x, const float *w, int64_t k,
                             int64_t c0, int64_t c1) {
    int64_t c = c0;
    if (k == 4)
        for (; c + 4 <= c1; c += 4) {
            float32x4x4_t wt = vld4q_f32(w + 4 * c);
            float32x4x3_t st = vld3q_f32(state + 3 * c);
            float32x4_t xv = vld1q_f32(x + c);
            float32x4_t acc = vmulq_f32(wt.val[3], xv);
            acc = vfmaq_f32(acc, wt.val[0], st.val[0]);
            acc = vfmaq_f32(acc, wt.val[1], st.val[1]);
            acc = vfmaq_f32(acc, wt.val[2], st.val[2]);
            float32x4x3_t ns = {{st.val[1], st.val[2], xv}};
            vst3q_f32(state + 3 * c, ns);
            vst1q_f32(out + c, vsilu(acc));
        }
    for (; c < c1; c++) {
        float *st = state + c * (k - 1);
        const float *wc = w + c * k;
        float acc = wc[k - 1] * x[c];
        for (int64_t i = 0; i < k - 1; i++)
            acc += wc[i] * st[i];
        for (int64_t i = 0; i + 1 < k - 1; i++)
            st[i] = st[i + 1];
        if (k > 1) st[k - 2] = x[c];
        out[c] = silu1(acc);
    }
}

static void conv1d_seq_neon(float *out, int64_t ldo, float *state, const float *x, int64_t ldx,
                            int64_t n, const float *w, int64_t k, int64_t c0, int64_t c1) {
    for (int64_t t = 0; t < n; t++)
        conv1d_step_neon(out + t * ldo, state, x + t * ldx, w, k, c0, c1);
}

/* As on x86: on a CPU the chunked form costs the same flops as n steps, and the vector step
 * streams each state row from cache once per token, so the SIMD table runs the steps. */
static void delta_rule_chunk_neon(float *S, const float *q, int64_t ldq, const float *k,
                                  int64_t ldk, const float *v, int64_t ldv, const float *g,
                                  const float *beta, float *o, int64_t ldo, int64_t n, int64_t dk,
                                  int64_t dv, float *scratch) {
    (void)scratch;
    for (int64_t t = 0; t < n; t++)
        delta_rule_step_neon(S, q + t * ldq, k + t * ldk, v + t * ldv, expf(g[t]), beta[t],
                             o + t * ldo, dk, dv);
}

const struct ops_table ops_neon = {
    .isa = "neon",
    .matmul_q = {QSLOTS(neon)},
    .matmul =
        {
            [DT_F32] = matmul_f32_neon,
            [DT_F16] = matmul_f16_neon,
            [DT_BF16] = matmul_bf16_neon,
            [DT_Q8_0] = matmul_q8_0_neon,
            [DT_Q4_0] = matmul_q4_0_neon,
            [DT_Q5_0] = matmul_q5_0_neon,
            [DT_Q4_K] = matmul_q4_k_neon,
            [DT_Q5_K] = matmul_q5_k_neon,
            [DT_Q6_K] = matmul_q6_k_neon,
        },
    .quantize_act = {[DT_Q8_0] = quantize_act_q8_0_neon, [DT_Q8_K] = quantize_act_q8_k_neon},
    .rmsnorm = rmsnorm_neon,
    .gated_rmsnorm = gated_rmsnorm_neon,
    .l2norm_scale = l2norm_scale_neon,
    .conv1d_step = conv1d_step_neon,
    .conv1d_seq = conv1d_seq_neon,
    .delta_rule_step = delta_rule_step_neon,
    .delta_rule_chunk = delta_rule_chunk_neon,
    .attention = attention_neon,
    .silu_mul = silu_mul_neon,
    .add = add_neon,
    .softmax = softmax_neon,
};

/* "neon-dotprod" = ops_neon with these matmul_q slots (ops.c, when HWCAP_ASIMDDP is set and
 * the variant was built). */
#if NEON_DOTPROD
const matmul_q_fn ops_neon_dotprod_matmul_q[DT_COUNT] = {QSLOTS(neon_dotprod)};
#else
const matmul_q_fn ops_neon_dotprod_matmul_q[DT_COUNT];
#endif

#else
/* Not AArch64: nothing to build (ISO C wants a declaration in every translation unit). */
typedef int ops_neon_not_built;
#endif
