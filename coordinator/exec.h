/* coordinator/exec.h: the executor interface between the scheduler (coordinator/sched) and
 * whatever runs the model: in-process over all layers (exec_local.c) or a pipeline of worker
 * stages. The scheduler hands it micro-batches of per-sequence items and gets sampled tokens
 * back; sampling happens in the executor (in a pipeline, on the last stage).
 *
 * Protocol:
 *  - Sequences live in slots [0, caps.n_slots). The scheduler owns slot assignment. An item with
 *    pos == 0 starts a fresh sequence in its slot (the executor zeroes the slot's KV and
 *    recurrent state and sets up the sampler from `sp`, which is non-NULL exactly then).
 *  - exec_submit() queues one micro-batch and does not wait for it; at most caps.depth batches
 *    are in flight. A sequence appears in at most one in-flight batch, and within a batch at most
 *    once; its items arrive in position order across batches.
 *  - exec_poll() returns completed batches in submission order, one per call, with one result
 *    per item that had sample = 1. A batch that failed (peer lost, out of memory) completes with
 *    status < 0 and no results: every sequence in it is failed by the scheduler.
 *  - exec_release() frees a slot's state; the scheduler calls it only for a slot whose sequence
 *    is in no in-flight batch.
 * Threading: one thread (the scheduler's) calls everything on one executor. */
#ifndef BT_COORDINATOR_EXEC_H
#define BT_COORDINATOR_EXEC_H
#include "common/err.h"

#include <stddef.h>
#include <stdint.h>

#define EXEC_MAX_TOP    20 /* OpenAI's top_logprobs limit */
#define EXEC_MAX_STAGES 64

/* Sampling settings of one sequence, as the OpenAI request gave them (already validated).
 * TODO(http): the executor maps these onto engine/sampler.h's struct once it exists; kept
 * separate so the pipeline executor can put them on the wire without the engine's header. */
struct exec_sampling {
    float temperature;        /* 0 = greedy (first index of the maximum) */
    float top_p;              /* 1 = off */
    int top_k;                /* 0 = off */
    float min_p;              /* 0 = off */
    float presence_penalty;   /* OpenAI, over generated tokens; 0 = off */
    float frequency_penalty;  /* OpenAI, over generated tokens; 0 = off */
    float repetition_penalty; /* llama.cpp style, over prompt + generated; 1 = off */
    uint64_t seed;            /* RNG seed of this sequence */
    int n_top;                /* top_logprobs to return per sampled token, 0..EXEC_MAX_TOP */
    int want_logprob;         /* 1: fill exec_result.logprob (and top when n_top > 0) */
};

struct exec_seq_item {
    uint64_t seq_id;
    int slot;
    int32_t pos;           /* position of tokens[0] */
    const int32_t *tokens; /* n_tokens ids, borrowed until exec_submit returns */
    int n_tokens;
    int sample;                     /* 1: these end the known tokens; return the next one */
    const struct exec_sampling *sp; /* non-NULL iff pos == 0; borrowed for the call */
};

struct exec_result {
    uint64_t seq_id;
    int32_t token;
    float logprob; /* log-softmax of the sampled token over the unmodified logits */
    int n_top;
    int32_t top_ids[EXEC_MAX_TOP];
    float top_logprobs[EXEC_MAX_TOP];
};

struct exec_done {
    uint64_t batch_id;
    int status;    /* 0, or the negative code that failed the batch */
    char msg[160]; /* detail when status < 0 */
    int n_results;
    const struct exec_result *results; /* valid until the next exec_poll */
    /* Per stage, for /metrics (0 where unknown): seconds spent computing this batch and bytes
     * sent to the stage for it. */
    double stage_busy_s[EXEC_MAX_STAGES];
    uint64_t stage_bytes[EXEC_MAX_STAGES];
};

/* State cost of one stage, for admission control: a sequence of n tokens needs
 * seq_bytes + n * token_bytes on every stage, and the sum over live sequences must stay within
 * budget_bytes (0 = no byte budget: slots alone limit). */
struct exec_stage_cost {
    size_t seq_bytes;   /* recurrent state (conv window + delta-rule matrix) per sequence */
    size_t token_bytes; /* KV cache per token */
    size_t budget_bytes;
};

struct exec_caps {
    int n_stages;  /* pipeline stages; 1 for the local executor */
    int depth;     /* batches that may be in flight at once (>= n_stages for overlap) */
    int n_slots;   /* sequence slots */
    int max_ctx;   /* tokens per sequence (prompt + generated) */
    int max_batch; /* tokens per micro-batch the executor accepts */
    int n_vocab;
    struct exec_stage_cost stage[EXEC_MAX_STAGES];
};

typedef struct exec exec_t;
struct exec_ops {
    int (*submit)(exec_t *ex, uint64_t batch_id, const struct exec_seq_item *items, int n,
                  bt_err *e);
    int (*poll)(exec_t *ex, int timeout_ms, struct exec_done *out, bt_err *e);
    void (*release)(exec_t *ex, int slot);
    void (*close)(exec_t *ex);
};
/* Implementations embed this as their first member. */
struct exec {
    const struct exec_ops *ops;
    struct exec_caps caps;
};

/* 0, or BT_ECAPACITY (too many in flight, batch too large), BT_EINVAL (bad slot/pos). */
static inline int exec_submit(exec_t *ex, uint64_t batch_id, const struct exec_seq_item *items,
                              int n, bt_err *e) {
    return ex->ops->submit(ex, batch_id, items, n, e);
}
/* 1 with *out filled when a batch completed, 0 after timeout_ms (-1 = wait), < 0 on failure
 * of the executor itself (the scheduler then fails everything in flight). */
static inline int exec_poll(exec_t *ex, int timeout_ms, struct exec_done *out, bt_err *e) {
    return ex->ops->poll(ex, timeout_ms, out, e);
}
static inline void exec_release(exec_t *ex, int slot) {
    ex->ops->release(ex, slot);
}
static inline const struct exec_caps *exec_caps(const exec_t *ex) {
    return &ex->caps;
}
static inline void exec_close(exec_t *ex) { /* NULL ok */
    if (ex) ex->ops->close(ex);
}

#endif
