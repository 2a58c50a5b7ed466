/* worker/stage.h: one pipeline stage: the weights of layers [lo, hi), a pool of sequence slots
 * and, on the last stage, per-sequence samplers. stage_forward() runs one Forward message
 * (proto/baton.proto) and leaves what the next hop needs in stage-owned buffers: encoded
 * activations for the next stage, or a Result (+ logits) for the coordinator. No I/O besides
 * the weight load in stage_open; no malloc per Forward.
 *
 * Sequences: seq_id -> slot. A chunk at pos 0 takes a free slot (or resets the seq's slot);
 * a later chunk must continue exactly where the slot is (pos == slot position), else
 * BT_EPROTO. stage_cancel frees a slot. The whole Forward is validated before any state
 * changes (slots known, positions, max_ctx, token ids, payload size), so a rejected Forward
 * changes nothing; a Forward with more rows than the forward scratch (opts.fwd_tokens) runs
 * in pieces, calling opts.tick between pieces (the worker sends transport pings there).
 * Sampling (last stage): SamplingParams arrive with a sequence's first chunk; a later chunk's
 * params replace them only if they differ (an unchanged resend keeps the RNG stream). The
 * penalty history is every token id the stage has seen for the sequence (prompt + fed
 * samples), like coordinator/exec_local.c, so N stages sample exactly like one process.
 * Finish: a sampled id in stop_token_ids -> FINISH_STOP; else pos + 1 reaching max_ctx ->
 * FINISH_LENGTH (SeqResult.pos is the position the sampled token will take).
 * One thread uses a stage. */
#ifndef BT_WORKER_STAGE_H
#define BT_WORKER_STAGE_H
#include "common/err.h"
#include "engine/model.h"
#include "proto/msg.h"

#include <stddef.h>
#include <stdint.h>

typedef struct stage stage_t;

struct stage_opts {
    const char *model_path; /* the local model file or the worker's cache file */
    int lo, hi;             /* layers; hi == n_layer makes this the last stage */
    int wire_dtype;         /* WIRE_* used for the activations this stage sends */
    int max_seqs;           /* slots wanted (capped by the budget) */
    int max_ctx;
    uint64_t state_budget;   /* bytes for the slot pool; 0 = max_seqs slots whatever they cost */
    int threads;             /* <= 0: all cores */
    int max_rows;            /* rows (tokens) accepted per Forward; 0 = 2048 */
    int fwd_tokens;          /* rows per forward() call; 0 = 256 */
    int n_real;              /* real vocabulary for sampling (padding ids never sampled);
                               0 = from the GGUF tokenizer, else n_vocab */
    void (*tick)(void *ctx); /* called between pieces of a long Forward; may be NULL */
    void *tick_ctx;
};

struct stage_info {
    int lo, hi, n_layer, hidden, n_vocab;
    int is_first, is_last;
    int n_slots, max_ctx;
    uint64_t weight_bytes, state_bytes;
    double load_secs;
};

/* Loads the weights of [lo, hi) and allocates everything. BT_ECAPACITY when not even one slot
 * fits the budget; errors of model_open / weights_load / seqstate_pool_new otherwise. */
int stage_open(stage_t **out, const struct stage_opts *o, bt_err *e);
void stage_close(stage_t *s); /* NULL ok */
void stage_info(const stage_t *s, struct stage_info *out);
int stage_active(const stage_t *s);                   /* sequences holding a slot */
int stage_has_seq(const stage_t *s, uint64_t seq_id); /* 1 if seq_id holds a slot */

/* What stage_forward produced; pointers are stage-owned, valid until the next call. */
struct stage_out {
    /* not last: T rows of hidden in wire_dtype (act_dtype), act_len bytes */
    const void *act;
    size_t act_len;
    int act_dtype;
    /* last: result (batch_id copied) and, if any want_logits, n_logit_rows x vocab f32 */
    Baton__Result *result;
    const float *logits;
    size_t logits_len;
};

/* Runs f (frame/frame_len: the payload frame 1, NULL/0 on stage 0). Errors: BT_EPROTO
 * (misrouted stage_index, unknown sequence, position mismatch, bad payload), BT_ECAPACITY (no
 * free slot, rows over max_rows, past max_ctx), BT_EINVAL / forward errors (then the pieces
 * already run have advanced their sequences: the coordinator fails the batch's sequences). */
int stage_forward(stage_t *s, const Baton__Forward *f, const void *frame, size_t frame_len,
                  struct stage_out *out, bt_err *e);

/* Frees the slots of these sequences (unknown ids are ignored). */
void stage_cancel(stage_t *s, const uint64_t *seq_ids, size_t n);
void stage_cancel_all(stage_t *s);

/* Serialized state of seq_id (seqstate_save form) into a malloc'd *buf (caller frees), *len,
 * *n_pos. BT_ENOKEY if the sequence has no slot. */
int stage_export(stage_t *s, uint64_t seq_id, void **buf, size_t *len, uint32_t *n_pos, bt_err *e);
/* Installs a serialized state for seq_id (taking a slot if it has none). The sampler of an
 * imported sequence starts greedy until SamplingParams arrive, with an empty history. */
int stage_import(stage_t *s, uint64_t seq_id, const void *buf, size_t len, bt_err *e);

#endif
