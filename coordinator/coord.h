/* coordinator/coord.h: the baton coordinator daemon as a library (coordinator/main.c is its
 * argp front end; an MPI launcher embeds it as rank 0).
 *
 * Phases (proto/baton.proto, MESSAGE FLOW): WAIT (accept Hello, answer Welcome) until
 * min_workers have joined; PLAN (coordinator/planner; the plan is printed before anything
 * loads); LOADING (LoadLayers to each stage, serve ModelChunkRequests, wait for LoadDone from
 * all); SERVING (scheduler on coordinator/exec_pipeline, HTTP API); RECOVERING after a stage
 * is lost (re-plan over the workers present, LoadLayers again, resume every live sequence by
 * re-prefilling its tokens; see coord.c). With opts.local the whole model runs in-process.
 *
 * Threading: coord_run() runs the event loop on the calling thread, which owns the control
 * transport; the scheduler thread reaches it through exec_pipeline's queue and
 * transport_wakeup. coord_stop() is async-signal-safe and callable from any thread. */
#ifndef BT_COORDINATOR_COORD_H
#define BT_COORDINATOR_COORD_H
#include "common/err.h"
#include "proto/transport.h"

typedef struct coord coord_t;

struct coord_opts {
    const char *model;        /* GGUF file (required) */
    const char *bind;         /* control endpoint (required unless local or kind is MPI) */
    const char *http;         /* "HOST:PORT" of the OpenAI API, or NULL */
    const char *model_name;   /* API model id; NULL = the file's general.name */
    enum transport_kind kind; /* control transport: TRANSPORT_ZMQ (daemon), MPI, INPROC */
    int rank, n_ranks;        /* MPI only: passed to transport_open */
    int min_workers;          /* 0 = 1 */
    int wire;                 /* WIRE_* activation dtype between stages */
    int max_seqs;             /* 0 = 8 */
    int max_ctx;              /* 0 = 4096 */
    int max_batch;            /* 0 = 256 */
    int threads;              /* local: compute threads (0 = all CPUs) */
    int heartbeat_ms;         /* 0 = 1000; sent to workers in Welcome */
    int liveness;             /* 0 = 3; sent to workers in Welcome */
    int prefill_chunk;        /* 0 = the scheduler's default */
    double prefill_stall;     /* sched_opts.prefill_stall: 0 = its default, < 0 = off */
    int plan_only;            /* print the plan once the workers joined, then stop */
    int local;                /* no workers: run the model in this process */
    int load_timeout_s;       /* 0 = 900 */
    int recover_timeout_s;    /* pipeline down this long without a new one: requests fail;
                                 0 = 60 */
    int uniform;              /* plan as if all workers were equally fast */
    double min_gain;          /* planner option; 0 = its default */
    int admin_remote;         /* serve /admin/ (coordinator/admin.h) to non-loopback clients */
};

/* Opens the model, tokenizer, HTTP API and control transport (binds). Errors name the
 * object (model file, --http address, bind endpoint). */
int coord_open(coord_t **out, const struct coord_opts *o, bt_err *e);
/* Runs until coord_stop or a fatal condition; returns the process exit code (0 ok, 1 error). */
int coord_run(coord_t *c);
/* Makes coord_run return soon. Async-signal-safe, any thread. */
void coord_stop(coord_t *c);
void coord_close(coord_t *c); /* NULL ok; sends Shutdown to the workers if not yet sent */

#endif
