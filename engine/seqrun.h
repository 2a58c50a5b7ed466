/* engine/seqrun.h: a layer range of a model ready to run batches of sequences: the weights of
 * [lo, hi), a seqstate pool of n_slots, a thread pool and a forward context, plus (on the last
 * range, hi == n_layer) one sampler, penalty history and stop list per slot. The shared core
 * of the in-process executor (coordinator/exec_local.c) and a pipeline stage
 * (worker/stage.c), so that N stages run and sample exactly like one process.
 *
 * Slots are seqstate slots; the caller acquires, resets and releases them through
 * seqrun_state() (the executor holds all of them, a stage one per sequence).
 * Running: seqrun_forward() cuts a batch into forward() calls of at most fwd_tokens rows (a
 * long sequence may span several; only its last piece asks for logits).
 * Sampling (last range only):
 *  - seqrun_set_sampling(fresh = 1) builds a slot's sampler (a new RNG stream); with fresh = 0
 *    it is rebuilt only if the params differ from the ones it was built from, so an unchanged
 *    resend keeps the stream. Params are compared as given; top_p and repetition_penalty <= 0
 *    mean "off" (1), as an unset proto3 field reads.
 *  - The penalty history is every token id fed for the sequence (prompt + fed samples), added
 *    by the caller after the rows ran (seqrun_add_history) and emptied at a fresh start.
 *  - Finish: a sampled id in the stop list -> SEQRUN_FINISH_STOP; else the position the
 *    sampled token will take (pos) + 1 passing max_ctx -> SEQRUN_FINISH_LENGTH.
 * No malloc after seqrun_open (except building a sampler). One thread uses a seqrun_t. */
#ifndef BT_ENGINE_SEQRUN_H
#define BT_ENGINE_SEQRUN_H
#include "common/err.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "engine/seqstate.h"

#include <stddef.h>
#include <stdint.h>

#define SEQRUN_MAX_STOP 64 /* stop ids kept per sequence (= the wire's limit) */

typedef struct seqrun seqrun_t;

struct seqrun_opts {
    int lo, hi;     /* layers of m */
    int n_slots;    /* seqstate slots, >= 1 */
    int max_ctx;    /* positions per slot, >= 1 */
    int fwd_tokens; /* rows per forward() call (the forward scratch); 0 = 256 */
    int threads;    /* <= 0: all cores */
    int n_real;     /* real vocabulary for sampling; <= 0 or > n_vocab: n_vocab */
    /* weights_load progress (e.g. pings while a large range loads); may be NULL */
    void (*progress)(void *ctx, uint64_t done, uint64_t total);
    void *progress_ctx;
};

/* Loads the weights of [lo, hi) of m (borrowed: it must outlive the seqrun) and allocates
 * everything. BT_ESHAPE for a bad layer range, BT_EINVAL for n_slots/max_ctx < 1; errors of
 * weights_load / seqstate_pool_new / pool_open / forward_ctx_new otherwise. */
int seqrun_open(seqrun_t **out, const struct model_desc *m, const struct seqrun_opts *o, bt_err *e);
void seqrun_close(seqrun_t *r); /* NULL ok */

seqstate_pool_t *seqrun_state(seqrun_t *r);
const struct weights *seqrun_weights(const seqrun_t *r);
int seqrun_is_last(const seqrun_t *r); /* 1 if hi == n_layer: logits out, samplers exist */

/* One sequence of a batch; its rows follow the previous sequence's. */
struct seqrun_seq {
    int slot;     /* acquired seqstate slot; its position advances by n_tokens */
    int n_tokens; /* >= 1 */
    int want_out; /* last range: 1 = the logits of its last row */
};
struct seqrun_batch {
    int n_seq;
    const struct seqrun_seq *seq;
    const int32_t *tokens; /* first range: [rows] token ids */
    const float *hidden;   /* later ranges: [rows][n_embd] */
    float *out;            /* not last: [rows][n_embd]; last: [n_out][n_vocab], in batch order */
};
/* Runs b through forward() in pieces of at most fwd_tokens rows; tick(tick_ctx) (may be NULL)
 * runs between pieces. Returns the logits rows written (0 on a range that is not the last) or
 * forward()'s error: the pieces already run have advanced their sequences, so a batch of at
 * most fwd_tokens rows either runs whole or changes nothing. */
int seqrun_forward(seqrun_t *r, const struct seqrun_batch *b, void (*tick)(void *), void *tick_ctx,
                   bt_err *e);

/* Sampling settings of one sequence. p starts from sampler_params_default(); its stop_ids are
 * not used (stop is the list here). */
struct seqrun_sampling {
    struct sampler_params p;
    int want_logprob;     /* kept for seqrun_wants_logprob; part of the comparison */
    const uint32_t *stop; /* n_stop ids (borrowed for the call; the first SEQRUN_MAX_STOP kept) */
    size_t n_stop;
    /* Samples the sequence already drew elsewhere: a sampler built here skips them
     * (sampler_skip), so a sequence re-prefilled on a new pipeline keeps its random stream.
     * Not part of the comparison. */
    uint64_t rng_skip;
};
/* See the header comment for fresh. BT_EINVAL (from sampler_new) leaves the slot's sampler as
 * it was. Last range only. */
int seqrun_set_sampling(seqrun_t *r, int slot, const struct seqrun_sampling *sp, int fresh,
                        bt_err *e);
/* Frees the slot's sampler and empties its history (a released or cancelled sequence). */
void seqrun_clear_sampling(seqrun_t *r, int slot);
void seqrun_reset_history(seqrun_t *r, int slot);
/* Appends ids to the slot's history; the caller keeps the total within max_ctx (its
 * positions were checked against max_ctx). */
void seqrun_add_history(seqrun_t *r, int slot, const int32_t *ids, int n);
/* Draws from logits[n_vocab] with the slot's sampler over its history; res as sampler_sample.
 * The slot must have a sampler. */
int32_t seqrun_sample(seqrun_t *r, int slot, const float *logits, struct sampler_result *res);
/* 1 when the sequence asked for logprobs (want_logprob or n_logprobs > 0). */
int seqrun_wants_logprob(const seqrun_t *r, int slot);

enum seqrun_finish { SEQRUN_FINISH_NONE, SEQRUN_FINISH_STOP, SEQRUN_FINISH_LENGTH };
/* Why the sequence ends after sampling tok, which will take position pos. */
enum seqrun_finish seqrun_finish(const seqrun_t *r, int slot, int32_t tok, int64_t pos);

#endif
