/* engine/forward.h: runs layers [lo, hi) of Qwen3.5 for a batch of sequences (spec
 * qwen35.md §2-§7). A batch holds several sequences, each with 1+ new tokens continuing at its
 * own position (decode steps and prefill chunks mixed). Tokens are laid out sequence after
 * sequence, in order.
 *
 * Input: token ids on the first range (lo == 0), else hidden states [n_tokens][H].
 * Output: hidden states [n_tokens][H] (the residual stream after layer hi-1), or on the last
 * range (hi == n_layer) logits [n_out][V] for the rows each sequence asks for (all positions or
 * the last only), in batch order.
 *
 * Every matrix is multiplied once per batch for all its tokens (pool_matmul); the conv, delta
 * rule and attention run per sequence, threaded over heads/channels. Each output value is
 * computed the same way whatever the batch composition and thread count, so results are
 * bit-identical for 1 or N threads and for a sequence alone or in a batch (given matmul kernels
 * that compute each row independently of n, as ops.h requires).
 *
 * forward_ctx holds all scratch, allocated once for max_tokens per batch: no malloc in
 * forward(). The ctx borrows the weights, state pool and thread pool; one thread uses it. */
#ifndef BT_ENGINE_FORWARD_H
#define BT_ENGINE_FORWARD_H
#include "common/err.h"
#include "engine/model.h"
#include "engine/seqstate.h"
#include "ops/threadpool.h"

#include <stdint.h>

typedef struct forward_ctx forward_ctx_t;

enum fwd_out {
    FWD_OUT_LAST = 0, /* logits of the sequence's last new token only */
    FWD_OUT_ALL = 1,  /* logits of every new token */
    FWD_OUT_NONE = 2, /* no logits (e.g. a prefill chunk that is not the last) */
};

struct fwd_seq {
    int slot;         /* seqstate slot (acquired); its position counter advances by n_tokens */
    int n_tokens;     /* >= 1 new tokens */
    enum fwd_out out; /* last range only */
};

struct fwd_batch {
    int n_seq;
    const struct fwd_seq *seq;
    const int32_t *tokens; /* [n_tokens] when lo == 0 */
    const float *hidden;   /* [n_tokens][H] when lo > 0 */
    float *out;            /* hi < n_layer: [n_tokens][H]; hi == n_layer: [n_out][V] */
    float *final_norm;     /* optional, last range: [n_out][H] LM head inputs */
};

/* Scratch for up to max_tokens tokens per batch (and max_tokens sequences). The state pool
 * must cover the same layer range as w. pool may be NULL (single thread). */
int forward_ctx_new(forward_ctx_t **out, const struct weights *w, seqstate_pool_t *st, pool_t *pool,
                    int max_tokens, bt_err *e);
void forward_ctx_free(forward_ctx_t *c); /* NULL ok */

/* Rows of logits the batch produces on the last range. */
int forward_n_out(const struct fwd_batch *b);

/* Runs the batch. BT_EINVAL (empty or oversize batch, slot not in use or repeated, token id
 * out of range, missing input), BT_ECAPACITY (a sequence would pass max_ctx). Checked before
 * any state changes, so a failed call leaves every sequence as it was. */
int forward(forward_ctx_t *c, const struct fwd_batch *b, bt_err *e);

#endif
