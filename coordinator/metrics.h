/* coordinator/metrics.h: the coordinator's counters, gauges and histograms, rendered as
 * Prometheus text exposition (format 0.0.4) for GET /metrics. All calls are thread-safe (one
 * mutex; updates are a few per token, far below contention). Names are baton_*. */
#ifndef BT_COORDINATOR_METRICS_H
#define BT_COORDINATOR_METRICS_H
#include "common/err.h"

#include <stdint.h>

enum metric_counter {
    MC_PROMPT_TOKENS, /* baton_prompt_tokens_total */
    MC_GEN_TOKENS,    /* baton_generation_tokens_total */
    MC_REQ_FINISHED,  /* baton_requests_finished_total: stop or length */
    MC_REQ_CANCELLED, /* baton_requests_cancelled_total: client went away */
    MC_REQ_FAILED,    /* baton_requests_failed_total: executor errors */
    MC_REQ_REJECTED,  /* baton_requests_rejected_total: queue full (429) */
    MC_STEPS,         /* baton_sched_steps_total: micro-batches submitted */
    MC_COUNT
};
enum metric_gauge {
    MG_QUEUE_DEPTH, /* baton_queue_depth: requests waiting for a slot */
    MG_ACTIVE,      /* baton_active_sequences: sequences holding a slot */
    MG_SLOTS,       /* baton_slots: slots in total */
    MG_INFLIGHT,    /* baton_batches_in_flight */
    /* the scheduler's cost model (coordinator/batch_cost.h), 0 until it has a fit */
    MG_BATCH_FIXED_S, /* baton_batch_fixed_seconds */
    MG_BATCH_TOKEN_S, /* baton_batch_token_seconds */
    MG_COUNT
};
enum metric_hist {
    MH_TTFT,         /* baton_time_to_first_token_seconds */
    MH_ITL,          /* baton_inter_token_seconds */
    MH_E2E,          /* baton_request_duration_seconds */
    MH_BATCH_TOKENS, /* baton_batch_tokens: tokens per micro-batch */
    MH_COUNT
};
#define METRICS_MAX_STAGES 64

typedef struct metrics metrics_t;

int metrics_open(metrics_t **out, bt_err *e);
void metrics_close(metrics_t *m); /* NULL ok */

/* Every call accepts m == NULL and then does nothing (tests and tools without metrics). */
void metrics_http(metrics_t *m, int status); /* baton_http_responses_total{code} */
void metrics_add(metrics_t *m, enum metric_counter c, uint64_t n);
void metrics_set(metrics_t *m, enum metric_gauge g, double v);
void metrics_observe(metrics_t *m, enum metric_hist h, double v);
/* Per pipeline stage: busy seconds and bytes sent to it (baton_stage_busy_seconds_total,
 * baton_stage_transfer_bytes_total{stage}). */
void metrics_stage(metrics_t *m, int stage, double busy_s, uint64_t bytes);

uint64_t metrics_counter(metrics_t *m, enum metric_counter c);
double metrics_gauge(metrics_t *m, enum metric_gauge g);

/* The exposition text; caller frees with free(). NULL on ENOMEM. */
char *metrics_render(metrics_t *m);

#endif
