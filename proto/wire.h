/* proto/wire.h: activation encoding of the raw payload frames (Forward frame 1).
 *
 * A payload is n rows of hidden floats, rows concatenated, little-endian:
 *   WIRE_F32:  4 bytes per value, exact.
 *   WIRE_F16:  IEEE binary16 per value, rounded to nearest even (overflow -> +-inf).
 *   WIRE_Q8_0: per row, hidden/32 blocks of 34 bytes: f16 scale d = max|x|/127, then 32 int8
 *              q = round(x/d) (ties away from zero); x ~= d*q. hidden must be a multiple of 32.
 * Values equal the WireDtype enum of proto/baton.proto (msg.c asserts it). Pure, thread-safe;
 * encode/decode never allocate. */
#ifndef BT_PROTO_WIRE_H
#define BT_PROTO_WIRE_H
#include "common/err.h"

#include <stddef.h>
#include <stdint.h>

enum wire_dtype { WIRE_F16 = 0, WIRE_F32 = 1, WIRE_Q8_0 = 2, WIRE_DTYPE_COUNT };

#define WIRE_Q8_0_BLOCK       32
#define WIRE_Q8_0_BLOCK_BYTES 34

/* "f16", "f32", "q8_0"; "?" if unknown. */
const char *wire_dtype_name(int dt);
/* Parses a name (case-insensitive); -1 if unknown. */
int wire_dtype_from_name(const char *name);

/* Bytes of n rows of hidden values in *out. BT_EINVAL for an unknown dtype, hidden <= 0,
 * n < 0, q8_0 with hidden % 32 != 0, or a size that overflows size_t. */
int wire_bytes(int dt, int64_t n, int64_t hidden, size_t *out, bt_err *e);

/* Encodes x[n][hidden] into dst (wire_bytes(dt, n, hidden) bytes). The arguments must have
 * passed wire_bytes (our invariant, asserted). */
void wire_encode(int dt, const float *x, int64_t n, int64_t hidden, void *dst);

/* Decodes len bytes of src into x[n][hidden]. BT_EPROTO if len != wire_bytes(...), or a q8_0
 * scale is not finite (bytes from the network are checked, never trusted). */
int wire_decode(int dt, const void *src, size_t len, int64_t n, int64_t hidden, float *x,
                bt_err *e);

/* binary16 <-> binary32 (round to nearest even; NaN stays NaN). */
uint16_t wire_f32_to_f16(float f);
float wire_f16_to_f32(uint16_t h);

#endif
