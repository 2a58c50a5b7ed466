/* proto/wire.c: see wire.h. fp16 conversions come from ops/quant.h (exact, round to nearest
 * even); the q8_0 block is ops/quant.h's struct block_q8_0, so a q8_0 activation frame has the
 * same bytes ggml would produce for the same scale choice. */
#include "proto/wire.h"

#include "common/assert.h"
#include "ops/quant.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "wire.c writes little-endian frames with memcpy: add byte swaps for this host"
#endif

_Static_assert(sizeof(struct block_q8_0) == WIRE_Q8_0_BLOCK_BYTES, "q8_0 wire block");

static const char *const names[WIRE_DTYPE_COUNT] = {
    [WIRE_F16] = "f16", [WIRE_F32] = "f32", [WIRE_Q8_0] = "q8_0"};

const char *wire_dtype_name(int dt) {
    return dt >= 0 && dt < WIRE_DTYPE_COUNT ? names[dt] : "?";
}

int wire_dtype_from_name(const char *name) {
    for (int i = 0; name && i < WIRE_DTYPE_COUNT; i++)
        if (strcasecmp(name, names[i]) == 0) return i;
    return -1;
}

uint16_t wire_f32_to_f16(float f) {
    return f32_to_fp16(f);
}

float wire_f16_to_f32(uint16_t h) {
    return fp16_to_f32(h);
}

int wire_bytes(int dt, int64_t n, int64_t hidden, size_t *out, bt_err *e) {
    if (dt < 0 || dt >= WIRE_DTYPE_COUNT)
        return bt_fail(e, BT_EINVAL, "wire: unknown dtype %d", dt);
    if (n < 0 || hidden <= 0)
        return bt_fail(e, BT_EINVAL, "wire: bad shape n=%lld hidden=%lld", (long long)n,
                       (long long)hidden);
    uint64_t row;
    switch (dt) {
    case WIRE_F32:
        row = (uint64_t)hidden * 4;
        break;
    case WIRE_F16:
        row = (uint64_t)hidden * 2;
        break;
    default:
        if (hidden % WIRE_Q8_0_BLOCK)
            return bt_fail(e, BT_EINVAL, "wire: q8_0 needs hidden %% 32 == 0, got %lld",
                           (long long)hidden);
        row = (uint64_t)hidden / WIRE_Q8_0_BLOCK * WIRE_Q8_0_BLOCK_BYTES;
        break;
    }
    /* hidden < 2^63 so row fits; guard the product against SIZE_MAX */
    if (n > 0 && row > SIZE_MAX / (uint64_t)n)
        return bt_fail(e, BT_EINVAL, "wire: %lld rows x %llu bytes overflows", (long long)n,
                       (unsigned long long)row);
    *out = (size_t)(row * (uint64_t)n);
    return 0;
}

static void encode_q8_0(const float *x, int64_t count, struct block_q8_0 *b) {
    for (int64_t i = 0; i < count / WIRE_Q8_0_BLOCK; i++, x += WIRE_Q8_0_BLOCK, b++) {
        float amax = 0.0f;
        for (int j = 0; j < WIRE_Q8_0_BLOCK; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f;
        float id = d > 0.0f ? 1.0f / d : 0.0f;
        b->d = f32_to_fp16(d);
        for (int j = 0; j < WIRE_Q8_0_BLOCK; j++) {
            /* |x*id| <= 127 by construction; clamp anyway for NaN-free safety */
            float q = roundf(x[j] * id);
            q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
            b->qs[j] = (int8_t)q;
        }
    }
}

void wire_encode(int dt, const float *x, int64_t n, int64_t hidden, void *dst) {
    size_t bytes;
    BT_ASSERT(wire_bytes(dt, n, hidden, &bytes, NULL) == 0);
    int64_t count = n * hidden;
    switch (dt) {
    case WIRE_F32:
        memcpy(dst, x, bytes);
        break;
    case WIRE_F16: {
        unsigned char *p = dst;
        for (int64_t i = 0; i < count; i++) {
            uint16_t h = f32_to_fp16(x[i]);
            memcpy(p + 2 * i, &h, 2);
        }
        break;
    }
    default:
        encode_q8_0(x, count, dst);
        break;
    }
}

int wire_decode(int dt, const void *src, size_t len, int64_t n, int64_t hidden, float *x,
                bt_err *e) {
    size_t bytes;
    int rc = wire_bytes(dt, n, hidden, &bytes, e);
    if (rc) return rc;
    if (len != bytes)
        return bt_fail(e, BT_EPROTO, "wire: %s payload of %lld x %lld is %zu bytes, got %zu",
                       wire_dtype_name(dt), (long long)n, (long long)hidden, bytes, len);
    int64_t count = n * hidden;
    const unsigned char *p = src;
    switch (dt) {
    case WIRE_F32:
        memcpy(x, src, bytes);
        break;
    case WIRE_F16:
        for (int64_t i = 0; i < count; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            x[i] = fp16_to_f32(h);
        }
        break;
    default:
        for (int64_t i = 0; i < count / WIRE_Q8_0_BLOCK; i++) {
            struct block_q8_0 b;
            memcpy(&b, p + (size_t)i * WIRE_Q8_0_BLOCK_BYTES, sizeof b);
            float d = fp16_to_f32(b.d);
            if (!isfinite(d))
                return bt_fail(e, BT_EPROTO, "wire: q8_0 block %lld has scale %g", (long long)i,
                               (double)d);
            for (int j = 0; j < WIRE_Q8_0_BLOCK; j++)
                x[i * WIRE_Q8_0_BLOCK + j] = d * (float)b.qs[j];
        }
        break;
    }
    return 0;
}
