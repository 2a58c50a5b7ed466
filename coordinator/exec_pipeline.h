/* coordinator/exec_pipeline.h: an executor (coordinator/exec.h) over a pipeline of worker
 * stages (proto/baton.proto, MESSAGE FLOW).
 *
 * exec_submit() turns a micro-batch into a Forward for stage 0 (seq_id = the scheduler's slot,
 * token ids, SamplingParams of every sequence, wire dtype) and queues it; exec_poll() returns
 * batches in submission order as their Result (from the last stage) or Error arrives.
 * The control transport belongs to the coordinator's event loop thread, not to the scheduler
 * thread that calls submit/poll: so submit only queues and calls opts.wake (the loop then
 * calls exec_pipeline_flush to send), and the loop hands every Result/Error it receives to
 * exec_pipeline_deliver. A lost stage or a send failure fails every batch in flight
 * (BT_EPEERLOST) and, once broken, every later submit. A batch with no answer within
 * batch_timeout_ms fails with BT_ETIMEDOUT and breaks the pipeline as well (its stages'
 * state can no longer be trusted).
 * Recovery: the executor keeps every live slot's known tokens (prompt + fed samples; a slot
 * is forgotten at exec_release). exec_pipeline_suspend (a stage was lost) stops sending and
 * turns batches in flight back into queued ones (their packed Forwards are kept); submits
 * still queue up to depth. exec_pipeline_resume (a new pipeline loaded, possibly other
 * stages) re-prefills each live slot on stage 0 with its tokens up to the first position an
 * unfinished batch feeds (sample = 0, ids with the top bit set, their Results swallowed), then
 * the kept batches go out again in order, tagged with the new plan id (a stage drops Forwards
 * of another plan, so a batch still in flight in the old pipeline cannot reach the new one's
 * state or answer for the resent batch): the scheduler sees a delay, not an error, and greedy
 * outputs equal an uninterrupted run's. (A sampled sequence's RNG restarts from its seed.)
 * Thread-safe between the two threads (one mutex). Forwards are packed into per-batch
 * buffers reused from batch to batch. */
#ifndef BT_COORDINATOR_EXEC_PIPELINE_H
#define BT_COORDINATOR_EXEC_PIPELINE_H
#include "common/err.h"
#include "coordinator/exec.h"
#include "proto/msg.h"
#include "proto/transport.h"

struct exec_pipeline_opts {
    int n_stages;
    const char *stage_ids[EXEC_MAX_STAGES]; /* transport identities, in stage order */
    uint64_t plan_id;                       /* Forward.plan_id: stages drop other plans' */
    int wire_dtype;                         /* WIRE_* */
    int n_slots;                            /* = LoadLayers.max_seqs */
    int max_ctx;
    int max_batch; /* tokens per Forward (<= 2048, worker max_rows) */
    int n_vocab;
    int depth;               /* batches in flight; 0 = n_stages */
    int batch_timeout_ms;    /* 0 = 120000 */
    void (*wake)(void *ctx); /* called after a Forward is queued (any thread) */
    void *wake_ctx;
};

int exec_pipeline_open(exec_t **out, const struct exec_pipeline_opts *o, bt_err *e);

/* Event loop thread: sends the queued Forwards to stage 0 on t. BT_EPEERLOST when stage 0 is
 * not connected: the batches stay queued and the caller starts a recovery. Another failed
 * send fails the pipeline (see above) and returns its code. */
int exec_pipeline_flush(exec_t *ex, transport_t *t, bt_err *e);

/* Event loop thread: a Result or Error envelope from peer (frames for the payload check).
 * Returns 1 when it belonged to a batch in flight, 0 when not (unknown batch: the caller
 * logs it), BT_EPROTO when a Result does not match its batch (the batch fails, detail in e). */
int exec_pipeline_deliver(exec_t *ex, const char *peer, const Baton__Envelope *env, bt_err *e);

/* Fails everything in flight and every later submit with code and the message. */
void exec_pipeline_fail(exec_t *ex, int code, const char *msg);

/* Event loop thread: a stage was lost; see Recovery above. */
void exec_pipeline_suspend(exec_t *ex, const char *why);
int exec_pipeline_is_down(const exec_t *ex);
/* Event loop thread: the new pipeline (stage ids in order, every stage loaded) takes over:
 * re-prefills on t, clears a failure left by exec_pipeline_fail, and lets the queued batches
 * go at the next flush. A send failure fails everything (like exec_pipeline_fail). */
int exec_pipeline_resume(exec_t *ex, transport_t *t, int n_stages, const char *const *stage_ids,
                         uint64_t plan_id, bt_err *e);

/* 1 if peer is one of the stages. */
int exec_pipeline_has_stage(const exec_t *ex, const char *peer);

#endif
