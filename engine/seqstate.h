/* engine/seqstate.h: per-sequence state of one layer range [lo, hi) (spec qwen35.md §8), in a
 * pool of slots allocated once up front.
 *
 * Per slot and layer: linear attention (Gated DeltaNet) layers keep the conv window, the last
 * (K-1) raw projection inputs per channel, laid out [channel][K-1] oldest first (ops.h
 * conv1d_step), and the delta-rule state, H_v heads of d_v x d_k f32 stored transposed
 * (S[c * d_k + i], ops.h delta_rule_step); full attention layers keep K (after norm and RoPE)
 * and V, n_kv * head_dim f32 per position, up to max_ctx positions. Plus the position counter:
 * the number of tokens this stage has consumed for the sequence. Everything is f32: exactness
 * first. Fresh (acquired or reset) slots are all zeros (trap §16.13).
 *
 * Serialized form (seqstate_save / seqstate_load), little-endian:
 *   u32 magic "BTSS", u32 version (1), i32 lo, i32 hi, u64 hparams fingerprint, i64 pos,
 *   then per layer l in [lo, hi): linear: conv (K-1)*CD f32, delta H_v*d_v*d_k f32;
 *   full: K pos*n_kv*head_dim f32, then V likewise (only the used positions).
 * Not thread-safe: one thread (the stage's forward) uses a pool at a time. */
#ifndef BT_ENGINE_SEQSTATE_H
#define BT_ENGINE_SEQSTATE_H
#include "common/err.h"
#include "engine/model.h"

#include <stddef.h>
#include <stdint.h>

#define SEQSTATE_MAGIC   0x53535442u /* "BTSS" little-endian */
#define SEQSTATE_VERSION 1u

typedef struct seqstate_pool seqstate_pool_t;

/* Bytes of one slot's state for layers [lo, hi) with max_ctx positions (what a planner
 * multiplies by the number of slots; the pool adds only small bookkeeping). */
size_t seqstate_bytes(const struct qwen35_hparams *hp, int lo, int hi, int max_ctx);

/* n_slots slots for layers [lo, hi) of hp (copied). BT_EINVAL on a bad range or count,
 * -ENOMEM naming the bytes. */
int seqstate_pool_new(seqstate_pool_t **out, const struct qwen35_hparams *hp, int lo, int hi,
                      int n_slots, int max_ctx, bt_err *e);
void seqstate_pool_free(seqstate_pool_t *p); /* NULL ok */

int seqstate_n_slots(const seqstate_pool_t *p);
int seqstate_max_ctx(const seqstate_pool_t *p);
void seqstate_range(const seqstate_pool_t *p, int *lo, int *hi);

/* Takes a free slot, zeroed, position 0. BT_ECAPACITY when all are in use. */
int seqstate_acquire(seqstate_pool_t *p, int *slot, bt_err *e);
void seqstate_release(seqstate_pool_t *p, int slot);
int seqstate_in_use(const seqstate_pool_t *p, int slot);
/* Back to zeros and position 0. */
void seqstate_reset(seqstate_pool_t *p, int slot);
/* dst becomes an independent copy of src (both must be in use). */
void seqstate_fork(seqstate_pool_t *p, int src, int dst);

/* Position counter: tokens consumed so far. forward() advances it. */
int64_t seqstate_pos(const seqstate_pool_t *p, int slot);
void seqstate_set_pos(seqstate_pool_t *p, int slot, int64_t pos);

/* Views for forward(), layer l in [lo, hi) of the right kind. */
float *seqstate_conv(seqstate_pool_t *p, int slot, int l);  /* [CD][K-1] */
float *seqstate_delta(seqstate_pool_t *p, int slot, int l); /* [H_v][d_v][d_k] */
float *seqstate_k(seqstate_pool_t *p, int slot, int l);     /* [max_ctx][n_kv*head_dim] */
float *seqstate_v(seqstate_pool_t *p, int slot, int l);     /* [max_ctx][n_kv*head_dim] */

/* Fingerprint of the hyperparameters that define the state layout. */
uint64_t seqstate_fingerprint(const struct qwen35_hparams *hp);

/* Serialized size of a slot at its current position. */
size_t seqstate_save_size(const seqstate_pool_t *p, int slot);
/* Writes the slot into buf (cap bytes); BT_EMSGSIZE if cap is too small. *len = bytes. */
int seqstate_save(const seqstate_pool_t *p, int slot, void *buf, size_t cap, size_t *len,
                  bt_err *e);
/* Replaces the slot's state with buf. BT_EFORMAT (bad magic, truncated or trailing bytes),
 * BT_EVERSION, BT_ESHAPE (other layer range or hparams), BT_ECAPACITY (pos > max_ctx).
 * On error the slot is left unchanged. */
int seqstate_load(seqstate_pool_t *p, int slot, const void *buf, size_t len, bt_err *e);

#endif
