/* coordinator/sched.h: request queue, sequence slots and continuous batching over an executor
 * (coordinator/exec.h).
 *
 * One scheduler thread owns the executor. Requests wait in a FIFO queue (bounded: a full queue
 * refuses with BT_ECAPACITY, HTTP 429) and are admitted, in order, when a slot is free and
 * the sequence's whole state (recurrent + KV for prompt + max_tokens) fits every stage's byte
 * budget. Each step builds one micro-batch under a token budget: every decoding sequence that
 * is not in flight contributes its one pending token, then prompts contribute prefill chunks
 * from what is left, fewer while sequences decode so that a long prompt cannot stall their
 * streams (opts.prefill_stall); up to caps.depth batches are in flight, a sequence in at most
 * one. So requests join and leave between steps, and a sequence's tokens never depend on its
 * company (the executor computes every row the same way whatever the batch).
 *
 * Each request has a handle with its own event queue (mutex + condvar): TOKEN events carry the
 * sampled id, its logprobs and the text that became final (UTF-8 complete, and not possibly
 * part of a stop string), then one DONE (finish_reason, usage, the last text) or ERROR event.
 * Generation stops at an end-of-generation id of the tokenizer (not shown as text), a stop
 * string (the text before it is kept), max_tokens or the context limit ("length").
 * sched_handle_close() cancels a request that is still running; its slot is freed as soon as it
 * is in no in-flight batch. All functions are thread-safe. */
#ifndef BT_COORDINATOR_SCHED_H
#define BT_COORDINATOR_SCHED_H
#include "common/err.h"
#include "coordinator/exec.h"
#include "coordinator/metrics.h"
#include "engine/tokenizer.h"

#include <stddef.h>
#include <stdint.h>

#define SCHED_MAX_STOP 4

typedef struct sched sched_t;
typedef struct sched_handle sched_handle_t;

struct sched_opts {
    exec_t *exec;       /* borrowed; used only by the scheduler thread */
    const tok_t *tok;   /* borrowed: end-of-generation ids and streaming decode */
    metrics_t *metrics; /* may be NULL */
    int max_queue;      /* waiting requests before 429; 0 = 64 */
    int step_tokens;    /* token budget per micro-batch; 0 = min(caps.max_batch, 512) */
    int prefill_chunk;  /* most prompt tokens of one sequence per step; 0 = step_tokens */
    /* While sequences decode, no micro-batch may take longer than (1 + prefill_stall) times a
     * batch of decodes alone (coordinator/batch_cost.h): prompt tokens beyond that wait for
     * the next step. 0 = 3.0 (decodes keep at least a quarter of their speed while a prompt
     * is prefilled, which keeps 3/4 of its rate: tests/bench/bench_stall.sh); < 0 = off (the
     * token budget alone limits a step). */
    double prefill_stall;
};

struct sched_req {
    const int32_t *prompt; /* copied */
    int n_prompt;
    int max_tokens; /* >= 1; also limited by the context */
    struct exec_sampling sp;
    const char *stop[SCHED_MAX_STOP]; /* copied */
    int n_stop;
};

enum sched_ev_kind { SEV_TOKEN = 0, SEV_DONE = 1, SEV_ERROR = 2 };

struct sched_event {
    enum sched_ev_kind kind;
    char *text; /* newly final text (may be empty, never NULL); owned by the event */
    size_t len;
    struct exec_result tok;    /* TOKEN: the sampled token and its logprobs */
    const char *finish_reason; /* DONE: "stop" or "length" (static) */
    int prompt_tokens;         /* DONE */
    int completion_tokens;     /* DONE: sampled tokens, an end-of-generation id included */
    int code;                  /* ERROR: negative code */
    char msg[160];             /* ERROR */
    struct sched_event *next;  /* internal */
};

struct sched_stats {
    int queued, active, free_slots, in_flight;
};

int sched_open(sched_t **out, const struct sched_opts *o, bt_err *e);
/* Stops the thread, fails requests still running (ERROR BT_ECANCELED) and frees everything
 * but handles still open (close them after). NULL ok. */
void sched_close(sched_t *s);

/* Queues a request. BT_ECAPACITY when the queue is full; BT_EINVAL for an empty prompt;
 * BT_EMSGSIZE when the prompt leaves no room in the context or the state can never fit. */
int sched_submit(sched_t *s, const struct sched_req *r, sched_handle_t **out, bt_err *e);
/* Waits up to timeout_ms (-1 forever) for the next event: 1 with *ev (free with
 * sched_event_free), 0 on timeout. After DONE or ERROR no more events come. */
int sched_next(sched_handle_t *h, int timeout_ms, struct sched_event **ev);
void sched_event_free(struct sched_event *ev); /* NULL ok */
/* Cancels if still running, then lets go of the handle. NULL ok. */
void sched_handle_close(sched_handle_t *h);

void sched_get_stats(sched_t *s, struct sched_stats *st);

#endif
