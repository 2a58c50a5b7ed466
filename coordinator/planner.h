/* coordinator/planner.h: which contiguous layers each worker runs. Pure: no I/O, no globals.
 *
 * Inputs: the model's per-layer costs (weight bytes, state bytes for max_seqs x max_ctx,
 * matmul flops per token), the bytes charged to the first stage (token embedding) and the last
 * (final norm + LM head; the embedding again when tied), and each worker's memory budget,
 * memory bandwidth and matmul speed. Output: an ordered list of stages, each a worker and a
 * layer range [lo, hi), covering [0, n_layer) without gaps.
 *
 * Cost model (decode): a stage's time per token is max(bytes read / bandwidth, flops /
 * matmul speed), where bytes read are its layers' weights plus the LM head on the last stage
 * (the embedding costs one row, ignored). With enough batches in flight a pipeline runs at
 * the pace of its slowest stage, so the planner minimises the bottleneck stage time; a stage
 * must hold weights + state + overhead within its worker's budget. More workers are used only
 * while each addition cuts the bottleneck by at least min_gain (default 10%): a worker far
 * slower than the rest, or one that would only add a hop, is left out.
 * Search: every subset of up to 12 workers (else the fastest-first prefixes), every order of a
 * subset of up to 4 (else two orders), each split by dynamic programming over layers. */
#ifndef BT_COORDINATOR_PLANNER_H
#define BT_COORDINATOR_PLANNER_H
#include "common/err.h"
#include "engine/model.h"

#include <stddef.h>
#include <stdint.h>

#define PLAN_MAX_WORKERS 64
#define PLAN_MAX_STAGES  64
#define PLAN_ID_MAX      256 /* TX_PEER_MAX + 1 */

struct plan_layer_cost {
    uint64_t weight_bytes; /* the block's tensors */
    uint64_t state_bytes;  /* its state for all slots (max_seqs x max_ctx) */
    double flops;          /* matmul flops for one token (2 x weight elements) */
};

struct plan_model {
    int n_layer;
    struct plan_layer_cost layer[BT_MAX_LAYERS];
    uint64_t first_bytes;          /* token_embd: held by the first stage */
    uint64_t last_bytes;           /* output_norm + output (token_embd when tied): the last stage */
    double last_flops;             /* LM head flops per token */
    uint64_t shared_bytes;         /* bytes in both first_bytes and last_bytes (tied embeddings):
                              held once by a stage that is both */
    uint64_t stage_overhead_bytes; /* per stage: activation scratch, logits, bookkeeping */
};

struct plan_worker {
    char id[PLAN_ID_MAX];
    uint64_t mem_bytes; /* budget for weights + state */
    double mem_bw_gbps; /* GB/s (1e9 bytes); must be > 0 */
    double gflops;      /* 0 = unknown (bandwidth alone decides) */
};

struct plan_stage {
    int worker;            /* index into the workers given to planner_plan */
    int lo, hi;            /* layers [lo, hi) */
    uint64_t weight_bytes; /* layers + first/last charges */
    uint64_t state_bytes;
    uint64_t total_bytes; /* weights + state + overhead: what must fit mem_bytes */
    double ms_per_token;
};

struct plan {
    int n_stages;
    struct plan_stage stage[PLAN_MAX_STAGES];
    double bottleneck_ms; /* slowest stage: the pipeline's pace when full */
    double latency_ms;    /* sum over stages: one token of one sequence, network excluded */
    int n_left_out;       /* workers not used */
};

struct plan_opts {
    double min_gain; /* fraction a further worker must cut the bottleneck by; 0 = 0.10 */
};

/* Fills pm from a model description: per-layer tensor bytes and flops, first/last charges,
 * state bytes = max_seqs x seqstate_bytes per layer at max_ctx, overhead for max_batch rows.
 * BT_EINVAL for counts < 1. */
int planner_model_from_desc(struct plan_model *pm, const struct model_desc *m, int max_seqs,
                            int max_ctx, int max_batch, bt_err *e);

/* Plans. BT_EINVAL (no workers, too many, a bandwidth <= 0, n_layer out of range);
 * BT_ECAPACITY when no split fits, with a message saying what is needed and offered:
 * "model needs 9.1 GiB for weights + 1.2 GiB state (+ 0.1 GiB overhead); workers offer
 * 6.0 GiB: add memory or workers". */
int planner_plan(const struct plan_model *pm, const struct plan_worker *w, int n_workers,
                 const struct plan_opts *o, struct plan *out, bt_err *e);

/* Writes the plan as text, one line per stage then a totals line (and a line per worker left
 * out). Returns the length it needed (snprintf-style; buf may be NULL when cap is 0). */
size_t planner_format(const struct plan *p, const struct plan_model *pm,
                      const struct plan_worker *w, int n_workers, char *buf, size_t cap);

#endif
