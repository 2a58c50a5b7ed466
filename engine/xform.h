/* engine/xform.h: turns a tensor's stored bytes into engine form (spec qwen35.md §10.3, §10.4).
 *
 * Engine form: vectors (n_dims == 1) and ssm_conv1d taps are F32, converted from F32/F16/BF16
 * with the value transforms applied (XF_ADD_ONE: 1 + w; XF_NEG_EXP: -exp(w), both in f32);
 * matrices keep their stored dtype and bytes, with rows (XF_VHEAD_ROWS) or columns
 * (XF_VHEAD_COLS) moved from HF's grouped value-head order to GGUF's tiled order:
 *   GGUF[first + (m*H_k + g)*d + e] = HF[first + (g*r + m)*d + e],
 *   g < H_k, m < r = H_v/H_k, e < d = perm_block, first = perm_first,
 * with H_k = hp.ssm_n_group and H_v = hp.ssm_dt_rank. For a vector the "rows" are its
 * elements. A GGUF tensor (xform 0, already F32 vectors) passes through unchanged, so callers
 * may run every tensor through xform_apply. Pure functions; thread-safe. */
#ifndef BT_ENGINE_XFORM_H
#define BT_ENGINE_XFORM_H
#include "common/err.h"
#include "engine/model.h"

#include <stddef.h>

/* 1 if t is stored as F32 in engine form regardless of its stored dtype. */
int xform_is_vector(const struct tensor_desc *t);
/* dtype of the engine form. */
enum dtype xform_out_dtype(const struct tensor_desc *t);
/* Bytes of the engine form; 0 if t's shape or dtype cannot be transformed (xform_apply says
 * why). */
size_t xform_out_bytes(const struct model_desc *m, const struct tensor_desc *t);
/* stored: t->n_bytes bytes as read from the file; out: xform_out_bytes() bytes (must not
 * overlap stored). 0; BT_ESHAPE (n_bytes does not match the shape, or the permuted range does
 * not fit); BT_EUNSUPPORTED (a value transform or column permutation on a quantized tensor).
 * Messages name the tensor. */
int xform_apply(const struct model_desc *m, const struct tensor_desc *t, const void *stored,
                void *out, bt_err *e);

#endif
